//! Single jobs: their record (created as a quota admits it, read back) and
//! the calls of their state scripts (`claim.lua`, `transition_job.lua`),
//! which the pipelines of `pipeline.rs` send in bulk.

use super::error::StoreError;
use super::handle::JobStore;
use super::outcome::{applied_of, Applied, Transition};
use super::quota::{Admission, QuotaCheck};
use super::record::{parse_record, JobRecord, NewJob};
use super::scripts::{CLAIM, CREATE, CREATE_ADMITTED, TRANSITION_JOB};
use crate::job::{JobError, JobId, JobStatus};
use crate::keys::Subject;
use crate::message::JobMessage;
use redis::ScriptInvocation;

impl JobStore {
    /// Records a new `queued` job if its tenant's quota grants it (one
    /// round trip for both); the refusal otherwise, and nothing recorded.
    ///
    /// In a Redis Cluster the quota (the tenant's slot) and the record (the
    /// job's) are two steps: the quota is taken first, then the record
    /// made; if that fails, the quota is given back. A crash between them
    /// leaves the quota held until its horizon passes, when the admission
    /// script's sweep gives it back.
    pub async fn create_admitted(
        &self,
        job: &NewJob,
        quota: &QuotaCheck,
    ) -> Result<Admission, StoreError> {
        if self.one_slot_per_script() {
            return self.create_admitted_in_two_steps(job, quota).await;
        }
        let mut inv = CREATE_ADMITTED.key(self.keys.job(&job.id));
        for k in &quota.keys {
            inv.key(k);
        }
        inv.arg(self.ttl_ms);
        for a in &quota.args {
            inv.arg(a);
        }
        Self::queued_fields(&mut inv, job);
        let v = self.run_one(&inv).await?;
        let (what, n): (String, f64) =
            redis::from_redis_value(v).map_err(|e| StoreError::Reply(e.to_string()))?;
        if what == "exists" {
            return Err(StoreError::Reply(format!("job {} exists", job.id)));
        }
        let admission = quota.answer(&what, n)?;
        if admission == Admission::Admitted {
            self.note_tenant(&job.id, job.tenant.as_deref());
        }
        Ok(admission)
    }

    /// [`Self::create_admitted`] where the quota and the record live in
    /// different slots.
    async fn create_admitted_in_two_steps(
        &self,
        job: &NewJob,
        quota: &QuotaCheck,
    ) -> Result<Admission, StoreError> {
        let (admission, taken) = super::quota::admit_taking(&self.conn, quota).await?;
        if admission != Admission::Admitted {
            return Ok(admission);
        }
        let mut inv = CREATE.key(self.keys.job(&job.id));
        inv.arg(self.ttl_ms);
        Self::queued_fields(&mut inv, job);
        let created = match self.run_one(&inv).await {
            Ok(redis::Value::Int(1)) => Ok(()),
            Ok(redis::Value::Int(0)) => Err(StoreError::Reply(format!("job {} exists", job.id))),
            Ok(other) => Err(StoreError::Reply(format!("create: {other:?}"))),
            Err(e) => Err(e),
        };
        if let Err(e) = created {
            // Give back what the job took; if even that fails, the sweep
            // does once its horizon passes.
            if let (Some(tenant), true) = (&job.tenant, taken) {
                if let Err(r) = super::quota::release(&self.conn, &self.keys, tenant, &job.id).await
                {
                    tracing::warn!(error = %r, job = %job.id, "could not give back the quota of a job that was not recorded; the sweep will");
                }
            }
            return Err(e);
        }
        self.note_tenant(&job.id, job.tenant.as_deref());
        Ok(Admission::Admitted)
    }

    /// The fields of a new `queued` job record, as script arguments.
    fn queued_fields(inv: &mut ScriptInvocation<'_>, job: &NewJob) {
        inv.arg("status")
            .arg("queued")
            .arg("rank")
            .arg(0)
            .arg("attempts")
            .arg(0);
        for (k, v) in job.fields() {
            inv.arg(k).arg(v);
        }
    }

    /// Reads a job; `None` if unknown or expired.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut c = self.conn.clone();
        let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(id))
            .query_async(&mut c)
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        parse_record(*id, fields).map(Some)
    }

    /// Records a job as `failed` with `error` if its record exists, is not
    /// terminal, and matches `msg` (the dead-letter recorder's and the
    /// consumer's path, where the message is untrusted and unclaimed).
    pub async fn fail_matching(
        &self,
        msg: &JobMessage,
        error: &JobError,
    ) -> Result<Applied, StoreError> {
        let quota = self.quota_of_one(Subject::Job(msg.record())).await?;
        let mut inv = TRANSITION_JOB.key(self.keys.job(&msg.record()));
        self.with_quota(&mut inv, &quota);
        inv.arg(JobStatus::Failed.as_str())
            .arg(JobStatus::Failed.rank())
            .arg(self.ttl_ms)
            .arg(self.done_arg())
            .arg(msg.record().to_string())
            .arg(msg.digest())
            .arg("finished_at")
            .arg(crate::job::now_ms())
            .arg("error")
            .arg(serde_json::to_string(error).expect("error serialises"));
        applied_of(&self.run_one(&inv).await?)
    }

    /// The call that applies `t` to job `id` (a claimed message: no digest
    /// check) at `now`, with its tenant's quota keys when it may end it.
    pub(super) fn transition_job(
        &self,
        id: &JobId,
        t: &Transition,
        now: u64,
        quota: &Option<[String; 3]>,
    ) -> ScriptInvocation<'static> {
        let mut inv = TRANSITION_JOB.key(self.keys.job(id));
        self.with_quota(&mut inv, quota);
        inv.arg(t.status.as_str())
            .arg(t.status.rank())
            .arg(self.ttl_ms)
            .arg(self.done_arg())
            .arg(id.to_string())
            .arg("");
        if t.status.is_terminal() {
            inv.arg("finished_at").arg(now);
        }
        if let Some(o) = &t.output {
            inv.arg("output").arg(o);
        }
        if let Some(x) = &t.explanation {
            inv.arg("explanation").arg(x);
        }
        if let Some(d) = &t.model_sha256 {
            inv.arg("model_sha256").arg(d);
        }
        if let Some(e) = &t.error {
            inv.arg("error")
                .arg(serde_json::to_string(e).expect("error serialises"));
        }
        inv
    }

    /// The call that claims the job `msg` names at `now`, with its tenant's
    /// quota keys if they are known (needed only to expire it).
    pub(super) fn claim_job(&self, msg: &JobMessage, now: u64) -> ScriptInvocation<'static> {
        let mut inv = CLAIM.key(self.keys.job(&msg.record()));
        if let Some(quota) = self.cached_quota(&msg.record()) {
            self.with_quota(&mut inv, &quota);
        }
        inv.arg(self.ttl_ms)
            .arg(msg.digest())
            .arg(msg.deadline_at_ms.unwrap_or(0))
            .arg(now)
            .arg(self.done_arg())
            .arg(msg.record().to_string());
        inv
    }
}

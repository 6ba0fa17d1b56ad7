//! Single jobs: their record (created as a quota admits it, read back) and
//! the calls of their state scripts (`claim.lua`, `transition_job.lua`),
//! which the pipelines of `pipeline.rs` send in bulk.

use super::error::StoreError;
use super::handle::JobStore;
use super::outcome::{applied_of, Applied, Transition};
use super::quota::{with_quota, Admission, QuotaCheck};
use super::record::{parse_record, JobRecord, NewJob};
use super::scripts::{CLAIM, CREATE_ADMITTED, TRANSITION_JOB};
use crate::job::{JobError, JobId, JobStatus};
use crate::keys::Subject;
use crate::message::JobMessage;
use redis::ScriptInvocation;

impl JobStore {
    /// Records a new `queued` job if its tenant's quota grants it (one
    /// round trip for both); the refusal otherwise, and nothing recorded.
    pub async fn create_admitted(
        &self,
        job: &NewJob,
        quota: &QuotaCheck,
    ) -> Result<Admission, StoreError> {
        let mut inv = CREATE_ADMITTED.key(self.keys.job(&job.id));
        for k in &quota.keys {
            inv.key(k);
        }
        inv.arg(self.ttl_ms);
        for a in &quota.args {
            inv.arg(a);
        }
        inv.arg("status")
            .arg("queued")
            .arg("rank")
            .arg(0)
            .arg("attempts")
            .arg(0);
        for (k, v) in job.fields() {
            inv.arg(k).arg(v);
        }
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
        with_quota(&mut inv, &quota);
        inv.arg(JobStatus::Failed.as_str())
            .arg(JobStatus::Failed.rank())
            .arg(self.ttl_ms)
            .arg(self.keys.done_channel())
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
        with_quota(&mut inv, quota);
        inv.arg(t.status.as_str())
            .arg(t.status.rank())
            .arg(self.ttl_ms)
            .arg(self.keys.done_channel())
            .arg(id.to_string())
            .arg("");
        if t.status.is_terminal() {
            inv.arg("finished_at").arg(now);
        }
        if let Some(o) = &t.output {
            inv.arg("output").arg(o);
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
            with_quota(&mut inv, &quota);
        }
        inv.arg(self.ttl_ms)
            .arg(msg.digest())
            .arg(msg.deadline_at_ms.unwrap_or(0))
            .arg(now)
            .arg(self.keys.done_channel())
            .arg(msg.record().to_string());
        inv
    }
}

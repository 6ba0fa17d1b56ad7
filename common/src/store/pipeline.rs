//! The calls the worker makes in bulk, one round trip each: claims of
//! jobs and chunks, and the writes of their results; and the single
//! transitions, cancellations and reopenings of either kind.

use super::error::StoreError;
use super::handle::JobStore;
use super::outcome::{
    applied_of, cancelled_of, parse_claim, reopened_of, Applied, Cancelled, Claim, ClaimOf,
    Reopened, Transition, Write,
};
use super::scripts::{CANCEL_BATCH, CANCEL_JOB, REOPEN_CHUNK, REOPEN_JOB};
use crate::job::{JobId, JobStatus};
use crate::keys::Subject;
use crate::message::JobMessage;

impl JobStore {
    /// Applies one transition.
    pub async fn transition(&self, id: &JobId, t: &Transition) -> Result<Applied, StoreError> {
        let mut out = self.transition_many(&[(*id, t)]).await?;
        out.pop()
            .ok_or_else(|| StoreError::Reply("empty pipeline reply".into()))
    }

    /// Applies many transitions in one round trip.
    pub async fn transition_many(
        &self,
        updates: &[(JobId, &Transition)],
    ) -> Result<Vec<Applied>, StoreError> {
        let writes: Vec<Write> = updates.iter().map(|(id, t)| Write::Job(*id, t)).collect();
        self.write_many(&writes).await
    }

    /// Stores job transitions and chunk results in one round trip (and one
    /// more before it only for subjects whose tenant this process has not
    /// seen: those claimed here are known).
    pub async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Applied>, StoreError> {
        // Only writes that may end their subject give quota back.
        let subjects: Vec<Option<Subject>> = writes
            .iter()
            .map(|w| match w {
                Write::Job(id, t) if t.status.is_terminal() => Some(Subject::Job(*id)),
                Write::Job(..) => None,
                Write::Chunk(c) => Some(Subject::Batch(c.batch)),
            })
            .collect();
        let wanted: Vec<Subject> = subjects.iter().flatten().copied().collect();
        let mut quotas = self.quota_of(&wanted).await?.into_iter();
        let mut pipe = redis::pipe();
        let now = crate::job::now_ms();
        for (w, s) in writes.iter().zip(&subjects) {
            let quota = if s.is_some() {
                quotas.next().flatten()
            } else {
                None
            };
            let inv = match w {
                Write::Job(id, t) => self.transition_job(id, t, now, &quota),
                Write::Chunk(c) => self.store_chunk(c, now, &quota),
            };
            pipe.invoke_script(&inv);
        }
        let values = self.run(&pipe).await?;
        values.iter().map(applied_of).collect()
    }

    /// Claims jobs and chunks in one round trip (see [`Claim`]).
    pub async fn claim_many(&self, items: &[ClaimOf<'_>]) -> Result<Vec<Claim>, StoreError> {
        let now = crate::job::now_ms();
        let mut pipe = redis::pipe();
        for item in items {
            let inv = match item {
                ClaimOf::Job(msg) => self.claim_job(msg, now),
                ClaimOf::Chunk(msg, rows) => self.claim_chunk(msg, *rows, now),
            };
            pipe.invoke_script(&inv);
        }
        let values = self.run_as(&pipe, false).await?;
        let mut out = Vec::with_capacity(items.len());
        for (item, v) in items.iter().zip(&values) {
            let (msg, chunk) = match item {
                ClaimOf::Job(msg) => (msg, false),
                ClaimOf::Chunk(msg, _) => (msg, true),
            };
            let reply = parse_claim(v, chunk)?;
            if let Some(tenant) = &reply.tenant {
                self.note_tenant(&msg.record(), tenant.as_deref());
            }
            out.push(reply.claim);
        }
        Ok(out)
    }

    /// Cancels a job or batch if its status is one of `from`.
    pub async fn cancel(
        &self,
        subject: Subject,
        from: &[JobStatus],
    ) -> Result<Cancelled, StoreError> {
        let quota = self.quota_of_one(subject).await?;
        let id = subject.id();
        let mut inv = match &subject {
            Subject::Job(id) => CANCEL_JOB.key(self.keys.job(id)),
            Subject::Batch(id) => {
                // Its stored chunks get its retention too.
                let mut inv = CANCEL_BATCH.key(self.keys.batch(id));
                inv.key(self.keys.chunk_results(id))
                    .key(self.keys.chunk_dead(id));
                inv
            }
        };
        self.with_quota(&mut inv, &quota);
        inv.arg(crate::job::now_ms())
            .arg(self.done_arg())
            .arg(id.to_string())
            .arg(self.ttl_ms);
        for st in from {
            inv.arg(st.as_str());
        }
        cancelled_of(&self.run_one(&inv).await?)
    }

    /// Reopens the job or chunk a dead letter names before a replay, if
    /// the dead letter is the one its record was accepted with (or fits
    /// its batch).
    pub async fn reopen(&self, msg: &JobMessage) -> Result<Reopened, StoreError> {
        let id = &msg.record();
        let inv = match msg.work.chunk() {
            None => {
                let mut inv = REOPEN_JOB.key(self.keys.job(id));
                inv.arg(msg.digest());
                inv
            }
            Some(c) => {
                let mut inv = REOPEN_CHUNK.key(self.keys.batch(id));
                inv.key(self.keys.chunk_results(id))
                    .key(self.keys.chunk_dead(id))
                    .key(self.keys.chunk_digests(id))
                    .arg(c.index)
                    .arg(c.first_row)
                    .arg(&msg.model)
                    .arg(&msg.version)
                    .arg(msg.digest());
                inv
            }
        };
        Ok(reopened_of(&self.run_one(&inv).await?))
    }
}

//! Erasure on a tenant's request: a job's or batch's results, event
//! records and delivery log go at once, leaving a tombstone (`erase.lua`).

use super::error::StoreError;
use super::handle::JobStore;
use super::outcome::text_of;
use super::scripts::ERASE;
use super::ttl::TOMBSTONE_MS;
use crate::keys::Subject;

impl JobStore {
    /// Erases a job or batch: its results, delivery logs and every field
    /// but its tenant, leaving a `cancelled` tombstone marked `erased` (so
    /// a message still queued for it does not run) for its retention, and
    /// at least [`TOMBSTONE_MS`]. `false` if there is no such record.
    pub async fn erase(&self, subject: Subject) -> Result<bool, StoreError> {
        let id = subject.id();
        let record = self.keys.record(&subject);
        // The keys to delete depend on how often the subject was reopened
        // (one event record per end) and, for a batch stored under the
        // earlier layout, on its chunks; the script refuses ('moved') if
        // the count changed meanwhile, and this is tried again.
        for _ in 0..8 {
            let mut c = self.conn.clone();
            let (reopened, chunks, tenant): (Option<u32>, Option<u32>, Option<String>) =
                redis::cmd("HMGET")
                    .arg(&record)
                    .arg("reopened")
                    .arg("chunks")
                    .arg("tenant")
                    .query_async(&mut c)
                    .await?;
            let reopened = reopened.unwrap_or(0);
            let mut gone = vec![self.keys.deliveries(id)];
            gone.extend((0..=reopened).map(|gen| self.keys.webhook(id, gen)));
            if let Subject::Batch(id) = &subject {
                gone.push(self.keys.chunk_results(id));
                gone.push(self.keys.chunk_dead(id));
                gone.push(self.keys.chunk_digests(id));
                for i in 0..chunks.unwrap_or(0) {
                    gone.push(self.keys.legacy_chunk(id, i));
                    gone.push(self.keys.legacy_chunk_dead(id, i));
                }
            }
            let mut inv = ERASE.key(&record);
            for k in &gone {
                inv.key(k);
            }
            self.with_quota(&mut inv, &tenant.map(|t| self.keys.quota(&t)));
            inv.arg(self.done_arg())
                .arg(self.ttl_ms)
                .arg(TOMBSTONE_MS)
                .arg(id.to_string())
                .arg(reopened)
                .arg(gone.len());
            match text_of(&self.run_one(&inv).await?).as_deref() {
                Some("moved") => continue,
                answer => return Ok(answer == Some("ok")),
            }
        }
        Err(StoreError::Reply(format!(
            "{id} kept being reopened while it was erased"
        )))
    }
}

//! Bulk batches: their record, the digests of their chunk messages, their
//! chunk results (one hash per batch, [`crate::keys::Keys::chunk_results`])
//! and the calls of the chunk scripts (`claim_chunk.lua`,
//! `store_chunk.lua`, `dead_chunk.lua`, `transition_batch.lua`), which the
//! pipelines of `pipeline.rs` send in bulk.

use super::error::StoreError;
use super::handle::JobStore;
use super::outcome::{dead_chunk_of, Applied, ChunkResult};
use super::record::{parse_batch, BatchRecord, NewBatch};
use super::scripts::{CLAIM_CHUNK, CREATE, DEAD_CHUNK, STORE_CHUNK, TRANSITION_BATCH};
use super::ttl::OPEN_TTL_MS;
use crate::job::{JobError, JobId};
use crate::keys::Subject;
use crate::message::{ChunkRef, JobMessage};
use redis::ScriptInvocation;

impl JobStore {
    /// Records a batch whose rows are all validated, as `queued`.
    pub async fn create_batch(&self, b: &NewBatch) -> Result<bool, StoreError> {
        let mut inv = CREATE.key(self.keys.batch(&b.id));
        inv.arg(self.ttl_ms);
        for (k, v) in b.fields() {
            inv.arg(k).arg(v);
        }
        let created = match self.run_one(&inv).await? {
            redis::Value::Int(n) => n,
            other => return Err(StoreError::Reply(format!("create: {other:?}"))),
        };
        if created == 1 {
            self.note_tenant(&b.id, b.tenant.as_deref());
        }
        Ok(created == 1)
    }

    /// Notes the digest of the message of chunk `index` of a batch, before
    /// it is published: a message for that place with other work is then
    /// refused. Kept as long as open work is ([`OPEN_TTL_MS`]): it only
    /// matters while the chunk may still be queued.
    pub async fn note_chunk_digest(
        &self,
        batch: &JobId,
        index: u32,
        digest: &str,
    ) -> Result<(), StoreError> {
        let key = self.keys.chunk_digests(batch);
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(index)
            .arg(digest)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(OPEN_TTL_MS);
        // Held by the replicas too (redis.min_replicas_ack) before the
        // chunk is published.
        self.conn.query(&pipe, &[], true).await?;
        Ok(())
    }

    /// Marks a batch failed (e.g. its chunks could not all be enqueued).
    pub async fn fail_batch(&self, id: &JobId, error: &JobError) -> Result<(), StoreError> {
        let quota = self.quota_of_one(Subject::Batch(*id)).await?;
        let mut inv = TRANSITION_BATCH.key(self.keys.batch(id));
        inv.key(self.keys.chunk_results(id))
            .key(self.keys.chunk_dead(id));
        self.with_quota(&mut inv, &quota);
        inv.arg("failed")
            .arg(2)
            .arg(self.ttl_ms)
            .arg(self.done_arg())
            .arg(id.to_string())
            .arg("")
            .arg("finished_at")
            .arg(crate::job::now_ms())
            .arg("error")
            .arg(serde_json::to_string(error).expect("error serialises"));
        self.run_one(&inv).await?;
        Ok(())
    }

    /// Reads a batch; `None` if unknown or expired.
    pub async fn get_batch(&self, id: &JobId) -> Result<Option<BatchRecord>, StoreError> {
        let mut c = self.conn.clone();
        let f: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.batch(id))
            .query_async(&mut c)
            .await?;
        if f.is_empty() {
            return Ok(None);
        }
        parse_batch(*id, f).map(Some)
    }

    /// The chunks of a batch whose results are stored (run or
    /// dead-lettered), in order: what a running batch has finished. Once
    /// stored, a chunk's results stay as they are, unless a dead-letter
    /// replay reopens a dead-lettered chunk to run it again.
    pub async fn finished_chunks(&self, id: &JobId) -> Result<Vec<u32>, StoreError> {
        let mut c = self.conn.clone();
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(self.keys.chunk_results(id))
            .query_async(&mut c)
            .await?;
        // Fields this process did not write in this shape are not chunks.
        let mut out: Vec<u32> = fields.iter().filter_map(|f| f.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Reads the stored results of the chunks `indices` (missing ones are
    /// `None`), from the current layout only: for a batch that is still
    /// running, which never has the earlier one.
    pub async fn get_chunks_at(
        &self,
        id: &JobId,
        indices: &[u32],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        Ok(redis::cmd("HMGET")
            .arg(self.keys.chunk_results(id))
            .arg(indices)
            .query_async(&mut c)
            .await?)
    }

    /// Reads the stored results of chunks `from..to` (missing ones are
    /// `None`).
    pub async fn get_chunks(
        &self,
        id: &JobId,
        from: u32,
        to: u32,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = self
            .get_chunks_at(id, &(from..to).collect::<Vec<u32>>())
            .await?;
        let mut c = self.conn.clone();
        // A batch stored before chunk results were kept in one hash has
        // them under keys of their own (see the upgrade note of
        // `crate::keys`).
        let missing: Vec<u32> = (from..to)
            .zip(&out)
            .filter(|(_, r)| r.is_none())
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            let legacy: Vec<String> = missing
                .iter()
                .map(|&i| self.keys.legacy_chunk(id, i))
                .collect();
            let found: Vec<Option<String>> =
                redis::cmd("MGET").arg(legacy).query_async(&mut c).await?;
            for (i, r) in missing.into_iter().zip(found) {
                out[(i - from) as usize] = r;
            }
        }
        Ok(out)
    }

    /// Deletes a batch's record and results (after a failed enqueue).
    pub async fn delete_batch(&self, id: &JobId) -> Result<(), StoreError> {
        let keys = [
            self.keys.batch(id),
            self.keys.chunk_digests(id),
            self.keys.chunk_results(id),
            self.keys.chunk_dead(id),
        ];
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut c).await?;
        Ok(())
    }

    /// Records a dead-lettered chunk, as its (untrusted) message names it:
    /// every row fails with `error`. `Yes` if counted now, `Completed` if
    /// its batch has completed, `Ignored` if its results existed or the
    /// batch is gone, `Forged` if the chunk does not fit its batch.
    pub async fn dead_chunk(&self, msg: &JobMessage, error: &str) -> Result<Applied, StoreError> {
        let Some(c) = msg.work.chunk() else {
            return Ok(Applied::Forged);
        };
        let batch = &msg.record();
        let quota = self.quota_of_one(Subject::Batch(*batch)).await?;
        let mut inv = DEAD_CHUNK.key(self.keys.batch(batch));
        inv.key(self.keys.chunk_results(batch))
            .key(self.keys.chunk_dead(batch))
            .key(self.keys.chunk_digests(batch));
        self.with_quota(&mut inv, &quota);
        inv.arg(c.index)
            .arg(serde_json::to_string(error).expect("a string serialises"))
            .arg(self.ttl_ms)
            .arg(crate::job::now_ms())
            .arg(self.done_arg())
            .arg(batch.to_string())
            .arg(c.first_row)
            .arg(&msg.model)
            .arg(&msg.version)
            .arg(msg.digest())
            // The client's ids, so that the failed rows still carry them.
            .arg(if msg.passthrough.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&msg.passthrough).expect("strings serialise")
            });
        Ok(dead_chunk_of(&self.run_one(&inv).await?))
    }

    /// The call that stores a chunk's results at `now`, with its batch's
    /// tenant's quota keys.
    pub(super) fn store_chunk(
        &self,
        c: &ChunkResult,
        now: u64,
        quota: &Option<[String; 3]>,
    ) -> ScriptInvocation<'static> {
        let mut inv = STORE_CHUNK.key(self.keys.batch(&c.batch));
        inv.key(self.keys.chunk_results(&c.batch))
            .key(self.keys.chunk_dead(&c.batch));
        self.with_quota(&mut inv, quota);
        inv.arg(&c.rows_json)
            .arg(c.succeeded)
            .arg(c.failed)
            .arg(self.ttl_ms)
            .arg(now)
            .arg(self.done_arg())
            .arg(c.batch.to_string())
            .arg(c.index);
        inv
    }

    /// The call that claims the chunk `msg` names (with `rows` rows) at
    /// `now`.
    pub(super) fn claim_chunk(
        &self,
        msg: &JobMessage,
        rows: u64,
        now: u64,
    ) -> ScriptInvocation<'static> {
        let c = msg.work.chunk().unwrap_or(ChunkRef {
            index: u32::MAX,
            first_row: 0,
        });
        let mut inv = CLAIM_CHUNK.key(self.keys.batch(&msg.record()));
        inv.key(self.keys.chunk_results(&msg.record()))
            .key(self.keys.chunk_digests(&msg.record()))
            .arg(now)
            .arg(self.ttl_ms)
            .arg(c.index)
            .arg(c.first_row)
            .arg(rows)
            .arg(&msg.model)
            .arg(&msg.version)
            .arg(msg.digest());
        inv
    }
}

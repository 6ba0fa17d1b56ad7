//! The Redis key schema, the scripts that guard job state, and the
//! [`JobStore`] both sides use.
//!
//! A job lives in one hash, `<ns>:{<id>}:job`; a bulk batch in
//! `<ns>:{<id>}:batch`, with one string per chunk of results,
//! `<ns>:{<id>}:chunk:<n>`. The braces are a hash tag: the keys of one job
//! or batch share a Redis Cluster slot. The scripts also update the
//! owner's quota (`<ns>:quota:{<tenant>}`, another slot), so they need a
//! standalone Redis (or one primary); a cluster would need the quota kept
//! apart.
//! State changes go through Lua scripts that apply the rule of
//! [`JobStatus::may_replace`](crate::job::JobStatus::may_replace): terminal
//! states never change and ranks never go down. Every write refreshes the
//! TTL, so records expire after the retention period. Reaching a terminal
//! state publishes the job id on `<ns>:done`, which wakes long-polls.

use crate::config::RedisConfig;
use crate::job::{JobError, JobId, JobStatus, Priority};
use crate::keys::{Keys, Subject};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;

/// A Redis failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A command failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply did not have the expected shape.
    #[error("unexpected redis reply: {0}")]
    Reply(String),
}

impl StoreError {
    /// Whether trying again later may succeed (connection and timeout
    /// problems), as opposed to a bug or a refused command.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ClusterDown
                        )
                    )
            }
            StoreError::Reply(_) => false,
        }
    }
}

/// How long a job or batch that has not ended is kept at least, whatever
/// its retention: a record must not expire while its work is still
/// queued (a weekend without workers, a long backlog), or its client would
/// be told `404` and its messages would find nothing to run for. Only a
/// record whose message was lost outright (purged by hand) waits this out.
pub const OPEN_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// Functions every state script starts with.
///
/// `ttl(rec, default)`: how long a record (and its parts) is kept from
/// now: its retention (its `retention_ms`, set from its tenant's, or the
/// store's) once it has ended, and at least [`OPEN_TTL_MS`] while it has
/// not. `release(rec, n)`: a job or batch whose
/// rows stop being open (`n` of them, or all when `nil`) gives them back to
/// its tenant's quota (see [`crate::tenants`]); releasing is idempotent,
/// since only what is still registered can be given back. The quota keys
/// are named from the record's key and its `tenant` field.
const PRELUDE: &str = r"
local function ttl(rec, default)
  local f = redis.call('HMGET', rec, 'retention_ms', 'rank')
  local r = math.min(tonumber(f[1]) or tonumber(default), 315360000000)
  if (tonumber(f[2]) or 0) < 2 then return math.max(r, OPEN_TTL_MS) end
  return r
end
local function release(rec, n)
  local t = redis.call('HGET', rec, 'tenant')
  if not t then return end
  local id = string.match(rec, ':{([^}]*)}:')
  local q = string.match(rec, '^(.*):{') .. ':quota:{' .. t .. '}'
  local have = tonumber(redis.call('HGET', q .. ':open', id))
  if not have then return end
  n = tonumber(n)
  if n == nil or n >= have then
    redis.call('HDEL', q .. ':open', id)
    redis.call('ZREM', q .. ':due', id)
    n = have
  else
    redis.call('HINCRBY', q .. ':open', id, -n)
  end
  redis.call('HINCRBY', q, 'sum', -n)
end
";

/// Checks that a chunk message's place agrees with its batch (fields
/// `total`, `chunk_rows`, `chunks`, `model`, `version` in `f[2..6]`):
/// index, first row, row count and model (`chunk_misfit`); and that its
/// digest is the one the producer noted for that place (`chunk_forged`; a
/// batch of an earlier release has none). Each returns why not, or nil. A
/// chunk message is untrusted: a made-up one must not finish a batch
/// early, count rows twice, or run other inputs as the batch's.
const CHUNK_CHECK: &str = r"
local function chunk_misfit(f, index, first_row, rows, model, version)
  local total, per, chunks = tonumber(f[2]) or 0, tonumber(f[3]) or 0, tonumber(f[4]) or 0
  index, first_row = tonumber(index), tonumber(first_row)
  if index == nil or index < 0 or index >= chunks then return 'chunk index out of range' end
  if first_row ~= index * per + 1 then return 'chunk first_row does not match its batch' end
  local want = math.min(per, total - index * per)
  if rows ~= '' and tonumber(rows) ~= want then return 'chunk row count does not match its batch' end
  if f[5] ~= model or f[6] ~= version then return 'chunk model does not match its batch' end
  return nil
end
local function chunk_forged(digests, index, digest)
  local want = redis.call('HGET', digests, index)
  if want and want ~= digest then return 'chunk inputs do not match its batch' end
  return nil
end
";

/// Gives a batch's chunk results (and their dead-letter marks) `keep` ms
/// from now: the batch's retention once it has ended, or the open TTL
/// again when it is reopened. `chunk0` is the key of chunk 0, from which
/// the others' are named.
const EXPIRE_PARTS: &str = r"
local function expire_parts(results, dead, keep)
  redis.call('PEXPIRE', results, keep)
  redis.call('PEXPIRE', dead, keep)
end
";

/// Ends a batch whose every chunk is stored, if it is still open, and
/// gives its chunks' results the batch's retention from now. Returns
/// whether the batch has completed (now, or before: a retry after a lost
/// reply must still announce it). KEYS: the batch; `chunk0` the key of
/// chunk 0, from which the others' are named.
const COMPLETE: &str = r"
local function complete(batch, results, dead, now, channel, id, default)
  local f = redis.call('HMGET', batch, 'status', 'done_chunks', 'chunks')
  local chunks = tonumber(f[3]) or 0
  if (tonumber(f[2]) or 0) >= chunks and (f[1] == 'queued' or f[1] == 'running') then
    redis.call('HSET', batch, 'status', 'succeeded', 'rank', 2, 'finished_at', now)
    release(batch, nil)
    local keep = ttl(batch, default)
    redis.call('PEXPIRE', batch, keep)
    expire_parts(results, dead, keep)
    redis.call('PUBLISH', channel, id)
    return true
  end
  return f[1] == 'succeeded'
end
";

/// A state script: [`PRELUDE`] and `body`.
fn script(body: &str) -> Script {
    Script::new(&format!(
        "local OPEN_TTL_MS = {OPEN_TTL_MS}\n{PRELUDE}{CHUNK_CHECK}{EXPIRE_PARTS}{COMPLETE}{body}"
    ))
}

/// Creates a record unless one exists. KEYS[1] job; ARGV[1] TTL (ms);
/// ARGV[2..] field/value pairs. Returns 1 if created, 0 if it existed.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return 1
",
    )
});

/// Takes a job's share of its tenant's quota and, if granted, creates its
/// record, in one step. KEYS[1] job; KEYS[2..4] the quota keys; ARGV[1]
/// TTL (ms); ARGV[2..7] the quota arguments; ARGV[8..] field/value pairs.
/// Returns the admission's reply (see [`crate::tenants::ADMIT_FN`]), or
/// {'exists', 0}.
static CREATE_ADMITTED: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        "{}{}",
        crate::tenants::ADMIT_FN,
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', 0} end
local a = admit(KEYS[2], KEYS[3], KEYS[4], {unpack(ARGV, 2, 7)})
if a[1] ~= 'ok' then return a end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return a
"
    ))
});

/// Moves a job to a new state if the rules allow. KEYS[1] job; ARGV[1]
/// status; ARGV[2] its rank; ARGV[3] TTL (ms); ARGV[4] channel to publish
/// terminal ids on; ARGV[5] job id; ARGV[6] the digest the record must
/// keep ('' to skip the check: the caller holds a claimed message);
/// ARGV[7..] more field/value pairs; for a batch, KEYS[2] its chunk 0,
/// so its stored chunks get its retention when it ends. The record's
/// `error` is replaced by the one given, or removed: every state carries
/// its own. Returns 'ok',
/// 'missing' (no record: one is never made from a message), 'forged' (the
/// digest differs) or the stored status that refused the change.
static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank', 'digest')
local rank = tonumber(ARGV[2])
if not cur[1] then return 'missing' end
if ARGV[6] ~= '' and cur[3] and cur[3] ~= ARGV[6] then return 'forged' end
local cur_rank = tonumber(cur[2]) or 0
if cur_rank >= 2 or rank < cur_rank then return cur[1] end
redis.call('HDEL', KEYS[1], 'error')
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'rank', ARGV[2], unpack(ARGV, 7))
if KEYS[2] and rank >= 2 then expire_parts(KEYS[2], KEYS[3], ttl(KEYS[1], ARGV[3])) end
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[3]))
if rank >= 2 then
  release(KEYS[1], nil)
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 'ok'
",
    )
});

/// A worker takes a job: unless it is terminal, mark it running and count
/// the attempt; past its deadline, it expires here instead. KEYS[1] job;
/// ARGV[1] TTL (ms); ARGV[2] the message's digest; ARGV[3] its deadline
/// (epoch ms, 0 for none); ARGV[4] now (ms); ARGV[5] channel; ARGV[6] job
/// id. Returns {what, webhook, attempt}: what is 'run', 'skip' (terminal:
/// do not run), 'expired' (now), 'missing' (no record) or 'forged' (the
/// message is not the one the job was accepted with); webhook is 1 when
/// the record asks for a callback.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local cur = redis.call('HMGET', KEYS[1], 'status', 'rank', 'digest', 'webhook_url')
if not cur[1] then return {'missing', 0, 0} end
if cur[3] and cur[3] ~= ARGV[2] then return {'forged', 0, 0} end
local hook = (cur[4] and cur[1] ~= 'cancelled') and 1 or 0
if (tonumber(cur[2]) or 0) >= 2 then return {'skip', hook, 0} end
local deadline = tonumber(ARGV[3])
if deadline > 0 and tonumber(ARGV[4]) > deadline then
  redis.call('HDEL', KEYS[1], 'error')
  redis.call('HSET', KEYS[1], 'status', 'expired', 'rank', 2, 'finished_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
  release(KEYS[1], nil)
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return {'expired', hook, 0}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1)
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[1]))
return {'run', hook, n}
",
    )
});

/// Cancels a job or batch if it is in one of the given states. KEYS[1]
/// record; ARGV[1] now (ms); ARGV[2] channel; ARGV[3] id; ARGV[4] TTL (ms);
/// ARGV[5..] states that may be cancelled. Returns 'ok', 'missing', or the
/// status that refused.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
for i = 5, #ARGV do
  if st == ARGV[i] then
    redis.call('HDEL', KEYS[1], 'error')
    redis.call('HSET', KEYS[1], 'status', 'cancelled', 'rank', 2, 'finished_at', ARGV[1])
    local keep = ttl(KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[1], keep)
    if KEYS[2] then expire_parts(KEYS[2], KEYS[3], keep) end
    release(KEYS[1], nil)
    redis.call('PUBLISH', ARGV[2], ARGV[3])
    return 'ok'
  end
end
return st
",
    )
});

/// A worker takes a bulk chunk. KEYS[1] batch; KEYS[2] chunk result;
/// KEYS[3] the batch's chunk digests; ARGV[1] now (ms); ARGV[2] TTL (ms);
/// ARGV[3] chunk index; ARGV[4] its first row; ARGV[5] its rows; ARGV[6]
/// model; ARGV[7] version; ARGV[8] the message's digest. Returns
/// {what, webhook}: what is 'run', 'skip' (stored before, or the batch
/// ended), 'missing' (no batch) or the reason the chunk does not fit its
/// batch; webhook is 1 when the batch asks for a callback (announced once
/// a store completes it) and, for a skipped chunk, only when the batch
/// has completed (so a redelivery announces it again).
static CLAIM_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version', 'webhook_url')
local st = f[1]
if not st then return {'missing', 0} end
if st == 'cancelled' or st == 'failed' or st == 'expired' then return {'skip', 0} end
local misfit = chunk_misfit(f, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  or chunk_forged(KEYS[3], ARGV[3], ARGV[8])
if misfit then return {misfit, 0} end
local hook = f[7] and 1 or 0
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  if st == 'succeeded' then return {'skip', hook} end
  return {'skip', 0}
end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1, 'started_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], ARGV[2]))
end
return {'run', hook}
",
    )
});

/// Stores a chunk's results once and counts them; the last chunk completes
/// the batch. KEYS[1] batch; KEYS[2] chunk result; KEYS[3] chunk 0's
/// result; ARGV[1] results JSON; ARGV[2] rows that succeeded; ARGV[3] rows
/// that failed; ARGV[4] TTL (ms); ARGV[5] now (ms); ARGV[6] channel;
/// ARGV[7] batch id. Returns 'done' when the batch has completed (now or
/// before, so a retry after a lost reply still announces it), else 'ok',
/// 'dup' (stored before) or 'missing'.
static STORE_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('HEXISTS', KEYS[1], 'erased') == 1 then return 'missing' end
local keep = ttl(KEYS[1], ARGV[4])
local fresh = redis.call('HSETNX', KEYS[2], ARGV[8], ARGV[1]) == 1
if fresh then
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('HINCRBY', KEYS[1], 'succeeded', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  release(KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], 'done_chunks', 1)
end
if complete(KEYS[1], KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[4]) then return 'done' end
if fresh then return 'ok' end
return 'dup'
",
    )
});

/// Records a dead-lettered chunk: every row of it fails with the given
/// error, once, and the batch counts them. KEYS[1] batch; KEYS[2] chunk;
/// KEYS[3] chunk 0; KEYS[4] the batch's chunk digests; ARGV[1] chunk
/// index; ARGV[2] the error as a JSON string; ARGV[3] TTL (ms); ARGV[4]
/// now (ms); ARGV[5] channel; ARGV[6] batch id; ARGV[7] the message's
/// first row; ARGV[8] model; ARGV[9] version; ARGV[10] its digest. Returns 'done' (the batch has completed), 'ok', 'dup',
/// 'missing', or why the chunk does not fit its batch.
static DEAD_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version', 'erased')
if not f[1] or f[7] then return 'missing' end
local misfit = chunk_misfit(f, ARGV[1], ARGV[7], '', ARGV[8], ARGV[9])
  or chunk_forged(KEYS[4], ARGV[1], ARGV[10])
if misfit then return misfit end
local keep = ttl(KEYS[1], ARGV[3])
local per = tonumber(f[3])
local rows = math.min(per, tonumber(f[2]) - tonumber(ARGV[1]) * per)
local body = '[' .. string.rep(ARGV[2] .. ',', rows - 1) .. ARGV[2] .. ']'
local fresh = redis.call('HSETNX', KEYS[2], ARGV[1], body) == 1
if fresh then
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('HINCRBY', KEYS[1], 'failed', rows)
  release(KEYS[1], rows)
  redis.call('HSET', KEYS[3], ARGV[1], rows)
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('HINCRBY', KEYS[1], 'done_chunks', 1)
end
if complete(KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[3]) then return 'done' end
if fresh then return 'ok' end
return 'dup'
",
    )
});

/// Reopens a dead-lettered job for a replay: `failed` with code
/// `dead_lettered` goes back to `queued`, and `reopened` counts it (its
/// next terminal state is a new webhook event); nothing else changes.
/// KEYS[1] job; ARGV[1] the dead letter's digest, which must be the
/// record's. Returns 'ok', 'missing', 'forged' or the status that refused.
static REOPEN_JOB: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local cur = redis.call('HMGET', KEYS[1], 'status', 'error', 'digest')
if not cur[1] then return 'missing' end
if cur[3] and cur[3] ~= ARGV[1] then return 'forged' end
if cur[1] ~= 'failed' or not cur[2] or not string.find(cur[2], '"code":"dead_lettered"', 1, true) then
  return cur[1]
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'rank', 0)
redis.call('HDEL', KEYS[1], 'error', 'finished_at')
redis.call('HINCRBY', KEYS[1], 'reopened', 1)
redis.call('PEXPIRE', KEYS[1], ttl(KEYS[1], 0))
return 'ok'
"#,
    )
});

/// Reopens a dead-lettered chunk for a replay: its dead-letter results are
/// removed and uncounted, and its batch runs again (its stored chunks
/// kept while it is open again). KEYS[1] batch; KEYS[2] chunk; KEYS[3]
/// chunk 0; KEYS[4] the batch's chunk digests; ARGV[1] index; ARGV[2]
/// first row; ARGV[3] model; ARGV[4] version; ARGV[5] digest, as the dead
/// letter says. Returns 'ok', 'missing', 'not_dead',
/// why the chunk does not fit its batch, or the status of a batch that
/// was cancelled or failed (and so is not reopened).
static REOPEN_CHUNK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local f = redis.call('HMGET', KEYS[1], 'status', 'total', 'chunk_rows', 'chunks', 'model', 'version')
local st = f[1]
if not st then return 'missing' end
if st == 'cancelled' or st == 'failed' then return st end
local misfit = chunk_misfit(f, ARGV[1], ARGV[2], '', ARGV[3], ARGV[4])
  or chunk_forged(KEYS[4], ARGV[1], ARGV[5])
if misfit then return misfit end
local rows = tonumber(redis.call('HGET', KEYS[3], ARGV[1]))
if not rows then return 'not_dead' end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'failed', -rows)
redis.call('HINCRBY', KEYS[1], 'done_chunks', -1)
if redis.call('HGET', KEYS[1], 'status') == 'succeeded' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'rank', 1)
  redis.call('HDEL', KEYS[1], 'finished_at')
  redis.call('HINCRBY', KEYS[1], 'reopened', 1)
  local keep = ttl(KEYS[1], 0)
  redis.call('PEXPIRE', KEYS[1], keep)
  expire_parts(KEYS[2], KEYS[3], keep)
end
return 'ok'
",
    )
});

/// How long the tombstone of an erased job or batch lasts at least: a
/// message of it still queued within this time is dropped unrun, and a
/// webhook retry of it is dropped unsent.
pub const TOMBSTONE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Erases a job or batch: its results, delivery logs and every field but
/// its tenant, leaving a `cancelled` tombstone marked `erased` (so a
/// message still queued for it does not run) for its retention, and at
/// least [`TOMBSTONE_MS`]. KEYS[1] record; KEYS[2..] the keys to delete
/// with it (its results, dead marks, digests, event records and delivery
/// log); ARGV[1] channel; ARGV[2] TTL (ms); ARGV[3] the tombstone's least
/// lifetime (ms); ARGV[4] its id; ARGV[5] how often it was reopened, as
/// the caller counted its event records. Returns 'ok', 'missing', or
/// 'moved' (it was reopened since: nothing done, count again).
static ERASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local f = redis.call('HMGET', KEYS[1], 'tenant', 'reopened')
if (tonumber(f[2]) or 0) ~= tonumber(ARGV[5]) then return 'moved' end
local keep = math.max(ttl(KEYS[1], ARGV[2]), tonumber(ARGV[3]))
release(KEYS[1], nil)
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'rank', 2, 'erased', 1)
if f[1] then redis.call('HSET', KEYS[1], 'tenant', f[1]) end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PUBLISH', ARGV[1], ARGV[4])
return 'ok'
",
    )
});

/// The fields of a new job record.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// Client metadata (JSON text), kept with the job.
    pub metadata: Option<String>,
    /// Where the job's terminal event is sent.
    pub webhook_url: Option<String>,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// How long its record is kept after each change; the store's
    /// retention when unset.
    pub retention_ms: Option<u64>,
    /// [`JobMessage::digest`](crate::message::JobMessage::digest) of the
    /// job's message: a message for this id that does not match it is not
    /// run.
    pub digest: String,
}

impl NewJob {
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("priority", self.priority.as_str().to_string()),
            ("created_at", self.created_at_ms.to_string()),
            ("digest", self.digest.clone()),
        ];
        if let Some(m) = &self.metadata {
            f.push(("metadata", m.clone()));
        }
        if let Some(u) = &self.webhook_url {
            f.push(("webhook_url", u.clone()));
        }
        if let Some(t) = &self.tenant {
            f.push(("tenant", t.clone()));
        }
        if let Some(ms) = self.retention_ms {
            f.push(("retention_ms", ms.to_string()));
        }
        f
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id.
    pub id: JobId,
    /// Current state.
    pub status: JobStatus,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// The named outputs, as JSON text, once succeeded.
    pub output: Option<String>,
    /// Why it failed, once failed.
    pub error: Option<JobError>,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// When it reached a terminal state (epoch ms).
    pub finished_at_ms: Option<u64>,
    /// How many times a worker took it.
    pub attempts: u32,
    /// Client metadata (JSON text).
    pub metadata: Option<String>,
    /// Where the job's terminal event is sent.
    pub webhook_url: Option<String>,
    /// Times it was reopened after ending (a dead letter replayed); each
    /// end is an event of its own.
    pub reopened: u32,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// Erased on its tenant's request: only this tombstone is left, so a
    /// message still queued for it does not run.
    pub erased: bool,
}

/// A state change to apply.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub status: JobStatus,
    /// Output JSON text, for `succeeded`.
    pub output: Option<String>,
    /// Reason, for `failed` (and the last one, for `retrying`).
    pub error: Option<JobError>,
}

impl Transition {
    /// `succeeded` with its output JSON.
    pub fn succeeded(output: String) -> Self {
        Self {
            status: JobStatus::Succeeded,
            output: Some(output),
            error: None,
        }
    }

    /// `failed` with a reason.
    pub fn failed(error: JobError) -> Self {
        Self {
            status: JobStatus::Failed,
            output: None,
            error: Some(error),
        }
    }

    /// Any state without payload.
    pub fn to(status: JobStatus) -> Self {
        Self {
            status,
            output: None,
            error: None,
        }
    }
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new state is stored.
    Yes,
    /// A chunk's results are stored and its batch is complete.
    Completed,
    /// Refused: the stored state (terminal, or of higher rank) stays.
    Refused(JobStatus),
    /// A chunk whose results were stored before, or a job or batch with
    /// no record (it is never made from a message).
    Ignored,
    /// The message is not the one its job was accepted with.
    Forged,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Run it: for single jobs, attempt number `attempt` (0 for chunks).
    Run {
        /// The attempt.
        attempt: u32,
        /// Whether its record asks for a callback.
        webhook: bool,
    },
    /// Do not run, just acknowledge: already terminal (cancelled, done,
    /// erased), or already stored; `webhook` when its end is to be
    /// announced (again: the dispatcher sends each event once).
    Skip {
        /// Whether its end is announced.
        webhook: bool,
    },
    /// Its deadline passed: it is `expired` now.
    Expired {
        /// Whether its end is announced.
        webhook: bool,
    },
    /// The message names no record, or does not match it: it is
    /// dead-lettered with this reason, and nothing is written.
    Refused(String),
}

/// What to claim: a single job, or one chunk of a batch, as its (decoded,
/// untrusted) message names it.
#[derive(Debug, Clone, Copy)]
pub enum ClaimOf<'a> {
    /// A single job.
    Job(&'a crate::message::JobMessage),
    /// A chunk of a batch, with its rows.
    Chunk(&'a crate::message::JobMessage, u64),
}

/// A result to store.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// A single job's new state.
    Job(JobId, &'a Transition),
    /// A chunk's results.
    Chunk(&'a ChunkResult),
}

/// The results of one chunk of a batch.
#[derive(Debug, Clone)]
pub struct ChunkResult {
    /// The batch.
    pub batch: JobId,
    /// The chunk.
    pub index: u32,
    /// One JSON element per row, in order: an array of outputs, or an
    /// error string.
    pub rows_json: String,
    /// Rows with outputs.
    pub succeeded: u32,
    /// Rows with an error.
    pub failed: u32,
}

/// A new bulk batch, recorded once every row is validated.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Batch id.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Data rows.
    pub total: u64,
    /// Chunks the rows travel in.
    pub chunks: u32,
    /// Rows per chunk (the last may hold fewer).
    pub chunk_rows: u32,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// Where `batch.completed` is sent.
    pub webhook_url: Option<String>,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// How long its record and results are kept after each change.
    pub retention_ms: Option<u64>,
    /// The names of the model version's outputs, in order: the results
    /// are rendered with these, so they stay readable after a registry
    /// reload removes the version.
    pub outputs: Vec<String>,
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Batch id.
    pub id: JobId,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: JobStatus,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Data rows.
    pub total: u64,
    /// Chunks.
    pub chunks: u32,
    /// Rows per chunk.
    pub chunk_rows: u32,
    /// Chunks whose results are stored.
    pub done_chunks: u32,
    /// Rows with outputs.
    pub succeeded: u64,
    /// Rows with errors.
    pub failed: u64,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// When a worker took its first chunk (epoch ms).
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state (epoch ms).
    pub finished_at_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<JobError>,
    /// Where `batch.completed` is sent.
    pub webhook_url: Option<String>,
    /// Times it was reopened after completing (a dead-lettered chunk
    /// replayed); each completion is an event of its own.
    pub reopened: u32,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// Erased on its tenant's request (a tombstone).
    pub erased: bool,
    /// The output names recorded at acceptance; empty for a record written
    /// before they were.
    pub outputs: Vec<String>,
}

/// What a replay's reopen did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reopened {
    /// Reopened: the job or chunk runs again.
    Yes,
    /// Not dead-lettered (any more, or yet): nothing reopened.
    No,
    /// The dead letter is not the message its job was accepted with, or
    /// does not fit its batch: it names nothing to reopen.
    Forged(String),
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Now cancelled.
    Yes,
    /// No such record.
    Missing,
    /// Refused: the record is in this state.
    Refused(JobStatus),
}

/// Typed access to job records in Redis.
#[derive(Clone)]
pub struct JobStore {
    conn: ConnectionManager,
    keys: Keys,
    ttl_ms: u64,
}

impl JobStore {
    /// A store over a lazily connected, self-reconnecting connection; every
    /// command and connect attempt is bounded by the configured timeout.
    pub fn new(cfg: &RedisConfig, ns: &str) -> Result<Self, StoreError> {
        let client = cfg.client()?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_cfg)?;
        Ok(Self {
            conn,
            keys: Keys::new(ns),
            ttl_ms: cfg.result_ttl_secs * 1000,
        })
    }

    /// The key schema of the store's namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A clone of the underlying connection, for callers with needs of
    /// their own (readiness checks, tests).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Records a new `queued` job if its tenant's quota grants it (one
    /// round trip for both); the refusal otherwise, and nothing recorded.
    pub async fn create_admitted(
        &self,
        job: &NewJob,
        quota: &crate::tenants::QuotaCheck,
    ) -> Result<crate::tenants::Admission, StoreError> {
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
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        let v = self
            .run(&pipe)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Reply("empty reply".into()))?;
        let (what, n): (String, f64) =
            redis::from_redis_value(v).map_err(|e| StoreError::Reply(e.to_string()))?;
        if what == "exists" {
            return Err(StoreError::Reply(format!("job {} exists", job.id)));
        }
        quota.answer(&what, n)
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

    /// Stores job transitions and chunk results in one round trip.
    pub async fn write_many(&self, writes: &[Write<'_>]) -> Result<Vec<Applied>, StoreError> {
        let mut pipe = redis::pipe();
        let channel = self.keys.done_channel();
        let now = crate::job::now_ms();
        for w in writes {
            match w {
                Write::Job(id, t) => {
                    let mut inv = TRANSITION.key(self.keys.job(id));
                    inv.arg(t.status.as_str())
                        .arg(t.status.rank())
                        .arg(self.ttl_ms)
                        .arg(&channel)
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
                    pipe.invoke_script(&inv);
                }
                Write::Chunk(c) => {
                    let mut inv = STORE_CHUNK.key(self.keys.batch(&c.batch));
                    inv.key(self.keys.chunk_results(&c.batch))
                        .key(self.keys.chunk_dead(&c.batch))
                        .arg(&c.rows_json)
                        .arg(c.succeeded)
                        .arg(c.failed)
                        .arg(self.ttl_ms)
                        .arg(now)
                        .arg(&channel)
                        .arg(c.batch.to_string())
                        .arg(c.index);
                    pipe.invoke_script(&inv);
                }
            }
        }
        let values = self.run(&pipe).await?;
        values
            .into_iter()
            .map(|v| match text_of(&v).as_deref() {
                Some("ok") => Ok(Applied::Yes),
                Some("done") => Ok(Applied::Completed),
                Some("dup") | Some("missing") => Ok(Applied::Ignored),
                Some("forged") => Ok(Applied::Forged),
                _ => status_of(&v).map(Applied::Refused),
            })
            .collect()
    }

    /// Claims jobs and chunks in one round trip (see [`Claim`]).
    pub async fn claim_many(&self, items: &[ClaimOf<'_>]) -> Result<Vec<Claim>, StoreError> {
        let mut pipe = redis::pipe();
        let now = crate::job::now_ms();
        let channel = self.keys.done_channel();
        for item in items {
            match item {
                ClaimOf::Job(msg) => {
                    let mut inv = CLAIM.key(self.keys.job(&msg.id));
                    inv.arg(self.ttl_ms)
                        .arg(msg.digest())
                        .arg(msg.deadline_at_ms.unwrap_or(0))
                        .arg(now)
                        .arg(&channel)
                        .arg(msg.id.to_string());
                    pipe.invoke_script(&inv);
                }
                ClaimOf::Chunk(msg, rows) => {
                    let c = msg.chunk.unwrap_or(crate::message::ChunkRef {
                        index: u32::MAX,
                        first_row: 0,
                    });
                    let mut inv = CLAIM_CHUNK.key(self.keys.batch(&msg.id));
                    inv.key(self.keys.chunk_results(&msg.id))
                        .key(self.keys.chunk_digests(&msg.id))
                        .arg(now)
                        .arg(self.ttl_ms)
                        .arg(c.index)
                        .arg(c.first_row)
                        .arg(*rows)
                        .arg(&msg.model)
                        .arg(&msg.version)
                        .arg(msg.digest());
                    pipe.invoke_script(&inv);
                }
            }
        }
        let values = self.run(&pipe).await?;
        values.into_iter().map(parse_claim).collect()
    }

    /// Cancels a job or batch if its status is one of `from`.
    pub async fn cancel(
        &self,
        subject: Subject,
        from: &[JobStatus],
    ) -> Result<Cancelled, StoreError> {
        let id = subject.id();
        let mut inv = CANCEL.key(self.keys.record(&subject));
        if let Subject::Batch(id) = &subject {
            // Its stored chunks get its retention too.
            inv.key(self.keys.chunk_results(id))
                .key(self.keys.chunk_dead(id));
        }
        inv.arg(crate::job::now_ms())
            .arg(self.keys.done_channel())
            .arg(id.to_string())
            .arg(self.ttl_ms);
        for st in from {
            inv.arg(st.as_str());
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        let v = self
            .run(&pipe)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Reply("empty reply".into()))?;
        match text_of(&v).as_deref() {
            Some("ok") => Ok(Cancelled::Yes),
            Some("missing") => Ok(Cancelled::Missing),
            _ => status_of(&v).map(Cancelled::Refused),
        }
    }

    /// Records a batch whose rows are all validated, as `queued`.
    pub async fn create_batch(&self, b: &NewBatch) -> Result<bool, StoreError> {
        let mut inv = CREATE.key(self.keys.batch(&b.id));
        inv.arg(self.ttl_ms);
        for (k, v) in [
            ("status", "queued".to_string()),
            ("rank", "0".into()),
            ("model", b.model.clone()),
            ("version", b.version.clone()),
            ("total", b.total.to_string()),
            ("chunks", b.chunks.to_string()),
            ("chunk_rows", b.chunk_rows.to_string()),
            ("done_chunks", "0".into()),
            ("succeeded", "0".into()),
            ("failed", "0".into()),
            ("created_at", b.created_at_ms.to_string()),
        ] {
            inv.arg(k).arg(v);
        }
        if let Some(u) = &b.webhook_url {
            inv.arg("webhook_url").arg(u);
        }
        if let Some(t) = &b.tenant {
            inv.arg("tenant").arg(t);
        }
        if let Some(ms) = b.retention_ms {
            inv.arg("retention_ms").arg(ms);
        }
        inv.arg("outputs")
            .arg(serde_json::to_string(&b.outputs).expect("names serialise"));
        let mut c = self.conn.clone();
        let created: i64 = inv.invoke_async(&mut c).await?;
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
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(OPEN_TTL_MS)
            .ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Marks a batch failed (e.g. its chunks could not all be enqueued).
    pub async fn fail_batch(&self, id: &JobId, error: &JobError) -> Result<(), StoreError> {
        let mut inv = TRANSITION.key(self.keys.batch(id));
        inv.key(self.keys.chunk_results(id))
            .key(self.keys.chunk_dead(id))
            .arg("failed")
            .arg(2)
            .arg(self.ttl_ms)
            .arg(self.keys.done_channel())
            .arg(id.to_string())
            .arg("")
            .arg("finished_at")
            .arg(crate::job::now_ms())
            .arg("error")
            .arg(serde_json::to_string(error).expect("error serialises"));
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        self.run(&pipe).await?;
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
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        Ok(Some(BatchRecord {
            id: *id,
            status: f
                .get("status")
                .and_then(|s| JobStatus::parse(s))
                .ok_or_else(|| StoreError::Reply(format!("batch {id} has no valid status")))?,
            model: f.get("model").cloned().unwrap_or_default(),
            version: f.get("version").cloned().unwrap_or_default(),
            total: num("total").unwrap_or(0),
            chunks: num("chunks").unwrap_or(0) as u32,
            chunk_rows: num("chunk_rows").unwrap_or(0) as u32,
            done_chunks: num("done_chunks").unwrap_or(0) as u32,
            succeeded: num("succeeded").unwrap_or(0),
            failed: num("failed").unwrap_or(0),
            created_at_ms: num("created_at").unwrap_or(0),
            started_at_ms: num("started_at"),
            finished_at_ms: num("finished_at"),
            error: f.get("error").and_then(|e| serde_json::from_str(e).ok()),
            webhook_url: f.get("webhook_url").cloned(),
            reopened: num("reopened").unwrap_or(0) as u32,
            tenant: f.get("tenant").cloned(),
            erased: f.contains_key("erased"),
            outputs: f
                .get("outputs")
                .and_then(|o| serde_json::from_str(o).ok())
                .unwrap_or_default(),
        }))
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
        let mut c = self.conn.clone();
        let mut out: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.chunk_results(id))
            .arg((from..to).collect::<Vec<u32>>())
            .query_async(&mut c)
            .await?;
        // A batch stored before chunk results were kept in one hash has
        // them under keys of their own.
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
    pub async fn dead_chunk(
        &self,
        msg: &crate::message::JobMessage,
        error: &str,
    ) -> Result<Applied, StoreError> {
        let Some(c) = msg.chunk else {
            return Ok(Applied::Forged);
        };
        let batch = &msg.id;
        let mut inv = DEAD_CHUNK.key(self.keys.batch(batch));
        inv.key(self.keys.chunk_results(batch))
            .key(self.keys.chunk_dead(batch))
            .key(self.keys.chunk_digests(batch))
            .arg(c.index)
            .arg(serde_json::to_string(error).expect("a string serialises"))
            .arg(self.ttl_ms)
            .arg(crate::job::now_ms())
            .arg(self.keys.done_channel())
            .arg(batch.to_string())
            .arg(c.first_row)
            .arg(&msg.model)
            .arg(&msg.version)
            .arg(msg.digest());
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        let v = self.run(&pipe).await?.pop();
        Ok(match v.as_ref().and_then(text_of).as_deref() {
            Some("ok") => Applied::Yes,
            Some("done") => Applied::Completed,
            Some("dup") | Some("missing") => Applied::Ignored,
            _ => Applied::Forged,
        })
    }

    /// Records a job as `failed` with `error` if its record exists, is not
    /// terminal, and matches `msg` (the dead-letter recorder's and the
    /// consumer's path, where the message is untrusted and unclaimed).
    pub async fn fail_matching(
        &self,
        msg: &crate::message::JobMessage,
        error: &JobError,
    ) -> Result<Applied, StoreError> {
        let mut inv = TRANSITION.key(self.keys.job(&msg.id));
        inv.arg(JobStatus::Failed.as_str())
            .arg(JobStatus::Failed.rank())
            .arg(self.ttl_ms)
            .arg(self.keys.done_channel())
            .arg(msg.id.to_string())
            .arg(msg.digest())
            .arg("finished_at")
            .arg(crate::job::now_ms())
            .arg("error")
            .arg(serde_json::to_string(error).expect("error serialises"));
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        let v = self
            .run(&pipe)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Reply("empty reply".into()))?;
        match text_of(&v).as_deref() {
            Some("ok") => Ok(Applied::Yes),
            Some("missing") => Ok(Applied::Ignored),
            Some("forged") => Ok(Applied::Forged),
            _ => status_of(&v).map(Applied::Refused),
        }
    }

    /// Erases a job or batch at once: see [`ERASE`]. `false` if there is
    /// no such record.
    pub async fn erase(&self, subject: Subject) -> Result<bool, StoreError> {
        let id = subject.id();
        let record = self.keys.record(&subject);
        // The keys to delete depend on how often the subject was reopened
        // (one event record per end) and, for a batch stored under the
        // earlier layout, on its chunks; the script refuses ('moved') if
        // the count changed meanwhile, and this is tried again.
        for _ in 0..8 {
            let mut c = self.conn.clone();
            let (reopened, chunks): (Option<u32>, Option<u32>) = redis::cmd("HMGET")
                .arg(&record)
                .arg("reopened")
                .arg("chunks")
                .query_async(&mut c)
                .await?;
            let reopened = reopened.unwrap_or(0);
            let mut inv = ERASE.key(&record);
            inv.key(self.keys.deliveries(id));
            for gen in 0..=reopened {
                inv.key(self.keys.webhook(id, gen));
            }
            if let Subject::Batch(id) = &subject {
                inv.key(self.keys.chunk_results(id))
                    .key(self.keys.chunk_dead(id))
                    .key(self.keys.chunk_digests(id));
                for i in 0..chunks.unwrap_or(0) {
                    inv.key(self.keys.legacy_chunk(id, i))
                        .key(self.keys.legacy_chunk_dead(id, i));
                }
            }
            inv.arg(self.keys.done_channel())
                .arg(self.ttl_ms)
                .arg(TOMBSTONE_MS)
                .arg(id.to_string())
                .arg(reopened);
            let mut pipe = redis::pipe();
            pipe.invoke_script(&inv);
            let v = self.run(&pipe).await?.pop();
            match v.as_ref().and_then(text_of).as_deref() {
                Some("moved") => continue,
                answer => return Ok(answer == Some("ok")),
            }
        }
        Err(StoreError::Reply(format!(
            "{id} kept being reopened while it was erased"
        )))
    }

    /// Reopens the job or chunk a dead letter names before a replay, if
    /// the dead letter is the one its record was accepted with (or fits
    /// its batch).
    pub async fn reopen(&self, msg: &crate::message::JobMessage) -> Result<Reopened, StoreError> {
        let id = &msg.id;
        let inv = match msg.chunk {
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
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        let v = self.run(&pipe).await?.pop();
        Ok(match v.as_ref().and_then(text_of).as_deref() {
            Some("ok") => Reopened::Yes,
            Some("forged") => Reopened::Forged("it does not match the job its record holds".into()),
            Some(r) if r.starts_with("chunk ") => Reopened::Forged(r.to_string()),
            _ => Reopened::No,
        })
    }

    /// Runs a pipeline of script calls; after a Redis restart the scripts
    /// are gone (NOSCRIPT), so they are loaded and the pipeline sent again.
    /// A NOSCRIPT reply means the scripts were gone before the pipeline
    /// ran, so nothing of it took effect and the second send is safe.
    async fn run(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut c = self.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                for s in [
                    &*CREATE,
                    &*TRANSITION,
                    &*CLAIM,
                    &*CANCEL,
                    &*CLAIM_CHUNK,
                    &*STORE_CHUNK,
                    &*DEAD_CHUNK,
                    &*REOPEN_JOB,
                    &*REOPEN_CHUNK,
                    &*ERASE,
                    &*CREATE_ADMITTED,
                ] {
                    s.prepare_invoke().load_async(&mut c).await?;
                }
                Ok(pipe.query_async::<Vec<Value>>(&mut c).await?)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A claim script's reply: `{what, webhook[, attempt]}`.
fn parse_claim(v: Value) -> Result<Claim, StoreError> {
    let Value::Array(parts) = &v else {
        return Err(StoreError::Reply(format!("{v:?}")));
    };
    let what = parts.first().and_then(text_of);
    let webhook = matches!(parts.get(1), Some(Value::Int(1)));
    let attempt = match parts.get(2) {
        Some(Value::Int(n)) => (*n).clamp(0, i64::from(u32::MAX)) as u32,
        _ => 0,
    };
    Ok(match what.as_deref() {
        Some("run") => Claim::Run { attempt, webhook },
        Some("skip") => Claim::Skip { webhook },
        Some("expired") => Claim::Expired { webhook },
        Some("missing") => Claim::Refused("no record of it: never accepted, or expired".into()),
        Some("forged") => Claim::Refused("it does not match the job its record holds".into()),
        Some(reason) => Claim::Refused(reason.to_string()),
        None => return Err(StoreError::Reply(format!("{v:?}"))),
    })
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn status_of(v: &Value) -> Result<JobStatus, StoreError> {
    let s = match v {
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => return Err(StoreError::Reply(format!("{other:?}"))),
    };
    JobStatus::parse(&s).ok_or(StoreError::Reply(s))
}

fn parse_record(
    id: JobId,
    mut f: std::collections::HashMap<String, String>,
) -> Result<JobRecord, StoreError> {
    let status = f
        .get("status")
        .and_then(|s| JobStatus::parse(s))
        .ok_or_else(|| StoreError::Reply(format!("job {id} has no valid status")))?;
    let num = |f: &std::collections::HashMap<String, String>, k: &str| {
        f.get(k).and_then(|v| v.parse::<u64>().ok())
    };
    Ok(JobRecord {
        id,
        status,
        priority: match f.get("priority").map(String::as_str) {
            Some("bulk") => Priority::Bulk,
            _ => Priority::Interactive,
        },
        created_at_ms: num(&f, "created_at").unwrap_or(0),
        finished_at_ms: num(&f, "finished_at"),
        attempts: num(&f, "attempts").unwrap_or(0) as u32,
        reopened: num(&f, "reopened").unwrap_or(0) as u32,
        error: f.get("error").and_then(|e| serde_json::from_str(e).ok()),
        model: f.remove("model").unwrap_or_default(),
        version: f.remove("version").unwrap_or_default(),
        output: f.remove("output"),
        metadata: f.remove("metadata"),
        webhook_url: f.remove("webhook_url"),
        tenant: f.remove("tenant"),
        erased: f.contains_key("erased"),
    })
}

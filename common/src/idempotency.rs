//! Idempotency keys: a client that repeats a submission with the same
//! `Idempotency-Key` and the same body gets the original answer and no
//! second job; the same key with another body is a conflict.
//!
//! Each key is one Redis hash, `<ns>:idem:{<sha256 of the key>}`: `state`
//! (`pending` while the first request runs, then `done`), `body` (a hash of
//! the request body), and once done the answer's `status` and `response`.
//! A request that fails leaves no key behind, so the client may retry it.

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// How long a `pending` key blocks repeats if its request never finishes
/// (the producer died mid-request), in milliseconds.
const PENDING_TTL_MS: u64 = 15 * 60 * 1000;

/// Claims a key or reports what it holds. KEYS[1] key; ARGV[1] body hash
/// ('' when not known yet); ARGV[2] pending TTL (ms).
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('HMGET', KEYS[1], 'state', 'body', 'status', 'response')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'body', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if ARGV[1] ~= '' and cur[2] ~= '' and cur[2] ~= ARGV[1] then return {'mismatch'} end
if cur[1] == 'pending' then return {'pending'} end
return {'done', cur[2], cur[3], cur[4]}
",
    )
});

/// What a key said when a request arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use: the request runs; finish or abandon the key afterwards.
    New,
    /// A request with this key is still running.
    Pending,
    /// The key was used with another body.
    Mismatch,
    /// The key's request finished: its body hash and its answer.
    Done {
        /// Hash of the original body.
        body: String,
        /// HTTP status of the original answer.
        status: u16,
        /// JSON body of the original answer.
        response: String,
    },
}

/// A hex SHA-256 digest, used for keys and bodies.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Incremental hashing of a streamed body.
#[derive(Default, Clone)]
pub struct BodyHasher(Sha256);

impl BodyHasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Idempotency keys in Redis.
#[derive(Clone)]
pub struct IdempotencyStore {
    conn: ConnectionManager,
    ns: String,
    ttl_ms: u64,
}

impl IdempotencyStore {
    /// Keys of namespace `ns` kept for `ttl_secs` after their request ends.
    pub fn new(conn: ConnectionManager, ns: &str, ttl_secs: u64) -> Self {
        Self {
            conn,
            ns: ns.to_string(),
            ttl_ms: ttl_secs * 1000,
        }
    }

    /// The Redis key of a client's key (hashed: clients choose its bytes).
    pub fn redis_key(&self, scope: &str, key: &str) -> String {
        format!(
            "{}:idem:{{{}}}",
            self.ns,
            digest(format!("{scope}\n{key}").as_bytes())
        )
    }

    /// Claims `key` for a request whose body hashes to `body` ('' if not
    /// known yet), or reports what the key holds.
    pub async fn begin(&self, key: &str, body: &str) -> redis::RedisResult<Begin> {
        let mut inv = BEGIN.key(key);
        inv.arg(body).arg(PENDING_TTL_MS);
        let mut c = self.conn.clone();
        let v: Vec<Value> = inv.invoke_async(&mut c).await?;
        let text = |i: usize| match v.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        Ok(match text(0).as_str() {
            "new" => Begin::New,
            "pending" => Begin::Pending,
            "mismatch" => Begin::Mismatch,
            _ => Begin::Done {
                body: text(1),
                status: text(2).parse().unwrap_or(200),
                response: text(3),
            },
        })
    }

    /// Stores the answer of a finished request under its key.
    pub async fn finish(
        &self,
        key: &str,
        body: &str,
        status: u16,
        response: &str,
    ) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(
                key,
                &[
                    ("state", "done"),
                    ("body", body),
                    ("status", &status.to_string()),
                    ("response", response),
                ],
            )
            .pexpire(key, self.ttl_ms as i64)
            .query_async::<()>(&mut c)
            .await
    }

    /// Frees a key whose request failed, so the client may retry.
    pub async fn abandon(&self, key: &str) -> redis::RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_hex_sha256() {
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = BodyHasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), digest(b"abc"));
    }
}

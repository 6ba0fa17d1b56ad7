//! Idempotency keys: a client that repeats a submission with the same
//! `Idempotency-Key` and the same body gets the original answer and no
//! second job; the same key with another body is a conflict.
//!
//! Each key is one Redis hash ([`crate::keys::Keys::idempotency`]): `state`
//! (`pending` while the first request runs, then `done`), `owner` (the
//! request that holds it), `body` (a hash of the request body), and once
//! done the answer's `status` and `response`. A request that fails leaves no
//! key behind, so the client may retry it. Only the owner finishes or frees
//! a key, so a request whose pending key expired cannot disturb the next.

use crate::keys::Keys;
use crate::redis_link::RedisLink;
use redis::{Script, Value};
use std::sync::LazyLock;

/// Claims a key or reports what it holds: `lua/idempotency_begin.lua`.
static BEGIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/idempotency_begin.lua")));

/// Stores the answer, if the caller still owns the key:
/// `lua/idempotency_finish.lua`.
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/idempotency_finish.lua")));

/// Frees the key, if the caller still owns it: `lua/idempotency_abandon.lua`.
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/idempotency_abandon.lua")));

/// A claimed key: who holds it and under which Redis key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The Redis key.
    pub key: String,
    /// The request holding it.
    pub owner: String,
}

/// What a key said when a request arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use: the request runs; finish or abandon the key afterwards.
    New(Claimed),
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

/// Idempotency keys in Redis.
#[derive(Clone)]
pub struct IdempotencyStore {
    conn: RedisLink,
    keys: Keys,
    ttl_ms: u64,
}

impl IdempotencyStore {
    /// Keys of namespace `ns` kept for `ttl_secs` after their request ends.
    pub fn new(conn: RedisLink, ns: &str, ttl_secs: u64) -> Self {
        Self {
            conn,
            keys: Keys::new(ns),
            ttl_ms: ttl_secs * 1000,
        }
    }

    /// The Redis key of a client's key (hashed: clients choose its bytes).
    pub fn redis_key(&self, scope: &str, key: &str) -> String {
        self.keys.idempotency(scope, key)
    }

    /// Claims `key` for a request whose body hashes to `body` ('' if not
    /// known yet) for at most `pending_ms`, or reports what the key holds.
    pub async fn begin(&self, key: &str, body: &str, pending_ms: u64) -> redis::RedisResult<Begin> {
        let owner = uuid::Uuid::new_v4().to_string();
        let mut inv = BEGIN.key(key);
        inv.arg(body).arg(pending_ms).arg(&owner);
        let mut c = self.conn.clone();
        let v: Vec<Value> = inv.invoke_async(&mut c).await?;
        let text = |i: usize| match v.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        Ok(match text(0).as_str() {
            "new" => Begin::New(Claimed {
                key: key.to_string(),
                owner,
            }),
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
        claimed: &Claimed,
        body: &str,
        status: u16,
        response: &str,
    ) -> redis::RedisResult<()> {
        let mut inv = FINISH.key(&claimed.key);
        inv.arg(&claimed.owner)
            .arg(body)
            .arg(status)
            .arg(response)
            .arg(self.ttl_ms);
        // Held by the replicas too (redis.min_replicas_ack): a key lost
        // with its primary would let a retry submit the work again.
        let mut pipe = redis::pipe();
        pipe.invoke_script(&inv);
        self.conn.query(&pipe, &[&FINISH], true).await.map(|_| ())
    }

    /// Frees a key whose request failed, so the client may retry.
    pub async fn abandon(&self, claimed: &Claimed) -> redis::RedisResult<()> {
        let mut inv = ABANDON.key(&claimed.key);
        inv.arg(&claimed.owner);
        let mut c = self.conn.clone();
        inv.invoke_async::<i64>(&mut c).await.map(|_| ())
    }
}

//! [`JobStore`]: the connection, the key schema and the retention every
//! store call uses, and the one way scripts are sent.

use super::error::StoreError;
use super::scripts;
use crate::config::RedisConfig;
use crate::job::JobId;
use crate::keys::Keys;
use crate::redis_link::RedisLink;
use crate::retry::Schedule;
use redis::{Pipeline, Value};
use std::sync::Arc;
use std::time::Duration;

/// Attempts at what a script left to do on other slots.
const AFTER_ATTEMPTS: usize = 4;

/// Typed access to job and batch records in Redis.
#[derive(Clone)]
pub struct JobStore {
    pub(super) conn: RedisLink,
    pub(super) keys: Keys,
    pub(super) ttl_ms: u64,
    /// The tenants of subjects this process has seen (a record's tenant
    /// never changes), so the scripts that give quota back are handed its
    /// keys without a round trip of their own (see `quota.rs`).
    pub(super) tenants: moka::sync::Cache<JobId, Option<Arc<str>>>,
}

impl JobStore {
    /// A store over a lazily connected, self-reconnecting connection in
    /// the configured mode; every command and connect attempt is bounded
    /// by the configured timeout.
    pub fn new(cfg: &RedisConfig, ns: &str) -> Result<Self, StoreError> {
        Ok(Self::with_link(RedisLink::new(cfg)?, cfg, ns))
    }

    /// A store over `conn`.
    pub fn with_link(conn: RedisLink, cfg: &RedisConfig, ns: &str) -> Self {
        Self {
            conn,
            keys: Keys::new(ns),
            ttl_ms: cfg.result_ttl_secs * 1000,
            // Least recently used goes first: a subject is looked up soon
            // after it is noted (a claim, then its write), so a frequency
            // filter would only keep new subjects out.
            tenants: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    /// The key schema of the store's namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A clone of the underlying connection, for callers with needs of
    /// their own (readiness checks, tests).
    pub fn connection(&self) -> RedisLink {
        self.conn.clone()
    }

    /// Whether scripts must stay within one slot (a Redis Cluster): the
    /// store then passes them no quota keys and no channel, and does what
    /// they leave to it ([`super::after`]).
    pub(super) fn one_slot_per_script(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The channel the state scripts announce ends on: the `done` channel,
    /// or '' in a cluster (the store announces them on the sharded
    /// channels after the script).
    pub(super) fn done_arg(&self) -> String {
        if self.one_slot_per_script() {
            String::new()
        } else {
            self.keys.done_channel()
        }
    }

    /// Round trip to Redis.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Runs a pipeline of script calls and returns their replies, having
    /// done what the scripts left to do on other slots ([`super::after`]).
    /// With `redis.min_replicas_ack` set, the replicas hold the writes
    /// before this returns.
    pub(super) async fn run(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        self.run_as(pipe, true).await
    }

    /// [`Self::run`], without waiting for replicas when `durable` is
    /// false (claims: a claim lost with its primary only means the job
    /// runs again).
    pub(super) async fn run_as(
        &self,
        pipe: &Pipeline,
        durable: bool,
    ) -> Result<Vec<Value>, StoreError> {
        let mut replies = Vec::with_capacity(pipe.len());
        let mut after = Vec::new();
        for v in self.conn.query(pipe, scripts::all(), durable).await? {
            let (reply, left) = super::after::unwrap(v)?;
            replies.push(reply);
            after.extend(left);
        }
        self.apply_after(after).await;
        Ok(replies)
    }

    /// Does what scripts left to do on other slots ([`super::after`]);
    /// failures are logged, not returned: the scripts' own writes stand
    /// either way, and the quota sweep and the long-polls' re-reads make
    /// up for what is not done.
    async fn apply_after(&self, work: Vec<super::after::After>) {
        if work.is_empty() {
            return;
        }
        let pipe = super::after::pipeline(&work, &self.keys, self.conn.is_cluster());
        let mut schedule =
            Schedule::exponential(Duration::from_millis(50), Duration::from_millis(500));
        for attempt in 1..=AFTER_ATTEMPTS {
            match self.run_plain(&pipe).await {
                Ok(_) => return,
                Err(e) if attempt < AFTER_ATTEMPTS && e.is_retryable() => {
                    tokio::time::sleep(schedule.next().unwrap_or_default()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, items = work.len(), "could not give quota back or announce ends after a state change; the quota sweep and the long-polls' re-reads will");
                    return;
                }
            }
        }
    }

    /// Runs a pipeline (split by slot in a cluster) as it is, loading the
    /// scripts again where a server lost them (see [`RedisLink::query`]).
    pub(super) async fn run_plain(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        Ok(self.conn.query(pipe, scripts::all(), false).await?)
    }

    /// [`Self::run`] for one script call: its reply.
    pub(super) async fn run_one(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(inv);
        self.run(&pipe)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Reply("empty reply".into()))
    }
}

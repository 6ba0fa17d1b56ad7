//! [`JobStore`]: the connection, the key schema and the retention every
//! store call uses, and the one way scripts are sent.

use super::error::StoreError;
use super::scripts;
use crate::config::RedisConfig;
use crate::job::JobId;
use crate::keys::Keys;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Pipeline, Value};
use std::sync::Arc;
use std::time::Duration;

/// Typed access to job and batch records in Redis.
#[derive(Clone)]
pub struct JobStore {
    pub(super) conn: ConnectionManager,
    pub(super) keys: Keys,
    pub(super) ttl_ms: u64,
    /// The tenants of subjects this process has seen (a record's tenant
    /// never changes), so the scripts that give quota back are handed its
    /// keys without a round trip of their own (see `quota.rs`).
    pub(super) tenants: moka::sync::Cache<JobId, Option<Arc<str>>>,
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
            // Least recently used goes first: a subject is looked up soon
            // after it is noted (a claim, then its write), so a frequency
            // filter would only keep new subjects out.
            tenants: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(3600))
                .build(),
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

    /// Runs a pipeline of script calls; after a Redis restart the scripts
    /// are gone (NOSCRIPT), so they are loaded and the pipeline sent again.
    /// A NOSCRIPT reply means the scripts were gone before the pipeline
    /// ran, so nothing of it took effect and the second send is safe.
    pub(super) async fn run(&self, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut c = self.conn.clone();
        match pipe.query_async::<Vec<Value>>(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                for s in scripts::all() {
                    s.prepare_invoke().load_async(&mut c).await?;
                }
                Ok(pipe.query_async::<Vec<Value>>(&mut c).await?)
            }
            Err(e) => Err(e.into()),
        }
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

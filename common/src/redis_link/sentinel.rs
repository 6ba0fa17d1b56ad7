//! The primary a set of Redis Sentinels names, followed through
//! failovers.
//!
//! The `redis` crate's `SentinelClient` finds the primary (it asks the
//! sentinels, then checks the server's `ROLE`); what it lacks is a
//! connection that asks again. [`SentinelLink`] keeps one multiplexed
//! connection to the primary and drops it when a command fails for a
//! reason a failover explains: the connection broke or timed out, or the
//! server now answers `READONLY` (it was demoted) or `MASTERDOWN`. The
//! failed command's error goes to the caller, whose retry policy applies
//! as for any Redis error; the next command asks the sentinels again.

use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    Value,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A connection to the primary the sentinels name; clones share it.
#[derive(Clone)]
pub struct SentinelLink {
    inner: Arc<Inner>,
}

struct Inner {
    /// Asks the sentinels; one lookup at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the primary found last, and its generation.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    timeout: Duration,
}

impl SentinelLink {
    /// A link to `cfg.service` as `cfg.nodes` (the sentinels) know it;
    /// nothing is contacted until the first command. The first node's user
    /// name and password are also used for the primary.
    pub fn new(cfg: &RedisConfig) -> RedisResult<Self> {
        let first = cfg.nodes.first().ok_or_else(|| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, "no sentinels"))
        })?;
        let info = first.as_str().into_connection_info()?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone());
        if first.starts_with("rediss://") {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let sentinels = SentinelClient::build(
            cfg.nodes.clone(),
            cfg.service.as_str(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        Ok(Self {
            inner: Arc::new(Inner {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout)),
                timeout,
            }),
        })
    }

    /// A client of the primary the sentinels name now (for subscriptions,
    /// which need a connection of their own).
    pub async fn primary_client(&self) -> RedisResult<redis::Client> {
        let mut s = self.inner.sentinels.lock().await;
        bounded(self.inner.timeout, s.async_get_client()).await
    }

    /// The connection to the primary, looked up if there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut s = self.inner.sentinels.lock().await;
        // Another caller may have found it while this one waited.
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let conn = bounded(
            self.inner.timeout * 2,
            s.get_async_connection_with_config(&self.inner.config),
        )
        .await?;
        let gen = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            generation = gen,
            "connected to the primary the sentinels name"
        );
        *self.inner.current.lock().expect("sentinel link lock") = Some((gen, conn.clone()));
        Ok((gen, conn))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner
            .current
            .lock()
            .expect("sentinel link lock")
            .clone()
    }

    /// Drops connection `gen` after `e`, if a failover may explain it.
    fn after_error(&self, gen: u64, e: &RedisError) {
        if !failover_may_explain(e) {
            return;
        }
        let mut cur = self.inner.current.lock().expect("sentinel link lock");
        if cur.as_ref().is_some_and(|(g, _)| *g == gen) {
            tracing::warn!(error = %e, "lost the primary; asking the sentinels again");
            *cur = None;
        }
    }
}

/// Whether an error means the server is gone or no longer the primary.
fn failover_may_explain(e: &RedisError) -> bool {
    super::connection_lost(e)
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from the sentinels or the primary in time",
        ))),
    }
}

impl ConnectionLike for SentinelLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (gen, mut conn) = self.connection().await?;
            let r = conn.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.after_error(gen, e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (gen, mut conn) = self.connection().await?;
            let r = conn.req_packed_commands(pipeline, offset, count).await;
            match &r {
                Err(e) => self.after_error(gen, e),
                Ok(values) => {
                    // A pipeline's errors are in its replies.
                    if let Some(Value::ServerError(e)) =
                        values.iter().find(|v| matches!(v, Value::ServerError(_)))
                    {
                        self.after_error(gen, &RedisError::from(e.clone()));
                    }
                }
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failover_errors_drop_the_connection() {
        let readonly = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "READONLY",
        ));
        assert!(failover_may_explain(&readonly));
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(failover_may_explain(&io));
        let wrong = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!failover_may_explain(&wrong));
    }
}

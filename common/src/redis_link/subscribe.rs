//! Pub/sub in every Redis mode: [`subscribe`] listens on channels until
//! shutdown and subscribes again whenever the subscription is lost.
//!
//! - standalone: a pub/sub connection to `redis.url`;
//! - sentinel: one to the primary the sentinels name now (looked up again
//!   after each loss);
//! - cluster: the cluster connection (RESP3), which subscribes each
//!   channel on the node that serves it and subscribes again after
//!   failovers and resharding. [`Channels::Sharded`] channels use sharded
//!   pub/sub (`SSUBSCRIBE`): a message goes only to the node of its
//!   channel's slot, not to every node of the cluster.

use crate::config::{RedisConfig, RedisMode};
use crate::retry::Schedule;
use crate::shutdown::CancellationToken;
use futures_util::StreamExt;
use redis::{PushKind, Value};

/// What to listen on.
#[derive(Debug, Clone)]
pub enum Channels {
    /// Ordinary channels (`SUBSCRIBE`).
    Plain(Vec<String>),
    /// Sharded channels (`SSUBSCRIBE`, cluster mode only).
    Sharded(Vec<String>),
}

/// Subscribes to `channels` until `shutdown`, subscribing again with
/// backoff whenever the subscription is lost: `on_subscribed` runs after
/// each (re)subscription, and after a cluster node's connection was lost
/// (messages may have been missed), `on_message` with each payload.
pub async fn subscribe(
    redis: &RedisConfig,
    channels: Channels,
    what: &str,
    shutdown: &CancellationToken,
    mut on_subscribed: impl FnMut(),
    mut on_message: impl FnMut(&[u8]),
) {
    let mut schedule = Schedule::reconnect();
    loop {
        let outcome = match redis.mode {
            RedisMode::Cluster => {
                listen_cluster(
                    redis,
                    &channels,
                    shutdown,
                    &mut on_subscribed,
                    &mut on_message,
                )
                .await
            }
            _ => {
                listen_single(
                    redis,
                    &channels,
                    shutdown,
                    &mut on_subscribed,
                    &mut on_message,
                )
                .await
            }
        };
        match outcome {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::Lost) => {
                schedule.reset();
                tracing::warn!(what, "subscription lost; subscribing again");
            }
            Err(e) => tracing::warn!(what, error = %e, "cannot subscribe"),
        }
        let wait = schedule.next().unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Ended {
    Shutdown,
    Lost,
}

/// One server: standalone, or the primary the sentinels name now.
async fn listen_single(
    redis: &RedisConfig,
    channels: &Channels,
    shutdown: &CancellationToken,
    on_subscribed: &mut impl FnMut(),
    on_message: &mut impl FnMut(&[u8]),
) -> redis::RedisResult<Ended> {
    let client = match redis.mode {
        RedisMode::Sentinel => super::SentinelLink::new(redis)?.primary_client().await?,
        _ => redis.client()?,
    };
    let mut pubsub = client.get_async_pubsub().await?;
    let names = match channels {
        Channels::Plain(c) => c,
        Channels::Sharded(_) => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "sharded channels are for cluster mode",
            )))
        }
    };
    for c in names {
        pubsub.subscribe(c).await?;
    }
    on_subscribed();
    let mut stream = pubsub.into_on_message();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
            msg = stream.next() => match msg {
                Some(m) => on_message(m.get_payload_bytes()),
                None => return Ok(Ended::Lost),
            }
        }
    }
}

/// A Redis Cluster, over RESP3 pushes.
async fn listen_cluster(
    redis: &RedisConfig,
    channels: &Channels,
    shutdown: &CancellationToken,
    on_subscribed: &mut impl FnMut(),
    on_message: &mut impl FnMut(&[u8]),
) -> redis::RedisResult<Ended> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = super::cluster_client(redis, Some(tx))?;
    let mut conn = client.get_async_connection().await?;
    match channels {
        Channels::Plain(names) => {
            for c in names {
                conn.subscribe(c).await?;
            }
        }
        Channels::Sharded(names) => {
            // One at a time: each lives on the node of its own slot.
            for c in names {
                conn.ssubscribe(c).await?;
            }
        }
    }
    on_subscribed();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
            push = rx.recv() => match push {
                None => return Ok(Ended::Lost),
                Some(p) => match p.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(Value::BulkString(payload)) = p.data.get(1) {
                            on_message(payload);
                        }
                    }
                    // The connection to a node was lost; the cluster
                    // connection subscribes there again, but what was
                    // published meanwhile is gone.
                    PushKind::Disconnection => on_subscribed(),
                    _ => {}
                },
            }
        }
    }
}

//! What sets off a hot reload of the model registry: the registry file's
//! content changing (read every `models_poll_ms`), or a message on the
//! Redis channel `<ns>:registry:reload` (`infq admin models reload`). Each
//! sends `()` on a channel of capacity 1, so bursts come to one reload.

use crate::config::RedisConfig;
use crate::retry::Schedule;
use crate::shutdown::CancellationToken;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// The Redis channel reload requests are published on.
pub fn channel(ns: &str) -> String {
    crate::keys::Keys::new(ns).registry_reload()
}

/// Watches the file and the channel until `shutdown`.
pub async fn triggers(
    redis: RedisConfig,
    ns: String,
    file: PathBuf,
    poll: Duration,
    tx: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    let watch = watch_file(file, poll, tx.clone(), shutdown.clone());
    let listen = listen(redis, channel(&ns), tx, shutdown);
    tokio::join!(watch, listen);
}

async fn watch_file(
    file: PathBuf,
    poll: Duration,
    tx: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    if poll.is_zero() {
        return;
    }
    let mut last = tokio::fs::read(&file).await.ok();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        // A file being rewritten may be read half-way; the reload then
        // fails validation and the next change (or poll) tries again.
        let now = tokio::fs::read(&file).await.ok();
        if now.is_some() && now != last {
            last = now;
            let _ = tx.try_send(());
        }
    }
}

async fn listen(
    redis: RedisConfig,
    channel: String,
    tx: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    subscribe(
        &redis,
        &channel,
        "registry reloads",
        &shutdown,
        || {},
        |_| {
            let _ = tx.try_send(());
        },
    )
    .await;
}

/// Subscribes to `channel` until `shutdown`, resubscribing with backoff
/// whenever the subscription is lost: `on_subscribed` runs after each
/// (re)subscription (messages may have been missed), `on_message` with
/// each payload.
pub async fn subscribe(
    redis: &RedisConfig,
    channel: &str,
    what: &str,
    shutdown: &CancellationToken,
    mut on_subscribed: impl FnMut(),
    mut on_message: impl FnMut(&[u8]),
) {
    let mut schedule = Schedule::reconnect();
    loop {
        let session = async {
            let client = redis.client()?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match session.await {
            Ok(pubsub) => {
                schedule.reset();
                on_subscribed();
                let mut stream = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        msg = stream.next() => match msg {
                            Some(m) => on_message(m.get_payload_bytes()),
                            None => break,
                        }
                    }
                }
                tracing::warn!(what, "subscription lost; resubscribing");
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

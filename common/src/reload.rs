//! What sets off a hot reload of the model registry: the registry file's
//! content changing (read every `models_poll_ms`), or a message on the
//! Redis channel `<ns>:registry:reload` (`infq admin models reload`). Each
//! sends `()` on a channel of capacity 1, so bursts come to one reload.

use crate::config::RedisConfig;
use crate::shutdown::CancellationToken;
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
    crate::redis_link::subscribe::subscribe(
        &redis,
        crate::redis_link::subscribe::Channels::Plain(vec![channel]),
        "registry reloads",
        &shutdown,
        || {},
        |_| {
            let _ = tx.try_send(());
        },
    )
    .await;
}

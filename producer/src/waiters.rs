//! Long-poll wake-ups. One Redis subscription per producer process listens
//! on `<ns>:done`, where the store publishes the id of every job that
//! reaches a terminal state, and wakes the requests waiting for that id.
//! A request also re-reads the job every second, so a lost notification
//! (a reconnect, say) only delays an answer, never loses it.

use infq_common::job::JobId;
use infq_common::shutdown::CancellationToken;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Requests waiting for jobs to finish.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<JobId, (Arc<Notify>, usize)>>,
}

/// A registered wait; unregisters on drop.
pub struct WaitGuard {
    waiters: Arc<Waiters>,
    id: JobId,
    /// Notified when the job reaches a terminal state.
    pub notify: Arc<Notify>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock().expect("waiters lock");
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Waiters {
    /// Registers interest in `id`.
    pub fn register(self: &Arc<Self>, id: JobId) -> WaitGuard {
        let mut map = self.map.lock().expect("waiters lock");
        let entry = map
            .entry(id)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        WaitGuard {
            waiters: self.clone(),
            id,
            notify: entry.0.clone(),
        }
    }

    /// Wakes every request waiting for `id`.
    pub fn wake(&self, id: &JobId) {
        if let Some((n, _)) = self.map.lock().expect("waiters lock").get(id) {
            n.notify_waiters();
        }
    }

    /// Wakes every waiting request (after a reconnect, when notifications
    /// may have been missed).
    pub fn wake_all(&self) {
        for (n, _) in self.map.lock().expect("waiters lock").values() {
            n.notify_waiters();
        }
    }

    /// Number of ids waited for.
    pub fn len(&self) -> usize {
        self.map.lock().expect("waiters lock").len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Subscribes to the channels ends are announced on (`<ns>:done`, or in
/// a Redis Cluster the sharded `<ns>:done:{n}`) and wakes waiters until
/// shutdown, subscribing again with backoff when Redis goes away.
pub async fn listener_task(
    redis: infq_common::config::RedisConfig,
    keys: infq_common::keys::Keys,
    waiters: Arc<Waiters>,
    shutdown: CancellationToken,
) {
    use infq_common::redis_link::subscribe::{subscribe, Channels};
    let channels = match redis.mode {
        infq_common::config::RedisMode::Cluster => Channels::Sharded(keys.done_shards()),
        _ => Channels::Plain(vec![keys.done_channel()]),
    };
    subscribe(
        &redis,
        channels,
        "completions",
        &shutdown,
        || waiters.wake_all(),
        |payload| {
            if let Ok(Ok(id)) = std::str::from_utf8(payload).map(uuid::Uuid::parse_str) {
                waiters.wake(&id);
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_its_job_and_cleans_up() {
        let w = Arc::new(Waiters::default());
        let a = uuid::Uuid::now_v7();
        let b = uuid::Uuid::now_v7();
        let ga = w.register(a);
        let gb = w.register(b);
        let (sa, sb) = (ga.notify.clone(), gb.notify.clone());
        let na = sa.notified();
        let nb = sb.notified();
        tokio::pin!(na, nb);
        na.as_mut().enable();
        nb.as_mut().enable();
        w.wake(&a);
        tokio::time::timeout(std::time::Duration::from_millis(100), na)
            .await
            .expect("a woken");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), nb)
                .await
                .is_err(),
            "b not woken"
        );
        assert_eq!(w.len(), 2);
        drop(ga);
        drop(gb);
        assert!(w.is_empty());
    }
}

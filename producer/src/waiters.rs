//! Long-poll wake-ups. One Redis subscription per producer process listens
//! on `<ns>:done`, where the store publishes the id of every job that
//! reaches a terminal state, and wakes the requests waiting for that id.
//! A request also re-reads the job every second, so a lost notification
//! (a reconnect, say) only delays an answer, never loses it.

use infq_common::job::JobId;
use infq_common::shutdown::CancellationToken;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Requests waiting for jobs to finish.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<JobId, Entry>>,
}

/// One id's wake-up, whether it came, and how many wait for it.
type Entry = (Arc<Notify>, Arc<AtomicBool>, usize);

/// A registered wait; unregisters on drop.
pub struct WaitGuard {
    waiters: Arc<Waiters>,
    id: JobId,
    /// Notified when the job reaches a terminal state.
    pub notify: Arc<Notify>,
    /// Set by every wake-up of this id since it was first registered.
    woken: Arc<AtomicBool>,
}

impl WaitGuard {
    /// Whether a wake-up for this id came since it was registered: a
    /// caller that registered before its job could end, and enabled a
    /// `notify.notified()` before asking, need not read the job while this
    /// is `false`.
    pub fn woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock().expect("waiters lock");
        if let Some(entry) = map.get_mut(&self.id) {
            entry.2 -= 1;
            if entry.2 == 0 {
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
            .or_insert_with(|| (Arc::new(Notify::new()), Arc::default(), 0));
        entry.2 += 1;
        WaitGuard {
            waiters: self.clone(),
            id,
            notify: entry.0.clone(),
            woken: entry.1.clone(),
        }
    }

    /// Wakes every request waiting for `id`.
    pub fn wake(&self, id: &JobId) {
        if let Some((n, woken, _)) = self.map.lock().expect("waiters lock").get(id) {
            woken.store(true, Ordering::Release);
            n.notify_waiters();
        }
    }

    /// Wakes every waiting request (after a reconnect, when notifications
    /// may have been missed).
    pub fn wake_all(&self) {
        for (n, woken, _) in self.map.lock().expect("waiters lock").values() {
            woken.store(true, Ordering::Release);
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
        assert!(ga.woken() && !gb.woken(), "only a's wake-up is remembered");
        assert_eq!(w.len(), 2);
        drop(ga);
        drop(gb);
        assert!(w.is_empty());
    }
}

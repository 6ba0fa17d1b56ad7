//! Queue depths for `/metrics`: a small task on its own broker connection
//! reads each queue's ready messages and consumers every
//! `amqp.stats_interval_ms` with a passive declare (which changes nothing on
//! the broker) and sets the `infq_queue_*` and `infq_dlq_depth` gauges.
//!
//! Workers also pass [`HeadTimes`]: the publish time of the last message
//! their consumers took from each job queue. A job queue is FIFO, so the
//! message at its head was published no earlier than that one; the time
//! since is the age of the oldest ready message as this worker sees it.

use crate::config::AmqpConfig;
use crate::metrics as m;
use crate::shutdown::CancellationToken;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Per job queue, the publish time (epoch ms) of the newest message taken.
#[derive(Debug, Default)]
pub struct HeadTimes {
    slots: HashMap<String, Arc<AtomicU64>>,
    /// When each queue was last seen empty: its head came after that.
    empty_at: HashMap<String, AtomicU64>,
}

impl HeadTimes {
    /// Slots for these queues.
    pub fn new<'a>(queues: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = queues.into_iter().collect();
        Self {
            slots: names
                .iter()
                .map(|q| (q.to_string(), Arc::new(AtomicU64::new(0))))
                .collect(),
            empty_at: names
                .iter()
                .map(|q| (q.to_string(), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// The slot a consumer of `queue` records into (`fetch_max` of each
    /// taken message's publish time); `None` for a queue not watched.
    pub fn slot(&self, queue: &str) -> Option<Arc<AtomicU64>> {
        self.slots.get(queue).cloned()
    }

    /// Seconds the head of `queue` has waited, given `ready` messages on it
    /// at `now_ms`: since the newest message taken was published, or since
    /// the queue was last seen empty, whichever is later; `None` until one
    /// of those is known.
    pub fn oldest_age(&self, queue: &str, ready: u32, now_ms: u64) -> Option<f64> {
        let empty_at = self.empty_at.get(queue);
        if ready == 0 {
            if let Some(e) = empty_at {
                e.store(now_ms, Ordering::Relaxed);
            }
            return Some(0.0);
        }
        let taken = self.slots.get(queue)?.load(Ordering::Relaxed);
        let since = taken.max(empty_at.map_or(0, |e| e.load(Ordering::Relaxed)));
        (since > 0).then(|| now_ms.saturating_sub(since) as f64 / 1000.0)
    }
}

/// What one poll read of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery.
    pub ready: u32,
    /// Consumers attached.
    pub consumers: u32,
}

/// Which queues to watch.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Job queues (and any other queue worth a depth gauge).
    pub queues: Vec<String>,
    /// The dead-letter queue, reported as `infq_dlq_depth` too.
    pub dead: String,
    /// The tenants' shares of these models' bulk lanes, read each round.
    pub shares: Option<ShareQueues>,
}

/// Where the shares of some models' bulk lanes are found (see
/// [`crate::shares`]): each is a job queue with gauges of its own.
#[derive(Clone)]
pub struct ShareQueues {
    /// The set of shares.
    pub store: crate::shares::Shares,
    /// Their queue names.
    pub topology: crate::topology::Topology,
    /// The models whose shares are watched.
    pub models: Vec<String>,
}

impl std::fmt::Debug for ShareQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareQueues")
            .field("models", &self.models)
            .finish()
    }
}

impl ShareQueues {
    /// The share queues of the watched models now; none if the set cannot
    /// be read within a second.
    async fn queues(&self) -> Vec<String> {
        let listed = tokio::time::timeout(Duration::from_secs(1), self.store.list()).await;
        let Ok(Ok(shares)) = listed else {
            return Vec::new();
        };
        shares
            .iter()
            .filter(|s| self.models.contains(&s.model))
            .map(|s| self.topology.share_queue(s))
            .collect()
    }
}

/// Reads one queue's counts; `Ok(None)` when the queue does not exist (the
/// broker then closes `ch`, so the caller opens a new one).
pub async fn read(ch: &Channel, queue: &str) -> lapin::Result<Option<QueueCounts>> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
    {
        Ok(q) => Ok(Some(QueueCounts {
            ready: q.message_count(),
            consumers: q.consumer_count(),
        })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    e.to_string().contains("NOT_FOUND") || e.to_string().contains("404")
}

/// Sets the gauges of one queue.
pub fn publish(queue: &str, counts: QueueCounts, dead: bool, age: Option<f64>) {
    let q = queue.to_string();
    metrics::gauge!(m::QUEUE_DEPTH, "queue" => q.clone()).set(f64::from(counts.ready));
    metrics::gauge!(m::QUEUE_CONSUMERS, "queue" => q.clone()).set(f64::from(counts.consumers));
    if dead {
        metrics::gauge!(m::DLQ_DEPTH).set(f64::from(counts.ready));
        return;
    }
    let per = f64::from(counts.ready) / f64::from(counts.consumers.max(1));
    metrics::gauge!(m::BACKLOG_PER_CONSUMER, "queue" => q.clone()).set(per);
    if let Some(age) = age {
        metrics::gauge!(m::QUEUE_OLDEST_AGE_SECONDS, "queue" => q).set(age);
    }
}

/// Polls until `shutdown`, reconnecting after any broker failure.
pub async fn watch(
    cfg: AmqpConfig,
    watched: Watched,
    heads: Option<Arc<HeadTimes>>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(cfg.stats_interval_ms);
    let mut conn: Option<(Connection, Channel)> = None;
    loop {
        if conn.is_none() {
            conn = open(&cfg).await;
        }
        if let Some((c, ch)) = conn.take() {
            match poll(&c, ch, &watched, heads.as_deref()).await {
                Ok(ch) => conn = Some((c, ch)),
                Err(e) => {
                    tracing::debug!(error = %e, "queue stats: broker read failed; reconnecting");
                    crate::amqp::close(&c, "queue stats reconnecting").await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Some((c, _)) = conn {
        crate::amqp::close(&c, "shut down").await;
    }
}

async fn open(cfg: &AmqpConfig) -> Option<(Connection, Channel)> {
    let conn = crate::amqp::connect(cfg, "infq-queue-stats").await.ok()?;
    let ch = conn.create_channel().await.ok()?;
    Some((conn, ch))
}

/// One round over every queue; returns the channel to use next time.
async fn poll(
    conn: &Connection,
    mut ch: Channel,
    watched: &Watched,
    heads: Option<&HeadTimes>,
) -> lapin::Result<Channel> {
    let shares = match &watched.shares {
        Some(s) => s.queues().await,
        None => Vec::new(),
    };
    let all = watched
        .queues
        .iter()
        .chain(&shares)
        .map(|q| (q, false))
        .chain([(&watched.dead, true)]);
    for (queue, dead) in all {
        match read(&ch, queue).await? {
            Some(counts) => {
                let now = crate::job::now_ms();
                let age = heads.and_then(|h| h.oldest_age(queue, counts.ready, now));
                publish(queue, counts, dead, age);
            }
            // Not declared yet: nothing to report, and the broker closed
            // the channel.
            None => ch = conn.create_channel().await?,
        }
    }
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_age_follows_the_last_message_taken() {
        let heads = HeadTimes::new(["a", "b"]);
        assert_eq!(heads.oldest_age("a", 5, 10_000), None, "nothing known yet");
        assert_eq!(heads.oldest_age("b", 0, 1_000), Some(0.0), "empty queue");
        assert_eq!(
            heads.oldest_age("b", 5, 10_000),
            Some(9.0),
            "since seen empty"
        );
        let slot = heads.slot("a").unwrap();
        slot.fetch_max(7_000, Ordering::Relaxed);
        slot.fetch_max(6_000, Ordering::Relaxed);
        assert_eq!(heads.oldest_age("a", 5, 10_000), Some(3.0));
        assert!(heads.slot("c").is_none());
        assert_eq!(heads.oldest_age("c", 5, 10_000), None);
    }

    #[test]
    fn after_an_idle_spell_the_age_counts_from_when_the_queue_was_empty() {
        let heads = HeadTimes::new(["a"]);
        heads.slot("a").unwrap().fetch_max(1_000, Ordering::Relaxed);
        assert_eq!(heads.oldest_age("a", 0, 3_600_000), Some(0.0));
        // A message arrives after an hour and waits 2 s.
        assert_eq!(heads.oldest_age("a", 1, 3_602_000), Some(2.0));
    }
}

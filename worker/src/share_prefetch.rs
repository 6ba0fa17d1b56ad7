//! The prefetch of the tenants' shares: full while batches run alone,
//! narrower while single jobs arrive.
//!
//! The chunks the broker keeps delivered to a worker ahead of its acks are
//! work the worker, the broker and Redis do beside single jobs, on the
//! same cores, and deliveries in the same connection as single jobs'. A
//! batch alone gets each share's full prefetch (32 chunks unless a model
//! needs more: [`full_prefetch`]), which keeps the model
//! busy. While single jobs arrive (one received within
//! `worker.single_jobs_recent_ms`), each share's consumer is narrowed to
//! the chunks that hold `worker.share_rows_with_jobs` rows, or to the
//! chunks that make one model batch per instance if more: the batch runs
//! slower and single jobs keep their latency. Once single jobs have
//! stopped for that long, it widens again.
//!
//! RabbitMQ applies a consumer's prefetch (`basic.qos`) when the consumer
//! starts, so a change is a new consumer under the new prefetch in place
//! of the old one ([`crate::subscription::Subscription::replace`]); the
//! deliveries the old one had are read and settled as before. The share
//! consumers of a model are on one channel, whose prefetch setting a
//! [`ShareQos`] guards, so that each new consumer starts under the
//! prefetch it asked for.

use crate::subscription::Subscription;
use infq_common::recency::Recency;
use lapin::options::BasicQosOptions;
use lapin::Channel;
use std::time::Duration;
use tokio::sync::Mutex;

/// The prefetch of a consumer of one tenant's share of a bulk lane (see
/// [`infq_common::shares`]): the chunks of `chunk_rows` rows that make
/// `prefetch` rows, and at least [`SHARE_PREFETCH_MIN`]. Bounded, so that
/// a tenant's backlog holds at most this many chunks at a worker and
/// another tenant's chunks queue behind those, not behind the backlog.
pub fn full_prefetch(prefetch: u16, chunk_rows: u32) -> u16 {
    let chunks = u32::from(prefetch).div_ceil(chunk_rows.max(1));
    let min = SHARE_PREFETCH_MIN;
    chunks.clamp(u32::from(min), u32::from(prefetch.max(min))) as u16
}

/// The fewest chunks a share's consumer holds: enough to keep the model
/// and the stores busy. The bulk benchmark (1,000,000 rows, medians of 3)
/// ran 384,000 rows/s with 4, 459,000 with 32 and 481,000 with 128.
pub const SHARE_PREFETCH_MIN: u16 = 32;

/// Which prefetch the shares' consumers want now.
pub struct SharePrefetch {
    /// The last single job received.
    jobs: Recency,
    /// The rows a share holds while single jobs arrive.
    rows_with_jobs: u32,
}

impl SharePrefetch {
    /// Shares take the chunks that hold `rows_with_jobs` rows at a time
    /// while a single job was received within `recent`.
    pub fn new(rows_with_jobs: usize, recent: Duration) -> Self {
        Self {
            jobs: Recency::new(recent),
            rows_with_jobs: rows_with_jobs.clamp(1, u32::MAX as usize) as u32,
        }
    }

    /// Notes a single job received, now.
    pub fn note_job(&self) {
        self.jobs.note();
    }

    /// The prefetches of the shares of a model whose consumers need
    /// `prefetch` rows (twice a batch per instance), in chunks of
    /// `chunk_rows`: the full one, and the one while single jobs arrive,
    /// the chunks that hold `worker.share_rows_with_jobs` rows or that
    /// make one batch per instance if more (so the model still runs full
    /// batches, however small the chunks), never more than the full one.
    pub fn limits(&self, prefetch: u16, chunk_rows: u32) -> Limits {
        let chunk_rows = chunk_rows.max(1);
        let full = full_prefetch(prefetch, chunk_rows);
        let one_batch = u32::from(prefetch.div_ceil(2)).div_ceil(chunk_rows);
        let with_jobs = self.rows_with_jobs.div_ceil(chunk_rows).max(one_batch);
        Limits {
            full,
            with_jobs: with_jobs.min(u32::from(full)) as u16,
        }
    }

    /// The prefetch a share with `limits` should have now.
    pub fn now(&self, limits: Limits) -> u16 {
        Self::now_if(self.jobs.is_recent(), limits)
    }

    fn now_if(jobs_recent: bool, limits: Limits) -> u16 {
        if jobs_recent {
            limits.with_jobs
        } else {
            limits.full
        }
    }
}

/// A share's prefetch in chunks: alone, and while single jobs arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// While batches run alone.
    pub full: u16,
    /// While single jobs arrive.
    pub with_jobs: u16,
}

/// The channel a model's share consumers are on, and the prefetch set on it
/// for the consumers started next.
pub struct ShareQos {
    channel: Channel,
    /// The prefetch the channel's next consumer starts with.
    set: Mutex<u16>,
    /// The shares' prefetches.
    pub limits: Limits,
}

impl ShareQos {
    /// `channel`, whose next consumers start with `prefetch` chunks, of
    /// shares with `limits`.
    pub async fn new(channel: Channel, prefetch: u16, limits: Limits) -> lapin::Result<Self> {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        Ok(Self {
            channel,
            set: Mutex::new(prefetch),
            limits,
        })
    }

    /// Subscribes to `queue` as `tag`; the prefetch it started with.
    pub async fn subscribe(
        &self,
        queue: &str,
        tag: &str,
        stats: Option<std::sync::Arc<crate::stats::WorkerStats>>,
    ) -> lapin::Result<(Subscription, u16)> {
        let set = self.set.lock().await;
        let sub = Subscription::open(&self.channel, queue, tag, stats).await?;
        Ok((sub, *set))
    }

    /// Replaces `sub`'s consumer with one that starts with `prefetch`.
    pub async fn change(&self, sub: &mut Subscription, prefetch: u16) -> lapin::Result<()> {
        let mut set = self.set.lock().await;
        if *set != prefetch {
            self.channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            *set = prefetch;
        }
        sub.replace().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_narrow_while_single_jobs_arrive_never_above_their_full_prefetch() {
        let p = SharePrefetch::new(1024, Duration::from_secs(3600));
        // A model of 64-row batches, one instance, 256-row chunks: the
        // four chunks that hold 1,024 rows.
        let small = p.limits(128, 256);
        assert_eq!(
            small,
            Limits {
                full: 32,
                with_jobs: 4
            }
        );
        assert_eq!(SharePrefetch::now_if(false, small), 32);
        assert_eq!(SharePrefetch::now_if(true, small), 4);
        // In 512-row chunks, two; rows that end mid-chunk take its chunk.
        assert_eq!(p.limits(128, 512).with_jobs, 2);
        assert_eq!(p.limits(128, 1000).with_jobs, 2);
        assert_eq!(p.limits(128, 1 << 20).with_jobs, 1);
        // 2,048-row batches in 256-row chunks: one batch is 8 chunks, so
        // the model still runs full batches while single jobs arrive.
        assert_eq!(
            p.limits(4096, 256),
            Limits {
                full: 32,
                with_jobs: 8
            }
        );
        // 1,024 rows of 16-row chunks are more than the full prefetch.
        assert_eq!(
            p.limits(512, 16),
            Limits {
                full: 32,
                with_jobs: 32
            }
        );
        // Never wider than the full prefetch.
        assert_eq!(p.limits(u16::MAX, 1).with_jobs, 32_768);
        assert_eq!(
            SharePrefetch::new(100 * 256, Duration::ZERO).limits(128, 256),
            Limits {
                full: 32,
                with_jobs: 32
            }
        );
        // No single job yet: the full prefetch.
        assert_eq!(p.now(small), 32);
        p.note_job();
        assert_eq!(p.now(small), 4);
        // Out of range settings are held within AMQP's prefetch (and a
        // chunk size of 0 read as 1).
        let none = SharePrefetch::new(0, Duration::ZERO);
        assert_eq!(none.limits(128, 256).with_jobs, 1);
        assert_eq!(none.limits(2, 0).with_jobs, 1);
        let all = SharePrefetch::new(usize::MAX, Duration::ZERO);
        assert_eq!(all.limits(u16::MAX, 1).with_jobs, u16::MAX);
        assert_eq!(
            all.limits(128, 0),
            Limits {
                full: 128,
                with_jobs: 128
            }
        );
    }

    #[test]
    fn a_share_holds_the_chunks_of_the_rows_a_version_needs_and_at_least_a_few() {
        assert_eq!(full_prefetch(128, 256), SHARE_PREFETCH_MIN);
        assert_eq!(full_prefetch(16_384, 256), 64);
        assert_eq!(full_prefetch(16_385, 256), 65);
        assert_eq!(full_prefetch(u16::MAX, 1), u16::MAX);
        assert_eq!(full_prefetch(100, 0), 100);
        assert_eq!(full_prefetch(1, 256), SHARE_PREFETCH_MIN);
    }
}

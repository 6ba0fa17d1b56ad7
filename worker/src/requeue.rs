//! Sending a job back for a later attempt, through the retry tiers.
//!
//! A transient failure (the store unreachable for longer than
//! `worker.store_retry_secs`, a model error such as running out of GPU
//! memory) does not keep the delivery spinning in the worker: the job is
//! published to retry tier n (its n-th retry), where it waits out the tier's
//! delay before the broker puts it back on its job queue, and only then is
//! the original delivery acknowledged. After `worker.max_retries` the job
//! is not sent back any more; the caller fails it or dead-letters it.

use crate::pending::Pending;
use crate::stats::WorkerStats;
use infq_common::message::{CONTENT_TYPE, MESSAGE_TYPE};
use infq_common::topology::Topology;
use lapin::{BasicProperties, Channel};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// What became of a job handed to [`Requeuer::requeue_all`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Sent to a retry tier and acknowledged.
    pub sent: usize,
    /// Out of retries: rejected to the dead-letter queue.
    pub dead_lettered: usize,
    /// Could not be sent (no broker): returned to their queue.
    pub left: usize,
}

/// Publishes jobs to the retry tiers on the current broker session.
pub struct Requeuer {
    topology: Topology,
    max_retries: u32,
    channel: Mutex<Option<Channel>>,
    stats: Arc<WorkerStats>,
}

/// The wait before retry `n` (from 1) of the job with id `seed`: the tier's
/// delay, lowered by up to half from the id's bits, so jobs that failed
/// together do not all come back at once.
pub fn jittered_delay(delays_ms: &[u64], n: u32, seed: u128) -> u64 {
    let tier = (n.max(1) - 1) as usize;
    let delay = delays_ms[tier.min(delays_ms.len().saturating_sub(1))];
    let half = (delay / 2).max(1);
    delay - (seed % u128::from(half)) as u64
}

impl Requeuer {
    /// A requeuer with no channel yet.
    pub fn new(topology: Topology, max_retries: u32, stats: Arc<WorkerStats>) -> Self {
        Self {
            topology,
            max_retries,
            channel: Mutex::new(None),
            stats,
        }
    }

    /// Installs the channel (in confirm mode) of a new broker session.
    pub fn set_channel(&self, ch: Option<Channel>) {
        *self.channel.lock().expect("requeue channel lock") = ch;
    }

    /// Whether `job` may be retried again.
    pub fn can_retry(&self, job: &Pending) -> bool {
        job.msg.retries < self.max_retries
    }

    async fn send(&self, job: &Pending) -> Result<(), String> {
        let ch = self
            .channel
            .lock()
            .expect("requeue channel lock")
            .clone()
            .ok_or("no broker session")?;
        let mut msg = job.msg.clone();
        msg.retries += 1;
        let delay = jittered_delay(
            self.topology.retry_delays_ms(),
            msg.retries,
            msg.id.as_u128(),
        );
        let props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_type(MESSAGE_TYPE.into())
            .with_message_id(msg.message_id().to_string().into())
            .with_expiration(delay.to_string().into());
        let exchange = self.topology.retry_exchange(msg.retries as usize - 1);
        let key = Topology::routing_key(&msg.model, msg.priority);
        infq_common::amqp::publish_confirmed(
            &ch,
            &exchange,
            &key,
            &msg.encode(),
            props,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| format!("retry publish: {e}"))
    }

    /// Dead-letters a refused message with its reason (see
    /// [`infq_common::dead`]): published to `<ns>.dead` with the reason,
    /// then settled by `settle` with `true`; if that publish fails, settled
    /// with `false`, which must reject it without requeue so that the
    /// broker dead-letters it instead. Either way it leaves the queue and
    /// costs nothing else.
    pub async fn dead_letter_raw(
        &self,
        queue: &str,
        data: &[u8],
        props: &BasicProperties,
        reason: &str,
    ) -> bool {
        let ch = self.channel.lock().expect("requeue channel lock").clone();
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let Some(ch) = ch else { return false };
        match infq_common::dead::publish_dead(&ch, &self.topology, queue, data, props, reason).await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not publish a dead letter; rejecting it instead");
                false
            }
        }
    }

    /// Dead-letters decoded jobs that were refused, each with its reason.
    pub async fn dead_letter(&self, jobs: Vec<(Pending, String)>) {
        for (job, reason) in jobs {
            tracing::warn!(job_id = %job.msg.id, %reason, "message refused; dead-lettering");
            metrics::counter!(infq_common::metrics::DEAD_LETTERED, "outcome" => "refused")
                .increment(1);
            let queue = self.topology.job_queue(&job.msg.model, job.lane);
            let props = BasicProperties::default()
                .with_content_type(CONTENT_TYPE.into())
                .with_type(MESSAGE_TYPE.into())
                .with_message_id(job.msg.message_id().to_string().into());
            let published = self
                .dead_letter_raw(&queue, &job.msg.encode(), &props, &reason)
                .await;
            let settled = if published {
                job.delivery.ack().await
            } else {
                job.delivery.reject(false).await
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "settling a dead letter failed; it will be redelivered");
            }
        }
    }

    /// Sends each job to its next retry tier and acknowledges it; jobs out
    /// of retries are rejected to the dead-letter queue.
    pub async fn requeue_all(&self, jobs: Vec<Pending>, reason: &str) -> Requeued {
        let mut out = Requeued::default();
        let (retry, spent): (Vec<Pending>, Vec<Pending>) =
            jobs.into_iter().partition(|j| self.can_retry(j));
        for job in spent {
            tracing::warn!(job_id = %job.msg.id, reason, "out of retries; dead-lettering");
            let _ = job.delivery.reject(false).await;
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            out.dead_lettered += 1;
        }
        // All publishes go out at once; each job is settled by its confirm.
        let sent = futures_util::future::join_all(retry.iter().map(|j| self.send(j))).await;
        for (job, result) in retry.into_iter().zip(sent) {
            match result {
                Ok(()) => {
                    let _ = job.delivery.ack().await;
                    self.stats.jobs_retried.fetch_add(1, Ordering::Relaxed);
                    out.sent += 1;
                }
                Err(e) => {
                    // Back to its queue now, rather than holding a prefetch
                    // slot until the channel dies.
                    tracing::warn!(job_id = %job.msg.id, error = %e, "could not send a job to retry");
                    let _ = job.delivery.reject(true).await;
                    out.left += 1;
                }
            }
        }
        if out.sent > 0 {
            metrics::counter!(infq_common::metrics::JOBS_RETRIED).increment(out.sent as u64);
            tracing::info!(
                sent = out.sent,
                reason,
                "jobs sent back for another attempt"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_tier_with_jitter_within_half() {
        let delays = [1_000, 5_000, 30_000];
        for seed in [0u128, 1, 499, 12_345_678_901_234] {
            let d1 = jittered_delay(&delays, 1, seed);
            assert!((500..=1_000).contains(&d1), "{d1}");
            let d2 = jittered_delay(&delays, 2, seed);
            assert!((2_500..=5_000).contains(&d2), "{d2}");
            let d9 = jittered_delay(&delays, 9, seed);
            assert!(
                (15_000..=30_000).contains(&d9),
                "the last tier repeats: {d9}"
            );
        }
        assert_ne!(
            jittered_delay(&delays, 1, 7),
            jittered_delay(&delays, 1, 300)
        );
    }
}

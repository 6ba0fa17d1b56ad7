//! Sending a job back for a later attempt, through the retry tiers.
//!
//! A transient failure (the store unreachable for longer than
//! `worker.store_retry_secs`, a model error such as running out of GPU
//! memory) does not keep the delivery spinning in the worker: the job is
//! published to retry tier n (its n-th retry), where it waits out the tier's
//! delay before the broker puts it back on its job queue, and only then is
//! the original delivery acknowledged (by the completion stage). After
//! `worker.max_retries` the job is not sent back any more; the caller
//! fails it or dead-letters it.

use crate::stats::WorkerStats;
use infq_common::amqp::PublishError;
use infq_common::confirms::ConfirmChannels;
use infq_common::job::Priority;
use infq_common::message::JobMessage;
use infq_common::topology::Topology;
use lapin::BasicProperties;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What became of the jobs the completion stage sent back for a later
/// attempt.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Sent to a retry tier and acknowledged.
    pub sent: usize,
    /// Out of retries: rejected to the dead-letter queue.
    pub dead_lettered: usize,
    /// Could not be sent (no broker): returned to their queue.
    pub left: usize,
}

/// Why a job could not be sent to a retry tier.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The delivery belongs to no broker session (made up in a test).
    #[error("no broker session")]
    NoSession,
    /// The broker did not take it.
    #[error("retry publish: {0}")]
    Publish(#[from] PublishError),
}

/// Publishes jobs to the retry tiers and the dead-letter queue on one
/// broker session's confirm channels. It settles nothing: the completion stage
/// acknowledges a delivery once what it publishes here is confirmed.
pub struct Requeuer {
    topology: Topology,
    channels: Arc<ConfirmChannels>,
    stats: Arc<WorkerStats>,
}

/// How long a publish waits for the broker's confirm, and for a free
/// channel.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

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
    /// A requeuer publishing on `channels`.
    pub fn new(
        topology: Topology,
        channels: Arc<ConfirmChannels>,
        stats: Arc<WorkerStats>,
    ) -> Self {
        Self {
            topology,
            channels,
            stats,
        }
    }

    /// Publishes `msg` to its next retry tier and waits for the confirm.
    pub async fn send(&self, msg: &JobMessage) -> Result<(), RequeueError> {
        let mut msg = msg.clone();
        msg.retries += 1;
        let delay = jittered_delay(
            self.topology.retry_delays_ms(),
            msg.retries,
            msg.record().as_u128(),
        );
        let props = msg
            .properties(None)
            .with_expiration(delay.to_string().into());
        let exchange = self.topology.retry_exchange(msg.retries as usize - 1);
        let key = msg.routing_key();
        let lease = self.channels.lease(PUBLISH_WAIT).await?;
        lease
            .publish(&exchange, &key, &msg.encode(), props, PUBLISH_WAIT)
            .await?;
        Ok(())
    }

    /// Publishes a refused message to `<ns>.dead` with its reason (see
    /// [`infq_common::dead`]); `false` if that failed, and the delivery
    /// must then be rejected without requeue, so that the broker
    /// dead-letters it instead. Either way it leaves the queue and costs
    /// nothing else.
    pub async fn dead_letter_raw(
        &self,
        queue: &str,
        data: &[u8],
        props: &BasicProperties,
        reason: &str,
    ) -> bool {
        self.publish_dead(queue, data, props, reason, false).await
    }

    /// Dead-letters a decoded job taken from `lane` of a queue its work
    /// does not belong on: marked misplaced, so the dead-letter recorder
    /// leaves its record alone (the job's own message is elsewhere).
    pub async fn misplaced(&self, msg: &JobMessage, lane: Priority, reason: &str) -> bool {
        let queue = self.topology.job_queue(&msg.model, lane);
        self.publish_dead(&queue, &msg.encode(), &msg.properties(None), reason, true)
            .await
    }

    async fn publish_dead(
        &self,
        queue: &str,
        data: &[u8],
        props: &BasicProperties,
        reason: &str,
        misplaced: bool,
    ) -> bool {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let published = match self.channels.lease(PUBLISH_WAIT).await {
            Ok(lease) => {
                infq_common::dead::publish_dead(
                    &lease,
                    &self.topology,
                    queue,
                    data,
                    props,
                    reason,
                    misplaced,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not publish a dead letter; rejecting it instead");
                false
            }
        }
    }

    /// [`Self::dead_letter_raw`] for a decoded job from `lane` (a chunk
    /// from its share: the consumer names the share it came from).
    pub async fn dead_letter(&self, msg: &JobMessage, lane: Priority, reason: &str) -> bool {
        let queue = if lane == msg.priority {
            self.topology.queue_of(msg)
        } else {
            self.topology.job_queue(&msg.model, lane)
        };
        self.dead_letter_raw(&queue, &msg.encode(), &msg.properties(None), reason)
            .await
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

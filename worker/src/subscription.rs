//! A consumer that outlives a broker-side cancel.
//!
//! The broker cancels a consumer (`basic.cancel`) when its queue's leader
//! moves, when the node it lives on goes away, or when the queue is
//! deleted; lapin then ends the consumer's stream. Every consumer of the
//! worker (job queues, dead-letter recorder, webhook dispatcher) reads
//! through a [`Subscription`], which subscribes again on the same channel,
//! whose unsettled deliveries stay valid, instead of stopping quietly. Only
//! when that keeps failing, or the channel itself closed, does it give up,
//! and its owner rebuilds the whole broker session.

use crate::stats::WorkerStats;
use futures_util::StreamExt;
use infq_common::metrics as m;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pause before re-subscribing after the broker cancelled a consumer
/// (times the re-subscriptions in a row).
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(500);
/// Re-subscriptions in a row, without a delivery between them, before the
/// subscription gives up.
const RESUBSCRIBE_TRIES: u32 = 5;

/// One consumer of one queue, acknowledging explicitly.
pub struct Subscription {
    channel: Channel,
    queue: String,
    /// The tag it was opened with.
    base_tag: String,
    /// The consumer's tag, the same across re-subscriptions after a
    /// cancel; a new one for each [`Subscription::replace`].
    tag: String,
    consumer: lapin::Consumer,
    /// Consumers replaced, cancelled: the deliveries they received before
    /// their cancel are read first, in order.
    replaced: VecDeque<lapin::Consumer>,
    /// Replacements so far.
    replacements: u64,
    /// Where cancels are counted besides the metric, if anywhere.
    stats: Option<Arc<WorkerStats>>,
}

impl Subscription {
    /// Consumes `queue` on `channel` as `tag`.
    pub async fn open(
        channel: &Channel,
        queue: &str,
        tag: &str,
        stats: Option<Arc<WorkerStats>>,
    ) -> lapin::Result<Self> {
        let consumer = consume(channel, queue, tag).await?;
        Ok(Self {
            channel: channel.clone(),
            queue: queue.to_string(),
            base_tag: tag.to_string(),
            tag: tag.to_string(),
            consumer,
            replaced: VecDeque::new(),
            replacements: 0,
            stats,
        })
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery, subscribing again after a broker-side cancel;
    /// `Err` says why consuming ended: `stop`, the channel closed, or
    /// re-subscribing failed [`RESUBSCRIBE_TRIES`] times in a row.
    ///
    /// Dropping the future is safe only while consuming is ending anyway
    /// (`stop`, or the session torn down): a re-subscription cut short
    /// may leave a consumer on the broker that nothing reads.
    pub async fn next(&mut self, stop: &CancellationToken) -> Result<Delivery, &'static str> {
        let mut resubscribed = 0;
        while let Some(old) = self.replaced.front_mut() {
            let delivery = tokio::select! {
                biased;
                _ = stop.cancelled() => return Err("shutdown"),
                d = old.next() => d,
            };
            match delivery {
                Some(Ok(d)) => return Ok(d),
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer error");
                    return Err("consumer error");
                }
                // Cancelled, and everything it had read.
                None => {
                    self.replaced.pop_front();
                }
            }
        }
        loop {
            let delivery = tokio::select! {
                biased;
                _ = stop.cancelled() => return Err("shutdown"),
                d = self.consumer.next() => d,
            };
            match delivery {
                Some(Ok(d)) => return Ok(d),
                Some(Err(e)) => {
                    tracing::warn!(queue = %self.queue, error = %e, "consumer error");
                    return Err("consumer error");
                }
                None if !self.channel.status().connected() => return Err("consumer closed"),
                None if resubscribed == RESUBSCRIBE_TRIES => {
                    return Err("consumer cancelled by the broker, re-subscribing failed")
                }
                None => {
                    resubscribed += 1;
                    metrics::counter!(m::CONSUMER_CANCELS_TOTAL).increment(1);
                    if let Some(s) = &self.stats {
                        s.consumer_cancels.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(queue = %self.queue, "the broker cancelled the consumer; subscribing again");
                    tokio::select! {
                        _ = stop.cancelled() => return Err("shutdown"),
                        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE * resubscribed) => {}
                    }
                    match consume(&self.channel, &self.queue, &self.tag).await {
                        Ok(c) => self.consumer = c,
                        Err(e) => {
                            tracing::warn!(queue = %self.queue, error = %e, "re-subscribing failed");
                            return Err("consumer cancelled by the broker, re-subscribing failed");
                        }
                    }
                }
            }
        }
    }

    /// Starts a new consumer of the queue in place of the current one,
    /// under the channel's prefetch setting now (RabbitMQ applies a
    /// consumer's prefetch when it starts), then cancels the old one. The
    /// deliveries the old one received are still returned by
    /// [`Subscription::next`], first, and settled on the channel as before.
    pub async fn replace(&mut self) -> lapin::Result<()> {
        self.replacements += 1;
        let tag = format!("{}.{}", self.base_tag, self.replacements);
        let new = consume(&self.channel, &self.queue, &tag).await?;
        let old_tag = std::mem::replace(&mut self.tag, tag);
        let old = std::mem::replace(&mut self.consumer, new);
        // Returns after the broker's cancel-ok: every delivery to the old
        // consumer came before it, and its stream ends after them.
        self.channel
            .basic_cancel(old_tag.as_str().into(), BasicCancelOptions::default())
            .await?;
        self.replaced.push_back(old);
        Ok(())
    }

    /// Asks the broker to stop delivering (deliveries already received
    /// stay to be settled); errors are ignored: the channel may be gone.
    pub async fn cancel(&self) {
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
}

/// Consumes `queue` on `ch` as `tag`, acknowledging explicitly.
async fn consume(ch: &Channel, queue: &str, tag: &str) -> lapin::Result<lapin::Consumer> {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

//! Settling deliveries, many at a time.
//!
//! Each consumer channel has a [`Settler`]. Jobs finish out of order (a
//! batch's expired jobs before its stored ones, say), so acknowledgements
//! are collected in a [`Window`] and sent as one `basic.ack` with
//! `multiple` for the highest delivery tag below which everything is
//! settled: one frame per batch instead of one per job, and much less work
//! for the broker. Rejections and requeues go out at once, one by one.

use crate::session::Session;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Which delivery tags of a channel are settled. Plain logic, no I/O.
#[derive(Debug, Default)]
pub struct Window {
    /// Every tag up to here is settled.
    floor: u64,
    /// Settled tags above `floor`; `true` for those that need an ack.
    settled: BTreeMap<u64, bool>,
    /// Acks absorbed into `floor` but not sent yet.
    unsent: bool,
}

impl Window {
    /// Records settled tags (`true`: acknowledge it; `false`: already
    /// rejected or requeued). Returns the tag to acknowledge with
    /// `multiple` now, if any.
    pub fn settle(&mut self, tags: impl IntoIterator<Item = (u64, bool)>) -> Option<u64> {
        for (tag, ack) in tags {
            if tag > self.floor {
                self.settled.insert(tag, ack);
            }
        }
        while let Some(ack) = self.settled.remove(&(self.floor + 1)) {
            self.floor += 1;
            self.unsent |= ack;
        }
        if self.unsent {
            self.unsent = false;
            Some(self.floor)
        } else {
            None
        }
    }

    /// Tags settled but waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.settled.len()
    }

    /// Tags settled in all: delivery tags run 1, 2, 3... on a channel.
    pub fn count(&self) -> u64 {
        self.floor + self.settled.len() as u64
    }
}

/// Settles the deliveries of one channel, and keeps the worker's count of
/// deliveries held (received, not settled) up to date. It also names the
/// broker session the channel belongs to, whose publishers send what a
/// delivery's end calls for (a retry, a dead letter, a webhook event) on
/// the same connection.
pub struct Settler {
    channel: Option<Channel>,
    session: Option<Arc<Session>>,
    window: Mutex<Window>,
    /// Deliveries received on the channel.
    received: AtomicU64,
    /// The worker-wide count of deliveries held.
    held: Option<Arc<AtomicI64>>,
}

impl Settler {
    /// A settler for `channel` of `session`, counting its deliveries into
    /// `held` if given.
    pub fn new(channel: Channel, session: Arc<Session>, held: Option<Arc<AtomicI64>>) -> Arc<Self> {
        Arc::new(Self {
            channel: Some(channel),
            session: Some(session),
            window: Mutex::new(Window::default()),
            received: AtomicU64::new(0),
            held,
        })
    }

    /// The broker session of the channel; `None` for a detached settler.
    pub fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref()
    }

    /// Counts a delivery received on the channel.
    pub fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.held {
            h.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Settles tags in the window and counts them off the deliveries held.
    fn settle(
        &self,
        window: &mut Window,
        tags: impl IntoIterator<Item = (u64, bool)>,
    ) -> Option<u64> {
        let before = window.count();
        let upto = window.settle(tags);
        if let Some(h) = &self.held {
            h.fetch_sub((window.count() - before) as i64, Ordering::Relaxed);
        }
        upto
    }

    /// A settler that sends nothing, for deliveries made up in tests.
    pub fn detached() -> Arc<Self> {
        Arc::new(Self {
            channel: None,
            session: None,
            window: Mutex::new(Window::default()),
            received: AtomicU64::new(0),
            held: None,
        })
    }

    /// A settler that sends nothing but names `session`, whose publishers
    /// a made-up delivery's end then uses (tests of the retry path).
    pub fn detached_on(session: Arc<Session>) -> Arc<Self> {
        Arc::new(Self {
            channel: None,
            session: Some(session),
            window: Mutex::new(Window::default()),
            received: AtomicU64::new(0),
            held: None,
        })
    }

    /// Acknowledges deliveries; the frame goes out once every earlier
    /// delivery is settled too.
    pub async fn ack(&self, tags: &[u64]) -> lapin::Result<()> {
        // The lock is held while sending, so acks leave in tag order.
        let mut window = self.window.lock().await;
        if let (Some(upto), Some(ch)) = (
            self.settle(&mut window, tags.iter().map(|t| (*t, true))),
            &self.channel,
        ) {
            ch.basic_ack(upto, BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }

    /// Returns a delivery to its queue (`requeue`) or dead-letters it.
    pub async fn reject(&self, tag: u64, requeue: bool) -> lapin::Result<()> {
        let mut window = self.window.lock().await;
        if let Some(ch) = &self.channel {
            ch.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue,
                },
            )
            .await?;
        }
        if let (Some(upto), Some(ch)) = (self.settle(&mut window, [(tag, false)]), &self.channel) {
            ch.basic_ack(upto, BasicAckOptions { multiple: true })
                .await?;
        }
        Ok(())
    }
}

impl Drop for Settler {
    /// A channel gone (reconnect, shutdown) returns what it held to the
    /// broker: it is no longer this worker's.
    fn drop(&mut self) {
        if let Some(h) = &self.held {
            let settled = self.window.get_mut().count();
            let left = self
                .received
                .load(Ordering::Relaxed)
                .saturating_sub(settled);
            h.fetch_sub(left as i64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_wait_for_earlier_deliveries() {
        let mut w = Window::default();
        assert_eq!(w.settle([(2, true), (3, true)]), None, "1 is still out");
        assert_eq!(w.waiting(), 2);
        assert_eq!(w.settle([(1, true)]), Some(3));
        assert_eq!(w.settle([(5, true)]), None);
        assert_eq!(w.settle([(4, true)]), Some(5));
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn rejections_fill_gaps_without_an_ack_of_their_own() {
        let mut w = Window::default();
        assert_eq!(w.settle([(1, false)]), None, "nothing to acknowledge");
        assert_eq!(w.settle([(3, true)]), None);
        assert_eq!(w.settle([(2, false)]), Some(3), "3 goes, 2 was rejected");
        assert_eq!(w.settle([(4, false), (5, false)]), None);
        assert_eq!(
            w.settle([(1, true), (2, true)]),
            None,
            "old tags are ignored"
        );
    }

    #[test]
    fn settled_tags_are_counted_once() {
        let mut w = Window::default();
        w.settle([(2, true), (3, false)]);
        assert_eq!(w.count(), 2);
        w.settle([(2, true)]);
        assert_eq!(w.count(), 2, "a tag settled twice counts once");
        w.settle([(1, true)]);
        assert_eq!(w.count(), 3);
        w.settle([(1, true)]);
        assert_eq!(w.count(), 3, "below the floor: already counted");
    }

    #[test]
    fn a_batch_goes_in_one_ack() {
        let mut w = Window::default();
        let tags: Vec<(u64, bool)> = (1..=64).map(|t| (t, true)).collect();
        assert_eq!(w.settle(tags), Some(64));
    }
}

//! One broker connection's publishers: the retry tiers and dead letters
//! ([`Requeuer`]) and webhook events ([`Events`]), on confirm-mode
//! channels of that connection lent one publish at a time
//! ([`ConfirmChannels`]).
//!
//! A session is built when its connection is, before the first delivery
//! arrives, and every delivery of the connection names it (through its
//! [`crate::settle::Settler`]), so what a delivery's end publishes goes out
//! on the connection the delivery came from. It is gone with the last
//! delivery that names it.

use crate::requeue::Requeuer;
use crate::stats::WorkerStats;
use crate::webhooks::events::Events;
use infq_common::confirms::ConfirmChannels;
use infq_common::topology::Topology;
use lapin::Connection;
use std::sync::Arc;

/// Publishes a session may wait on at once: retries and dead letters of
/// the completion stage's tasks, and webhook events (a batch's in one).
const SESSION_CHANNELS: usize = 8;

/// The publishers of one broker connection.
pub struct Session {
    /// Publishes to the retry tiers and the dead-letter queue.
    pub requeuer: Requeuer,
    /// Publishes webhook events.
    pub events: Events,
    /// The channels both publish on.
    pub channels: Arc<ConfirmChannels>,
}

impl Session {
    /// Opens the session's channels (in confirm mode) on `conn`.
    pub async fn open(
        conn: &Connection,
        topology: &Topology,
        stats: Arc<WorkerStats>,
    ) -> lapin::Result<Arc<Self>> {
        let channels = ConfirmChannels::open(conn, SESSION_CHANNELS).await?;
        Ok(Arc::new(Self {
            requeuer: Requeuer::new(topology.clone(), channels.clone(), stats),
            events: Events::new(topology.clone(), channels.clone()),
            channels,
        }))
    }

    /// Returns once the session cannot publish any more (its connection
    /// gone, or half its channels retired after confirms that never
    /// came): the session must then be rebuilt.
    pub async fn spent(&self) {
        while self.channels.usable() {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

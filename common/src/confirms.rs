//! Confirm-mode channels lent to one publisher at a time.
//!
//! A message published with `mandatory` that no queue takes comes back as
//! a `basic.return` just before its confirm; lapin hands that returned
//! message to whichever confirm of the channel completes next, and a
//! multiple ack completes several at once. With several publishers
//! waiting on one channel, a returned message could thus be reported on
//! another's confirm, and its own publisher would see a plain ack: a
//! message the broker dropped, counted as taken. So every publish here
//! holds a channel of its own for as long as it waits ([`Lease`]): what
//! comes back on that channel is its own. A holder may publish several
//! messages at once on its lease (a batch's chunks, a group of events) if
//! it treats any failure as the failure of all of them.
//!
//! A channel whose lease ended with a publish timed out (or cut short, its
//! caller gone) may still owe a confirm, and is retired rather than lent
//! again, as is a closed one. Once half of them are retired, or the
//! connection is gone, the pool is no longer [`ConfirmChannels::usable`]:
//! its owner opens a new connection (the producer's publisher on its next
//! publish, a worker's session by ending). When none is left every lease
//! fails at once.

use crate::amqp::{publish_confirmed, PublishError};
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection, ConnectionStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A fixed set of confirm-mode channels of one connection.
pub struct ConfirmChannels {
    free: Mutex<Vec<Channel>>,
    permits: Arc<Semaphore>,
    /// Channels opened, and those not retired.
    opened: usize,
    alive: AtomicUsize,
    /// The connection's.
    connection: ConnectionStatus,
}

impl ConfirmChannels {
    /// Opens `n` (at least 1) channels on `conn`, each in confirm mode.
    pub async fn open(conn: &Connection, n: usize) -> lapin::Result<Arc<Self>> {
        let n = n.max(1);
        let mut free = Vec::with_capacity(n);
        for _ in 0..n {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            free.push(ch);
        }
        Ok(Arc::new(Self {
            free: Mutex::new(free),
            permits: Arc::new(Semaphore::new(n)),
            opened: n,
            alive: AtomicUsize::new(n),
            connection: conn.status().clone(),
        }))
    }

    /// Whether the connection is up and more than half of the channels
    /// are left.
    pub fn usable(&self) -> bool {
        self.connection.connected() && self.alive.load(Ordering::Acquire) * 2 > self.opened
    }

    /// Lends a channel, waiting at most `wait` for one to be free; closed
    /// channels met on the way are retired.
    pub async fn lease(self: &Arc<Self>, wait: Duration) -> Result<Lease, PublishError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let acquired =
                tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await;
            let permit = match acquired {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => {
                    return Err(PublishError::Unavailable(
                        "no confirm channel left on this connection".into(),
                    ))
                }
                Err(_) => return Err(PublishError::Timeout(wait)),
            };
            let ch = self
                .free
                .lock()
                .expect("confirm channels lock")
                .pop()
                .expect("a permit stands for a free channel");
            let lease = Lease::new(self.clone(), ch, permit);
            if lease.channel().status().connected() {
                return Ok(lease);
            }
            // Retired as it is dropped.
            lease.spoiled.store(true, Ordering::Relaxed);
        }
    }
}

/// One channel of a [`ConfirmChannels`], held until dropped.
pub struct Lease {
    pool: Arc<ConfirmChannels>,
    channel: Option<Channel>,
    permit: Option<OwnedSemaphorePermit>,
    /// Set once a publish on it timed out or found the channel gone.
    spoiled: AtomicBool,
    /// Publishes under way: one dropped before its end (its caller gone)
    /// leaves a confirm owed on the channel.
    inflight: AtomicUsize,
}

impl Lease {
    fn new(pool: Arc<ConfirmChannels>, channel: Channel, permit: OwnedSemaphorePermit) -> Self {
        Self {
            pool,
            channel: Some(channel),
            permit: Some(permit),
            spoiled: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Publishes one message on the leased channel (see
    /// [`publish_confirmed`]).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        props: BasicProperties,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let ch = self.channel.as_ref().expect("a lease holds its channel");
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let r = publish_confirmed(ch, exchange, routing_key, payload, props, timeout).await;
        // A nack or a return ends the publish's confirm; a timeout leaves
        // it owed, and a lost channel is no use.
        if matches!(
            r,
            Err(PublishError::Timeout(_)) | Err(PublishError::Unavailable(_))
        ) {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// The leased channel, for what goes with the publishes (e.g. reading
    /// the messages to publish); a publish on it must go through
    /// [`Self::publish`].
    pub fn channel(&self) -> &Channel {
        self.channel.as_ref().expect("a lease holds its channel")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(ch), Some(permit)) = (self.channel.take(), self.permit.take()) else {
            return;
        };
        if self.spoiled.load(Ordering::Relaxed)
            || self.inflight.load(Ordering::Acquire) > 0
            || !ch.status().connected()
        {
            // Retired: it may owe a confirm, or is closed.
            permit.forget();
            if self.pool.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.pool.permits.close();
            }
            return;
        }
        self.pool
            .free
            .lock()
            .expect("confirm channels lock")
            .push(ch);
        drop(permit);
    }
}

//! Publishing jobs with publisher confirms.
//!
//! A job counts as accepted only when the broker has confirmed the
//! persistent, `mandatory` message: an unroutable message (returned), a
//! nack, a lost connection or no confirm within the publish timeout are all
//! failures the caller turns into `503`. The publisher keeps one
//! connection with [`PUBLISH_CHANNELS`] confirm-mode channels, each lent to
//! one publish (or one batch's chunks) at a time (see
//! [`infq_common::confirms`] for why), and rebuilds connection, topology
//! and channels on demand, with backoff between attempts so that an
//! outage is answered at once rather than by one slow connect per request.

use infq_common::amqp;
use infq_common::config::AmqpConfig;
use infq_common::confirms::{ConfirmChannels, Lease};
use infq_common::message::{JobMessage, CONTENT_TYPE};
use infq_common::retry::Schedule;
use infq_common::shares::{Share, Shares};
use infq_common::topology::Topology;
use lapin::{BasicProperties, Channel, Connection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub use infq_common::amqp::PublishError;

/// Publishes (single jobs, batches, events) that may wait on their
/// confirms at once; more wait for a channel to be free, up to the publish
/// timeout.
const PUBLISH_CHANNELS: usize = 64;

struct Link {
    conn: Option<Connection>,
    channels: Option<Arc<ConfirmChannels>>,
    /// Shares declared on this connection (see [`Publisher::open_share`]).
    shares: std::collections::HashSet<Share>,
    next_attempt: Instant,
    schedule: Schedule,
}

/// The producer's connection to the broker.
pub struct Publisher {
    cfg: AmqpConfig,
    topology: Topology,
    models: Vec<String>,
    link: Mutex<Link>,
    /// Recent answers of [`Self::queue_full`], per queue.
    full: std::sync::Mutex<std::collections::HashMap<String, (Instant, bool)>>,
    /// Audit records of concurrent requests, appended together.
    audits: infq_common::audit::Groups,
}

/// How long an answer of [`Publisher::queue_full`] stands, and how long
/// reading it may take.
const FULL_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Publisher {
    /// A publisher for the given models' queues; it connects on first use.
    pub fn new(cfg: AmqpConfig, topology: Topology, models: Vec<String>) -> Self {
        let audits = infq_common::audit::Groups::new(
            topology.audit_stream(),
            Duration::from_millis(cfg.publish_timeout_ms),
        );
        Self {
            audits,
            cfg,
            topology,
            models,
            link: Mutex::new(Link {
                conn: None,
                channels: None,
                shares: Default::default(),
                next_attempt: Instant::now(),
                schedule: Schedule::reconnect(),
            }),
            full: Default::default(),
        }
    }

    /// Whether the connection and channels are usable now.
    pub async fn is_connected(&self) -> bool {
        let link = self.link.lock().await;
        link.channels.as_ref().is_some_and(|c| c.usable())
    }

    /// Connects if not connected (and a reconnect is due); `Err` when the
    /// broker cannot be reached: what `/readyz` reports.
    pub async fn ready(&self) -> Result<(), PublishError> {
        self.channels().await.map(drop)
    }

    /// A channel of its own, for a caller that reads from the broker
    /// (listing and replaying dead letters; it publishes through
    /// [`Self::lease`]); closed once dropped.
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        self.channels().await?;
        let link = self.link.lock().await;
        let conn = link
            .conn
            .as_ref()
            .ok_or_else(|| PublishError::Unavailable("reconnecting".into()))?;
        conn.create_channel()
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))
    }

    /// Lends a confirm channel (see [`infq_common::confirms`]): a batch
    /// publishes all its chunks on one.
    pub async fn lease(&self) -> Result<Lease, PublishError> {
        let channels = self.channels().await?;
        channels
            .lease(Duration::from_millis(self.cfg.publish_timeout_ms))
            .await
    }

    /// The usable confirm channels, reconnecting if due.
    async fn channels(&self) -> Result<Arc<ConfirmChannels>, PublishError> {
        let mut link = self.link.lock().await;
        if let Some(c) = &link.channels {
            if c.usable() {
                return Ok(c.clone());
            }
        }
        if Instant::now() < link.next_attempt {
            return Err(PublishError::Unavailable("reconnecting".into()));
        }
        let had_link = link.conn.is_some();
        if let Some(conn) = link.conn.take() {
            amqp::close(&conn, "reconnecting").await;
        }
        link.channels = None;
        link.shares.clear();
        match self.open().await {
            Ok((conn, channels)) => {
                if had_link {
                    metrics::counter!(infq_common::metrics::RECONNECTS, "outcome" => "amqp")
                        .increment(1);
                }
                tracing::info!("publisher connected");
                link.schedule.reset();
                link.conn = Some(conn);
                link.channels = Some(channels.clone());
                Ok(channels)
            }
            Err(e) => {
                let wait = link.schedule.next().unwrap_or_default();
                link.next_attempt = Instant::now() + wait;
                tracing::warn!(error = %e, ?wait, "publisher cannot reach the broker");
                Err(PublishError::Unavailable(e))
            }
        }
    }

    /// Opens connection and channels and declares the topology, all within
    /// the connect timeout: a broker that accepts the connection but stops
    /// answering must not hold every request.
    async fn open(&self) -> Result<(Connection, Arc<ConfirmChannels>), String> {
        let limit = Duration::from_millis(self.cfg.connect_timeout_ms);
        match tokio::time::timeout(limit, self.open_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(format!("the broker did not answer within {limit:?}")),
        }
    }

    async fn open_unbounded(&self) -> Result<(Connection, Arc<ConfirmChannels>), String> {
        let conn = amqp::connect(&self.cfg, "infq-producer")
            .await
            .map_err(|e| e.to_string())?;
        let names: Vec<&str> = self.models.iter().map(String::as_str).collect();
        self.topology
            .declare(&conn, &names)
            .await
            .map_err(|e| e.to_string())?;
        let channels = ConfirmChannels::open(&conn, PUBLISH_CHANNELS)
            .await
            .map_err(|e| e.to_string())?;
        Ok((conn, channels))
    }

    /// Makes `share` ready for its chunks (see [`infq_common::shares`]):
    /// in the set workers read, then its queue declared; once per
    /// connection. A tenant's first chunk in a share must not be published
    /// before this: the broker would return it as unroutable.
    pub async fn open_share(&self, shares: &Shares, share: &Share) -> Result<(), PublishError> {
        self.channels().await?;
        if self.link.lock().await.shares.contains(share) {
            return Ok(());
        }
        shares
            .add(share)
            .await
            .map_err(|e| PublishError::Unavailable(format!("recording the share: {e}")))?;
        let mut link = self.link.lock().await;
        let conn = link
            .conn
            .as_ref()
            .ok_or_else(|| PublishError::Unavailable("reconnecting".into()))?;
        let limit = Duration::from_millis(self.cfg.connect_timeout_ms);
        match tokio::time::timeout(limit, self.topology.declare_share(conn, share)).await {
            Ok(Ok(())) => {
                link.shares.insert(share.clone());
                Ok(())
            }
            Ok(Err(e)) => Err(PublishError::Unavailable(format!(
                "declaring {}: {e}",
                self.topology.share_queue(share)
            ))),
            Err(_) => Err(PublishError::Unavailable(format!(
                "declaring {}: no answer within {limit:?}",
                self.topology.share_queue(share)
            ))),
        }
    }

    /// Publishes a job (a batch's chunk) on `lease` and waits for the
    /// broker's confirm.
    pub async fn publish_on(&self, lease: &Lease, msg: &JobMessage) -> Result<(), PublishError> {
        self.publish_job(lease, msg, None, self.timeout()).await
    }

    /// `amqp.publish_timeout_ms`.
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.publish_timeout_ms)
    }

    /// What is left of the publish timeout since `started` (a lease's wait
    /// counts against it: a submission is answered within the timeout).
    fn left(&self, started: Instant) -> Duration {
        self.timeout()
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    }

    /// [`Self::publish`], with a W3C `traceparent` in the message's
    /// headers when the client sent one.
    pub async fn publish_traced(
        &self,
        msg: &JobMessage,
        traceparent: Option<String>,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let lease = self.lease().await?;
        self.publish_job(&lease, msg, traceparent, self.left(started))
            .await
    }

    async fn publish_job(
        &self,
        lease: &Lease,
        msg: &JobMessage,
        traceparent: Option<String>,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let props = msg.properties(traceparent.as_deref());
        let message = if msg.work.is_chunk() { "chunk" } else { "job" };
        let sent = self
            .publish_to(
                lease,
                (&self.topology.jobs_exchange(), &msg.routing_key()),
                &msg.encode(),
                props,
                timeout,
                message,
            )
            .await;
        match sent {
            Err(PublishError::Nacked) => {
                let queue = self.topology.queue_of(msg);
                if self.queue_full(&queue).await {
                    Err(PublishError::Nacked)
                } else {
                    // A quorum queue also refuses publishes while it has no
                    // leader (a node lost, an election under way): that is
                    // the broker being unavailable, not the queue full.
                    Err(PublishError::Unavailable(format!(
                        "the broker refused the message, and {queue} is not full: its leader is being elected"
                    )))
                }
            }
            other => other,
        }
    }

    /// Whether `queue` holds (nearly) `amqp.max_queue_length` messages, read
    /// on a channel of its own (a passive declare that fails closes its
    /// channel) at most once a second per queue, within a second; `false`
    /// when that cannot be read.
    async fn queue_full(&self, queue: &str) -> bool {
        if let Some((at, full)) = self.full.lock().expect("queue_full cache").get(queue) {
            if at.elapsed() < FULL_CHECK_EVERY {
                return *full;
            }
        }
        let read = async {
            let ch = {
                let link = self.link.lock().await;
                link.conn.as_ref()?.create_channel().await.ok()?
            };
            let counts = infq_common::queue_stats::read(&ch, queue).await.ok()??;
            let _ = ch.close(200, "done".into()).await;
            Some(counts)
        };
        let full = match tokio::time::timeout(FULL_CHECK_EVERY, read).await {
            Ok(Some(counts)) => {
                u64::from(counts.ready) >= self.cfg.max_queue_length.saturating_mul(9) / 10
            }
            _ => false,
        };
        self.full
            .lock()
            .expect("queue_full cache")
            .insert(queue.to_string(), (Instant::now(), full));
        full
    }

    /// Publishes a webhook event message (a manual redelivery), mandatory,
    /// and waits for the broker's confirm: a message returned as
    /// unroutable is an error, like a nack.
    pub async fn publish_event(
        &self,
        msg: &infq_common::webhooks::event::EventMessage,
    ) -> Result<(), PublishError> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_type(infq_common::webhooks::event::MESSAGE_TYPE.into())
            .with_message_id(
                infq_common::webhooks::event::webhook_id(&msg.subject, msg.gen.unwrap_or(0)).into(),
            );
        let started = Instant::now();
        let lease = self.lease().await?;
        self.publish_to(
            &lease,
            (&self.topology.webhooks_exchange(), ""),
            &msg.encode(),
            props,
            self.left(started),
            "event",
        )
        .await
    }

    /// Appends `records` to the audit stream (when auditing is on), with
    /// a confirm; a failure is logged and counted, not returned (see
    /// [`infq_common::audit::append`]).
    pub async fn audit(&self, records: Vec<infq_common::audit::Record>) {
        if !self.topology.audits() || records.is_empty() {
            return;
        }
        match self.channels().await {
            // With the records of other requests waiting now: one message.
            Ok(pool) => self.audits.append(pool, records).await,
            Err(e) => {
                let stream = self.topology.audit_stream();
                infq_common::audit::append(async { Err(e) }, &stream, &records, self.timeout())
                    .await
            }
        }
    }

    /// Publishes `payload` to `(exchange, routing key)`, timed as a
    /// `message` (job, chunk or event) in `infq_publish_seconds`.
    async fn publish_to(
        &self,
        lease: &Lease,
        (exchange, routing_key): (&str, &str),
        payload: &[u8],
        props: BasicProperties,
        timeout: Duration,
        message: &'static str,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let result = lease
            .publish(exchange, routing_key, payload, props, timeout)
            .await;
        metrics::histogram!(infq_common::metrics::PUBLISH_SECONDS, "message" => message)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

//! Publishing jobs with publisher confirms.
//!
//! A job counts as accepted only when the broker has confirmed the
//! persistent, `mandatory` message: an unroutable message (returned), a
//! nack, a lost connection or no confirm within the publish timeout are all
//! failures the caller turns into `503`. The publisher keeps one channel in
//! confirm mode and rebuilds connection, topology and channel on demand,
//! with backoff between attempts so that an outage is answered at once
//! rather than by one slow connect per request.

use infq_common::amqp;
use infq_common::config::AmqpConfig;
use infq_common::message::{JobMessage, CONTENT_TYPE};
use infq_common::retry::Schedule;
use infq_common::topology::Topology;
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub use infq_common::amqp::PublishError;

struct Link {
    conn: Option<Connection>,
    channel: Option<Channel>,
    next_attempt: Instant,
    schedule: Schedule,
}

/// The producer's connection to the broker.
pub struct Publisher {
    cfg: AmqpConfig,
    topology: Topology,
    models: Vec<String>,
    link: Mutex<Link>,
}

impl Publisher {
    /// A publisher for the given models' queues; it connects on first use.
    pub fn new(cfg: AmqpConfig, topology: Topology, models: Vec<String>) -> Self {
        Self {
            cfg,
            topology,
            models,
            link: Mutex::new(Link {
                conn: None,
                channel: None,
                next_attempt: Instant::now(),
                schedule: Schedule::reconnect(),
            }),
        }
    }

    /// Whether a usable channel is open now.
    pub async fn is_connected(&self) -> bool {
        let link = self.link.lock().await;
        link.channel
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// An open channel in confirm mode, reconnecting if due.
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = self.link.lock().await;
        if let Some(ch) = &link.channel {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        if Instant::now() < link.next_attempt {
            return Err(PublishError::Unavailable("reconnecting".into()));
        }
        let had_link = link.conn.is_some();
        if let Some(conn) = link.conn.take() {
            amqp::close(&conn, "reconnecting").await;
        }
        link.channel = None;
        match self.open().await {
            Ok((conn, ch)) => {
                if had_link {
                    metrics::counter!(infq_common::metrics::RECONNECTS, "outcome" => "amqp")
                        .increment(1);
                }
                tracing::info!("publisher connected");
                link.schedule.reset();
                link.conn = Some(conn);
                link.channel = Some(ch.clone());
                Ok(ch)
            }
            Err(e) => {
                let wait = link.schedule.next().unwrap_or_default();
                link.next_attempt = Instant::now() + wait;
                tracing::warn!(error = %e, ?wait, "publisher cannot reach the broker");
                Err(PublishError::Unavailable(e))
            }
        }
    }

    /// Opens connection and channel and declares the topology, all within
    /// the connect timeout: a broker that accepts the connection but stops
    /// answering must not hold every request.
    async fn open(&self) -> Result<(Connection, Channel), String> {
        let limit = Duration::from_millis(self.cfg.connect_timeout_ms);
        match tokio::time::timeout(limit, self.open_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(format!("the broker did not answer within {limit:?}")),
        }
    }

    async fn open_unbounded(&self) -> Result<(Connection, Channel), String> {
        let conn = amqp::connect(&self.cfg, "infq-producer")
            .await
            .map_err(|e| e.to_string())?;
        let names: Vec<&str> = self.models.iter().map(String::as_str).collect();
        self.topology
            .declare(&conn, &names)
            .await
            .map_err(|e| e.to_string())?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok((conn, ch))
    }

    /// Publishes a job and waits for the broker's confirm.
    pub async fn publish(&self, msg: &JobMessage) -> Result<(), PublishError> {
        self.publish_traced(msg, None).await
    }

    /// [`Self::publish`], with a W3C `traceparent` in the message's
    /// headers when the client sent one.
    pub async fn publish_traced(
        &self,
        msg: &JobMessage,
        traceparent: Option<String>,
    ) -> Result<(), PublishError> {
        let props = msg.properties(traceparent.as_deref());
        let sent = self
            .publish_to(
                self.topology.jobs_exchange(),
                msg.routing_key(),
                msg.encode(),
                props,
            )
            .await;
        match sent {
            Err(PublishError::Nacked) => {
                let queue = self.topology.job_queue(&msg.model, msg.priority);
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
    /// channel); `false` when that cannot be read.
    async fn queue_full(&self, queue: &str) -> bool {
        let read = async {
            let ch = {
                let link = self.link.lock().await;
                link.conn.as_ref()?.create_channel().await.ok()?
            };
            let counts = infq_common::queue_stats::read(&ch, queue).await.ok()??;
            let _ = ch.close(200, "done".into()).await;
            Some(counts)
        };
        let limit = Duration::from_millis(self.cfg.publish_timeout_ms);
        match tokio::time::timeout(limit, read).await {
            Ok(Some(counts)) => {
                u64::from(counts.ready) >= self.cfg.max_queue_length.saturating_mul(9) / 10
            }
            _ => false,
        }
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
        self.publish_to(
            self.topology.webhooks_exchange(),
            String::new(),
            msg.encode(),
            props,
        )
        .await
    }

    async fn publish_to(
        &self,
        exchange: String,
        routing_key: String,
        payload: Vec<u8>,
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        let ch = self.channel().await?;
        let timeout = Duration::from_millis(self.cfg.publish_timeout_ms);
        let result =
            amqp::publish_confirmed(&ch, &exchange, &routing_key, &payload, props, timeout).await;
        metrics::histogram!(infq_common::metrics::PUBLISH_SECONDS)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

//! Publishing event messages to `<ns>.webhooks`, with publisher confirms,
//! on the channel of the current broker session.

use infq_common::topology::Topology;
use infq_common::webhooks::event::{EventMessage, SubjectKind, MESSAGE_TYPE};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::Mutex;
use std::time::Duration;

/// The event publisher of one worker.
pub struct Events {
    topology: Topology,
    channel: Mutex<Option<Channel>>,
}

/// The event message due for a job that ended (or, for a bulk chunk, for
/// its batch), if it asked for a callback.
pub fn for_job(msg: &infq_common::message::JobMessage) -> Option<EventMessage> {
    let url = msg.webhook_url.clone()?;
    let kind = if msg.chunk.is_some() {
        SubjectKind::Batch
    } else {
        SubjectKind::Job
    };
    Some(EventMessage::new(kind, msg.id, url))
}

impl Events {
    /// A publisher with no channel yet.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            channel: Mutex::new(None),
        }
    }

    /// Installs the channel (in confirm mode) of a new broker session.
    pub fn set_channel(&self, ch: Option<Channel>) {
        *self.channel.lock().expect("events channel lock") = ch;
    }

    /// Publishes every message, persistent, and waits for the broker's
    /// confirms; an error means some may not have been taken.
    pub async fn publish(&self, msgs: &[EventMessage]) -> Result<(), String> {
        if msgs.is_empty() {
            return Ok(());
        }
        let ch = self
            .channel
            .lock()
            .expect("events channel lock")
            .clone()
            .ok_or("no broker session")?;
        publish_on(&ch, &self.topology.webhooks_exchange(), msgs, None).await
    }
}

/// Publishes `msgs` to `exchange` on `ch` (in confirm mode), each with the
/// message TTL `expiration_ms` if given, and waits for every confirm.
pub async fn publish_on(
    ch: &Channel,
    exchange: &str,
    msgs: &[EventMessage],
    expiration_ms: Option<u64>,
) -> Result<(), String> {
    let sends = msgs.iter().map(|m| async move {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(MESSAGE_TYPE.into())
            .with_message_id(infq_common::webhooks::event::webhook_id(&m.subject).into());
        if let Some(ms) = expiration_ms {
            props = props.with_expiration(ms.to_string().into());
        }
        let confirm = async {
            ch.basic_publish(
                exchange.into(),
                "".into(),
                BasicPublishOptions::default(),
                &m.encode(),
                props,
            )
            .await?
            .await
        };
        match tokio::time::timeout(Duration::from_secs(5), confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(other)) => Err(format!("event publish not accepted: {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("event publish not confirmed in time".into()),
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, String>>()
        .map(|_| ())
}

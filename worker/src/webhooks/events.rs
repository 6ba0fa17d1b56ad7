//! Publishing event messages to `<ns>.webhooks`, with publisher confirms
//! and `mandatory` (a message the broker returns, or does not confirm, is
//! not published), on the confirm channels of one broker session (see
//! [`crate::session`]).

use infq_common::amqp::PublishError;
use infq_common::confirms::{ConfirmChannels, Lease};
use infq_common::topology::Topology;
use infq_common::webhooks::event::{
    encode_all, EventMessage, MAX_EVENTS_PER_MESSAGE, MESSAGE_TYPE,
};
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Publishes in flight at once. Writer cycles that ask while both are
/// taken share the next message (group commit): under load the broker
/// stores one event message for several batches of results, not one each.
const FLUSHES: usize = 2;

/// Why events were not published: they may not have been taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventsError {
    /// The flusher task is gone (its session ended).
    #[error("event publisher stopped")]
    Stopped,
    /// The broker did not take the message.
    #[error("event publish to {exchange}: {source}")]
    Publish {
        /// Where it went.
        exchange: String,
        /// What the broker said.
        source: PublishError,
    },
}

/// The event publisher of one broker session: a handle on its flusher
/// task, which ends when the handle is dropped.
pub struct Events {
    asks: mpsc::UnboundedSender<Ask>,
}

/// Events of one writer cycle waiting to be published, and where to say
/// how it went.
struct Ask {
    msgs: Vec<EventMessage>,
    done: oneshot::Sender<Result<(), EventsError>>,
}

/// Where events go, and the channels they go on.
struct Routes {
    topology: Topology,
    channels: Arc<ConfirmChannels>,
}

/// How long a publish waits for the broker's confirm, and for a channel.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

impl Events {
    /// A publisher on `channels`; starts its flusher task.
    pub fn new(topology: Topology, channels: Arc<ConfirmChannels>) -> Self {
        let routes = Arc::new(Routes { topology, channels });
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush(routes, rx));
        Self { asks }
    }

    /// Publishes the events persistently (possibly in one message with
    /// other cycles' events) and waits for the broker's confirm; an error
    /// means they may not have been taken.
    pub async fn publish(&self, msgs: Vec<EventMessage>) -> Result<(), EventsError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let ask = Ask { msgs, done };
        self.asks.send(ask).map_err(|_| EventsError::Stopped)?;
        answer.await.unwrap_or(Err(EventsError::Stopped))
    }
}

/// The flusher: takes every ask waiting once a publish slot is free and
/// publishes them together.
async fn flush(routes: Arc<Routes>, mut rx: mpsc::UnboundedReceiver<Ask>) {
    let slots = Arc::new(Semaphore::new(FLUSHES));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Asks that came while the slots were taken join this one.
        let mut n = first.msgs.len();
        let mut asks = vec![first];
        while n < MAX_EVENTS_PER_MESSAGE {
            match rx.try_recv() {
                Ok(a) => {
                    n += a.msgs.len();
                    asks.push(a);
                }
                Err(_) => break,
            }
        }
        let routes = routes.clone();
        tokio::spawn(async move {
            let mut asks = asks;
            let msgs: Vec<EventMessage> = asks
                .iter_mut()
                .flat_map(|a| std::mem::take(&mut a.msgs))
                .collect();
            let result = routes.publish(msgs).await;
            drop(slot);
            for a in asks {
                let _ = a.done.send(result.clone());
            }
        });
    }
}

impl Routes {
    /// Publishes the events to the dispatchers' queue, in persistent
    /// messages of at most [`MAX_EVENTS_PER_MESSAGE`], and waits for the
    /// broker's confirms.
    async fn publish(&self, msgs: Vec<EventMessage>) -> Result<(), EventsError> {
        let main = self.topology.webhooks_exchange();
        let lease =
            self.channels
                .lease(PUBLISH_WAIT)
                .await
                .map_err(|source| EventsError::Publish {
                    exchange: main.clone(),
                    source,
                })?;
        // All of them on one lease: any failure fails them all.
        let sends = msgs
            .chunks(MAX_EVENTS_PER_MESSAGE)
            .map(|part| publish_on(&lease, &main, part, None));
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }
}

/// Publishes `msgs` to `exchange` on `lease` as one
/// persistent, mandatory message, with the message TTL `expiration_ms` if
/// given, and waits for the confirm: a message the broker returns (no
/// queue behind the exchange) is an error, like a nack or no confirm.
pub async fn publish_on(
    lease: &Lease,
    exchange: &str,
    msgs: &[EventMessage],
    expiration_ms: Option<u64>,
) -> Result<(), EventsError> {
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(MESSAGE_TYPE.into())
        .with_message_id(uuid::Uuid::new_v4().to_string().into());
    if let Some(ms) = expiration_ms {
        props = props.with_expiration(ms.to_string().into());
    }
    let body = encode_all(msgs);
    lease
        .publish(exchange, "", &body, props, PUBLISH_WAIT)
        .await
        .map_err(|source| EventsError::Publish {
            exchange: exchange.to_string(),
            source,
        })
}

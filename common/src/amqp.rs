//! Opening RabbitMQ connections with a deadline.
//!
//! Connections are rebuilt by their owners' supervisors (the producer's
//! publisher, the worker's consumer loop) rather than by lapin's
//! experimental auto-recovery, so each owner decides what to redeclare.

use crate::config::AmqpConfig;
use lapin::options::BasicPublishOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::time::Duration;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused or the network failed.
    #[error("broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    /// No answer within the connect timeout.
    #[error("broker connection timed out after {0:?}")]
    Timeout(Duration),
    /// `amqp.ca_file` cannot be read.
    #[error("amqp.ca_file: {0}")]
    CaFile(String),
}

/// Opens a connection named `name` (shown in the broker's connection
/// list) to one of the configured nodes. The nodes are tried in a new
/// shuffled order on every call, each within the connect timeout, so a
/// lost node costs one attempt and reconnects spread over the cluster; the
/// last node's error is returned when none answers.
pub async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection, ConnectError> {
    let mut nodes = cfg.nodes();
    fastrand::shuffle(&mut nodes);
    // `nodes()` always holds one node at least (`url` when `urls` is empty).
    let (last, others) = nodes.split_last().expect("at least one node");
    for url in others {
        match connect_to(cfg, url, name).await {
            Ok(conn) => return Ok(conn),
            Err(e @ ConnectError::CaFile(_)) => return Err(e),
            Err(e) => {
                tracing::debug!(node = %crate::config::redacted(url), error = %e, "broker node did not answer");
            }
        }
    }
    connect_to(cfg, last, name).await
}

async fn connect_to(cfg: &AmqpConfig, url: &str, name: &str) -> Result<Connection, ConnectError> {
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = match &cfg.ca_file {
        None => OwnedTLSConfig::default(),
        Some(path) => OwnedTLSConfig {
            identity: None,
            cert_chain: Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConnectError::CaFile(format!("{}: {e}", path.display())))?,
            ),
        },
    };
    let runtime = lapin::runtime::default_runtime()?;
    let connecting = Connection::connect_with_config(url, props, tls, runtime);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// Closes a connection, waiting at most a few seconds for the broker's
/// answer: a close must never hold up a shutdown or a reconnect.
pub async fn close(conn: &Connection, reason: &str) {
    let closing = conn.close(200, reason.into());
    if tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!(reason, "the broker did not confirm the connection close");
    }
}

/// Why a message was not taken by the broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No connection, and none could be made.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// No confirm within the publish timeout.
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    /// The broker refused the message (nack, e.g. queue full).
    #[error("the broker refused the message")]
    Nacked,
    /// No queue is bound for the routing key: the broker returned it.
    #[error("no queue for routing key `{0}`")]
    Unroutable(String),
}

/// Publishes one persistent message with `mandatory` on `ch` (in confirm
/// mode) and waits at most `timeout` for the broker's confirm. The one way
/// every infq message is published: a message is held by the broker only
/// when this returns `Ok`; a message returned as unroutable (a deleted
/// queue behind a live binding), a nack, a lost channel or no confirm in
/// time are all errors, so the caller never acknowledges what it handed
/// on. Only through a [`crate::confirms::Lease`]: see there why.
pub(crate) async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let confirm = async {
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            props.with_delivery_mode(2),
        )
        .await?
        .await
    };
    match tokio::time::timeout(timeout, confirm).await {
        Err(_) => Err(PublishError::Timeout(timeout)),
        Ok(Err(e)) => Err(PublishError::Unavailable(e.to_string())),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(routing_key.into())),
        Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
            "channel not in confirm mode".into(),
        )),
    }
}

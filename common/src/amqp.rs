//! Opening RabbitMQ connections with a deadline.
//!
//! Connections are rebuilt by their owners' supervisors (the producer's
//! publisher, the worker's consumer loop) rather than by lapin's
//! experimental auto-recovery, so each owner decides what to redeclare.

use crate::config::AmqpConfig;
use lapin::{Connection, ConnectionProperties};
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
}

/// Opens a connection named `name` (shown in the broker's connection list).
pub async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection, ConnectError> {
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(&cfg.url, props)).await {
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

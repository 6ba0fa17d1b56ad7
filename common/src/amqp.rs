//! Opening RabbitMQ connections with a deadline.
//!
//! Connections are rebuilt by their owners' supervisors (the producer's
//! publisher, the worker's consumer loop) rather than by lapin's
//! experimental auto-recovery, so each owner decides what to redeclare.

use crate::config::AmqpConfig;
use lapin::tcp::OwnedTLSConfig;
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
    /// `amqp.ca_file` cannot be read.
    #[error("amqp.ca_file: {0}")]
    CaFile(String),
}

/// Opens a connection named `name` (shown in the broker's connection list).
pub async fn connect(cfg: &AmqpConfig, name: &str) -> Result<Connection, ConnectError> {
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
    let connecting = Connection::connect_with_config(&cfg.url, props, tls, runtime);
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

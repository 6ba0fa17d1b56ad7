//! The `[amqp]` section: the RabbitMQ connection and the queues' limits.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// RabbitMQ connection and queue settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL (`amqp://` or `amqps://`); `?heartbeat=N` sets the
    /// heartbeat that detects half-open connections.
    pub url: String,
    /// PEM file of certificate authorities trusted for `amqps://` besides
    /// the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a connection to open.
    pub connect_timeout_ms: u64,
    /// Longest wait for the broker to confirm a publish before answering 503.
    pub publish_timeout_ms: u64,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Removes a queue unused for this long (for tests and ephemeral setups).
    pub queue_expires_ms: Option<u64>,
    /// Messages a job queue holds at most; past it the broker refuses
    /// publishes and submissions get `429`. A bulk chunk is one message.
    pub max_queue_length: u64,
    /// Delays of the retry tiers a job waits in before another attempt,
    /// shortest first; attempt n waits in tier n (or the last).
    pub retry_delays_ms: Vec<u64>,
    /// How often queue depths and consumer counts are read for `/metrics`.
    pub stats_interval_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into(),
            ca_file: None,
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
            delivery_limit: 5,
            queue_expires_ms: None,
            max_queue_length: 1_000_000,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            stats_interval_ms: 5_000,
        }
    }
}

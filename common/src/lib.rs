//! Types and plumbing shared by the infq producer, worker and CLI.
//!
//! Everything both sides of the queue must agree on lives here: the job and
//! message types, the queue topology, the Redis key schema and its scripts,
//! the model registry, configuration, metric names and the shutdown signal.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod config;
pub mod dead;
pub mod idempotency;
pub mod job;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod queue_stats;
pub mod registry;
pub mod reload;
pub mod results;
pub mod retry;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod topology;
pub mod trace;
pub mod views;
pub mod webhooks;

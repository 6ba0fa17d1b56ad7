//! Types and plumbing shared by the infq producer, worker and CLI.
//!
//! Everything both sides of the queue must agree on lives here: the job and
//! message types, the queue topology, the Redis key schema and its scripts,
//! the model registry, configuration, metric names and the shutdown signal.
//!
//! Redis, one owner per concept:
//!
//! - [`keys`] (`keys.rs`): the key schema; the only code that names a key
//!   or channel. Callers name a [`keys::Subject`], a tenant or a URL.
//! - [`store`] (`store/`): job and batch records and their state scripts
//!   (`store/lua/*.lua`, each headed by its KEYS and ARGV contract, every
//!   key passed in `KEYS[]`): records (`record.rs`), job transitions
//!   (`job.rs`), batch transitions and chunk results (`batch.rs`), bulk
//!   claims and writes (`pipeline.rs`), quota (`quota.rs`,
//!   `tenant_of.rs`), erasure (`erase.rs`).
//! - [`tenants`]: tenants and API keys (their quota is the store's).
//! - [`idempotency`]: idempotency keys (`lua/idempotency_*.lua`).
//! - [`webhooks::store`]: webhook events and delivery logs
//!   (`webhooks/lua/*.lua`).
//! - [`reload`]: the registry reload channel.
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

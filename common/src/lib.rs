//! Types and plumbing shared by the infq producer, worker and CLI.
//!
//! Everything both sides of the queue must agree on lives here: the job and
//! message types, the queue topology, the Redis key schema and its scripts,
//! the model registry, configuration, metric names and the shutdown signal.
//!
//! A job's path, and the file that owns each step of it:
//!
//! - [`message`] (`message.rs`, wire form in `message/wire.rs`): the
//!   message a job or a bulk chunk travels in. What the work is is a
//!   [`message::Work`] (`Job { id }` or `Chunk { batch, index, first_row }`);
//!   its AMQP properties, message id and routing key are methods of
//!   [`message::JobMessage`], so every publisher agrees.
//! - [`amqp`] (`amqp.rs`): connecting, and [`amqp::publish_confirmed`], the
//!   one publish (mandatory, confirmed, bounded wait, returned = failed)
//!   every publisher uses, on a channel lent to it alone
//!   ([`confirms`], `confirms.rs`), so that a returned message is reported
//!   to its own publisher.
//! - [`topology`] (`topology.rs`, `topology/death.rs`): exchanges, queues
//!   and their arguments; why a message was dead-lettered.
//! - [`dead`] (`dead.rs`): publishing a refused message to `<ns>.dead`
//!   with its reason.
//! - [`registry`] (`registry/`) and [`config`] (`config/`): the models and
//!   the settings, validated at start.
//! - [`webhooks`]: event messages, signing and the endpoint guard.
//!
//! Redis, one owner per concept:
//!
//! - [`redis_link`] (`redis_link/`): the connection in each deployment
//!   mode (standalone, Sentinel in `sentinel.rs`, Redis Cluster), pipelines
//!   split by slot, `WAIT` for `redis.min_replicas_ack`, and pub/sub in
//!   every mode (`subscribe.rs`). Every Redis call goes through it.
//! - [`keys`] (`keys.rs`): the key schema; the only code that names a key
//!   or channel. Callers name a [`keys::Subject`], a tenant or a URL.
//! - [`store`] (`store/`): job and batch records and their state scripts
//!   (`store/lua/*.lua`, each headed by its KEYS and ARGV contract, every
//!   key passed in `KEYS[]`, every script within one slot): records
//!   (`record.rs`), job transitions (`job.rs`), batch transitions and chunk
//!   results (`batch.rs`), bulk claims and writes (`pipeline.rs`), quota
//!   (`quota.rs`, `tenant_of.rs`), what scripts leave to do on other slots
//!   (`after.rs`), erasure (`erase.rs`).
//! - [`tenants`]: tenants and API keys (their quota is the store's).
//! - [`idempotency`]: idempotency keys (`lua/idempotency_*.lua`).
//! - [`webhooks::store`]: webhook events and delivery logs
//!   (`webhooks/lua/*.lua`).
//! - [`reload`]: the registry reload channel.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod audit;
pub mod config;
pub mod confirms;
pub mod dead;
pub mod explain;
pub mod f32le;
pub mod idempotency;
pub mod job;
pub mod keys;
pub mod lineage;
pub mod message;
pub mod metrics;
pub mod queue_stats;
pub mod recency;
pub mod redis_link;
pub mod registry;
pub mod reload;
pub mod results;
pub mod retry;
pub mod sha256;
pub mod shares;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod topology;
pub mod trace;
pub mod views;
pub mod webhooks;

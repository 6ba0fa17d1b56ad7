//! The job store: job and batch records in Redis and the scripts that
//! guard their state, used by both sides of the queue.
//!
//! A job lives in one hash, a bulk batch in another with its chunk results
//! in one hash per batch (the key schema is [`crate::keys`]'s). State
//! changes go through Lua scripts that apply the rule of
//! `JobStatus::may_replace` (in [`crate::job`]): terminal states never
//! change and ranks never go down. Every write refreshes the TTL, so
//! records expire after the retention period. Reaching a terminal state
//! publishes the id on the `done` channel, which wakes long-polls.
//!
//! Every key a script touches is passed in its `KEYS[]`, so the keys of
//! one job or batch share a Redis Cluster slot (hash tag). The scripts that
//! end a subject also give back its tenant's quota, which lives in another
//! slot: on one server (or a Sentinel-watched primary) they are handed the
//! quota keys and do it in the same step; in a Redis Cluster they are not,
//! and leave it to the store, which does it right after (`after.rs`).
//!
//! The modules, one concept each:
//!
//! - `handle.rs`: [`JobStore`] (connection, keys, retention) and how
//!   scripts are sent (reloaded after a Redis restart);
//! - `scripts.rs`: the Lua scripts, from the `lua/` files beside it, each
//!   headed by its KEYS and ARGV contract;
//! - `record.rs`: what a job or batch record holds, and its parsing;
//! - `outcome.rs`: what callers ask of the scripts and what they answer;
//! - `job.rs`: single jobs (create as admitted, read, claim, transition);
//! - `batch.rs`: batches (create, digests, chunk results, dead chunks);
//! - `pipeline.rs`: claims and writes in bulk, cancel and reopen of either;
//! - `quota.rs`: tenants' quotas; `tenant_of.rs`: how the scripts that
//!   give quota back learn whose keys to take; `after.rs`: what scripts
//!   leave to do on other slots (a cluster's quota releases and
//!   announcements);
//! - `erase.rs`: erasure on a tenant's request;
//! - `ttl.rs` and `error.rs`: retention floors and the error type.

mod after;
mod batch;
mod erase;
mod error;
mod handle;
mod job;
mod outcome;
mod pipeline;
pub mod quota;
mod record;
mod scripts;
mod tenant_of;
mod ttl;

pub use error::StoreError;
pub use handle::JobStore;
pub use outcome::{Applied, Cancelled, ChunkResult, Claim, ClaimOf, Reopened, Transition, Write};
pub use quota::{Admission, QuotaCheck, QUOTA_HORIZON_MS};
pub use record::{BatchRecord, JobRecord, Lineage, NewBatch, NewJob};
pub use ttl::{OPEN_TTL_MS, TOMBSTONE_MS};

#[cfg(test)]
mod script_tests;

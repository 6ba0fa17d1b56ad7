//! The `[worker]` section: which models a worker serves and how it runs
//! them.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Most rows `share_rows_with_jobs` may name: more than any share holds.
pub const MAX_SHARE_ROWS_WITH_JOBS: usize = 1 << 24;

/// The worker's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Models this worker serves; empty means every model in the registry.
    pub models: Vec<String>,
    /// Threads libtorch uses inside one operation.
    pub intra_op_threads: usize,
    /// Overrides every model's `device` (`auto`, `cpu`, `cuda:N`).
    pub device: Option<String>,
    /// Longest a shutdown waits for the batch in flight to be stored.
    pub drain_timeout_secs: u64,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz`.
    pub listen: Option<SocketAddr>,
    /// How long a batch waits for an unreachable store before its jobs are
    /// sent back through the retry tiers.
    pub store_retry_secs: u64,
    /// Retries of one job after transient failures, before it is failed or
    /// dead-lettered.
    pub max_retries: u32,
    /// The prefetch of each tenant's share while single jobs arrive, in
    /// rows: the chunks that hold this many (see
    /// `worker/src/share_prefetch.rs`).
    pub share_rows_with_jobs: usize,
    /// How long after a single job is received
    /// `share_rows_with_jobs` applies.
    pub single_jobs_recent_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            intra_op_threads: 1,
            device: None,
            drain_timeout_secs: 30,
            listen: Some("127.0.0.1:9091".parse().expect("static address")),
            store_retry_secs: 10,
            max_retries: 5,
            share_rows_with_jobs: 1024,
            single_jobs_recent_ms: 1000,
        }
    }
}

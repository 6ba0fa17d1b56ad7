//! The `[producer]` section: the HTTP API's limits, bulk uploads and
//! their spool.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The HTTP producer's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest accepted body of `POST /v1/jobs`.
    pub max_body_bytes: usize,
    /// Longest `?wait=` a client may ask for.
    pub max_wait_secs: u64,
    /// Rows per bulk chunk message: the broker's per-message cost is paid
    /// once per chunk.
    pub chunk_rows: u32,
    /// Most rows in one bulk upload.
    pub max_batch_rows: u64,
    /// Largest bulk upload, in bytes.
    pub max_upload_bytes: u64,
    /// Folder for the spool files that hold validated rows until the whole
    /// upload has passed; the system temporary folder when unset.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Spool bytes all uploads in flight in one producer may hold on disk
    /// together; past it an upload gets `429`.
    pub spool_budget_bytes: u64,
    /// Spool bytes one tenant's uploads in flight in one producer may hold
    /// together: one upload past it gets `413`, and one that others of the
    /// tenant leave no room for gets `429`.
    pub tenant_spool_bytes: u64,
    /// Chunk publishes awaiting their confirm at once, per upload, while
    /// no single jobs are being submitted: more answer an upload sooner.
    pub publish_window: usize,
    /// Chunk publishes awaiting their confirm at once in the whole
    /// producer while single jobs are being submitted: each is one more
    /// message the broker handles before a single job's publish.
    pub publish_window_with_jobs: usize,
    /// How recently a single job must have been published for
    /// `publish_window_with_jobs` to apply.
    pub single_jobs_recent_ms: u64,
    /// How long an `Idempotency-Key` is remembered after its request.
    pub idempotency_ttl_secs: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            max_body_bytes: 1 << 20,
            max_wait_secs: 60,
            chunk_rows: 256,
            max_batch_rows: 10_000_000,
            max_upload_bytes: 4 << 30,
            spool_dir: None,
            spool_budget_bytes: 16 << 30,
            tenant_spool_bytes: 8 << 30,
            publish_window: 256,
            publish_window_with_jobs: 8,
            single_jobs_recent_ms: 100,
            idempotency_ttl_secs: 86_400,
        }
    }
}

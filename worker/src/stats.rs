//! Counters of what a worker did and whether it is ready.
//!
//! Prometheus gets the same figures through the `metrics` facade; these
//! atomics exist so readiness and in-process tests can read them directly.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters of one worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Every served model is loaded.
    pub models_loaded: AtomicBool,
    /// Models (versions) this worker serves.
    pub models_total: AtomicU64,
    /// Of those, loaded so far.
    pub models_ready: AtomicU64,
    /// The broker connection and its consumers are up.
    pub broker_connected: AtomicBool,
    /// Broker sessions (connection, topology, consumers) started.
    pub broker_sessions: AtomicU64,
    /// The webhook dispatcher's broker sessions started.
    pub webhook_sessions: AtomicU64,
    /// Consumers the broker cancelled (each then subscribes again).
    pub consumer_cancels: AtomicU64,
    /// The worker has drained and stopped.
    pub stopped: AtomicBool,
    /// Forward passes run.
    pub batches: AtomicU64,
    /// Rows run through the model.
    pub rows: AtomicU64,
    /// The largest batch so far, in rows.
    pub max_batch_rows: AtomicU64,
    /// Results stored and acknowledged.
    pub jobs_stored: AtomicU64,
    /// Redeliveries acknowledged without running, because already terminal.
    pub jobs_skipped: AtomicU64,
    /// Messages rejected to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Jobs sent back through a retry tier after a transient failure.
    pub jobs_retried: AtomicU64,
    /// Changes of a share consumer's prefetch, as single jobs started or
    /// stopped arriving (see [`crate::share_prefetch`]).
    pub share_prefetch_changes: AtomicU64,
    /// Job messages delivered to this worker and not yet settled.
    pub held: Arc<AtomicI64>,
}

impl WorkerStats {
    /// Counts one forward pass of `rows` rows.
    pub fn record_batch(&self, rows: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.max_batch_rows
            .fetch_max(rows as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

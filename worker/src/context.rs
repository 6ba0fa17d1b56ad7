//! The worker's shared handles, built once at start and never filled in
//! later: configuration, queue topology, the job store, counters, the
//! queue head times, the signal that stops consuming, and the shares'
//! prefetch while single jobs arrive.
//!
//! What belongs to one broker connection (its publishers) is a
//! [`crate::session::Session`] instead, built with the connection.

use crate::share_prefetch::SharePrefetch;
use crate::stats::WorkerStats;
use infq_common::config::Settings;
use infq_common::message::JobMessage;
use infq_common::queue_stats::HeadTimes;
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use infq_common::topology::Topology;
use std::sync::Arc;
use std::time::Duration;

/// What the worker's stages share.
pub struct WorkerCtx {
    /// The configuration.
    pub settings: Settings,
    /// Exchange and queue names.
    pub topology: Topology,
    /// Job, chunk and batch records.
    pub store: JobStore,
    /// Counters of what the worker did.
    pub stats: Arc<WorkerStats>,
    /// The newest message time seen at the head of each job queue.
    pub heads: Arc<HeadTimes>,
    /// Cancelled when consuming stops (the start of the drain).
    pub consuming: CancellationToken,
    /// The shares' prefetch while single jobs arrive.
    pub share_prefetch: SharePrefetch,
}

impl WorkerCtx {
    /// How long to keep trying an unreachable store before sending jobs
    /// back through the retry tiers.
    pub fn patience(&self) -> Duration {
        Duration::from_secs(self.settings.worker.store_retry_secs)
    }

    /// Whether the job `msg` may be retried again (see
    /// [`crate::completion::retry`]).
    pub fn can_retry(&self, msg: &JobMessage) -> bool {
        msg.retries < self.settings.worker.max_retries
    }
}

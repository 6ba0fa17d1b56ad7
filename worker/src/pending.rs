//! A job between its delivery and its acknowledgement.

use infq_common::job::Priority;
use infq_common::message::JobMessage;
use infq_common::store::NewJob;
use lapin::Acker;
use std::time::Instant;

/// A decoded delivery: the job, and the handle that acknowledges it once its
/// result is stored.
#[derive(Debug)]
pub struct Pending {
    /// The job.
    pub msg: JobMessage,
    /// Acknowledges the delivery on the channel it came from.
    pub acker: Acker,
    /// The lane it was consumed from.
    pub lane: Priority,
    /// When the worker received it, for batch-wait timing.
    pub received: Instant,
}

impl Pending {
    /// Rows this job contributes to a batch.
    pub fn rows(&self, width: usize) -> usize {
        self.msg.inputs.len().checked_div(width).unwrap_or(0)
    }

    /// The record fields, for claims and for rewriting a missing record.
    pub fn record(&self) -> NewJob {
        NewJob {
            id: self.msg.id,
            model: self.msg.model.clone(),
            version: self.msg.version.clone(),
            priority: self.msg.priority,
            created_at_ms: self.msg.created_at_ms,
            metadata: None,
        }
    }
}

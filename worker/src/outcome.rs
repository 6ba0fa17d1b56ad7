//! What the pipeline's stages hand each other after a batch is formed:
//! the model thread's outcome of a forward pass, and the outcomes every
//! stage sends the completion stage. Both sides import this module, never
//! each other.

use crate::pending::{Pending, Settle};
use infq_common::job::JobStatus;
use infq_common::registry::ModelSpec;
use lapin::BasicProperties;
use std::sync::Arc;

/// Why a forward pass (of a batch or of one row) gave no outputs.
///
/// libtorch reports every failure as a message; it is classified here,
/// once, where the error is created ([`From<tch::TchError>`]), and
/// everything after matches on the variant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// The device ran out of memory: that depends on what else ran at the
    /// time, not on the input, so another attempt may pass.
    #[error("{0}")]
    OutOfMemory(String),
    /// libtorch refused the input or the module failed on it.
    #[error("{0}")]
    Torch(String),
    /// The module returned a tensor of another shape than `[rows, outputs]`.
    #[error("output shape {shape:?}, expected [{rows}, outputs]")]
    Shape {
        /// The shape returned.
        shape: Vec<i64>,
        /// The rows run.
        rows: usize,
    },
    /// The module returned another number of values than the schema's
    /// outputs for the rows run.
    #[error("{values} outputs for {rows} rows")]
    Outputs {
        /// Values returned.
        values: usize,
        /// Rows run.
        rows: usize,
    },
    /// The same, for one row run alone (after its batch failed).
    #[error("{0} outputs for one row")]
    RowOutputs(usize),
}

impl InferError {
    /// Whether another attempt may pass: only running out of memory.
    pub fn is_retryable(&self) -> bool {
        matches!(self, InferError::OutOfMemory(_))
    }
}

impl From<tch::TchError> for InferError {
    fn from(e: tch::TchError) -> Self {
        let message = e.to_string();
        // libtorch raises out-of-memory (CUDA's or the host's) as a plain
        // error whose message says so; there is no other sign of it.
        if message.to_ascii_lowercase().contains("out of memory") {
            InferError::OutOfMemory(message)
        } else {
            InferError::Torch(message)
        }
    }
}

/// The result of a forward pass.
#[derive(Debug)]
pub enum ModelOutcome {
    /// The whole batch ran: `rows x outputs` values, row-major.
    Batch(Vec<f32>),
    /// The batch failed and its rows were run one by one; one entry per
    /// row, each the row's outputs or its error.
    PerRow(Vec<Result<Vec<f32>, InferError>>),
}

/// What the stages send the completion stage ([`crate::completion`]): an
/// outcome for each delivery, which that stage alone turns into a stored
/// state and a settled delivery.
pub enum CompletionCommand {
    /// The outcome of a forward pass over `jobs`: store, announce,
    /// acknowledge.
    Store {
        /// The model version that ran.
        spec: Arc<ModelSpec>,
        /// The jobs, in row order.
        jobs: Vec<Pending>,
        /// What the model returned.
        outcome: ModelOutcome,
        /// Per job, the attributions of its rows (`rows x width`) when its
        /// record asked for an explanation.
        explained: Vec<Option<Result<Vec<f32>, InferError>>>,
        /// The SHA-256 of the model file that ran, for the results'
        /// lineage.
        model_sha256: Arc<str>,
    },
    /// Jobs their claim ended without running: already terminal (`None`),
    /// or expired by it. Their state is stored: announce and acknowledge.
    Ended(Vec<(Pending, Option<JobStatus>)>),
    /// Jobs that cannot run now: send them through the retry tiers (those
    /// out of retries to the dead-letter queue).
    Retry {
        /// The jobs.
        jobs: Vec<Pending>,
        /// Why, for the log.
        reason: String,
    },
    /// Messages refused (they name no record, or do not match it):
    /// dead-letter each with its reason.
    Refuse(Vec<(Pending, String)>),
    /// A message taken from a queue its work does not belong on (another
    /// model's, or another lane): dead-letter it marked misplaced, so its
    /// record is left to the job's own message.
    Misplaced(Pending, String),
    /// A message that decoded but cannot run: a single job is recorded as
    /// failed with `code`; a chunk, or a message that matches no record,
    /// is dead-lettered.
    CannotRun {
        /// The job.
        job: Pending,
        /// The error code stored.
        code: &'static str,
        /// The error message stored.
        reason: String,
    },
    /// A message from `queue` that could not be decoded: dead-letter it as
    /// it came, touching no record.
    Undecodable {
        /// The delivery.
        raw: RawDelivery,
        /// The queue it came from.
        queue: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// A dead letter from `<ns>.dead.record`: record its job or chunk as
    /// failed.
    DeadLetter(RawDelivery),
}

/// A delivery as it came, for messages the worker does not run.
pub struct RawDelivery {
    /// How to settle it.
    pub delivery: Settle,
    /// The body.
    pub data: Vec<u8>,
    /// The properties (headers carry the death reason).
    pub properties: BasicProperties,
}

//! A job between its delivery and its acknowledgement.

use crate::settle::Settler;
use infq_common::job::Priority;
use infq_common::message::{JobMessage, Work};
use std::sync::Arc;
use std::time::Instant;

/// A delivery to settle: its tag on the channel whose [`Settler`] settles it.
/// Only the completion stage ([`crate::completion`]) settles it.
#[derive(Clone)]
pub struct Settle {
    /// The delivery tag.
    pub tag: u64,
    /// The channel's settler.
    pub settler: Arc<Settler>,
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Settle({})", self.tag)
    }
}

impl Settle {
    /// A delivery that settles nothing, for jobs made up in tests.
    pub fn detached(tag: u64) -> Self {
        Self {
            tag,
            settler: Settler::detached(),
        }
    }

    /// A delivery that settles nothing but whose end publishes on
    /// `session`, for jobs made up in tests.
    pub fn detached_on(tag: u64, session: Arc<crate::session::Session>) -> Self {
        Self {
            tag,
            settler: Settler::detached_on(session),
        }
    }
}

/// A decoded delivery: the job, and how to settle it once its result is
/// stored.
#[derive(Debug)]
pub struct Pending {
    /// The job.
    pub msg: JobMessage,
    /// Settles the delivery on the channel it came from.
    pub delivery: Settle,
    /// The lane it was consumed from.
    pub lane: Priority,
    /// When the worker received it, for batch-wait timing.
    pub received: Instant,
    /// The job's span in this worker (`infq::job`, debug level: disabled
    /// unless `RUST_LOG` enables it); closes when the job is settled.
    pub span: tracing::Span,
    /// Whether its end is announced by a webhook event: what its stored
    /// record says, learnt when it is claimed (never what the message
    /// says).
    pub webhook: bool,
    /// Whether its score is to be explained: also learnt from its record
    /// when it is claimed.
    pub explain: bool,
}

impl Pending {
    /// A job of `model@version` that came from no broker and is settled by
    /// no one, identified by `tag`: for jobs made up in tests and in the
    /// GPU smoke check, which drive the model threads and the writer
    /// directly.
    pub fn made_up(model: &str, version: &str, lane: Priority, inputs: Vec<f32>, tag: u64) -> Self {
        Self {
            msg: JobMessage {
                work: Work::Job {
                    id: infq_common::job::new_job_id(),
                },
                model: model.into(),
                version: version.into(),
                priority: lane,
                inputs,
                created_at_ms: 0,
                deadline_at_ms: None,
                retries: 0,
                webhook_url: None,
                tenant: None,
                retention_ms: None,
                passthrough: Vec::new(),
            },
            delivery: Settle::detached(tag),
            lane,
            received: Instant::now(),
            span: tracing::Span::none(),
            webhook: false,
            explain: false,
        }
    }

    /// The span of a job taken from the queue, continuing the trace of a
    /// `traceparent` the message carries.
    pub fn span_of(msg: &JobMessage, headers: Option<&lapin::types::FieldTable>) -> tracing::Span {
        tracing::debug_span!(
            target: infq_common::trace::JOB_TARGET,
            "job",
            stage = "run",
            job_id = %msg.record(),
            trace_id = %infq_common::trace::trace_id(trace_of(headers).as_deref(), &msg.record()),
            model = %msg.model,
            chunk = msg.work.chunk().map(|c| c.index),
            batch = tracing::field::Empty,
            outcome = tracing::field::Empty,
            e2e_ms = tracing::field::Empty,
        )
    }

    /// Rows this job contributes to a batch.
    pub fn rows(&self, width: usize) -> usize {
        self.msg.inputs.len().checked_div(width).unwrap_or(0)
    }

    /// The webhook event due when this job (or, for a chunk, its batch)
    /// has ended, if its record asks for one.
    pub fn event(&self) -> Option<infq_common::webhooks::event::EventMessage> {
        use infq_common::webhooks::event::{EventMessage, SubjectKind};
        let kind = match self.msg.work.chunk() {
            Some(_) => SubjectKind::Batch,
            None => SubjectKind::Job,
        };
        self.webhook
            .then(|| EventMessage::new(kind, self.msg.record()))
    }
}

/// The trace id of a message's `traceparent` header, if it has a valid one.
fn trace_of(headers: Option<&lapin::types::FieldTable>) -> Option<String> {
    match headers?.inner().get(infq_common::trace::TRACEPARENT)? {
        lapin::types::AMQPValue::LongString(s) => {
            infq_common::trace::parse_traceparent(std::str::from_utf8(s.as_bytes()).ok()?)
        }
        _ => None,
    }
}

//! What callers ask of the state scripts (transitions, claims, writes)
//! and what the scripts answer, with the parsing of their replies (pure:
//! no I/O).

use super::error::StoreError;
use crate::job::{JobError, JobId, JobStatus};
use crate::message::JobMessage;
use redis::Value;

/// A state change to apply.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub status: JobStatus,
    /// Output JSON text, for `succeeded`.
    pub output: Option<String>,
    /// The score's explanation (JSON text), for `succeeded` when asked.
    pub explanation: Option<String>,
    /// The SHA-256 of the model file that ran it, when one did.
    pub model_sha256: Option<String>,
    /// Reason, for `failed` (and the last one, for `retrying`).
    pub error: Option<JobError>,
}

impl Transition {
    /// `succeeded` with its output JSON.
    pub fn succeeded(output: String) -> Self {
        Self {
            status: JobStatus::Succeeded,
            output: Some(output),
            explanation: None,
            model_sha256: None,
            error: None,
        }
    }

    /// This state as reached by running the model file `sha256`.
    pub fn ran(mut self, sha256: &str) -> Self {
        self.model_sha256 = Some(sha256.to_string());
        self
    }

    /// This `succeeded` with its explanation too.
    pub fn explained(mut self, explanation: String) -> Self {
        self.explanation = Some(explanation);
        self
    }

    /// `failed` with a reason.
    pub fn failed(error: JobError) -> Self {
        Self {
            status: JobStatus::Failed,
            output: None,
            explanation: None,
            model_sha256: None,
            error: Some(error),
        }
    }

    /// Any state without payload.
    pub fn to(status: JobStatus) -> Self {
        Self {
            status,
            output: None,
            explanation: None,
            model_sha256: None,
            error: None,
        }
    }
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The new state is stored.
    Yes,
    /// A chunk's results are stored and its batch is complete.
    Completed,
    /// A chunk's results are stored, and the batch's progress event
    /// number `n` is due (its interval has passed since the last one).
    Progress(u32),
    /// Refused: the stored state (terminal, or of higher rank) stays.
    Refused(JobStatus),
    /// A chunk whose results were stored before, or a job or batch with
    /// no record (it is never made from a message).
    Ignored,
    /// The message is not the one its job was accepted with.
    Forged,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Run it: for single jobs, attempt number `attempt` (0 for chunks).
    Run {
        /// The attempt.
        attempt: u32,
        /// Whether its record asks for a callback.
        webhook: bool,
        /// Whether its record asks for the score to be explained.
        explain: bool,
    },
    /// Do not run, just acknowledge: already terminal (cancelled, done,
    /// erased), or already stored; `webhook` when its end is to be
    /// announced (again: the dispatcher sends each event once).
    Skip {
        /// Whether its end is announced.
        webhook: bool,
    },
    /// Its deadline passed: it is `expired` now.
    Expired {
        /// Whether its end is announced.
        webhook: bool,
    },
    /// The message names no record, or does not match it: it is
    /// dead-lettered with this reason, and nothing is written.
    Refused(String),
}

/// What to claim: a single job, or one chunk of a batch, as its (decoded,
/// untrusted) message names it.
#[derive(Debug, Clone, Copy)]
pub enum ClaimOf<'a> {
    /// A single job.
    Job(&'a JobMessage),
    /// A chunk of a batch, with its rows.
    Chunk(&'a JobMessage, u64),
}

/// A result to store.
#[derive(Debug, Clone, Copy)]
pub enum Write<'a> {
    /// A single job's new state.
    Job(JobId, &'a Transition),
    /// A chunk's results.
    Chunk(&'a ChunkResult),
}

/// The results of one chunk of a batch.
#[derive(Debug, Clone)]
pub struct ChunkResult {
    /// The batch.
    pub batch: JobId,
    /// The chunk.
    pub index: u32,
    /// One JSON element per row, in order: an array of outputs, or an
    /// error string.
    pub rows_json: String,
    /// Rows with outputs.
    pub succeeded: u32,
    /// Rows with an error.
    pub failed: u32,
}

/// What a replay's reopen did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reopened {
    /// Reopened: the job or chunk runs again.
    Yes,
    /// Not dead-lettered (any more, or yet): nothing reopened.
    No,
    /// The dead letter is not the message its job was accepted with, or
    /// does not fit its batch: it names nothing to reopen.
    Forged(String),
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Now cancelled.
    Yes,
    /// No such record.
    Missing,
    /// Refused: the record is in this state.
    Refused(JobStatus),
}

/// A claim script's reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClaimReply {
    /// What the claim found.
    pub claim: Claim,
    /// The record's tenant, when there is a record (`Some(None)`: it has
    /// none).
    pub tenant: Option<Option<String>>,
}

/// A claim script's reply: `{what, webhook, attempt, tenant}` from
/// `claim.lua`, `{what, webhook, tenant}` from `claim_chunk.lua` (`chunk`).
pub(super) fn parse_claim(v: &Value, chunk: bool) -> Result<ClaimReply, StoreError> {
    let Value::Array(parts) = v else {
        return Err(StoreError::Reply(format!("{v:?}")));
    };
    let what = parts.first().and_then(text_of);
    let webhook = matches!(parts.get(1), Some(Value::Int(1)));
    let explain = matches!(parts.get(if chunk { 3 } else { 4 }), Some(Value::Int(1)));
    let attempt = match parts.get(2) {
        Some(Value::Int(n)) if !chunk => (*n).clamp(0, i64::from(u32::MAX)) as u32,
        _ => 0,
    };
    let tenant = parts
        .get(if chunk { 2 } else { 3 })
        .and_then(text_of)
        .map(|t| Some(t).filter(|t| !t.is_empty()));
    let (claim, tenant) = match what.as_deref() {
        Some("run") => (
            Claim::Run {
                attempt,
                webhook,
                explain,
            },
            tenant,
        ),
        Some("skip") => (Claim::Skip { webhook }, tenant),
        Some("expired") => (Claim::Expired { webhook }, tenant),
        Some("missing") => (
            Claim::Refused("no record of it: never accepted, or expired".into()),
            None,
        ),
        Some("forged") => (
            Claim::Refused("it does not match the job its record holds".into()),
            tenant,
        ),
        Some(reason) => (Claim::Refused(reason.to_string()), tenant),
        None => return Err(StoreError::Reply(format!("{v:?}"))),
    };
    Ok(ClaimReply { claim, tenant })
}

/// A transition's or a chunk store's reply.
pub(super) fn applied_of(v: &Value) -> Result<Applied, StoreError> {
    match text_of(v).as_deref() {
        Some("ok") => Ok(Applied::Yes),
        Some("done") => Ok(Applied::Completed),
        Some("dup") | Some("missing") => Ok(Applied::Ignored),
        Some("forged") => Ok(Applied::Forged),
        Some(p) if p.starts_with('p') && p.len() > 1 => p[1..]
            .parse()
            .map(Applied::Progress)
            .map_err(|_| StoreError::Reply(p.to_string())),
        _ => status_of(v).map(Applied::Refused),
    }
}

/// A dead chunk's record reply (`dead_chunk.lua`): anything but a count
/// means the chunk does not fit its batch.
pub(super) fn dead_chunk_of(v: &Value) -> Applied {
    match text_of(v).as_deref() {
        Some("ok") => Applied::Yes,
        Some("done") => Applied::Completed,
        Some("dup") | Some("missing") => Applied::Ignored,
        _ => Applied::Forged,
    }
}

/// A cancellation's reply.
pub(super) fn cancelled_of(v: &Value) -> Result<Cancelled, StoreError> {
    match text_of(v).as_deref() {
        Some("ok") => Ok(Cancelled::Yes),
        Some("missing") => Ok(Cancelled::Missing),
        _ => status_of(v).map(Cancelled::Refused),
    }
}

/// A reopen's reply.
pub(super) fn reopened_of(v: &Value) -> Reopened {
    match text_of(v).as_deref() {
        Some("ok") => Reopened::Yes,
        Some("forged") => Reopened::Forged("it does not match the job its record holds".into()),
        Some(r) if r.starts_with("chunk ") => Reopened::Forged(r.to_string()),
        _ => Reopened::No,
    }
}

/// A reply's text, if it is one.
pub(super) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::SimpleString(s) => Some(s.clone()),
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn status_of(v: &Value) -> Result<JobStatus, StoreError> {
    let s = match v {
        Value::SimpleString(s) => s.clone(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => return Err(StoreError::Reply(format!("{other:?}"))),
    };
    JobStatus::parse(&s).ok_or(StoreError::Reply(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn claims_are_parsed_with_their_tenant() {
        let v = Value::Array(vec![
            bulk("run"),
            Value::Int(1),
            Value::Int(3),
            bulk("acme"),
            Value::Int(1),
        ]);
        let r = parse_claim(&v, false).unwrap();
        assert_eq!(
            r.claim,
            Claim::Run {
                attempt: 3,
                webhook: true,
                explain: true,
            }
        );
        assert_eq!(r.tenant, Some(Some("acme".into())));
        let v = Value::Array(vec![bulk("skip"), Value::Int(0), bulk("")]);
        let r = parse_claim(&v, true).unwrap();
        assert_eq!(r.claim, Claim::Skip { webhook: false });
        assert_eq!(r.tenant, Some(None), "a record without a tenant");
        let v = Value::Array(vec![
            bulk("missing"),
            Value::Int(0),
            Value::Int(0),
            bulk(""),
        ]);
        let r = parse_claim(&v, false).unwrap();
        assert!(matches!(r.claim, Claim::Refused(_)));
        assert_eq!(r.tenant, None, "no record: nothing known");
        let v = Value::Array(vec![
            bulk("chunk index out of range"),
            Value::Int(0),
            bulk("acme"),
        ]);
        assert_eq!(
            parse_claim(&v, true).unwrap().claim,
            Claim::Refused("chunk index out of range".into())
        );
        assert!(parse_claim(&bulk("run"), false).is_err());
    }

    #[test]
    fn script_answers_map_to_outcomes() {
        assert_eq!(applied_of(&bulk("ok")).unwrap(), Applied::Yes);
        assert_eq!(applied_of(&bulk("done")).unwrap(), Applied::Completed);
        assert_eq!(applied_of(&bulk("dup")).unwrap(), Applied::Ignored);
        assert_eq!(applied_of(&bulk("missing")).unwrap(), Applied::Ignored);
        assert_eq!(applied_of(&bulk("forged")).unwrap(), Applied::Forged);
        assert_eq!(applied_of(&bulk("p7")).unwrap(), Applied::Progress(7));
        for bad in ["p", "px", "p-1", "p99999999999"] {
            assert!(applied_of(&bulk(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            applied_of(&bulk("succeeded")).unwrap(),
            Applied::Refused(JobStatus::Succeeded)
        );
        assert!(applied_of(&bulk("nonsense")).is_err());
        assert_eq!(
            dead_chunk_of(&bulk("chunk model does not match its batch")),
            Applied::Forged
        );
        assert_eq!(cancelled_of(&bulk("ok")).unwrap(), Cancelled::Yes);
        assert_eq!(cancelled_of(&bulk("missing")).unwrap(), Cancelled::Missing);
        assert_eq!(
            cancelled_of(&bulk("cancelled")).unwrap(),
            Cancelled::Refused(JobStatus::Cancelled)
        );
        assert_eq!(reopened_of(&bulk("ok")), Reopened::Yes);
        assert_eq!(reopened_of(&bulk("not_dead")), Reopened::No);
        assert!(matches!(reopened_of(&bulk("forged")), Reopened::Forged(_)));
        assert!(matches!(
            reopened_of(&bulk("chunk index out of range")),
            Reopened::Forged(_)
        ));
    }

    #[test]
    fn transitions_carry_their_payload() {
        let t = Transition::succeeded("{}".into());
        assert_eq!(
            (t.status, t.output.as_deref()),
            (JobStatus::Succeeded, Some("{}"))
        );
        let t = Transition::failed(JobError::new("x", "y"));
        assert_eq!(t.status, JobStatus::Failed);
        assert!(t.error.is_some() && t.output.is_none());
        assert_eq!(
            Transition::to(JobStatus::Running).status,
            JobStatus::Running
        );
    }
}

//! Job identity, priority and the job state machine.
//!
//! The state machine is the contract behind "terminal states are final":
//! [`JobStatus::rank`] orders the states, and the Redis scripts of the job
//! store (`store/lua/`) apply a transition only when it does not lower the rank
//! and the stored state is not terminal.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Jobs are addressed by UUID (v7, so ids sort by creation time).
pub type JobId = Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and held by the broker, not yet taken by a worker.
    Queued,
    /// Taken by a worker and in a batch.
    Running,
    /// A transient failure happened; the job waits for another attempt.
    Retrying,
    /// The model ran and the output is stored.
    Succeeded,
    /// The job cannot succeed; `error` says why.
    Failed,
    /// The client cancelled it before it ran.
    Cancelled,
    /// Its deadline passed before a worker could run it.
    Expired,
}

impl JobStatus {
    /// Every state, for parsing and exhaustive tests.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states never change once stored.
    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    /// Order of the states: a stored state may only be replaced by one of
    /// equal or higher rank, and never once it is terminal (rank 2).
    /// `running` and `retrying` share a rank so that attempts can alternate.
    pub fn rank(self) -> u8 {
        match self {
            JobStatus::Queued => 0,
            JobStatus::Running | JobStatus::Retrying => 1,
            _ => 2,
        }
    }

    /// Whether `self` may replace `current`; the same rule the Redis scripts
    /// enforce, kept here so it can be tested without Redis.
    pub fn may_replace(self, current: JobStatus) -> bool {
        !current.is_terminal() && self.rank() >= current.rank()
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which lane a job travels in. Workers fill batches from the interactive
/// lane first, so bulk work never delays a single request by much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Single jobs from `POST /v1/jobs`.
    #[default]
    Interactive,
    /// Rows of bulk batches.
    Bulk,
}

impl Priority {
    /// Both lanes, highest priority first.
    pub const ALL: [Priority; 2] = [Priority::Interactive, Priority::Bulk];

    /// The wire name, also used in queue names and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }
}

/// A reason a job failed, as stored and returned to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    /// Stable machine-readable reason, e.g. `invalid_input`, `model_error`,
    /// `dead_lettered`, `not_enqueued`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

impl JobError {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Milliseconds since the Unix epoch; the one clock stored everywhere.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339 in UTC with exactly three
/// fractional digits, so timestamps also sort as strings.
pub fn format_ms(ms: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A new job id: UUID v7, so ids sort by creation time.
pub fn new_job_id() -> JobId {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn terminal_states_are_final() {
        for cur in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for next in JobStatus::ALL {
                assert!(!next.may_replace(cur), "{next} replaced terminal {cur}");
            }
        }
    }

    #[test]
    fn transitions_only_move_forward() {
        use JobStatus::*;
        assert!(Running.may_replace(Queued));
        assert!(Succeeded.may_replace(Running));
        assert!(Retrying.may_replace(Running));
        assert!(Running.may_replace(Retrying));
        assert!(Cancelled.may_replace(Queued));
        assert!(!Queued.may_replace(Running));
        assert!(!Queued.may_replace(Retrying));
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(1_700_000_000_900), "2023-11-14T22:13:20.900Z");
    }

    #[test]
    fn job_ids_sort_by_creation() {
        let a = new_job_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_job_id();
        assert!(a < b);
    }
}

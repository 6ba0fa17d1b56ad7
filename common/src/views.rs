//! How jobs and batches are shown to clients: in API answers and in the
//! `data` of webhook events, which therefore read alike.

use crate::job::{format_ms, now_ms, JobError, JobId, JobStatus};
use crate::store::{BatchRecord, JobRecord};
use serde::Serialize;
use serde_json::value::RawValue;
#[allow(unused_imports)] // named in schema attributes
use std::collections::HashMap;

/// The representation of a job in responses.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, `expired`.
    #[schema(value_type = String)]
    status: &'static str,
    model: String,
    version: String,
    /// `interactive` or `bulk`.
    #[schema(value_type = String)]
    priority: &'static str,
    /// The model's outputs by name, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HashMap<String, f32>>)]
    output: Option<Box<RawValue>>,
    /// Each feature's attribution and the principal reasons, once it
    /// succeeded, when it was submitted with `"explain": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::explain::ExplanationDoc>)]
    explanation: Option<Box<RawValue>>,
    /// The SHA-256 of the model file that ran it (lineage).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobError>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// Times a worker started it.
    attempts: u32,
    /// What the client stored with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        let raw = |s: Option<String>| s.and_then(|s| RawValue::from_string(s).ok());
        JobView {
            id: r.id,
            status: r.status.as_str(),
            model: r.model,
            version: r.version,
            priority: r.priority.as_str(),
            output: raw(r.output),
            explanation: raw(r.explanation),
            model_sha256: r.model_sha256,
            error: r.error,
            created_at: format_ms(r.created_at_ms),
            finished_at: r.finished_at_ms.map(format_ms),
            attempts: r.attempts,
            metadata: raw(r.metadata),
            webhook_url: r.webhook_url,
        }
    }
}

/// The representation of a batch in responses.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Batch)]
pub struct BatchView {
    #[schema(value_type = String, format = Uuid)]
    id: JobId,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`, `expired`.
    #[schema(value_type = String)]
    status: &'static str,
    model: String,
    version: String,
    /// Rows in the file.
    total: u64,
    succeeded: u64,
    failed: u64,
    chunks: u32,
    chunks_done: u32,
    rows_per_second: Option<f64>,
    eta_seconds: Option<f64>,
    /// RFC 3339, UTC.
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JobError>,
    /// Where the results are, once the batch has ended.
    results: String,
    /// Whether its rows' scores are explained (reason codes in the
    /// results).
    explain: bool,
    /// The client's columns carried through to every result row.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    passthrough: Vec<String>,
    /// The model file's SHA-256 when it was accepted (the registry's
    /// `sha256`, or the file's as the producer read it); each result row
    /// names the file that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_sha256: Option<String>,
    /// The SHA-256 of the registry file it was accepted under.
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_sha256: Option<String>,
    /// The infq version that accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    infq_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<String>,
    /// The least time between two `batch.progress` events, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_interval_secs: Option<u64>,
}

impl From<BatchRecord> for BatchView {
    fn from(b: BatchRecord) -> Self {
        let processed = b.succeeded + b.failed;
        let rate = b.started_at_ms.and_then(|start| {
            let end = b.finished_at_ms.unwrap_or_else(now_ms);
            let secs = end.saturating_sub(start) as f64 / 1000.0;
            (secs > 0.0 && processed > 0).then(|| processed as f64 / secs)
        });
        let eta = match (b.status, rate) {
            (JobStatus::Queued | JobStatus::Running, Some(r)) => {
                Some(b.total.saturating_sub(processed) as f64 / r)
            }
            _ => None,
        };
        BatchView {
            id: b.id,
            status: b.status.as_str(),
            results: format!("/v1/batches/{}/results", b.id),
            explain: b.explain.is_some(),
            passthrough: b.passthrough,
            model_sha256: b.lineage.model_sha256,
            registry_sha256: b.lineage.registry_sha256,
            infq_version: b.lineage.infq_version,
            model: b.model,
            version: b.version,
            total: b.total,
            succeeded: b.succeeded,
            failed: b.failed,
            chunks: b.chunks,
            chunks_done: b.done_chunks,
            rows_per_second: rate.map(|r| r.round()),
            eta_seconds: eta.map(|e| (e * 10.0).round() / 10.0),
            created_at: format_ms(b.created_at_ms),
            started_at: b.started_at_ms.map(format_ms),
            finished_at: b.finished_at_ms.map(format_ms),
            error: b.error,
            webhook_url: b.webhook_url,
            progress_interval_secs: b.progress_ms.map(|ms| ms / 1000),
        }
    }
}

impl JobView {
    /// The job's state.
    pub fn status(&self) -> &'static str {
        self.status
    }
}

impl BatchView {
    /// Makes the results link absolute, under the API's public URL.
    pub fn with_base_url(mut self, base: Option<&str>) -> Self {
        if let Some(base) = base {
            self.results = format!("{}{}", base.trim_end_matches('/'), self.results);
        }
        self
    }
}

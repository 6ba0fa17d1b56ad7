//! Job and batch records: what is written when one is accepted, what is
//! read back, and how stored fields are parsed (pure: no I/O).

use super::error::StoreError;
use crate::job::{JobError, JobId, JobStatus, Priority};
use std::collections::HashMap;

/// The fields of a new job record.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// Client metadata (JSON text), kept with the job.
    pub metadata: Option<String>,
    /// Where the job's terminal event is sent.
    pub webhook_url: Option<String>,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// How long its record is kept after each change; the store's
    /// retention when unset.
    pub retention_ms: Option<u64>,
    /// [`JobMessage::digest`](crate::message::JobMessage::digest) of the
    /// job's message: a message for this id that does not match it is not
    /// run.
    pub digest: String,
    /// Whether its score is to be explained (reason codes).
    pub explain: bool,
}

impl NewJob {
    /// Its fields, as the record keeps them (without status and rank).
    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("priority", self.priority.as_str().to_string()),
            ("created_at", self.created_at_ms.to_string()),
            ("digest", self.digest.clone()),
        ];
        if let Some(m) = &self.metadata {
            f.push(("metadata", m.clone()));
        }
        if let Some(u) = &self.webhook_url {
            f.push(("webhook_url", u.clone()));
        }
        if let Some(t) = &self.tenant {
            f.push(("tenant", t.clone()));
        }
        if let Some(ms) = self.retention_ms {
            f.push(("retention_ms", ms.to_string()));
        }
        if self.explain {
            f.push(("explain", "1".into()));
        }
        f
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id.
    pub id: JobId,
    /// Current state.
    pub status: JobStatus,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Lane.
    pub priority: Priority,
    /// The named outputs, as JSON text, once succeeded.
    pub output: Option<String>,
    /// The score's explanation, as JSON text, once succeeded, when asked
    /// for ([`crate::explain`]).
    pub explanation: Option<String>,
    /// Whether an explanation was asked for.
    pub explain: bool,
    /// The SHA-256 of the model file that ran it.
    pub model_sha256: Option<String>,
    /// Why it failed, once failed.
    pub error: Option<JobError>,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// When it reached a terminal state (epoch ms).
    pub finished_at_ms: Option<u64>,
    /// How many times a worker took it.
    pub attempts: u32,
    /// Client metadata (JSON text).
    pub metadata: Option<String>,
    /// Where the job's terminal event is sent.
    pub webhook_url: Option<String>,
    /// Times it was reopened after ending (a dead letter replayed); each
    /// end is an event of its own.
    pub reopened: u32,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// Erased on its tenant's request: only this tombstone is left, so a
    /// message still queued for it does not run.
    pub erased: bool,
}

/// A new bulk batch, recorded once every row is validated.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Batch id.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Data rows.
    pub total: u64,
    /// Chunks the rows travel in.
    pub chunks: u32,
    /// Rows per chunk (the last may hold fewer).
    pub chunk_rows: u32,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// Where `batch.completed` is sent.
    pub webhook_url: Option<String>,
    /// The least time between two of its `batch.progress` events, when
    /// it asked for them (it has a `webhook_url` then).
    pub progress_ms: Option<u64>,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// How long its record and results are kept after each change.
    pub retention_ms: Option<u64>,
    /// The names of the model version's outputs, in order: the results
    /// are rendered with these, so they stay readable after a registry
    /// reload removes the version.
    pub outputs: Vec<String>,
    /// How its rows are explained, when reasons were asked for; kept for
    /// the same reason as `outputs`.
    pub explain: Option<crate::explain::ExplainPlan>,
    /// The client's columns carried through to the results, in order.
    pub passthrough: Vec<String>,
    /// Lineage at acceptance: the model file's SHA-256 as the registry
    /// gave it, the registry's, and infq's version.
    pub lineage: Lineage,
}

/// What a batch was accepted under.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lineage {
    /// The model file's SHA-256 (declared, or as the producer read it).
    pub model_sha256: Option<String>,
    /// The SHA-256 of the registry file's text.
    pub registry_sha256: Option<String>,
    /// infq's version.
    pub infq_version: Option<String>,
}

impl NewBatch {
    /// Its fields as a new `queued` record keeps them.
    pub(super) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("status", "queued".to_string()),
            ("rank", "0".into()),
            ("model", self.model.clone()),
            ("version", self.version.clone()),
            ("total", self.total.to_string()),
            ("chunks", self.chunks.to_string()),
            ("chunk_rows", self.chunk_rows.to_string()),
            ("done_chunks", "0".into()),
            ("succeeded", "0".into()),
            ("failed", "0".into()),
            ("created_at", self.created_at_ms.to_string()),
        ];
        if let Some(u) = &self.webhook_url {
            f.push(("webhook_url", u.clone()));
        }
        if let Some(ms) = self.progress_ms {
            f.push(("progress_ms", ms.to_string()));
        }
        if let Some(t) = &self.tenant {
            f.push(("tenant", t.clone()));
        }
        if let Some(ms) = self.retention_ms {
            f.push(("retention_ms", ms.to_string()));
        }
        f.push((
            "outputs",
            serde_json::to_string(&self.outputs).expect("names serialise"),
        ));
        if let Some(plan) = &self.explain {
            f.push((
                "explain",
                serde_json::to_string(plan).expect("a plan serialises"),
            ));
        }
        if !self.passthrough.is_empty() {
            f.push((
                "passthrough",
                serde_json::to_string(&self.passthrough).expect("names serialise"),
            ));
        }
        let l = &self.lineage;
        for (k, v) in [
            ("model_sha256", &l.model_sha256),
            ("registry_sha256", &l.registry_sha256),
            ("infq_version", &l.infq_version),
        ] {
            if let Some(v) = v {
                f.push((k, v.clone()));
            }
        }
        f
    }
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Batch id.
    pub id: JobId,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: JobStatus,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Data rows.
    pub total: u64,
    /// Chunks.
    pub chunks: u32,
    /// Rows per chunk.
    pub chunk_rows: u32,
    /// Chunks whose results are stored.
    pub done_chunks: u32,
    /// Rows with outputs.
    pub succeeded: u64,
    /// Rows with errors.
    pub failed: u64,
    /// Acceptance time (epoch ms).
    pub created_at_ms: u64,
    /// When a worker took its first chunk (epoch ms).
    pub started_at_ms: Option<u64>,
    /// When it reached a terminal state (epoch ms).
    pub finished_at_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<JobError>,
    /// Where `batch.completed` is sent.
    pub webhook_url: Option<String>,
    /// The least time between two `batch.progress` events, when asked.
    pub progress_ms: Option<u64>,
    /// The number of the last `batch.progress` event due (0: none yet).
    pub progress_seq: u32,
    /// Times it was reopened after completing (a dead-lettered chunk
    /// replayed); each completion is an event of its own.
    pub reopened: u32,
    /// The tenant that owns it.
    pub tenant: Option<String>,
    /// Erased on its tenant's request (a tombstone).
    pub erased: bool,
    /// The output names recorded at acceptance; empty for a record written
    /// before they were.
    pub outputs: Vec<String>,
    /// How its rows are explained, when reasons were asked for.
    pub explain: Option<crate::explain::ExplainPlan>,
    /// The client's columns carried through to the results, in order.
    pub passthrough: Vec<String>,
    /// What it was accepted under.
    pub lineage: Lineage,
}

/// A job record from its fields (`HGETALL`).
pub(super) fn parse_record(
    id: JobId,
    mut f: HashMap<String, String>,
) -> Result<JobRecord, StoreError> {
    let status = f
        .get("status")
        .and_then(|s| JobStatus::parse(s))
        .ok_or_else(|| StoreError::Reply(format!("job {id} has no valid status")))?;
    let num = |f: &HashMap<String, String>, k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    Ok(JobRecord {
        id,
        status,
        priority: match f.get("priority").map(String::as_str) {
            Some("bulk") => Priority::Bulk,
            _ => Priority::Interactive,
        },
        created_at_ms: num(&f, "created_at").unwrap_or(0),
        finished_at_ms: num(&f, "finished_at"),
        attempts: num(&f, "attempts").unwrap_or(0) as u32,
        reopened: num(&f, "reopened").unwrap_or(0) as u32,
        error: f.get("error").and_then(|e| serde_json::from_str(e).ok()),
        model: f.remove("model").unwrap_or_default(),
        version: f.remove("version").unwrap_or_default(),
        output: f.remove("output"),
        explanation: f.remove("explanation"),
        explain: f.contains_key("explain"),
        model_sha256: f.remove("model_sha256"),
        metadata: f.remove("metadata"),
        webhook_url: f.remove("webhook_url"),
        tenant: f.remove("tenant"),
        erased: f.contains_key("erased"),
    })
}

/// A batch record from its fields (`HGETALL`).
pub(super) fn parse_batch(
    id: JobId,
    f: HashMap<String, String>,
) -> Result<BatchRecord, StoreError> {
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    Ok(BatchRecord {
        id,
        status: f
            .get("status")
            .and_then(|s| JobStatus::parse(s))
            .ok_or_else(|| StoreError::Reply(format!("batch {id} has no valid status")))?,
        model: f.get("model").cloned().unwrap_or_default(),
        version: f.get("version").cloned().unwrap_or_default(),
        total: num("total").unwrap_or(0),
        chunks: num("chunks").unwrap_or(0) as u32,
        chunk_rows: num("chunk_rows").unwrap_or(0) as u32,
        done_chunks: num("done_chunks").unwrap_or(0) as u32,
        succeeded: num("succeeded").unwrap_or(0),
        failed: num("failed").unwrap_or(0),
        created_at_ms: num("created_at").unwrap_or(0),
        started_at_ms: num("started_at"),
        finished_at_ms: num("finished_at"),
        error: f.get("error").and_then(|e| serde_json::from_str(e).ok()),
        webhook_url: f.get("webhook_url").cloned(),
        progress_ms: num("progress_ms"),
        progress_seq: num("progress_seq").unwrap_or(0) as u32,
        reopened: num("reopened").unwrap_or(0) as u32,
        tenant: f.get("tenant").cloned(),
        erased: f.contains_key("erased"),
        outputs: f
            .get("outputs")
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
        explain: f.get("explain").and_then(|o| serde_json::from_str(o).ok()),
        passthrough: f
            .get("passthrough")
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default(),
        lineage: Lineage {
            model_sha256: f.get("model_sha256").cloned(),
            registry_sha256: f.get("registry_sha256").cloned(),
            infq_version: f.get("infq_version").cloned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_new_job_keeps_only_what_it_has() {
        let id = crate::job::new_job_id();
        let mut job = NewJob {
            id,
            model: "m".into(),
            version: "1".into(),
            priority: Priority::Bulk,
            created_at_ms: 5,
            metadata: None,
            webhook_url: None,
            tenant: None,
            retention_ms: None,
            digest: "d".into(),
            explain: false,
        };
        let keys: Vec<&str> = job.fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            ["model", "version", "priority", "created_at", "digest"]
        );
        job.tenant = Some("acme".into());
        job.retention_ms = Some(60_000);
        let f: HashMap<_, _> = job.fields().into_iter().collect();
        assert_eq!(f["priority"], "bulk");
        assert_eq!(f["tenant"], "acme");
        assert_eq!(f["retention_ms"], "60000");
    }

    #[test]
    fn job_records_are_parsed_and_need_a_status() {
        let id = crate::job::new_job_id();
        let rec = parse_record(
            id,
            map(&[
                ("status", "succeeded"),
                ("model", "m"),
                ("version", "2"),
                ("priority", "bulk"),
                ("created_at", "10"),
                ("finished_at", "20"),
                ("attempts", "3"),
                ("reopened", "1"),
                ("output", "{\"p\":1}"),
                ("tenant", "acme"),
                ("error", "{\"code\":\"x\",\"message\":\"y\"}"),
            ]),
        )
        .unwrap();
        assert_eq!(rec.status, JobStatus::Succeeded);
        assert_eq!(rec.priority, Priority::Bulk);
        assert_eq!((rec.created_at_ms, rec.finished_at_ms), (10, Some(20)));
        assert_eq!((rec.attempts, rec.reopened), (3, 1));
        assert_eq!(rec.output.as_deref(), Some("{\"p\":1}"));
        assert_eq!(rec.tenant.as_deref(), Some("acme"));
        assert_eq!(rec.error.map(|e| e.code), Some("x".to_string()));
        assert!(!rec.erased);
        let tomb = parse_record(id, map(&[("status", "cancelled"), ("erased", "1")])).unwrap();
        assert!(tomb.erased);
        assert_eq!(tomb.priority, Priority::Interactive, "the default lane");
        assert!(parse_record(id, map(&[("model", "m")])).is_err());
        assert!(parse_record(id, map(&[("status", "nonsense")])).is_err());
    }

    #[test]
    fn batch_records_round_trip_their_fields() {
        let id = crate::job::new_job_id();
        let b = NewBatch {
            id,
            model: "m".into(),
            version: "1".into(),
            total: 5,
            chunks: 3,
            chunk_rows: 2,
            created_at_ms: 7,
            webhook_url: Some("https://x.example/h".into()),
            progress_ms: Some(30_000),
            tenant: Some("acme".into()),
            retention_ms: None,
            outputs: vec!["p".into(), "q".into()],
            explain: None,
            passthrough: Vec::new(),
            lineage: Lineage {
                model_sha256: Some("ab".into()),
                registry_sha256: Some("cd".into()),
                infq_version: Some("0.1.0".into()),
            },
        };
        let stored: HashMap<String, String> = b
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let rec = parse_batch(id, stored).unwrap();
        assert_eq!(rec.status, JobStatus::Queued);
        assert_eq!((rec.total, rec.chunks, rec.chunk_rows), (5, 3, 2));
        assert_eq!((rec.done_chunks, rec.succeeded, rec.failed), (0, 0, 0));
        assert_eq!(rec.outputs, ["p", "q"]);
        assert_eq!(rec.lineage.model_sha256.as_deref(), Some("ab"));
        assert_eq!(rec.lineage.registry_sha256.as_deref(), Some("cd"));
        assert_eq!(rec.lineage.infq_version.as_deref(), Some("0.1.0"));
        assert_eq!(rec.tenant.as_deref(), Some("acme"));
        assert_eq!(rec.webhook_url.as_deref(), Some("https://x.example/h"));
        assert_eq!((rec.progress_ms, rec.progress_seq), (Some(30_000), 0));
        assert_eq!((rec.started_at_ms, rec.finished_at_ms), (None, None));
        assert!(parse_batch(id, map(&[("total", "1")])).is_err());
    }
}

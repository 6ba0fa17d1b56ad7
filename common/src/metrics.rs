//! Metric names and the Prometheus recorder.
//!
//! Names are prefixed `infq_`, durations are in seconds, counters end in
//! `_total`, and labels are few and fixed (`model`, `priority`, `outcome`).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Jobs accepted by the producer (`model`, `priority`).
pub const JOBS_SUBMITTED: &str = "infq_jobs_submitted_total";
/// Submissions refused (`model`, `outcome`: `invalid`, `unavailable`).
pub const JOBS_REJECTED: &str = "infq_jobs_rejected_total";
/// Jobs that reached a terminal state in a worker (`model`, `outcome`).
pub const JOBS_COMPLETED: &str = "infq_jobs_completed_total";
/// Time from the producer's acceptance to the stored result (`model`).
pub const JOB_END_TO_END_SECONDS: &str = "infq_job_end_to_end_seconds";
/// Time from the producer's acceptance until a worker took the job (`model`).
pub const QUEUE_WAIT_SECONDS: &str = "infq_queue_wait_seconds";
/// Time a batch spent filling (`model`).
pub const BATCH_WAIT_SECONDS: &str = "infq_batch_wait_seconds";
/// Rows per forward pass (`model`).
pub const BATCH_SIZE: &str = "infq_batch_size";
/// Forward pass duration (`model`).
pub const INFERENCE_SECONDS: &str = "infq_inference_seconds";
/// Time to store a batch's results (`model`).
pub const STORE_SECONDS: &str = "infq_store_seconds";
/// Broker publish-and-confirm duration in the producer.
pub const PUBLISH_SECONDS: &str = "infq_publish_seconds";
/// Messages sent to the dead-letter queue by a worker (`outcome`: reason).
pub const DEAD_LETTERED: &str = "infq_dead_lettered_total";
/// Jobs sent back through a retry tier after a transient failure.
pub const JOBS_RETRIED: &str = "infq_jobs_retried_total";
/// Webhook attempts (`outcome`: `delivered`, `retrying`, `failed`,
/// `disabled`, and `deferred` for events held back while their host is
/// paused).
pub const WEBHOOK_ATTEMPTS: &str = "infq_webhook_attempts_total";
/// Duration of one webhook attempt.
pub const WEBHOOK_SECONDS: &str = "infq_webhook_seconds";
/// Connections re-established after a failure (`outcome`: the dependency).
pub const RECONNECTS: &str = "infq_dependency_reconnects_total";

/// Installs the global Prometheus recorder with buckets fit for each
/// histogram, and returns the handle that renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, String> {
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &sizes))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

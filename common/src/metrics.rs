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
/// Time from the producer's acceptance until a worker took the job
/// (`model`, `priority`: its lane).
pub const QUEUE_WAIT_SECONDS: &str = "infq_queue_wait_seconds";
/// Time a batch spent filling (`model`, `priority`: `interactive` for a
/// batch holding single jobs, `bulk` for one of chunks only).
pub const BATCH_WAIT_SECONDS: &str = "infq_batch_wait_seconds";
/// Rows per forward pass (`model`).
pub const BATCH_SIZE: &str = "infq_batch_size";
/// Forward pass duration (`model`).
pub const INFERENCE_SECONDS: &str = "infq_inference_seconds";
/// Time to store one write's results (the forward passes that ended while
/// the last write was out), through their acknowledgement (`model`,
/// `priority`: which writer, single jobs' or chunks').
pub const STORE_SECONDS: &str = "infq_store_seconds";
/// Broker publish-and-confirm duration in the producer.
pub const PUBLISH_SECONDS: &str = "infq_publish_seconds";
/// Bytes of spool files held by bulk uploads in flight in a producer.
pub const SPOOL_BYTES: &str = "infq_producer_spool_bytes";
/// Messages sent to the dead-letter queue by a worker (`outcome`: reason).
pub const DEAD_LETTERED: &str = "infq_dead_lettered_total";
/// Jobs sent back through a retry tier after a transient failure.
pub const JOBS_RETRIED: &str = "infq_jobs_retried_total";
/// Webhook attempts (`outcome`: `delivered`, `retrying`, `failed`,
/// `disabled`, and `deferred` for events held back while their host is
/// paused; for `batch.progress` events, sent once, `progress_delivered`,
/// `progress_failed` and `progress_dropped`).
pub const WEBHOOK_ATTEMPTS: &str = "infq_webhook_attempts_total";
/// Duration of one webhook attempt.
pub const WEBHOOK_SECONDS: &str = "infq_webhook_seconds";
/// Connections re-established after a failure (`outcome`: the dependency).
pub const RECONNECTS: &str = "infq_dependency_reconnects_total";
/// Consumers the broker cancelled that subscribed again (a queue's leader
/// moved, a node went away, the queue was deleted).
pub const CONSUMER_CANCELS_TOTAL: &str = "infq_consumer_cancels_total";
/// Changes of a tenant's share consumer's prefetch (`to`: `with_jobs` as
/// single jobs start arriving, `full` once they stop).
pub const SHARE_PREFETCH_CHANGES: &str = "infq_share_prefetch_changes_total";

/// Rows run through a model (`model`); `rate()` of it is rows per second.
pub const ROWS: &str = "infq_rows_total";
/// Rows per second this worker ran over the last 10 seconds.
pub const ROWS_PER_SECOND: &str = "infq_rows_per_second";
/// Messages ready on a queue (`queue`), polled every `amqp.stats_interval_ms`.
pub const QUEUE_DEPTH: &str = "infq_queue_depth";
/// Consumers of a queue (`queue`).
pub const QUEUE_CONSUMERS: &str = "infq_queue_consumers";
/// Age of the oldest ready message of a job queue (`queue`), from a worker:
/// the time since the message its consumers took last was published (the
/// head of a FIFO queue is never older); 0 while the queue is empty.
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "infq_queue_oldest_age_seconds";
/// Messages in the dead-letter queue `<ns>.dead`.
pub const DLQ_DEPTH: &str = "infq_dlq_depth";
/// Job messages this worker holds: delivered, not yet acknowledged.
pub const WORKER_BACKLOG: &str = "infq_worker_backlog";
/// Ready messages of a queue per consumer (`queue`): the load each worker
/// faces, what an autoscaler scales on.
pub const BACKLOG_PER_CONSUMER: &str = "infq_queue_backlog_per_consumer";

/// Hot reloads of the model registry (`outcome`: `ok`, `failed`).
pub const REGISTRY_RELOADS: &str = "infq_registry_reloads_total";

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value now.
    Gauge,
    /// A distribution (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// Histogram: seconds to publish audit records until confirmed.
pub const AUDIT_PUBLISH_SECONDS: &str = "infq_audit_publish_seconds";
/// Counter: audit publishes that failed (their event is then retried or refused).
pub const AUDIT_PUBLISH_FAILURES: &str = "infq_audit_publish_failures_total";

/// Every metric: name, kind, which binary exports it and its help text.
/// `/metrics` carries the help; the README's list and the tests follow it.
pub const ALL: &[(&str, Kind, Source, &str)] = &[
    (JOBS_SUBMITTED, Kind::Counter, Source::Producer, "Jobs accepted, by model and priority (a bulk row counts once)."),
    (JOBS_REJECTED, Kind::Counter, Source::Producer, "Submissions refused, by outcome (invalid, rate_limited, quota_full, unavailable, queue_full)."),
    (PUBLISH_SECONDS, Kind::Histogram, Source::Producer, "Broker publish-and-confirm duration, by message: job, chunk or event."),
    (SPOOL_BYTES, Kind::Gauge, Source::Producer, "Bytes of spool files held by bulk uploads in flight in this producer."),
    (JOBS_COMPLETED, Kind::Counter, Source::Worker, "Jobs that reached a terminal state, by model, priority and outcome."),
    (JOB_END_TO_END_SECONDS, Kind::Histogram, Source::Worker, "Time from the producer's acceptance to the stored result."),
    (QUEUE_WAIT_SECONDS, Kind::Histogram, Source::Worker, "Time from the producer's acceptance until a worker took the job."),
    (BATCH_WAIT_SECONDS, Kind::Histogram, Source::Worker, "Time a batch spent filling."),
    (BATCH_SIZE, Kind::Histogram, Source::Worker, "Rows per forward pass."),
    (INFERENCE_SECONDS, Kind::Histogram, Source::Worker, "Forward pass duration."),
    (STORE_SECONDS, Kind::Histogram, Source::Worker, "Time to store one write's results (the forward passes that ended while the last was out), through their acknowledgement."),
    (ROWS, Kind::Counter, Source::Worker, "Rows run through a model."),
    (ROWS_PER_SECOND, Kind::Gauge, Source::Worker, "Rows per second this worker ran over the last 10 seconds."),
    (WORKER_BACKLOG, Kind::Gauge, Source::Worker, "Job messages this worker holds: delivered, not yet acknowledged."),
    (QUEUE_OLDEST_AGE_SECONDS, Kind::Gauge, Source::Worker, "Age of the oldest ready message of a job queue, as this worker sees it."),
    (DEAD_LETTERED, Kind::Counter, Source::Worker, "Messages a worker sent to the dead-letter queue, by reason."),
    (JOBS_RETRIED, Kind::Counter, Source::Worker, "Jobs sent back through a retry tier after a transient failure."),
    (WEBHOOK_ATTEMPTS, Kind::Counter, Source::Worker, "Webhook attempts, by outcome."),
    (WEBHOOK_SECONDS, Kind::Histogram, Source::Worker, "Duration of one webhook attempt."),
    (QUEUE_DEPTH, Kind::Gauge, Source::Both, "Messages ready on a queue."),
    (QUEUE_CONSUMERS, Kind::Gauge, Source::Both, "Consumers of a queue."),
    (BACKLOG_PER_CONSUMER, Kind::Gauge, Source::Both, "Ready messages of a job queue per consumer."),
    (DLQ_DEPTH, Kind::Gauge, Source::Both, "Messages in the dead-letter queue."),
    (RECONNECTS, Kind::Counter, Source::Both, "Connections re-established after a failure, by dependency."),
    (CONSUMER_CANCELS_TOTAL, Kind::Counter, Source::Worker, "Consumers cancelled by the broker that subscribed again."),
    (SHARE_PREFETCH_CHANGES, Kind::Counter, Source::Worker, "Changes of a share consumer's prefetch: to with_jobs as single jobs arrive, to full once they stop."),
    (REGISTRY_RELOADS, Kind::Counter, Source::Both, "Hot reloads of the model registry, by outcome."),
    (AUDIT_PUBLISH_SECONDS, Kind::Histogram, Source::Both, "Time to publish audit records until the broker confirmed them."),
    (AUDIT_PUBLISH_FAILURES, Kind::Counter, Source::Both, "Audit publishes the broker did not confirm (the event is refused or retried)."),
];

/// Which binary exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `infq-producer`.
    Producer,
    /// `infq-worker`.
    Worker,
    /// Both.
    Both,
}

/// Installs the global Prometheus recorder of `source` with buckets fit for
/// each histogram and help for every metric, and returns the handle that
/// renders `/metrics`.
pub fn install(source: Source) -> Result<PrometheusHandle, String> {
    let latency = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let sizes = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &sizes))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    for (name, kind, _, help) in ALL {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    // Counters that may stay at zero for a long time are exported from the
    // start, so a dashboard or alert sees 0 rather than nothing.
    metrics::counter!(RECONNECTS, "outcome" => "amqp").absolute(0);
    metrics::counter!(REGISTRY_RELOADS, "outcome" => "ok").absolute(0);
    metrics::counter!(AUDIT_PUBLISH_FAILURES).absolute(0);
    if source == Source::Worker {
        metrics::counter!(JOBS_RETRIED).absolute(0);
        metrics::counter!(CONSUMER_CANCELS_TOTAL).absolute(0);
        metrics::counter!(SHARE_PREFETCH_CHANGES, "to" => "with_jobs").absolute(0);
    }
    Ok(handle)
}

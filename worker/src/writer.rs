//! The result writer: stores every outcome in Redis, then acknowledges.
//!
//! Results of a batch are written in one pipelined round trip of the
//! transition script (forward-only, terminal states final, TTL set). Only
//! after Redis accepted them are the deliveries acknowledged, so a crash in
//! between means a redelivery, which the claim step turns into an
//! acknowledgement without a second run.

use crate::model::ModelOutcome;
use crate::pending::Pending;
use crate::stats::WorkerStats;
use futures_util::future::join_all;
use infq_common::job::{now_ms, JobError, JobStatus};
use infq_common::metrics as m;
use infq_common::registry::{ModelSpec, OutputSpec};
use infq_common::retry::Schedule;
use infq_common::shutdown::CancellationToken;
use infq_common::store::{JobStore, Transition};
use lapin::options::BasicAckOptions;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;

/// Work for the writer.
pub enum WriterCommand {
    /// The outcome of a forward pass over `jobs`.
    Store {
        /// The model version that ran.
        spec: Arc<ModelSpec>,
        /// The jobs, in row order.
        jobs: Vec<Pending>,
        /// What the model returned.
        outcome: ModelOutcome,
    },
    /// Jobs that end without running (invalid, expired), with their state.
    Finish(Vec<(Pending, Transition)>),
    /// Jobs already terminal: acknowledge only.
    Ack(Vec<Pending>),
}

/// Formats one row of outputs as a JSON object keyed by output name.
pub fn output_json(outputs: &[OutputSpec], row: &[f32]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = outputs
        .iter()
        .zip(row)
        .map(|(o, v)| {
            let value = serde_json::Number::from_f64(f64::from(*v))
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            (o.name.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The transition for each job of a forward pass.
pub fn transitions(spec: &ModelSpec, jobs: &[Pending], outcome: &ModelOutcome) -> Vec<Transition> {
    let width = spec.width();
    let n_out = spec.outputs.len();
    let ok = |values: &[f32]| {
        if values.iter().all(|v| v.is_finite()) {
            Transition::succeeded(output_json(&spec.outputs, values))
        } else {
            Transition::failed(JobError::new(
                "model_error",
                "the model returned a non-finite value",
            ))
        }
    };
    match outcome {
        ModelOutcome::Batch(values) => {
            let mut row = 0;
            jobs.iter()
                .map(|j| {
                    let rows = j.rows(width);
                    let t = ok(&values[row * n_out..(row + rows) * n_out]);
                    row += rows;
                    t
                })
                .collect()
        }
        ModelOutcome::PerJob(results) => results
            .iter()
            .map(|r| match r {
                Ok(values) => ok(values),
                Err(e) => Transition::failed(JobError::new("model_error", e.clone())),
            })
            .collect(),
    }
}

/// Stores and acknowledges until every sender is gone.
pub async fn writer_task(
    mut rx: Receiver<WriterCommand>,
    store: JobStore,
    stats: Arc<WorkerStats>,
    shutdown: CancellationToken,
) {
    while let Some(cmd) = rx.recv().await {
        let (jobs, updates) = match cmd {
            WriterCommand::Store {
                spec,
                jobs,
                outcome,
            } => {
                let ts = transitions(&spec, &jobs, &outcome);
                (jobs, ts)
            }
            WriterCommand::Finish(pairs) => pairs.into_iter().unzip(),
            WriterCommand::Ack(jobs) => {
                stats
                    .jobs_skipped
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                ack_all(&jobs).await;
                continue;
            }
        };
        let started = Instant::now();
        store_all(&store, &jobs, &updates, &shutdown).await;
        ack_all(&jobs).await;
        stats
            .jobs_stored
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        for (job, t) in jobs.iter().zip(&updates) {
            let model = job.msg.model.clone();
            metrics::counter!(m::JOBS_COMPLETED, "model" => model.clone(), "priority" => job.lane.as_str(), "outcome" => t.status.as_str())
                .increment(1);
            if t.status == JobStatus::Succeeded {
                let e2e = now.saturating_sub(job.msg.created_at_ms) as f64 / 1000.0;
                metrics::histogram!(m::JOB_END_TO_END_SECONDS, "model" => model).record(e2e);
            }
        }
        if let Some(job) = jobs.first() {
            metrics::histogram!(m::STORE_SECONDS, "model" => job.msg.model.clone())
                .record(started.elapsed().as_secs_f64());
        }
    }
    tracing::debug!("writer stopped");
}

/// Writes the transitions, retrying with backoff while Redis is away.
/// During shutdown it keeps trying until the drain timeout ends the
/// process; unacknowledged deliveries then return to the queue.
async fn store_all(
    store: &JobStore,
    jobs: &[Pending],
    updates: &[Transition],
    shutdown: &CancellationToken,
) {
    let pairs: Vec<_> = jobs.iter().map(|j| j.msg.id).zip(updates).collect();
    let mut schedule = Schedule::exponential(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match store.transition_many(&pairs).await {
            Ok(_) => return,
            Err(e) => {
                let wait = schedule.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %e, ?wait, jobs = jobs.len(), draining = shutdown.is_cancelled(), "storing results failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn ack_all(jobs: &[Pending]) {
    let results = join_all(jobs.iter().map(|j| j.acker.ack(BasicAckOptions::default()))).await;
    for r in results {
        if let Err(e) = r {
            // The channel is gone; the broker redelivers and the claim step
            // acknowledges without running again.
            tracing::debug!(error = %e, "acknowledgement failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_named_and_exact() {
        let outs = vec![
            OutputSpec {
                name: "p".into(),
                description: String::new(),
            },
            OutputSpec {
                name: "q".into(),
                description: String::new(),
            },
        ];
        let v = 0.123_456_79_f32;
        let text = output_json(&outs, &[v, 1.0]);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["p"].as_f64().unwrap() as f32, v);
        assert_eq!(parsed["q"].as_f64().unwrap(), 1.0);
    }
}

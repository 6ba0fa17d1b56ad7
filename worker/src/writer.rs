//! The result writer: stores every outcome in Redis, then acknowledges.
//!
//! Results of a batch are written in one pipelined round trip: the
//! transition script for single jobs (forward-only, terminal states final,
//! TTL set), the chunk script for bulk chunks (stored once, counted once,
//! the last chunk completes its batch). Only
//! after Redis accepted them are the deliveries acknowledged, so a crash in
//! between means a redelivery, which the claim step turns into an
//! acknowledgement without a second run.

use crate::model::ModelOutcome;
use crate::pending::Pending;
use crate::requeue::Requeuer;
use crate::stats::WorkerStats;
use crate::webhooks::events::Events;
use futures_util::future::join_all;
use infq_common::job::{now_ms, JobError, JobStatus};
use infq_common::metrics as m;
use infq_common::registry::ModelSpec;
use infq_common::results::{output_json, RowOut};
use infq_common::retry::Schedule;
use infq_common::store::{Applied, ChunkResult, JobStore, Transition, Write};
use infq_common::webhooks::event::EventMessage;
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
    /// Jobs their claim ended without running: already terminal (`None`),
    /// or expired by it. Their state is stored: announce and acknowledge.
    Ended(Vec<(Pending, Option<JobStatus>)>),
}

/// What one job's rows came to: outputs (`n_out` values each) or errors.
fn row_results<'a>(
    outcome: &'a ModelOutcome,
    first_row: usize,
    rows: usize,
    n_out: usize,
) -> Vec<Result<&'a [f32], &'a str>> {
    let check = |values: &'a [f32]| {
        if values.iter().all(|v| v.is_finite()) {
            Ok(values)
        } else {
            Err("the model returned a non-finite value")
        }
    };
    match outcome {
        ModelOutcome::Batch(values) => values[first_row * n_out..(first_row + rows) * n_out]
            .chunks(n_out)
            .map(check)
            .collect(),
        ModelOutcome::PerRow(results) => results[first_row..first_row + rows]
            .iter()
            .map(|r| match r {
                Ok(values) => check(values),
                Err(e) => Err(e.as_str()),
            })
            .collect(),
    }
}

/// Whether a model error may pass on another attempt: running out of
/// (GPU) memory depends on what else ran at the time, not on the input.
pub fn is_transient_model_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out of memory")
}

/// What to store for one job of a forward pass.
#[derive(Debug)]
pub enum Outcome {
    /// A single job's new state.
    Job(Transition),
    /// A bulk chunk's results.
    Chunk(ChunkResult),
    /// A transient model error: send the job back for another attempt.
    Retry(String),
}

impl Outcome {
    /// The outcome label for metrics.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Job(t) => t.status.as_str(),
            Outcome::Chunk(c) if c.failed == 0 => "succeeded",
            Outcome::Chunk(_) => "partial",
            Outcome::Retry(_) => "retrying",
        }
    }
}

/// The outcome of each job of a forward pass.
pub fn outcomes(spec: &ModelSpec, jobs: &[Pending], outcome: &ModelOutcome) -> Vec<Outcome> {
    let width = spec.width();
    let n_out = spec.outputs.len();
    let mut row = 0;
    jobs.iter()
        .map(|j| {
            let rows = j.rows(width);
            let results = row_results(outcome, row, rows, n_out);
            row += rows;
            if let Some(Err(e)) = results
                .iter()
                .find(|r| matches!(r, Err(e) if is_transient_model_error(e)))
            {
                return Outcome::Retry((*e).to_string());
            }
            match j.msg.chunk {
                None => Outcome::Job(match results.first() {
                    Some(Ok(values)) => Transition::succeeded(output_json(&spec.outputs, values)),
                    Some(Err(e)) => Transition::failed(JobError::new("model_error", *e)),
                    None => Transition::failed(JobError::new("model_error", "no output")),
                }),
                Some(chunk) => {
                    let failed = results.iter().filter(|r| r.is_err()).count() as u32;
                    let rows_json: Vec<RowOut> = results
                        .iter()
                        .map(|r| match r {
                            Ok(v) => RowOut::Values(v),
                            Err(e) => RowOut::Error(e),
                        })
                        .collect();
                    Outcome::Chunk(ChunkResult {
                        batch: j.msg.id,
                        index: chunk.index,
                        rows_json: serde_json::to_string(&rows_json).expect("rows serialise"),
                        succeeded: rows as u32 - failed,
                        failed,
                    })
                }
            }
        })
        .collect()
}

/// The outcome of a job whose error is final: a failed job, or a chunk
/// whose every row failed.
fn failed_for_good(job: &Pending, rows: usize, error: &str) -> Outcome {
    match job.msg.chunk {
        None => Outcome::Job(Transition::failed(JobError::new("model_error", error))),
        Some(c) => {
            let row = RowOut::Error(error);
            let rows_json: Vec<&RowOut> = std::iter::repeat_n(&row, rows).collect();
            Outcome::Chunk(ChunkResult {
                batch: job.msg.id,
                index: c.index,
                rows_json: serde_json::to_string(&rows_json).expect("rows serialise"),
                succeeded: 0,
                failed: rows as u32,
            })
        }
    }
}

/// Stores and acknowledges until every sender is gone.
pub async fn writer_task(
    mut rx: Receiver<WriterCommand>,
    store: JobStore,
    stats: Arc<WorkerStats>,
    requeuer: Arc<Requeuer>,
    events: Arc<Events>,
    patience: Duration,
) {
    let mut announcing = tokio::task::JoinSet::new();
    while let Some(cmd) = rx.recv().await {
        let (jobs, updates): (Vec<Pending>, Vec<Outcome>) = match cmd {
            WriterCommand::Store {
                spec,
                jobs,
                outcome,
            } => {
                // Jobs out of retries fail for good; the others wait as
                // `retrying`.
                let out = outcomes(&spec, &jobs, &outcome)
                    .into_iter()
                    .zip(&jobs)
                    .map(|(o, job)| match o {
                        Outcome::Retry(e) if !requeuer.can_retry(job) => {
                            failed_for_good(job, job.rows(spec.width()), &e)
                        }
                        other => other,
                    })
                    .collect();
                (jobs, out)
            }
            WriterCommand::Ended(ended) => {
                for (job, status) in &ended {
                    match status {
                        Some(st) => metrics::counter!(m::JOBS_COMPLETED, "model" => job.msg.model.clone(), "priority" => job.lane.as_str(), "outcome" => st.as_str())
                            .increment(1),
                        None => {
                            stats.jobs_skipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // Ended, perhaps by a worker that stopped before its event
                // was out: announce again (the dispatcher drops what was
                // announced before).
                let due: Vec<EventMessage> = ended.iter().filter_map(|(j, _)| j.event()).collect();
                let pairs = announce(&events, ended, due, |_| true).await;
                let jobs: Vec<Pending> = pairs.into_iter().map(|(j, _)| j).collect();
                ack_all(&jobs).await;
                continue;
            }
        };
        let started = Instant::now();
        let applied = match store_all(&store, &jobs, &updates, patience).await {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("the store is unreachable: {e}");
                requeuer.requeue_all(jobs, &reason).await;
                continue;
            }
        };
        let due = due_events(&jobs, &updates, &applied);
        let cycle = Cycle {
            events: events.clone(),
            requeuer: requeuer.clone(),
            stats: stats.clone(),
            pairs: jobs.into_iter().zip(updates).collect(),
            due,
            started,
        };
        if cycle.due.is_empty() {
            cycle.run().await;
        } else {
            // Events go out with publisher confirms; waiting for them here
            // would hold up the next batch's results, so the publish and
            // the acknowledgements that follow it run alongside (a few at
            // a time, for backpressure).
            while announcing.len() >= MAX_ANNOUNCING {
                announcing.join_next().await;
            }
            announcing.spawn(cycle.run());
        }
    }
    while announcing.join_next().await.is_some() {}
    tracing::debug!("writer stopped");
}

/// Batches whose events are being published at once.
const MAX_ANNOUNCING: usize = 8;

/// What is left of a batch once its results are stored: publish its
/// events, acknowledge, send transient failures back, count.
struct Cycle {
    events: Arc<Events>,
    requeuer: Arc<Requeuer>,
    stats: Arc<WorkerStats>,
    pairs: Vec<(Pending, Outcome)>,
    due: Vec<EventMessage>,
    started: Instant,
}

impl Cycle {
    async fn run(self) {
        let pairs = announce(&self.events, self.pairs, self.due, |o| {
            !matches!(o, Outcome::Retry(_))
        })
        .await;
        let mut retry = Vec::new();
        let mut jobs = Vec::with_capacity(pairs.len());
        let mut updates = Vec::with_capacity(pairs.len());
        for (job, out) in pairs {
            if matches!(out, Outcome::Retry(_)) {
                retry.push(job);
            } else {
                jobs.push(job);
                updates.push(out);
            }
        }
        ack_all(&jobs).await;
        if !retry.is_empty() {
            self.requeuer
                .requeue_all(retry, "transient model error")
                .await;
        }
        self.stats
            .jobs_stored
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        for (job, out) in jobs.iter().zip(&updates) {
            if !job.span.is_disabled() {
                job.span.record("outcome", out.label());
                job.span
                    .record("e2e_ms", now.saturating_sub(job.msg.created_at_ms));
            }
            let model = job.msg.model.clone();
            metrics::counter!(m::JOBS_COMPLETED, "model" => model.clone(), "priority" => job.lane.as_str(), "outcome" => out.label())
                .increment(1);
            if matches!(out, Outcome::Job(t) if t.status == JobStatus::Succeeded) {
                let e2e = now.saturating_sub(job.msg.created_at_ms) as f64 / 1000.0;
                metrics::histogram!(m::JOB_END_TO_END_SECONDS, "model" => model).record(e2e);
            }
        }
        if let Some(job) = jobs.first() {
            metrics::histogram!(m::STORE_SECONDS, "model" => job.msg.model.clone())
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The events due once these outcomes are stored: a single job's terminal
/// state, and a batch completed by one of its chunks.
fn due_events(
    jobs: &[Pending],
    updates: &[Outcome],
    applied: &[Option<Applied>],
) -> Vec<EventMessage> {
    jobs.iter()
        .zip(updates)
        .zip(applied)
        .filter_map(|((job, out), applied)| {
            let due = match out {
                Outcome::Job(t) => t.status.is_terminal() && t.status != JobStatus::Cancelled,
                Outcome::Chunk(_) => matches!(applied, Some(Applied::Completed)),
                Outcome::Retry(_) => false,
            };
            if due {
                job.event()
            } else {
                None
            }
        })
        .collect()
}

/// Publishes `due` and returns the jobs to settle: all, or, if the events
/// could not be published, those without an event (the others go back to
/// their queue, and their redelivery publishes again; jobs going to a
/// retry tier have no event yet).
async fn announce<T>(
    events: &Events,
    jobs: Vec<(Pending, T)>,
    due: Vec<EventMessage>,
    has_event: impl Fn(&T) -> bool,
) -> Vec<(Pending, T)> {
    if due.is_empty() {
        return jobs;
    }
    let n = due.len();
    match events.publish(due).await {
        Ok(()) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, events = n, "could not publish webhook events; the jobs will be redelivered");
            let mut keep = Vec::with_capacity(jobs.len());
            for (j, t) in jobs {
                if j.webhook && has_event(&t) {
                    let _ = j.delivery.reject(true).await;
                } else {
                    keep.push((j, t));
                }
            }
            keep
        }
    }
}

/// Writes the outcomes, retrying with backoff while Redis is away, for up
/// to `patience`; then the caller sends the jobs back through the retry
/// tiers rather than holding their deliveries. Returns what each job's
/// write did (`None` where nothing was written).
async fn store_all(
    store: &JobStore,
    jobs: &[Pending],
    updates: &[Outcome],
    patience: Duration,
) -> Result<Vec<Option<Applied>>, infq_common::store::StoreError> {
    let retrying: Vec<Option<Transition>> = updates
        .iter()
        .map(|u| match u {
            Outcome::Retry(e) => Some(Transition {
                status: JobStatus::Retrying,
                output: None,
                error: Some(JobError::new("model_error", e.clone())),
            }),
            _ => None,
        })
        .collect();
    let planned: Vec<Option<Write>> = jobs
        .iter()
        .zip(updates)
        .zip(&retrying)
        .map(|((j, u), r)| match (u, r) {
            (Outcome::Job(t), _) => Some(Write::Job(j.msg.id, t)),
            (Outcome::Chunk(c), _) => Some(Write::Chunk(c)),
            (Outcome::Retry(_), Some(t)) if j.msg.chunk.is_none() => Some(Write::Job(j.msg.id, t)),
            (Outcome::Retry(_), _) => None,
        })
        .collect();
    let writes: Vec<Write> = planned.iter().flatten().copied().collect();
    if writes.is_empty() {
        return Ok(vec![None; jobs.len()]);
    }
    let give_up = tokio::time::Instant::now() + patience;
    let mut schedule = Schedule::exponential(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match store.write_many(&writes).await {
            Ok(done) => {
                let mut done = done.into_iter();
                return Ok(planned
                    .iter()
                    .map(|w| w.as_ref().and_then(|_| done.next()))
                    .collect());
            }
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < give_up => {
                let wait = schedule.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %e, ?wait, jobs = jobs.len(), "storing results failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn ack_all(jobs: &[Pending]) {
    // One call per channel: its settler sends one multiple ack.
    let mut by_channel: Vec<(&Arc<crate::settle::Settler>, Vec<u64>)> = Vec::new();
    for j in jobs {
        match by_channel
            .iter_mut()
            .find(|(s, _)| Arc::ptr_eq(s, &j.delivery.settler))
        {
            Some((_, tags)) => tags.push(j.delivery.tag),
            None => by_channel.push((&j.delivery.settler, vec![j.delivery.tag])),
        }
    }
    let results = join_all(by_channel.iter().map(|(s, tags)| s.ack(tags))).await;
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

    fn spec(outputs: usize) -> ModelSpec {
        let text = format!(
            "[[model]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ninputs = [{{ name = \"a\" }}, {{ name = \"b\" }}]\noutputs = [{}]\n",
            (0..outputs).map(|i| format!("{{ name = \"o{i}\" }}")).collect::<Vec<_>>().join(", ")
        );
        let r = infq_common::registry::Registry::parse(
            &text,
            std::path::Path::new("m.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        r.models()[0].clone()
    }

    fn pending(rows: usize, chunk: Option<u32>) -> Pending {
        let mut p = Pending::made_up(
            "m",
            "1",
            infq_common::job::Priority::Bulk,
            vec![0.0; rows * 2],
            1,
        );
        p.msg.chunk = chunk.map(|index| infq_common::message::ChunkRef {
            index,
            first_row: 1,
        });
        p
    }

    #[test]
    fn outputs_are_split_among_jobs_and_chunks_in_row_order() {
        let spec = spec(2);
        let jobs = vec![pending(1, None), pending(3, Some(4)), pending(1, None)];
        let values: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let out = outcomes(&spec, &jobs, &ModelOutcome::Batch(values));
        let Outcome::Job(t) = &out[0] else { panic!() };
        assert_eq!(t.output.as_deref(), Some(r#"{"o0":0.0,"o1":1.0}"#));
        let Outcome::Chunk(c) = &out[1] else { panic!() };
        assert_eq!((c.index, c.succeeded, c.failed), (4, 3, 0));
        assert_eq!(c.rows_json, "[[2.0,3.0],[4.0,5.0],[6.0,7.0]]");
        let Outcome::Job(t) = &out[2] else { panic!() };
        assert_eq!(t.output.as_deref(), Some(r#"{"o0":8.0,"o1":9.0}"#));
    }

    #[test]
    fn a_chunk_out_of_retries_fails_every_row() {
        let chunk = pending(3, Some(2));
        let Outcome::Chunk(c) = failed_for_good(&chunk, 3, "out of memory") else {
            panic!("a chunk stays a chunk")
        };
        assert_eq!((c.index, c.succeeded, c.failed), (2, 0, 3));
        assert_eq!(
            c.rows_json,
            r#"["out of memory","out of memory","out of memory"]"#
        );
        let job = pending(1, None);
        assert!(
            matches!(failed_for_good(&job, 1, "x"), Outcome::Job(t) if t.status == JobStatus::Failed)
        );
    }

    #[test]
    fn failed_rows_fail_alone() {
        let spec = spec(1);
        let jobs = vec![pending(2, Some(0)), pending(1, None)];
        let per_row = ModelOutcome::PerRow(vec![
            Ok(vec![0.5]),
            Err("bad row".into()),
            Ok(vec![f32::NAN]),
        ]);
        let out = outcomes(&spec, &jobs, &per_row);
        let Outcome::Chunk(c) = &out[0] else { panic!() };
        assert_eq!((c.succeeded, c.failed), (1, 1));
        assert_eq!(c.rows_json, r#"[[0.5],"bad row"]"#);
        let Outcome::Job(t) = &out[1] else { panic!() };
        assert_eq!(t.status, JobStatus::Failed);
        assert!(t.error.as_ref().unwrap().message.contains("non-finite"));
    }
}

//! The completion stage: the only code that writes a delivery's end (a
//! result stored, a job failed, a dead letter recorded) and settles the
//! delivery.
//!
//! Every other stage sends it a [`CompletionCommand`]: the model threads
//! the outcomes of forward passes, the batcher the jobs its claim ended,
//! refused, or could not claim, the consumers the messages that cannot
//! run, the dead-letter recorder its dead letters. The rule is written
//! once, here: **store, then acknowledge**. A delivery is acknowledged only
//! once what its end calls for is held by Redis, or by the broker (a retry,
//! a dead letter, a webhook event), each with a confirm; otherwise it is
//! returned to its queue.
//!
//! Results of a batch are written in one pipelined round trip
//! ([`write`]), single jobs' and chunks' by writers of their own
//! ([`writer`]); the webhook events due are published and the deliveries
//! acknowledged alongside the next batches ([`Cycle`]). The rarer ends
//! ([`refused`], [`dead`]) run as tasks of their own, so they never hold
//! up results.

mod audit;
mod dead;
mod finish;
mod refused;
mod write;

use crate::context::WorkerCtx;
use crate::outcome::CompletionCommand;
use crate::pending::Pending;
use crate::writer::{due_events, failed_for_good, outcomes, Outcome};
use finish::{ack_all, announce};
use infq_common::job::{now_ms, JobStatus};
use infq_common::metrics as m;
use infq_common::store::Applied;
use infq_common::webhooks::event::EventMessage;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{self, Receiver};
use tokio::task::JoinSet;

pub use finish::Verdict;
pub use refused::retry;

/// Batches whose events are being published at once.
const MAX_ANNOUNCING: usize = 8;

/// Jobs and chunks written in one round trip at most, gathered from the
/// forward passes that ended while the last write was out.
const MAX_WRITE_JOBS: usize = 128;

/// Forward passes' results waiting for a writer ([`writer`]), at most.
const WRITER_QUEUE: usize = 4;

/// Jobs of forward passes and what to store for each, in the same order.
type Results = (Vec<Pending>, Vec<Outcome>);

/// Stores, announces and acknowledges until every sender is gone; then
/// finishes what is under way.
///
/// Results are written by two writers, one for the interactive lane and
/// one for the bulk lane, each a round trip at a time: an interactive
/// job's result is not written with a backlog's chunks (up to
/// [`MAX_WRITE_JOBS`] of them, each of up to a few hundred rows), nor waits
/// for their write while the bulk writer keeps up (its queue holds
/// [`WRITER_QUEUE`] passes; past that, handing it more waits).
pub async fn completion_task(mut rx: Receiver<CompletionCommand>, ctx: Arc<WorkerCtx>) {
    let (single_tx, single_rx) = mpsc::channel::<Results>(WRITER_QUEUE);
    let (bulk_tx, bulk_rx) = mpsc::channel::<Results>(WRITER_QUEUE);
    let writers = [
        tokio::spawn(writer(single_rx, ctx.clone())),
        tokio::spawn(writer(bulk_rx, ctx.clone())),
    ];
    let mut aside = JoinSet::new();
    while let Some(cmd) = rx.recv().await {
        while aside.try_join_next().is_some() {}
        match cmd {
            CompletionCommand::Store {
                spec,
                jobs,
                outcome,
                explained,
                model_sha256,
            } => {
                let (jobs, updates) =
                    outcomes_of(&ctx, &spec, jobs, &outcome, &explained, &model_sha256);
                let (single, bulk) = by_lane(jobs, updates);
                for (tx, results) in [(&single_tx, single), (&bulk_tx, bulk)] {
                    if results.0.is_empty() {
                        continue;
                    }
                    if let Err(mpsc::error::SendError((jobs, _))) = tx.send(results).await {
                        // Only if a writer panicked: the jobs go back
                        // through the retry tiers rather than wait unsettled.
                        tracing::error!("a result writer stopped");
                        let reason = "the worker's result writer stopped".to_string();
                        aside.spawn(refused::retry_task(ctx.clone(), jobs, reason));
                    }
                }
            }
            CompletionCommand::Ended(ended) => ended_jobs(&ctx, ended).await,
            CompletionCommand::Retry { jobs, reason } => {
                aside.spawn(refused::retry_task(ctx.clone(), jobs, reason));
            }
            CompletionCommand::Refuse(jobs) => {
                aside.spawn(refused::dead_letter(jobs));
            }
            CompletionCommand::Misplaced(job, reason) => {
                aside.spawn(refused::misplaced(job, reason));
            }
            CompletionCommand::CannotRun { job, code, reason } => {
                aside.spawn(refused::cannot_run(ctx.clone(), job, code, reason));
            }
            CompletionCommand::Undecodable { raw, queue, reason } => {
                aside.spawn(refused::undecodable(raw, queue, reason));
            }
            CompletionCommand::DeadLetter(raw) => {
                aside.spawn(dead::record_task(ctx.clone(), raw));
            }
        }
    }
    drop((single_tx, bulk_tx));
    for w in writers {
        let _ = w.await;
    }
    while aside.join_next().await.is_some() {}
    tracing::debug!("completion stage stopped");
}

/// A pass's interactive jobs and its bulk ones, apart (a pass may hold
/// both).
fn by_lane(jobs: Vec<Pending>, updates: Vec<Outcome>) -> (Results, Results) {
    let (mut single, mut bulk): (Results, Results) = Default::default();
    for (job, update) in jobs.into_iter().zip(updates) {
        let to = if job.lane == infq_common::job::Priority::Interactive {
            &mut single
        } else {
            &mut bulk
        };
        to.0.push(job);
        to.1.push(update);
    }
    (single, bulk)
}

/// Writes results a round trip at a time until its sender is gone: those
/// of the passes that ended while the last write was out go together in
/// the next (under a backlog of chunks, a write per pass would leave the
/// model waiting on the store). Their events (published with confirms)
/// and the acknowledgements that follow run alongside the next write, a
/// few at a time for backpressure: waiting for them would hold it up.
async fn writer(mut rx: Receiver<Results>, ctx: Arc<WorkerCtx>) {
    let mut announcing = JoinSet::new();
    while let Some((mut jobs, mut updates)) = rx.recv().await {
        while jobs.len() < MAX_WRITE_JOBS {
            let Ok((more, more_updates)) = rx.try_recv() else {
                break;
            };
            jobs.extend(more);
            updates.extend(more_updates);
        }
        if let Some(cycle) = store(&ctx, jobs, updates).await {
            while announcing.len() >= MAX_ANNOUNCING {
                announcing.join_next().await;
            }
            announcing.spawn(cycle.run());
        }
    }
    while announcing.join_next().await.is_some() {}
}

/// What to store for each job of a forward pass: jobs out of retries fail
/// for good, the others wait as `retrying`.
fn outcomes_of(
    ctx: &WorkerCtx,
    spec: &infq_common::registry::ModelSpec,
    jobs: Vec<Pending>,
    outcome: &crate::outcome::ModelOutcome,
    explained: &[Option<Result<Vec<f32>, crate::outcome::InferError>>],
    model_sha256: &str,
) -> (Vec<Pending>, Vec<Outcome>) {
    let updates = outcomes(spec, &jobs, outcome, explained, model_sha256)
        .into_iter()
        .zip(&jobs)
        .map(|(o, job)| match o {
            Outcome::Retry(e) if !ctx.can_retry(&job.msg) => {
                failed_for_good(job, job.rows(spec.width()), &e.to_string())
            }
            other => other,
        })
        .collect();
    (jobs, updates)
}

/// Stores forward passes' outcomes in one round trip; what is left to do (announce,
/// acknowledge, count) is the returned [`Cycle`]. `None` when the store
/// stayed unreachable: the jobs went back through the retry tiers.
async fn store(ctx: &Arc<WorkerCtx>, jobs: Vec<Pending>, updates: Vec<Outcome>) -> Option<Cycle> {
    let started = Instant::now();
    let applied = match write::store_all(&ctx.store, &jobs, &updates, ctx.patience()).await {
        Ok(a) => a,
        Err(e) => {
            let reason = format!("the store is unreachable: {e}");
            refused::retry_task(ctx.clone(), jobs, reason).await;
            return None;
        }
    };
    let due = due_events(&jobs, &updates, &applied);
    // The ends stored now (not those stored before: they were recorded
    // then) are audited.
    let mut records = Vec::new();
    let mut completed = Vec::new();
    for ((job, out), applied) in jobs.iter().zip(&updates).zip(&applied) {
        match (out, applied) {
            (Outcome::Job(t), Some(Applied::Yes)) => records.extend(audit::job_end(job, t)),
            (Outcome::Chunk(c), Some(Applied::Completed)) => completed.push(c.batch),
            _ => {}
        }
    }
    Some(Cycle {
        ctx: ctx.clone(),
        pairs: jobs.into_iter().zip(updates).collect(),
        due,
        records,
        completed,
        started,
    })
}

/// Jobs their claim ended without running: counted, announced again (the
/// dispatcher drops what was announced before), acknowledged.
async fn ended_jobs(ctx: &WorkerCtx, ended: Vec<(Pending, Option<JobStatus>)>) {
    for (job, status) in &ended {
        match status {
            Some(st) => metrics::counter!(m::JOBS_COMPLETED, "model" => job.msg.model.clone(), "priority" => job.lane.as_str(), "outcome" => st.as_str())
                .increment(1),
            None => {
                ctx.stats.jobs_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Ended, perhaps by a worker that stopped before its event (and its
    // audit record) was out.
    audit::stored_ends(ctx, &ended).await;
    let due: Vec<Option<EventMessage>> = ended.iter().map(|(j, _)| j.event()).collect();
    let pairs = announce(ended, due, |_| true).await;
    let jobs: Vec<Pending> = pairs.into_iter().map(|(j, _)| j).collect();
    ack_all(&jobs).await;
}

/// What is left of a batch once its results are stored: publish its
/// events, acknowledge, send transient failures back, count.
struct Cycle {
    ctx: Arc<WorkerCtx>,
    pairs: Vec<(Pending, Outcome)>,
    /// The event due for each job, in the order of `pairs`.
    due: Vec<Option<EventMessage>>,
    /// The audit records of the jobs that ended.
    records: Vec<infq_common::audit::Record>,
    /// Batches completed by these results, whose completion is audited.
    completed: Vec<infq_common::job::JobId>,
    started: Instant,
}

impl Cycle {
    async fn run(mut self) {
        let session = self
            .pairs
            .iter()
            .find_map(|(j, _)| j.delivery.settler.session().cloned());
        let records = std::mem::take(&mut self.records);
        let completed = std::mem::take(&mut self.completed);
        let ctx = self.ctx.clone();
        let audited = async move {
            let mut records = records;
            for id in &completed {
                match audit::batch_end(&ctx.store, id).await {
                    Ok(r) => records.extend(r),
                    Err(e) => {
                        tracing::error!(error = %e, batch_id = %id, "could not read a completed batch for its audit record")
                    }
                }
            }
            audit::publish(&ctx, session.as_ref(), records).await;
        };
        let (pairs, ()) = tokio::join!(
            announce(self.pairs, self.due, |o| !matches!(o, Outcome::Retry(_))),
            audited
        );
        let mut retries = Vec::new();
        let mut jobs = Vec::with_capacity(pairs.len());
        let mut updates = Vec::with_capacity(pairs.len());
        for (job, out) in pairs {
            if matches!(out, Outcome::Retry(_)) {
                retries.push(job);
            } else {
                jobs.push(job);
                updates.push(out);
            }
        }
        ack_all(&jobs).await;
        if !retries.is_empty() {
            let reason = "transient model error".to_string();
            refused::retry_task(self.ctx.clone(), retries, reason).await;
        }
        self.ctx
            .stats
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
            metrics::histogram!(m::STORE_SECONDS, "model" => job.msg.model.clone(), "priority" => job.lane.as_str())
                .record(self.started.elapsed().as_secs_f64());
        }
    }
}

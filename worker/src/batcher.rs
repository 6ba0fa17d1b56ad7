//! Dynamic batching: one batcher per model version.
//!
//! The batcher first reserves the model thread's single slot, so batches
//! keep growing while the model is busy. It then takes the first job and
//! fills the batch until `max_batch_size` rows or `max_batch_delay` has
//! passed, always taking interactive jobs before bulk ones; a batch that
//! starts with interactive jobs takes no chunk, and stops filling when one
//! comes (the model then has work waiting). Interactive jobs
//! are claimed in Redis while the batch fills ([`EarlyClaims`]); the rest
//! are claimed before the batch is handed over, in one round trip:
//! those already terminal or stored (redeliveries, cancelled work) go to
//! the completion stage to be acknowledged without running, and messages
//! that name no record (or do not match it) go there to be dead-lettered
//! with the reason. Behind a full batch with more waiting (a backlog of
//! chunks), the next batches are formed at once and claimed in the same
//! round trip, to run one after another ([`CLAIM_AHEAD`]); a single job
//! arriving meanwhile runs before them, claimed in a round trip of its
//! own.

use crate::context::WorkerCtx;
use crate::model::{Batch, ModelCommand, ModelHandle};
use crate::outcome::CompletionCommand;
use crate::pending::Pending;
use infq_common::job::{JobStatus, Priority};
use infq_common::registry::ModelSpec;
use infq_common::retry::Schedule;
use infq_common::store::{Claim, ClaimOf, JobStore, StoreError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::time::sleep_until;

/// Collects jobs into one batch of at most `max_rows` rows. Plain logic, no
/// I/O, so batch assembly is tested synchronously.
#[derive(Debug)]
pub struct BatchBuilder<T> {
    max_rows: usize,
    rows: usize,
    items: Vec<T>,
}

impl<T> BatchBuilder<T> {
    /// An empty builder for batches of up to `max_rows` rows.
    pub fn new(max_rows: usize) -> Self {
        Self {
            max_rows: max_rows.max(1),
            rows: 0,
            items: Vec::with_capacity(max_rows.max(1)),
        }
    }

    /// Adds an item of `rows` rows, or hands it back if it would overflow a
    /// non-empty batch. An item larger than a whole batch is accepted alone.
    pub fn push(&mut self, item: T, rows: usize) -> Result<(), T> {
        if self.rows > 0 && self.rows + rows > self.max_rows {
            return Err(item);
        }
        self.rows += rows;
        self.items.push(item);
        Ok(())
    }

    /// No more rows fit.
    pub fn is_full(&self) -> bool {
        self.rows >= self.max_rows
    }

    /// Nothing collected yet.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Rows collected.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Takes the items that `pred` picks out of the batch being filled,
    /// which still counts their rows: they go ahead (to be claimed while
    /// it fills) and rejoin it when it is handed over.
    pub fn hand_over(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let (picked, kept) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|item| pred(item));
        self.items = kept;
        picked
    }

    /// Takes the batch, leaving the builder empty.
    pub fn take(&mut self) -> Vec<T> {
        self.rows = 0;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max_rows))
    }
}

/// Senders of a model version's two lanes, held by the consumers.
#[derive(Clone, Debug)]
pub struct LaneSenders {
    /// Single jobs.
    pub interactive: Sender<Pending>,
    /// Bulk chunks.
    pub bulk: Sender<Pending>,
}

/// The receiving ends of one model version's two lanes, read by its
/// batcher. The lanes close when every [`LaneSenders`] is dropped.
pub struct Lanes {
    interactive: Receiver<Pending>,
    bulk: Receiver<Pending>,
}

impl Lanes {
    /// Lanes holding up to `capacity` jobs each (the consumer prefetch).
    pub fn new(capacity: usize) -> (LaneSenders, Self) {
        let (itx, irx) = mpsc::channel(capacity.max(1));
        let (btx, brx) = mpsc::channel(capacity.max(1));
        let senders = LaneSenders {
            interactive: itx,
            bulk: btx,
        };
        let lanes = Self {
            interactive: irx,
            bulk: brx,
        };
        (senders, lanes)
    }

    /// The next job without waiting, interactive first.
    fn try_next(&mut self) -> Option<Pending> {
        self.interactive
            .try_recv()
            .ok()
            .or_else(|| self.bulk.try_recv().ok())
    }

    /// The next job, interactive first; `None` once both lanes are closed
    /// and empty, or when `deadline` passes.
    async fn next(&mut self, deadline: Option<tokio::time::Instant>) -> Option<Pending> {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            biased;
            Some(j) = self.interactive.recv() => Some(j),
            Some(j) = self.bulk.recv() => Some(j),
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => None,
            else => None,
        }
    }
}

/// Tokio's timer counts whole milliseconds.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// When a batch whose first job came at `now` stops waiting for company.
/// The timer rounds its deadline up to a whole tick and fires on the tick
/// after, so a deadline `delay` away ends the wait a tick late: a 2 ms
/// delay averaged 3.0 ms of filling in `scripts/bench`, and a bare
/// `sleep_until` of 2 ms took 3.15 ms (median) on the same host. Set a
/// tick early, the wait ends at about `delay` (2.13 ms), as
/// `max_batch_delay_ms` promises.
fn fill_deadline(now: tokio::time::Instant, delay: Duration) -> tokio::time::Instant {
    now + delay.saturating_sub(TIMER_TICK)
}

/// Forms batches for one model version until its lanes close (shutdown)
/// or its model thread stops.
pub async fn batcher_task(
    spec: Arc<ModelSpec>,
    mut lanes: Lanes,
    model: ModelHandle,
    ctx: Arc<WorkerCtx>,
    completion: Sender<CompletionCommand>,
) {
    let width = spec.width();
    let mut builder = BatchBuilder::new(spec.max_batch_size);
    let mut carry: Option<Pending> = None;
    let delay = spec.max_batch_delay();
    // Batches claimed ahead (see [`CLAIM_AHEAD`]), to run in order.
    let mut ready: VecDeque<Vec<Pending>> = VecDeque::new();
    loop {
        let Ok(permit) = model.tx.reserve().await else {
            tracing::error!(model = %spec.id(), "model thread stopped");
            break;
        };
        // A batch claimed ahead runs next, unless a single job is waiting:
        // that one goes first, in a batch of its own making.
        if !ready.is_empty() && carry.is_none() {
            match lanes.interactive.try_recv() {
                Ok(job) => carry = Some(job),
                Err(_) => {
                    let runnable = ready.pop_front().expect("not empty");
                    permit.send(ModelCommand::Infer(batch_of(runnable, width, &spec)));
                    continue;
                }
            }
        }
        let first = match carry.take() {
            Some(job) => job,
            None => match lanes.next(None).await {
                Some(job) => job,
                None => break,
            },
        };
        let started = Instant::now();
        let rows = first.rows(width).max(1);
        let _ = builder.push(first, rows);
        let deadline = fill_deadline(tokio::time::Instant::now(), delay);
        let mut early = EarlyClaims::new(width, &ctx, &completion);
        early.start(&mut builder);
        while !builder.is_full() {
            let next = match lanes.try_next() {
                Some(job) => job,
                None => match early.wait(&mut lanes, &mut builder, deadline).await {
                    Some(job) => job,
                    None => break,
                },
            };
            // A batch of interactive jobs takes no chunk: one that comes
            // while it fills (no interactive job is waiting then) ends the
            // filling, since the model has work waiting, and starts the
            // next batch. The jobs neither wait out the fill timer nor a
            // chunk's claim. Not while batches claimed ahead wait: those
            // run first, and the chunk rides with the jobs as before.
            if early.used() && next.lane == Priority::Bulk && ready.is_empty() {
                carry = Some(next);
                break;
            }
            let rows = next.rows(width).max(1);
            if let Err(job) = builder.push(next, rows) {
                carry = Some(job);
                break;
            }
            early.start(&mut builder);
        }
        let full = builder.is_full() || carry.is_some();
        let mut batches = vec![builder.take()];
        // A batch with a single job in it is claimed alone: claiming
        // chunks with it would make it wait for their claims too.
        let single = early.used();
        let lane = if single {
            Priority::Interactive
        } else {
            Priority::Bulk
        };
        metrics::histogram!(infq_common::metrics::BATCH_WAIT_SECONDS, "model" => spec.name.clone(), "priority" => lane.as_str())
            .record(started.elapsed().as_secs_f64());
        // A full batch with more waiting behind it: a backlog. The next
        // batches are formed from what is waiting now and claimed in the
        // same round trip, so that the model does not wait for a claim
        // between each of them.
        while full && !single && ready.len() + batches.len() < CLAIM_AHEAD {
            while !builder.is_full() {
                let Some(next) = carry.take().or_else(|| lanes.try_next()) else {
                    break;
                };
                let rows = next.rows(width).max(1);
                if let Err(job) = builder.push(next, rows) {
                    carry = Some(job);
                    break;
                }
            }
            if builder.is_empty() {
                break;
            }
            let more = builder.is_full() || carry.is_some();
            batches.push(builder.take());
            if !more {
                break;
            }
        }
        let claims = batches
            .into_iter()
            .map(|jobs| prepare(jobs, width, &ctx, &completion));
        // The claim made while filling and those of the rest at once.
        let (claimed_early, claimed) =
            tokio::join!(early.finish(), futures_util::future::join_all(claims));
        let mut claimed = claimed.into_iter().filter(|runnable| !runnable.is_empty());
        let mut runnable = claimed_early;
        runnable.extend(claimed.next().unwrap_or_default());
        if runnable.is_empty() {
            continue;
        }
        ready.extend(claimed);
        permit.send(ModelCommand::Infer(batch_of(runnable, width, &spec)));
    }
    // Jobs left over when the model thread is gone are not acknowledged;
    // the broker redelivers them.
    tracing::debug!(model = %spec.id(), "batcher stopped");
}

/// Interactive jobs claimed while their batch fills: the first as soon as
/// no other job is waiting at once, those that come meanwhile together
/// once that claim is back, so that at the fill timer only the last few
/// are left to claim, alongside the claim still out (one round trip less
/// for a job alone in its batch, most of them at low load).
/// Chunks are claimed when the batch is handed over, as before. A job
/// claimed early and then cancelled before its pass is the same as one
/// cancelled during it: its result is not stored over the cancellation.
struct EarlyClaims<'a> {
    width: usize,
    ctx: &'a WorkerCtx,
    completion: &'a Sender<CompletionCommand>,
    in_flight: Option<futures_util::future::BoxFuture<'a, Vec<Pending>>>,
    claimed: Vec<Pending>,
    used: bool,
}

impl<'a> EarlyClaims<'a> {
    fn new(width: usize, ctx: &'a WorkerCtx, completion: &'a Sender<CompletionCommand>) -> Self {
        Self {
            width,
            ctx,
            completion,
            in_flight: None,
            claimed: Vec::new(),
            used: false,
        }
    }

    /// Claims the single jobs of the batch being filled that are not
    /// claimed yet, unless a claim is on its way (they wait for the next).
    fn start(&mut self, builder: &mut BatchBuilder<Pending>) {
        if self.in_flight.is_some() {
            return;
        }
        let jobs = builder.hand_over(|j| j.lane == Priority::Interactive);
        if jobs.is_empty() {
            return;
        }
        self.used = true;
        let (width, ctx, completion) = (self.width, self.ctx, self.completion);
        self.in_flight = Some(Box::pin(prepare(jobs, width, ctx, completion)));
    }

    /// The next job; `None` when the fill timer runs out (or the lanes
    /// close). A claim on its way that comes back meanwhile is followed
    /// by the next, of the jobs that came while it was out.
    async fn wait(
        &mut self,
        lanes: &mut Lanes,
        builder: &mut BatchBuilder<Pending>,
        deadline: tokio::time::Instant,
    ) -> Option<Pending> {
        loop {
            let Some(claim) = self.in_flight.as_mut() else {
                return lanes.next(Some(deadline)).await;
            };
            tokio::select! {
                biased;
                run = claim => {
                    self.in_flight = None;
                    self.claimed.extend(run);
                    self.start(builder);
                }
                job = lanes.next(Some(deadline)) => return job,
            }
        }
    }

    /// Whether the batch holds interactive jobs: each is handed over by
    /// [`Self::start`], called after every push, or waits in the builder
    /// for the next claim behind the one on its way.
    fn used(&self) -> bool {
        self.used
    }

    /// The jobs claimed early that are to run, once every claim is back.
    async fn finish(mut self) -> Vec<Pending> {
        if let Some(claim) = self.in_flight.take() {
            self.claimed.extend(claim.await);
        }
        self.claimed
    }
}

/// Batches claimed at once at most, counting those claimed before and not
/// yet run, when a backlog is waiting. Each claim is a Redis round trip
/// that the model would otherwise wait out between two batches: for bulk
/// chunks (a forward pass of 256 rows takes about as long as the claim)
/// that left the model idle half the time. A single job arriving behind
/// them still runs next.
const CLAIM_AHEAD: usize = 8;

/// A claimed batch as the model thread takes it: the jobs' inputs side by
/// side, and the batch's span, which each job's span follows.
fn batch_of(runnable: Vec<Pending>, width: usize, spec: &ModelSpec) -> Batch {
    let rows: usize = runnable.iter().map(|j| j.rows(width)).sum();
    let mut inputs = Vec::with_capacity(rows * width);
    for job in &runnable {
        inputs.extend_from_slice(&job.msg.inputs);
    }
    let batch = BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("batch", batch, model = %spec.id(), rows, jobs = runnable.len());
    for job in &runnable {
        if !job.span.is_disabled() {
            job.span.record("batch", batch);
            job.span.follows_from(&span);
        }
    }
    Batch {
        jobs: runnable,
        inputs,
        rows,
        span,
        formed: Instant::now(),
    }
}

/// Numbers the batches of this worker process, for the `batch` field that
/// links each job's span to its batch's.
static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Claims a batch's jobs and chunks in one round trip and sorts them:
/// those to run are returned; the others go to the completion stage:
/// those already ended (or expired now) to be announced and acknowledged,
/// those whose message names no record or does not match it to be
/// dead-lettered with the reason, and all of them, if the store stays
/// unreachable past `worker.store_retry_secs`, to the retry tiers. A
/// refused store command costs only the item it was for: the claims are
/// then made one by one.
async fn prepare(
    jobs: Vec<Pending>,
    width: usize,
    ctx: &WorkerCtx,
    completion: &Sender<CompletionCommand>,
) -> Vec<Pending> {
    if jobs.is_empty() {
        return jobs;
    }
    let mut schedule = Schedule::exponential(Duration::from_millis(50), Duration::from_secs(2));
    let give_up = tokio::time::Instant::now() + ctx.patience();
    let found = loop {
        let attempt = match claim(&ctx.store, &jobs, width).await {
            Err(e) if !e.is_retryable() => claim_each(&ctx.store, &jobs, width).await,
            other => other,
        };
        match attempt {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < give_up => {
                let wait = schedule.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %e, ?wait, "claiming a batch failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let reason = format!("the store is unreachable: {e}");
                let _ = completion
                    .send(CompletionCommand::Retry { jobs, reason })
                    .await;
                return Vec::new();
            }
        }
    };
    let mut run = Vec::with_capacity(jobs.len());
    let mut ended = Vec::new();
    let mut refused = Vec::new();
    for (mut job, claim) in jobs.into_iter().zip(found) {
        match claim {
            Claim::Run {
                webhook, explain, ..
            } => {
                job.webhook = webhook;
                job.explain = explain;
                run.push(job);
            }
            Claim::Skip { webhook } => {
                job.webhook = webhook;
                ended.push((job, None));
            }
            Claim::Expired { webhook } => {
                job.webhook = webhook;
                ended.push((job, Some(JobStatus::Expired)));
            }
            Claim::Refused(reason) => refused.push((job, reason)),
        }
    }
    if !refused.is_empty() {
        let _ = completion.send(CompletionCommand::Refuse(refused)).await;
    }
    if !ended.is_empty() {
        let _ = completion.send(CompletionCommand::Ended(ended)).await;
    }
    run
}

/// Claims every job and chunk in one round trip.
async fn claim(store: &JobStore, jobs: &[Pending], width: usize) -> Result<Vec<Claim>, StoreError> {
    let items: Vec<ClaimOf> = jobs.iter().map(|j| claim_of(j, width)).collect();
    store.claim_many(&items).await
}

/// Claims one by one, after the store refused a command of a combined
/// claim: an item whose claim is refused again is dead-lettered with the
/// store's reason, and only it. A transient error is the caller's to retry.
async fn claim_each(
    store: &JobStore,
    jobs: &[Pending],
    width: usize,
) -> Result<Vec<Claim>, StoreError> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let c = match store.claim_many(&[claim_of(job, width)]).await {
            Ok(mut c) => c.pop(),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => Some(Claim::Refused(format!("the store refused it: {e}"))),
        };
        out.push(c.unwrap_or_else(|| Claim::Refused("the store gave no answer".into())));
    }
    Ok(out)
}

fn claim_of(job: &Pending, width: usize) -> ClaimOf<'_> {
    match job.msg.work.chunk() {
        Some(_) => ClaimOf::Chunk(&job.msg, job.rows(width) as u64),
        None => ClaimOf::Job(&job.msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fill_timer_is_set_a_tick_early() {
        let now = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(fill_deadline(now, ms(2)), now + ms(1));
        assert_eq!(fill_deadline(now, ms(5)), now + ms(4));
        assert_eq!(fill_deadline(now, ms(0)), now);
    }

    #[test]
    fn fills_up_to_max_rows() {
        let mut b = BatchBuilder::new(4);
        for i in 0..4 {
            assert!(!b.is_full());
            b.push(i, 1).unwrap();
        }
        assert!(b.is_full());
        assert_eq!(b.push(9, 1), Err(9));
        assert_eq!(b.take(), vec![0, 1, 2, 3]);
        assert!(b.is_empty());
        assert_eq!(b.rows(), 0);
    }

    #[test]
    fn multi_row_items_do_not_overflow() {
        let mut b = BatchBuilder::new(256);
        b.push("a", 200).unwrap();
        assert_eq!(b.push("b", 100), Err("b"), "would make 300 rows");
        b.push("c", 56).unwrap();
        assert!(b.is_full());
    }

    #[test]
    fn items_handed_over_keep_their_rows_in_the_batch() {
        let mut b = BatchBuilder::new(4);
        b.push(1, 1).unwrap();
        b.push(2, 2).unwrap();
        b.push(3, 1).unwrap();
        assert_eq!(b.hand_over(|&i| i != 2), vec![1, 3]);
        assert!(b.is_full(), "the rows handed over still count");
        assert_eq!(b.push(4, 1), Err(4));
        assert_eq!(b.take(), vec![2]);
        assert_eq!(b.rows(), 0);
        assert!(b.hand_over(|_| true).is_empty());
    }

    #[test]
    fn an_oversized_item_goes_alone() {
        let mut b = BatchBuilder::new(8);
        b.push("big", 100).unwrap();
        assert!(b.is_full());
        assert_eq!(b.take(), vec!["big"]);
    }

    fn job(lane: infq_common::job::Priority, n: u8) -> Pending {
        Pending::made_up("m", "1", lane, vec![f32::from(n); 3], 1)
    }

    #[tokio::test]
    async fn interactive_jobs_come_first() {
        use infq_common::job::Priority::*;
        let (tx, mut lanes) = Lanes::new(16);
        for n in 0..3 {
            tx.bulk.send(job(Bulk, n)).await.unwrap();
        }
        for n in 10..12 {
            tx.interactive.send(job(Interactive, n)).await.unwrap();
        }
        let mut order = Vec::new();
        while let Some(j) = lanes.try_next() {
            order.push(j.msg.inputs[0] as u8);
        }
        assert_eq!(order, vec![10, 11, 0, 1, 2]);
        tx.bulk.send(job(Bulk, 5)).await.unwrap();
        tx.interactive.send(job(Interactive, 6)).await.unwrap();
        assert_eq!(lanes.next(None).await.unwrap().msg.inputs[0], 6.0);
        assert_eq!(lanes.next(None).await.unwrap().msg.inputs[0], 5.0);
    }

    #[tokio::test]
    async fn next_ends_at_the_deadline_or_when_closed() {
        let (tx, mut lanes) = Lanes::new(4);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(lanes.next(Some(deadline)).await.is_none());
        drop(tx);
        assert!(
            lanes.next(None).await.is_none(),
            "closed lanes end the wait"
        );
    }
}

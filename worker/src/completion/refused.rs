//! The ends of deliveries that do not run: sent back through the retry
//! tiers, dead-lettered with a reason, or recorded as failed.

use super::finish::{announce, settle, Verdict};
use crate::context::WorkerCtx;
use crate::outcome::RawDelivery;
use crate::pending::Pending;
use crate::requeue::{RequeueError, Requeued};
use crate::stats::WorkerStats;
use infq_common::job::{JobError, JobStatus};
use infq_common::metrics as m;
use infq_common::store::Applied;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// [`retry`] as a task of its own.
pub(super) async fn retry_task(ctx: Arc<WorkerCtx>, jobs: Vec<Pending>, reason: String) {
    retry(jobs, &reason, ctx.settings.worker.max_retries, &ctx.stats).await;
}

/// Sends each job to its next retry tier (on the broker session it came
/// from) and acknowledges it once the broker confirms; jobs out of
/// retries are rejected to the dead-letter queue; jobs that could not be
/// sent go back to their queue now, rather than holding a prefetch slot
/// until the channel dies. A job may be retried `max_retries` times.
pub async fn retry(
    jobs: Vec<Pending>,
    reason: &str,
    max_retries: u32,
    stats: &WorkerStats,
) -> Requeued {
    let mut out = Requeued::default();
    let (again, spent): (Vec<Pending>, Vec<Pending>) =
        jobs.into_iter().partition(|j| j.msg.retries < max_retries);
    for job in spent {
        tracing::warn!(job_id = %job.msg.record(), reason, "out of retries; dead-lettering");
        settle(&job.delivery, Verdict::Reject).await;
        stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        out.dead_lettered += 1;
    }
    // All publishes go out at once; each job is settled by its confirm.
    let sent = futures_util::future::join_all(again.iter().map(|j| async move {
        match j.delivery.settler.session() {
            Some(s) => s.requeuer.send(&j.msg).await,
            None => Err(RequeueError::NoSession),
        }
    }))
    .await;
    for (job, result) in again.into_iter().zip(sent) {
        match result {
            Ok(()) => {
                settle(&job.delivery, Verdict::Ack).await;
                stats.jobs_retried.fetch_add(1, Ordering::Relaxed);
                out.sent += 1;
            }
            Err(e) => {
                tracing::warn!(job_id = %job.msg.record(), error = %e, "could not send a job to retry");
                settle(&job.delivery, Verdict::Requeue).await;
                out.left += 1;
            }
        }
    }
    if out.sent > 0 {
        metrics::counter!(m::JOBS_RETRIED).increment(out.sent as u64);
        tracing::info!(
            sent = out.sent,
            reason,
            "jobs sent back for another attempt"
        );
    }
    out
}

/// Dead-letters decoded jobs that were refused, each with its reason:
/// acknowledged once `<ns>.dead` holds it, else rejected without requeue
/// (the broker dead-letters it).
pub(super) async fn dead_letter(jobs: Vec<(Pending, String)>) {
    for (job, reason) in jobs {
        tracing::warn!(job_id = %job.msg.record(), %reason, "message refused; dead-lettering");
        metrics::counter!(m::DEAD_LETTERED, "outcome" => "refused").increment(1);
        let published = match job.delivery.settler.session() {
            Some(s) => s.requeuer.dead_letter(&job.msg, job.lane, &reason).await,
            None => false,
        };
        let verdict = if published {
            Verdict::Ack
        } else {
            Verdict::Reject
        };
        settle(&job.delivery, verdict).await;
    }
}

/// Dead-letters a message taken from a queue its work does not belong on,
/// marked so that the recorder leaves its record alone: a copy of a job's
/// message on the wrong queue must not fail the job its own message is
/// about to run.
pub(super) async fn misplaced(job: Pending, reason: String) {
    tracing::warn!(job_id = %job.msg.record(), %reason, "message on the wrong queue; dead-lettering");
    metrics::counter!(m::DEAD_LETTERED, "outcome" => "refused").increment(1);
    let published = match job.delivery.settler.session() {
        Some(s) => s.requeuer.misplaced(&job.msg, job.lane, &reason).await,
        None => false,
    };
    if published {
        settle(&job.delivery, Verdict::Ack).await;
    } else {
        // Not rejected: the broker would dead-letter it unmarked, and the
        // recorder would then fail the job. It comes back later instead.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        settle(&job.delivery, Verdict::Requeue).await;
    }
}

/// Dead-letters an undecodable message with the reason. Nothing in it can
/// be trusted, not even the `message_id` it carries, so no record is
/// touched: the producer never publishes such a message (rows and chunks
/// are sized to fit), so only a foreign or damaged one gets here.
pub(super) async fn undecodable(raw: RawDelivery, queue: String, reason: String) {
    tracing::warn!(
        reason,
        bytes = raw.data.len(),
        "undecodable message; dead-lettering"
    );
    metrics::counter!(m::DEAD_LETTERED, "outcome" => "undecodable").increment(1);
    let published = match raw.delivery.settler.session() {
        Some(s) => {
            s.requeuer
                .dead_letter_raw(&queue, &raw.data, &raw.properties, &reason)
                .await
        }
        None => false,
    };
    let verdict = if published {
        Verdict::Ack
    } else {
        Verdict::Reject
    };
    settle(&raw.delivery, verdict).await;
}

/// Ends a message that decoded but cannot run: a single job is recorded as
/// failed (if the message is the one its record was accepted with) and
/// acknowledged once its event is out; a chunk, or a message that matches
/// no record, is dead-lettered with the reason.
pub(super) async fn cannot_run(
    ctx: Arc<WorkerCtx>,
    mut pending: Pending,
    code: &'static str,
    reason: String,
) {
    tracing::warn!(job_id = %pending.msg.record(), code, %reason, "message cannot run");
    if pending.msg.work.is_chunk() {
        dead_letter(vec![(pending, format!("{code}: {reason}"))]).await;
        return;
    }
    pending.span.record("outcome", code);
    let error = JobError::new(code, reason.clone());
    let applied = match ctx.store.fail_matching(&pending.msg, &error).await {
        Ok(a) => a,
        Err(e) => {
            // Redelivered later, when the store may answer.
            tracing::warn!(error = %e, "could not record a job that cannot run");
            settle(&pending.delivery, Verdict::Requeue).await;
            return;
        }
    };
    match applied {
        // Failed now, or ended before (perhaps by this very message, whose
        // event could not be published then): announce it if due.
        Applied::Yes | Applied::Refused(_) => {}
        _ => {
            let why = "it matches no job record";
            dead_letter(vec![(pending, format!("{code}: {reason}; {why}"))]).await;
            return;
        }
    }
    pending.webhook = match ctx.store.get(&pending.msg.record()).await {
        Ok(Some(rec)) => {
            rec.webhook_url.is_some()
                && rec.status.is_terminal()
                && rec.status != JobStatus::Cancelled
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a failed job's record");
            settle(&pending.delivery, Verdict::Requeue).await;
            return;
        }
    };
    let due = vec![pending.event()];
    for (job, ()) in announce(vec![(pending, ())], due, |_| true).await {
        settle(&job.delivery, Verdict::Ack).await;
    }
}

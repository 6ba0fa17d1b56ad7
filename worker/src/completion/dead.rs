//! Recording dead letters (see [`crate::deadletter`]): each job as
//! `failed` with code `dead_lettered`, or each row of a chunk, which lets
//! its batch complete.

use super::finish::{publish_events, settle, Verdict};
use crate::context::WorkerCtx;
use crate::outcome::RawDelivery;
use infq_common::audit::{inputs_sha256, Event, Record};
use infq_common::job::{JobError, JobStatus};
use infq_common::message::JobMessage;
use infq_common::store::{Applied, JobStore, StoreError};
use infq_common::topology::death_reason;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;

/// Longest reason stored with each row of a dead-lettered chunk.
const MAX_ROW_REASON_BYTES: usize = 256;

/// Records one dead letter; `Err` means Redis could not take it.
///
/// A dead letter is as untrusted as any message (anyone who can publish to
/// the broker can publish to `<ns>.dead`): a job is recorded only if its
/// record exists, has not ended, and was accepted with this very message
/// (its digest); a chunk only if its place fits its batch. An undecodable
/// message names nothing that can be trusted and changes nothing, nor does
/// one infq found on a queue its work does not belong on (misplaced).
async fn record(
    store: &JobStore,
    data: &[u8],
    props: &BasicProperties,
) -> Result<(Vec<EventMessage>, Option<Record>), StoreError> {
    let Ok(msg) = JobMessage::decode(data) else {
        return Ok((Vec::new(), None));
    };
    // A copy found on the wrong queue: the job's own message decides.
    // (Not `x-first-death-queue`: a job back from a retry tier keeps the
    // tier's name there.)
    if infq_common::dead::is_misplaced(props) {
        return Ok((Vec::new(), None));
    }
    let reason = death_reason(props);
    let due = match msg.work.chunk() {
        None => {
            let error = JobError::new("dead_lettered", reason);
            match store.fail_matching(&msg, &error).await? {
                // Recorded now, or before (a redelivery after a failed
                // publish): the event is due either way, and the
                // dispatcher sends it once.
                Applied::Yes => true,
                Applied::Refused(st) => st.is_terminal() && st != JobStatus::Cancelled,
                _ => false,
            }
        }
        Some(_) => {
            let error = format!(
                "dead_lettered: {}",
                infq_common::dead::cut(&reason, MAX_ROW_REASON_BYTES)
            );
            store.dead_chunk(&msg, &error).await? == Applied::Completed
        }
    };
    if !due {
        return Ok((Vec::new(), None));
    }
    let kind = match msg.work.chunk() {
        None => SubjectKind::Job,
        Some(_) => SubjectKind::Batch,
    };
    let (webhook, audit) = match kind {
        SubjectKind::Job => {
            let rec = store.get(&msg.record()).await?;
            let audit = rec.as_ref().map(|r| {
                let mut a = Record::job(Event::JobCompleted, &msg.record().to_string())
                    .of_model(&msg.model, &msg.version)
                    .by(r.tenant.as_deref(), None);
                a.inputs_sha256 = Some(inputs_sha256(&msg.inputs));
                a.status = Some(r.status.as_str().to_string());
                a
            });
            (rec.and_then(|r| r.webhook_url), audit)
        }
        SubjectKind::Batch => {
            let rec = store.get_batch(&msg.record()).await?;
            (
                rec.and_then(|r| r.webhook_url),
                super::audit::batch_end(store, &msg.record()).await?,
            )
        }
    };
    let events = webhook
        .map(|_| EventMessage::new(kind, msg.record()))
        .into_iter()
        .collect();
    Ok((events, audit))
}

/// Records one dead letter, publishes its event if one is due, and
/// settles it: acknowledged once recorded and announced (or when Redis
/// refuses it for good: trying again would stall every dead letter behind
/// it; the copy in `<ns>.dead` stays); returned to its queue after a pause
/// when Redis or the broker cannot take it now.
pub(super) async fn record_task(ctx: Arc<WorkerCtx>, raw: RawDelivery) {
    let (due, audit) = match record(&ctx.store, &raw.data, &raw.properties).await {
        Ok(r) => r,
        Err(e) if !e.is_retryable() => {
            tracing::warn!(error = %e, "a dead letter cannot be recorded; skipping it");
            settle(&raw.delivery, Verdict::Ack).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record a dead letter; it stays queued");
            tokio::time::sleep(Duration::from_secs(1)).await;
            settle(&raw.delivery, Verdict::Requeue).await;
            return;
        }
    };
    let session = raw.delivery.settler.session().cloned();
    super::audit::publish(&ctx, session.as_ref(), audit.into_iter().collect()).await;
    if publish_events(&raw.delivery.settler, due).await {
        settle(&raw.delivery, Verdict::Ack).await;
    } else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle(&raw.delivery, Verdict::Requeue).await;
    }
}

//! Recording dead letters. Every message the broker dead-letters (rejected
//! as undecodable, out of retries, or delivered `amqp.delivery_limit` times
//! without an acknowledgement, e.g. because it crashes its worker) is also
//! routed to `<ns>.dead.record`. Workers consume that queue and record each
//! such job as `failed` with code `dead_lettered`, or each row of such a
//! chunk, which lets its batch complete. The copy in `<ns>.dead` stays for
//! inspection and replay.

use crate::webhooks::events::Events;
use futures_util::StreamExt;
use infq_common::job::{JobError, JobStatus};
use infq_common::message::JobMessage;
use infq_common::store::{Applied, JobStore, StoreError};
use infq_common::topology::death_reason;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest reason stored with each row of a dead-lettered chunk.
const MAX_ROW_REASON_BYTES: usize = 256;

/// Records one dead letter; `Err` means Redis could not take it.
///
/// A dead letter is as untrusted as any message (anyone who can publish to
/// the broker can publish to `<ns>.dead`): a job is recorded only if its
/// record exists, has not ended, and was accepted with this very message
/// (its digest); a chunk only if its place fits its batch. An undecodable
/// message names nothing that can be trusted and changes nothing.
pub async fn record(
    store: &JobStore,
    data: &[u8],
    props: &BasicProperties,
) -> Result<Vec<EventMessage>, StoreError> {
    let Ok(msg) = JobMessage::decode(data) else {
        return Ok(Vec::new());
    };
    let reason = death_reason(props);
    let due = match msg.chunk {
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
        return Ok(Vec::new());
    }
    let kind = match msg.chunk {
        None => SubjectKind::Job,
        Some(_) => SubjectKind::Batch,
    };
    let webhook = match kind {
        SubjectKind::Job => store.get(&msg.id).await?.and_then(|r| r.webhook_url),
        SubjectKind::Batch => store.get_batch(&msg.id).await?.and_then(|r| r.webhook_url),
    };
    Ok(webhook
        .map(|_| EventMessage::new(kind, msg.id))
        .into_iter()
        .collect())
}

/// Consumes `<ns>.dead.record` until the consumer ends or shutdown.
pub async fn recorder_task(
    mut consumer: lapin::Consumer,
    store: JobStore,
    events: Arc<Events>,
    shutdown: CancellationToken,
) -> &'static str {
    loop {
        let delivery = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return "shutdown",
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(_)) => return "consumer error",
            None => return "consumer closed",
        };
        let recorded = match record(&store, &delivery.data, &delivery.properties).await {
            Ok(due) => events.publish(due).await.map_err(|e| (e, true)),
            Err(e) => {
                let retry = e.is_retryable();
                Err((e.to_string(), retry))
            }
        };
        match recorded {
            Ok(()) => {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err((e, false)) => {
                // Redis refused it for good: trying again would stall every
                // dead letter behind it. The copy in `<ns>.dead` stays.
                tracing::warn!(error = %e, "a dead letter cannot be recorded; skipping it");
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err((e, true)) => {
                tracing::warn!(error = %e, "could not record a dead letter; it stays queued");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
    }
}

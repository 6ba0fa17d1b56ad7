//! Recording dead letters. Every message the broker dead-letters (rejected
//! as undecodable, out of retries, or delivered `amqp.delivery_limit` times
//! without an acknowledgement, e.g. because it crashes its worker) is also
//! routed to `<ns>.dead.record`. Workers consume that queue and record each
//! such job as `failed` with code `dead_lettered`, or each row of such a
//! chunk, which lets its batch complete. The copy in `<ns>.dead` stays for
//! inspection and replay.

use crate::webhooks::events::Events;
use futures_util::StreamExt;
use infq_common::job::JobError;
use infq_common::message::JobMessage;
use infq_common::store::{Applied, JobStore};
use infq_common::topology::death_reason;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records one dead letter; `Err` means Redis could not take it now.
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
) -> Result<Vec<EventMessage>, String> {
    let Ok(msg) = JobMessage::decode(data) else {
        return Ok(Vec::new());
    };
    let reason = death_reason(props);
    let (applied, kind) = match msg.chunk {
        None => (
            store
                .fail_matching(&msg, &JobError::new("dead_lettered", reason))
                .await,
            SubjectKind::Job,
        ),
        Some(_) => (
            store
                .dead_chunk(&msg, &format!("dead_lettered: {reason}"))
                .await,
            SubjectKind::Batch,
        ),
    };
    let due = match applied.map_err(|e| e.to_string())? {
        Applied::Yes if kind == SubjectKind::Job => true,
        Applied::Completed => true,
        _ => false,
    };
    if !due {
        return Ok(Vec::new());
    }
    // The event goes out if the record asks for one; a redelivery after a
    // failed publish finds the write done already, and the dispatcher
    // sends nothing twice.
    let webhook = match kind {
        SubjectKind::Job => store
            .get(&msg.id)
            .await
            .map(|r| r.and_then(|r| r.webhook_url)),
        SubjectKind::Batch => store
            .get_batch(&msg.id)
            .await
            .map(|r| r.and_then(|r| r.webhook_url)),
    }
    .map_err(|e| e.to_string())?;
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
            Ok(due) => events.publish(due).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(()) => {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
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

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
use infq_common::store::{JobStore, NewJob, Transition};
use infq_common::topology::death_reason;
use infq_common::webhooks::event::EventMessage;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records one dead letter; `Err` means Redis could not take it now.
pub async fn record(
    store: &JobStore,
    data: &[u8],
    props: &BasicProperties,
) -> Result<Vec<EventMessage>, String> {
    let Ok(msg) = JobMessage::decode(data) else {
        // Undecodable (or a webhook event): the worker that rejected it
        // recorded its job if the message named one; nothing more can be
        // known.
        return Ok(Vec::new());
    };
    let reason = death_reason(props);
    let result = match msg.chunk {
        None => {
            let job = NewJob::from_message(&msg);
            let t = Transition::failed(JobError::new("dead_lettered", reason)).with_job(job);
            store.transition(&msg.id, &t).await.map(|_| ())
        }
        Some(c) => store
            .dead_chunk(&msg.id, c.index, &format!("dead_lettered: {reason}"))
            .await
            .map(|_| ()),
    };
    // The event goes out whatever this write did: a redelivery after a
    // failed publish finds the write done already. The dispatcher sends
    // nothing for a batch still running, and nothing twice.
    result
        .map(|()| crate::webhooks::events::for_job(&msg).into_iter().collect())
        .map_err(|e| e.to_string())
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

//! The dead-letter recorder. Every message the broker dead-letters
//! (rejected as undecodable, out of retries, or delivered
//! `amqp.delivery_limit` times without an acknowledgement, e.g. because it
//! crashes its worker) is also routed to `<ns>.dead.record`. Workers
//! consume that queue and send each dead letter to the completion stage,
//! which records such a job as `failed` with code `dead_lettered`, or each
//! row of such a chunk, which lets its batch complete. The copy in
//! `<ns>.dead` stays for inspection and replay.

use crate::outcome::{CompletionCommand, RawDelivery};
use crate::pending::Settle;
use crate::settle::Settler;
use crate::subscription::Subscription;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

/// Consumes `<ns>.dead.record` until the consumer ends, the completion
/// stage is gone, or shutdown. `settler` settles the consumer's channel.
pub async fn recorder_task(
    mut sub: Subscription,
    settler: Arc<Settler>,
    completion: Sender<CompletionCommand>,
    shutdown: CancellationToken,
) -> &'static str {
    loop {
        let delivery = match sub.next(&shutdown).await {
            Ok(d) => d,
            Err(why) => {
                if shutdown.is_cancelled() {
                    sub.cancel().await;
                }
                return why;
            }
        };
        settler.received();
        let raw = RawDelivery {
            delivery: Settle {
                tag: delivery.delivery_tag,
                settler: settler.clone(),
            },
            data: delivery.data,
            properties: delivery.properties,
        };
        if completion
            .send(CompletionCommand::DeadLetter(raw))
            .await
            .is_err()
        {
            return "completion stage gone";
        }
    }
}

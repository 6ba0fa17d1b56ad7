//! Dead-lettering a message with the reason it cannot be used.
//!
//! A consumer's `basic.nack` lets the broker dead-letter a message, but
//! carries no reason: the dead letter would only say "rejected". A message
//! refused by a check of ours (undecodable, out of range, naming no record,
//! forged) is instead published to `<ns>.dead` with its reason in the
//! [`REASON_HEADER`] header, with publisher confirms, and only then is the
//! original acknowledged. If that publish fails, the caller falls back to a
//! plain reject, so the message is dead-lettered either way and never lost.

use crate::amqp::PublishError;
use crate::confirms::Lease;
use crate::topology::Topology;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use std::time::Duration;

pub use crate::topology::death::{
    cut, is_misplaced, queue_of, reason_of, MAX_REASON_BYTES, MISPLACED_HEADER, QUEUE_HEADER,
    REASON_HEADER,
};

/// Publishes a copy of a refused message (`data` and its properties) to the
/// dead-letter exchange with `reason`, on `lease`, marked `misplaced` when
/// it came from a queue its work does not belong on (see
/// [`MISPLACED_HEADER`]). The caller acknowledges the original only when
/// this returns `Ok`.
pub async fn publish_dead(
    lease: &Lease,
    topology: &Topology,
    queue: &str,
    data: &[u8],
    props: &BasicProperties,
    reason: &str,
    misplaced: bool,
) -> Result<(), PublishError> {
    // Only infq says a message is misplaced, never the message itself.
    let mut headers = FieldTable::from(
        props
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .filter(|(k, _)| k.as_str() != MISPLACED_HEADER)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .unwrap_or_default(),
    );
    if misplaced {
        headers.insert(MISPLACED_HEADER.into(), AMQPValue::Boolean(true));
    }
    headers.insert(REASON_HEADER.into(), text(&cut(reason, MAX_REASON_BYTES)));
    headers.insert(QUEUE_HEADER.into(), text(queue));
    let mut out = BasicProperties::default().with_headers(headers);
    if let Some(id) = props.message_id() {
        out = out.with_message_id(id.clone());
    }
    if let Some(t) = props.kind() {
        out = out.with_type(t.clone());
    }
    if let Some(ct) = props.content_type() {
        out = out.with_content_type(ct.clone());
    }
    lease
        .publish(
            &topology.dead_exchange(),
            "",
            data,
            out,
            Duration::from_secs(5),
        )
        .await
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

//! Dead-lettering a message with the reason it cannot be used.
//!
//! A consumer's `basic.nack` lets the broker dead-letter a message, but
//! carries no reason: the dead letter would only say "rejected". A message
//! refused by a check of ours (undecodable, out of range, naming no record,
//! forged) is instead published to `<ns>.dead` with its reason in the
//! [`REASON_HEADER`] header, with publisher confirms, and only then is the
//! original acknowledged. If that publish fails, the caller falls back to a
//! plain reject, so the message is dead-lettered either way and never lost.

use crate::amqp::{publish_confirmed, PublishError};
use crate::topology::Topology;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use std::time::Duration;

/// Header that carries why infq dead-lettered a message.
pub const REASON_HEADER: &str = "x-infq-reason";
/// Header that names the queue the message was taken from.
pub const QUEUE_HEADER: &str = "x-infq-queue";
/// Longest reason kept in the header; past it the reason is cut.
pub const MAX_REASON_BYTES: usize = 1024;

/// Publishes a copy of a refused message (`data` and its properties) to the
/// dead-letter exchange with `reason`, on `ch` (in confirm mode). The
/// caller acknowledges the original only when this returns `Ok`.
pub async fn publish_dead(
    ch: &Channel,
    topology: &Topology,
    queue: &str,
    data: &[u8],
    props: &BasicProperties,
    reason: &str,
) -> Result<(), PublishError> {
    let mut headers = props.headers().clone().unwrap_or_default();
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
    publish_confirmed(
        ch,
        &topology.dead_exchange(),
        "",
        data,
        out,
        Duration::from_secs(5),
    )
    .await
}

/// The reason infq recorded on a dead letter it published, if any.
pub fn reason_of(props: &BasicProperties) -> Option<String> {
    header(props.headers().as_ref()?, REASON_HEADER)
}

/// The queue infq recorded on a dead letter it published, if any.
pub fn queue_of(props: &BasicProperties) -> Option<String> {
    header(props.headers().as_ref()?, QUEUE_HEADER)
}

fn header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("ééé", 3), "é");
        assert_eq!(cut(&"x".repeat(5000), MAX_REASON_BYTES).len(), 1024);
    }

    #[test]
    fn the_reason_is_read_back_from_the_headers() {
        let mut h = FieldTable::default();
        h.insert(REASON_HEADER.into(), text("retention_ms out of range"));
        let props = BasicProperties::default().with_headers(h);
        assert_eq!(
            reason_of(&props).as_deref(),
            Some("retention_ms out of range")
        );
        assert_eq!(reason_of(&BasicProperties::default()), None);
    }
}

//! Why a message was dead-lettered: the headers infq writes on a dead
//! letter it publishes ([`crate::dead::publish_dead`]), and the words a
//! listing or the recorder gives, from those headers or else from the
//! broker's own `x-first-death-*` headers.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// Header that carries why infq dead-lettered a message.
pub const REASON_HEADER: &str = "x-infq-reason";
/// Header that names the queue the message was taken from.
pub const QUEUE_HEADER: &str = "x-infq-queue";
/// Header set on a dead letter whose message was taken from a queue its
/// work does not belong on (a copy on another model's queue or lane): its
/// job's own message is elsewhere, so its record is not this one's to
/// change. Only infq sets it ([`crate::dead::publish_dead`] drops any the
/// message came with).
pub const MISPLACED_HEADER: &str = "x-infq-misplaced";
/// Longest reason kept in the header; past it the reason is cut.
pub const MAX_REASON_BYTES: usize = 1024;

/// The reason infq recorded on a dead letter it published, if any.
pub fn reason_of(props: &BasicProperties) -> Option<String> {
    header(props.headers().as_ref()?, REASON_HEADER)
}

/// Whether infq dead-lettered the message as misplaced
/// ([`MISPLACED_HEADER`]).
pub fn is_misplaced(props: &BasicProperties) -> bool {
    props
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(MISPLACED_HEADER))
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

/// Why a message was dead-lettered, in words: the reason infq gave when
/// it refused the message (see [`crate::dead`]), else the broker's, from
/// its `x-first-death-*` headers.
pub fn death_reason(props: &BasicProperties) -> String {
    // The headers are the publisher's to write: a reason is cut short.
    cut(&death_reason_uncut(props), MAX_REASON_BYTES)
}

fn death_reason_uncut(props: &BasicProperties) -> String {
    if let Some(reason) = reason_of(props) {
        let queue = queue_of(props).unwrap_or_else(|| "a queue".into());
        return format!("refused by infq on {queue}: {reason}");
    }
    let header = |name: &str| -> Option<String> {
        props
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .and_then(|v| match v {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            })
    };
    let queue = header("x-first-death-queue").unwrap_or_else(|| "a job queue".into());
    match header("x-first-death-reason").as_deref() {
        Some("delivery_limit") => {
            format!("delivered too many times from {queue} without being acknowledged")
        }
        Some("rejected") => format!("rejected by a worker on {queue}"),
        Some("expired") => format!("expired in {queue}"),
        Some(other) => format!("{other} in {queue}"),
        None => "dead-lettered".into(),
    }
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
        h.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString("retention_ms out of range".into()),
        );
        let props = BasicProperties::default().with_headers(h);
        assert_eq!(
            reason_of(&props).as_deref(),
            Some("retention_ms out of range")
        );
        assert_eq!(reason_of(&BasicProperties::default()), None);
    }
}

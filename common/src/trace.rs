//! Per-job tracing: W3C trace context carried from the submission to the
//! stored result.
//!
//! A client may send a `traceparent` header (W3C Trace Context) with a
//! job; its trace id then names the job's spans in the producer and in the
//! worker, and the producer passes the header on in the job message's AMQP
//! headers. Without one, the trace id is the job id's 32 hex digits, which
//! is itself a valid trace id, so a job's spans are always found by either.
//!
//! Job spans have the target [`JOB_TARGET`] at debug level: they cost
//! nothing unless `RUST_LOG` enables them (`RUST_LOG=info,infq::job=debug`),
//! and `log.spans` writes a line when each closes, with its duration.

use crate::job::JobId;

/// Target of every job span.
pub const JOB_TARGET: &str = "infq::job";
/// AMQP header and HTTP header carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2
/// hex>`), if it is one; all-zero ids are invalid.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then(|| trace.to_string())
}

/// The trace id of a job: the one the client sent, or the job id's.
pub fn trace_id(sent: Option<&str>, job: &JobId) -> String {
    sent.map_or_else(|| job.simple().to_string(), str::to_string)
}

/// A `traceparent` value continuing `trace_id` from a new span id.
pub fn traceparent(trace_id: &str) -> String {
    let span = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace_id}-{}-01", &span[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparents_give_their_trace_id() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(t).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let again = traceparent("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parse_traceparent(&again).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_and_hostile_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
            "00-\"><script>-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_traceparent_the_job_id_is_the_trace_id() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(trace_id(None, &id), id.simple().to_string());
        assert_eq!(trace_id(Some("abc"), &id), "abc");
    }
}

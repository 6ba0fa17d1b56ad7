//! Events and the messages that name them on RabbitMQ.
//!
//! An event (what is signed and sent) is built from the stored record of
//! its job or batch and kept in Redis with its delivery state; the message
//! on the queue only names it (subject, end, chain, attempt), so nothing a
//! publisher to the broker writes into a message is ever signed or sent.

use crate::job::{format_ms, JobId, JobStatus};
use crate::store::{BatchRecord, JobRecord};
use crate::views::{BatchView, JobView};
use serde::{Deserialize, Serialize};

/// AMQP `type` of an event message.
pub const MESSAGE_TYPE: &str = "infq.webhook.v1";
/// Largest event message a dispatcher will decode.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Most events in one message.
pub const MAX_EVENTS_PER_MESSAGE: usize = 4096;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    /// A single job: `job.succeeded` or `job.failed`.
    Job,
    /// A bulk batch: `batch.completed`.
    Batch,
}

/// The `webhook-id` of a subject's event: one event per job or batch end,
/// so the id follows from the subject and stays the same however often the
/// event is published, retried or redelivered. A job or batch reopened by
/// a dead-letter replay ends again: generation `gen` of its event gets an
/// id of its own.
pub fn webhook_id(subject: &JobId, gen: u32) -> String {
    match gen {
        0 => format!("msg_{}", subject.simple()),
        n => format!("msg_{}_{n}", subject.simple()),
    }
}

/// The `webhook-id` of a batch's progress event number `n`: every one is
/// an event of its own, sent once.
pub fn progress_id(batch: &JobId, n: u32) -> String {
    format!("msg_{}_p{n}", batch.simple())
}

/// The generation a `webhook-id` of `subject` names, if it names one.
pub fn generation_of(subject: &JobId, webhook_id: &str) -> Option<u32> {
    let rest = webhook_id.strip_prefix(&format!("msg_{}", subject.simple()))?;
    match rest {
        "" => Some(0),
        r => r.strip_prefix('_')?.parse().ok().filter(|n| *n > 0),
    }
}

/// A built event: what is signed and sent. Built from the record once and
/// kept with the event's delivery state, so every attempt sends the same
/// body; never taken from a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The `webhook-id`.
    pub id: String,
    /// `job.succeeded`, `job.failed` or `batch.completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request body: `{"type", "timestamp", "data"}`.
    pub body: String,
    /// Which end of its subject it announces (see [`webhook_id`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gen: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Longest delivery schedule a deployment may configure
/// (`webhooks.schedule_ms`): an event message that says more attempts
/// were made is refused at decode.
pub const MAX_SCHEDULE_LEN: usize = 32;

/// An event on its way: published by the worker that stored the result,
/// consumed by a dispatcher, and sent back through the retry tiers after a
/// failed attempt.
///
/// It only names work. Whoever can publish to the broker can publish one,
/// so nothing in it is trusted for what the stored record says: the
/// dispatcher reads the job or batch and takes the tenant (whose secrets
/// sign), the callback URL and the event body from Redis, and refuses
/// (dead-letters, with the reason) a message that names no record, a
/// record without a callback, a subject that has not ended, or a
/// generation it has not reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire")]
pub struct EventMessage {
    /// Job or batch.
    pub kind: SubjectKind,
    /// Its id.
    pub subject: JobId,
    /// One delivery sequence: attempts of an automatic schedule share it;
    /// a manual redelivery starts a new one, which retires the old.
    pub chain: uuid::Uuid,
    /// Attempts made in this chain so far (below [`MAX_SCHEDULE_LEN`]).
    pub attempt: u32,
    /// Which end of the subject the event announces (its `reopened` count
    /// then, see [`webhook_id`]); `None` in a subject's first message:
    /// its current end, fixed by the first attempt for the later ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen: Option<u32>,
    /// For a batch's `batch.progress` event: its number (from 1), which
    /// the record must have reached. Sent once, never retried: the next
    /// one says more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u32>,
}

/// An event message as it arrives, before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    kind: SubjectKind,
    subject: JobId,
    chain: uuid::Uuid,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    gen: Option<u32>,
    #[serde(default)]
    progress: Option<u32>,
    // Messages of earlier versions carried the URL, the tenant and the
    // built event. Only the record may say those: a message that carries
    // them is refused (read here only to say why).
    #[serde(default)]
    url: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    tenant: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    event: Option<serde::de::IgnoredAny>,
}

impl TryFrom<Wire> for EventMessage {
    type Error = String;

    fn try_from(w: Wire) -> Result<Self, String> {
        if w.url.is_some() || w.tenant.is_some() || w.event.is_some() {
            return Err(
                "it names a URL, tenant or body, which only the record may say \
                 (a message of an earlier release, or forged)"
                    .into(),
            );
        }
        if w.attempt as usize >= MAX_SCHEDULE_LEN {
            return Err(format!(
                "attempt {} is out of range: a schedule has at most {MAX_SCHEDULE_LEN} attempts",
                w.attempt
            ));
        }
        if let Some(n) = w.progress {
            if w.kind != SubjectKind::Batch || n == 0 || w.attempt != 0 || w.gen.is_some() {
                return Err(format!(
                    "progress event {n} is malformed: only a batch has them, numbered from 1, \
                     sent once (no attempt or generation)"
                ));
            }
        }
        Ok(Self {
            kind: w.kind,
            subject: w.subject,
            chain: w.chain,
            attempt: w.attempt,
            gen: w.gen,
            progress: w.progress,
        })
    }
}

/// Why an event message could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Too large.
    #[error("event message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not an event message, or a field out of range.
    #[error("malformed event message: {0}")]
    Malformed(String),
    /// No events, or more than [`MAX_EVENTS_PER_MESSAGE`].
    #[error("an event message carries 1 to {MAX_EVENTS_PER_MESSAGE} events, not {0}")]
    Count(usize),
}

/// Serialises events into one message: a worker publishes the events of
/// a whole batch of results together, so the broker's cost is paid once
/// per batch rather than once per job.
pub fn encode_all(msgs: &[EventMessage]) -> Vec<u8> {
    serde_json::to_vec(msgs).expect("event messages serialise")
}

/// Parses a message: an array of events, or a single one.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<EventMessage>, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let msgs = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<EventMessage>>(bytes)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?
    } else {
        vec![EventMessage::decode(bytes)?]
    };
    if msgs.is_empty() || msgs.len() > MAX_EVENTS_PER_MESSAGE {
        return Err(DecodeError::Count(msgs.len()));
    }
    Ok(msgs)
}

impl EventMessage {
    /// The first message of a subject's event: its current end, in a new
    /// chain.
    pub fn new(kind: SubjectKind, subject: JobId) -> Self {
        Self {
            kind,
            subject,
            chain: uuid::Uuid::new_v4(),
            attempt: 0,
            gen: None,
            progress: None,
        }
    }

    /// The message of a batch's progress event number `n`.
    pub fn progress(batch: JobId, n: u32) -> Self {
        Self {
            progress: Some(n),
            ..Self::new(SubjectKind::Batch, batch)
        }
    }

    /// Serialises the message.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event message serialises")
    }

    /// Parses a message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[derive(Serialize)]
struct Body<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: T,
}

fn build<T: Serialize>(id: &JobId, gen: u32, kind: &str, at_ms: u64, data: T) -> Event {
    let body = Body {
        kind,
        timestamp: format_ms(at_ms),
        data,
    };
    Event {
        id: webhook_id(id, gen),
        kind: kind.to_string(),
        body: serde_json::to_string(&body).expect("an event body serialises"),
        gen,
    }
}

/// The event of a job in a terminal state: `job.succeeded` with its
/// outputs, or `job.failed` with the reason (an expired job failed because
/// its deadline passed). `None` for a job that is not finished or was
/// cancelled by its client.
pub fn job_event(rec: JobRecord, now_ms: u64) -> Option<Event> {
    let at = rec.finished_at_ms.unwrap_or(now_ms);
    let (id, gen) = (rec.id, rec.reopened);
    let kind = match rec.status {
        JobStatus::Succeeded => "job.succeeded",
        JobStatus::Failed | JobStatus::Expired => "job.failed",
        _ => return None,
    };
    let expired = rec.status == JobStatus::Expired && rec.error.is_none();
    let mut data = serde_json::to_value(JobView::from(rec)).expect("a job view serialises");
    if expired {
        data["error"] = serde_json::json!({
            "code": "expired",
            "message": "its deadline passed before a worker could run it",
        });
    }
    Some(build(&id, gen, kind, at, data))
}

/// The `batch.completed` event of a finished batch, with its counts and
/// the link to its results. `None` while it runs or when cancelled.
pub fn batch_event(rec: BatchRecord, public_url: Option<&str>, now_ms: u64) -> Option<Event> {
    if !matches!(rec.status, JobStatus::Succeeded | JobStatus::Failed) {
        return None;
    }
    let at = rec.finished_at_ms.unwrap_or(now_ms);
    let (id, gen) = (rec.id, rec.reopened);
    let data = BatchView::from(rec).with_base_url(public_url);
    Some(build(&id, gen, "batch.completed", at, data))
}

/// The `batch.progress` event number `n` of a running batch, built when
/// it is sent: its counts, rate and ETA as the record says them now.
/// `None` once the batch has ended (its `batch.completed` says the rest).
pub fn progress_event(
    rec: BatchRecord,
    n: u32,
    public_url: Option<&str>,
    now_ms: u64,
) -> Option<Event> {
    if !matches!(rec.status, JobStatus::Queued | JobStatus::Running) {
        return None;
    }
    let id = rec.id;
    let view = BatchView::from(rec).with_base_url(public_url);
    let mut data = serde_json::to_value(view).expect("a batch view serialises");
    data["sequence"] = n.into();
    let mut e = build(&id, 0, "batch.progress", now_ms, data);
    e.id = progress_id(&id, n);
    Some(e)
}

/// When attempt `next` (an index into `schedule_ms`) of an event should
/// happen after a failure: the retry tier to wait in (its delay is the
/// queue's message TTL) and the wait itself. The wait is at least the
/// receiver's `Retry-After`, found as the first later tier long enough
/// (capped at the longest), and jittered down by up to a fifth of the
/// tier's delay, never below what the receiver asked for.
pub fn next_wait(schedule_ms: &[u64], next: usize, retry_after_ms: Option<u64>) -> (usize, u64) {
    let last = schedule_ms.len() - 1;
    let next = next.min(last);
    let want = schedule_ms[next].max(retry_after_ms.unwrap_or(0));
    let tier = (next..=last)
        .find(|&t| schedule_ms[t] >= want)
        .unwrap_or_else(|| {
            (next..=last)
                .max_by_key(|&t| schedule_ms[t])
                .expect("a non-empty range")
        });
    let delay = schedule_ms[tier];
    let jittered = crate::retry::jitter_down(std::time::Duration::from_millis(delay), 0.1);
    let wait = (jittered.as_millis() as u64).max(want.min(delay));
    (tier, wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{new_job_id, JobError, Priority};

    fn job(status: JobStatus) -> JobRecord {
        JobRecord {
            id: new_job_id(),
            status,
            model: "credit-default".into(),
            version: "1".into(),
            priority: Priority::Interactive,
            output: (status == JobStatus::Succeeded).then(|| r#"{"default":0.25}"#.into()),
            error: (status == JobStatus::Failed).then(|| JobError::new("model_error", "boom")),
            created_at_ms: 1_700_000_000_000,
            finished_at_ms: Some(1_700_000_000_500),
            attempts: 1,
            metadata: None,
            webhook_url: Some("https://hooks.example.com/x".into()),
            reopened: 0,
            tenant: Some("acme".into()),
            erased: false,
            explanation: None,
            explain: false,
            model_sha256: None,
        }
    }

    #[test]
    fn job_events_follow_the_terminal_state() {
        let ok = job(JobStatus::Succeeded);
        let id = ok.id;
        let e = job_event(ok, 0).unwrap();
        assert_eq!(e.kind, "job.succeeded");
        assert_eq!(e.id, webhook_id(&id, 0));
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["type"], "job.succeeded");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.500Z");
        assert_eq!(body["data"]["id"], id.to_string());
        assert_eq!(body["data"]["output"]["default"], 0.25);

        let e = job_event(job(JobStatus::Failed), 0).unwrap();
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(
            (
                body["type"].as_str(),
                body["data"]["error"]["message"].as_str()
            ),
            (Some("job.failed"), Some("boom"))
        );

        let e = job_event(job(JobStatus::Expired), 0).unwrap();
        let body: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["data"]["error"]["code"], "expired");

        for st in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Cancelled,
        ] {
            assert!(job_event(job(st), 0).is_none(), "{st:?}");
        }
    }

    #[test]
    fn the_id_is_the_same_for_every_build_of_one_end() {
        let a = job(JobStatus::Succeeded);
        let b = a.clone();
        assert_eq!(job_event(a.clone(), 1).unwrap(), job_event(b, 2).unwrap());
        // A replayed dead letter ends again: a new event with its own id.
        let again = JobRecord {
            reopened: 2,
            ..a.clone()
        };
        let e = job_event(again, 1).unwrap();
        assert_eq!(e.gen, 2);
        assert_eq!(e.id, format!("msg_{}_2", a.id.simple()));
        assert_eq!(generation_of(&a.id, &e.id), Some(2));
        assert_eq!(generation_of(&a.id, &webhook_id(&a.id, 0)), Some(0));
        for bad in ["msg_x", "msg_", "", "job.succeeded"] {
            assert_eq!(generation_of(&a.id, bad), None, "{bad}");
        }
        assert_eq!(
            generation_of(&a.id, &format!("{}_0", webhook_id(&a.id, 0))),
            None
        );
        assert_eq!(
            generation_of(&a.id, &format!("{}_x", webhook_id(&a.id, 0))),
            None
        );
    }

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        let mut m = EventMessage::new(SubjectKind::Batch, new_job_id());
        m.attempt = 3;
        assert_eq!(EventMessage::decode(&m.encode()).unwrap(), m);
        m.gen = Some(2);
        assert_eq!(EventMessage::decode(&m.encode()).unwrap(), m);
        for junk in [
            &b"{}"[..],
            b"null",
            b"\xff\xfe",
            b"{\"kind\":\"job\"}",
            b"[1,2]",
        ] {
            assert!(EventMessage::decode(junk).is_err());
        }
        let mut v = serde_json::to_value(&m).unwrap();
        v["extra"] = 1.into();
        assert!(EventMessage::decode(v.to_string().as_bytes()).is_err());
        assert!(matches!(
            EventMessage::decode(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn numbers_out_of_range_are_refused_at_decode() {
        let m = EventMessage::new(SubjectKind::Job, new_job_id());
        let with = |field: &str, n: serde_json::Value| {
            let mut v = serde_json::to_value(&m).unwrap();
            v[field] = n;
            EventMessage::decode(v.to_string().as_bytes())
        };
        let last = MAX_SCHEDULE_LEN as u64 - 1;
        assert_eq!(with("attempt", last.into()).unwrap().attempt as u64, last);
        for bad in [
            serde_json::json!(MAX_SCHEDULE_LEN),
            serde_json::json!(u32::MAX),
            serde_json::json!(u64::MAX),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("3"),
        ] {
            let e = with("attempt", bad.clone()).unwrap_err();
            assert!(matches!(e, DecodeError::Malformed(_)), "{bad}: {e}");
        }
        assert!(
            with("gen", u32::MAX.into()).is_ok(),
            "checked against the record"
        );
        for bad in [
            serde_json::json!(u64::from(u32::MAX) + 1),
            serde_json::json!(-1),
        ] {
            assert!(with("gen", bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(
            decode_all(&encode_all(std::slice::from_ref(&m))).unwrap(),
            vec![m.clone()]
        );
        let mut v = serde_json::to_value(vec![&m]).unwrap();
        v[0]["attempt"] = 99.into();
        assert!(matches!(
            decode_all(v.to_string().as_bytes()),
            Err(DecodeError::Malformed(e)) if e.contains("out of range")
        ));
    }

    #[test]
    fn a_message_naming_its_own_url_tenant_or_body_is_refused() {
        // What a worker of an earlier version published, or a forger:
        // where to send, for whom, and what. Only the record says that.
        let id = new_job_id();
        let base = serde_json::json!({
            "kind": "job", "subject": id, "chain": uuid::Uuid::new_v4(), "attempt": 2,
        });
        assert!(EventMessage::decode(base.to_string().as_bytes()).is_ok());
        for (field, value) in [
            ("url", serde_json::json!("https://evil.example/steal")),
            ("tenant", serde_json::json!("acme")),
            (
                "event",
                serde_json::json!({"id": "msg_x", "type": "job.succeeded", "body": "{}"}),
            ),
        ] {
            let mut old = base.clone();
            old[field] = value;
            assert!(
                matches!(
                    EventMessage::decode(old.to_string().as_bytes()),
                    Err(DecodeError::Malformed(e)) if e.contains("only the record may say")
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn several_events_travel_in_one_message() {
        let a = EventMessage::new(SubjectKind::Job, new_job_id());
        let b = EventMessage::new(SubjectKind::Batch, new_job_id());
        let both = vec![a.clone(), b];
        assert_eq!(decode_all(&encode_all(&both)).unwrap(), both);
        assert_eq!(decode_all(&a.encode()).unwrap(), vec![a.clone()]);
        assert!(matches!(decode_all(b"[]"), Err(DecodeError::Count(0))));
        assert!(matches!(
            decode_all(b"[{}]"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(decode_all(b"  [1]").is_err());
        let many = vec![a; MAX_EVENTS_PER_MESSAGE + 1];
        assert!(matches!(
            decode_all(&encode_all(&many)),
            Err(DecodeError::Count(_))
        ));
    }

    #[test]
    fn waits_follow_the_schedule_and_honour_retry_after() {
        let s = [0, 5_000, 300_000, 1_800_000];
        for _ in 0..50 {
            let (tier, wait) = next_wait(&s, 1, None);
            assert_eq!(tier, 1);
            assert!((4_000..=5_000).contains(&wait), "{wait}");
            // A receiver asking for 60 s gets the first tier that long.
            let (tier, wait) = next_wait(&s, 1, Some(60_000));
            assert_eq!(tier, 2);
            assert!((240_000..=300_000).contains(&wait), "{wait}");
            // Asking for 299 s: jitter never goes below it.
            let (_, wait) = next_wait(&s, 1, Some(299_000));
            assert!(wait >= 299_000, "{wait}");
            // Beyond the longest tier: the longest.
            let (tier, wait) = next_wait(&s, 1, Some(10_000_000));
            assert_eq!(tier, 3);
            assert!(wait <= 1_800_000);
            // Past the end: the last tier repeats.
            assert_eq!(next_wait(&s, 9, None).0, 3);
        }
        assert_eq!(next_wait(&[0, 0], 1, None), (1, 0));
    }
}

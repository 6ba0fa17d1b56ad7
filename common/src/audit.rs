//! The audit trail: one record for every submission, completion,
//! cancellation, erasure and dead-letter replay, appended to the RabbitMQ
//! stream `<ns>.audit` (`x-queue-type: stream`), which keeps them by age
//! and size ([`AuditConfig`]) whatever happens to the data in Redis.
//!
//! A record says who (tenant, key id), what (job or batch id, model,
//! version, the SHA-256 of the model file), when, and the SHA-256 of the
//! canonical inputs and of the outputs. It never carries a feature value
//! or an output: a digest proves what was scored without keeping it.
//!
//! Records are published with publisher confirms by whoever saw the event
//! happen, before it is acknowledged: the producer before it answers the
//! client, a worker before it acknowledges the delivery whose result it
//! stored. One message carries the records of one publish as JSON lines.
//! Delivery is at least once: after a crash between the publish and the
//! acknowledgement a record may appear twice, with the same `event`,
//! `job`/`batch` and `status` but its own `id`.

use crate::confirms::Lease;
use crate::job::{format_ms, now_ms};
use crate::sha256::hex as sha256_hex;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A job was accepted (`202`).
    #[serde(rename = "job.submitted")]
    JobSubmitted,
    /// A job reached a terminal state by running (or failing, or
    /// expiring): `status` says which.
    #[serde(rename = "job.completed")]
    JobCompleted,
    /// A job was cancelled by its client.
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// A job's data was erased.
    #[serde(rename = "job.erased")]
    JobErased,
    /// A bulk batch was accepted, every chunk on the broker.
    #[serde(rename = "batch.submitted")]
    BatchSubmitted,
    /// Every row of a batch has its result.
    #[serde(rename = "batch.completed")]
    BatchCompleted,
    /// A batch was cancelled by its client.
    #[serde(rename = "batch.cancelled")]
    BatchCancelled,
    /// A batch's data was erased.
    #[serde(rename = "batch.erased")]
    BatchErased,
    /// A dead-lettered job or chunk was put back on its queue by an
    /// operator.
    #[serde(rename = "dead_letter.replayed")]
    DeadLetterReplayed,
}

impl Event {
    /// Its name, as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::JobSubmitted => "job.submitted",
            Event::JobCompleted => "job.completed",
            Event::JobCancelled => "job.cancelled",
            Event::JobErased => "job.erased",
            Event::BatchSubmitted => "batch.submitted",
            Event::BatchCompleted => "batch.completed",
            Event::BatchCancelled => "batch.cancelled",
            Event::BatchErased => "batch.erased",
            Event::DeadLetterReplayed => "dead_letter.replayed",
        }
    }
}

/// One audit record. Fields that do not apply are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// This record's own id (a UUID v7, so ids sort by time).
    pub id: String,
    /// What happened.
    pub event: Event,
    /// When, RFC 3339 in UTC with milliseconds.
    pub at: String,
    /// The tenant the job or batch belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The id of the API key that acted (see `infq admin keys list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The job's id, for a job's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The batch's id, for a batch's event (and a chunk's replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The chunk of the batch, for a chunk's replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// The model's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The SHA-256 of the TorchScript file that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// The SHA-256 of the canonical inputs (see [`inputs_sha256`]; for a
    /// batch, of the file as uploaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_sha256: Option<String>,
    /// The SHA-256 of the outputs (a job's output JSON as stored; a
    /// batch's results: its stored chunks' rows, as the store holds them,
    /// one after the other in chunk order, through [`crate::sha256::Hasher`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_sha256: Option<String>,
    /// The terminal state, for completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Rows of a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl Record {
    /// A record of `event` about job `job`, now.
    pub fn job(event: Event, job: &str) -> Self {
        let mut r = Self::now(event);
        r.job = Some(job.to_string());
        r
    }

    /// A record of `event` about batch `batch`, now.
    pub fn batch(event: Event, batch: &str) -> Self {
        let mut r = Self::now(event);
        r.batch = Some(batch.to_string());
        r
    }

    fn now(event: Event) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            event,
            at: format_ms(now_ms()),
            tenant: None,
            key_id: None,
            job: None,
            batch: None,
            chunk: None,
            model: None,
            version: None,
            model_sha256: None,
            inputs_sha256: None,
            outputs_sha256: None,
            status: None,
            rows: None,
        }
    }

    /// With the tenant and key that acted, where known.
    pub fn by(mut self, tenant: Option<&str>, key_id: Option<&str>) -> Self {
        self.tenant = tenant.map(str::to_string);
        self.key_id = key_id.map(str::to_string);
        self
    }

    /// With the model and version.
    pub fn of_model(mut self, model: &str, version: &str) -> Self {
        self.model = Some(model.to_string());
        self.version = Some(version.to_string());
        self
    }
}

/// The SHA-256 of a job's canonical inputs: its feature values as 32-bit
/// floats in schema order, little-endian, one after the other (what the
/// model is given, whichever way the request spelled them).
pub fn inputs_sha256(inputs: &[f32]) -> String {
    sha256_hex(&crate::f32le::bytes(inputs))
}

/// The audit stream's retention, in the `[amqp.audit]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether records are written. Off, nothing is audited.
    pub enabled: bool,
    /// Longest a record is kept (`x-max-age`): a number and a unit, `Y`,
    /// `M`, `D`, `h`, `m` or `s`, e.g. `"400D"`.
    pub max_age: String,
    /// Most bytes the stream keeps (`x-max-length-bytes`); the oldest
    /// segments go first.
    pub max_bytes: u64,
    /// Size of one segment file (`x-stream-max-segment-size-bytes`):
    /// retention removes whole segments.
    pub segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: "400D".into(),
            max_bytes: 50_000_000_000,
            segment_bytes: 100_000_000,
        }
    }
}

impl AuditConfig {
    /// Problems with the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !valid_age(&self.max_age) {
            out.push(format!(
                "amqp.audit.max_age: {:?} is not a number followed by Y, M, D, h, m or s (e.g. \"400D\")",
                self.max_age
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > i64::MAX as u64 {
            out.push("amqp.audit.max_bytes: must be positive".into());
        }
        if !(1_000..=3_000_000_000).contains(&self.segment_bytes) {
            out.push("amqp.audit.segment_bytes: must be 1000 to 3000000000".into());
        }
        out
    }

    /// The stream's declaration arguments.
    pub fn stream_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        args.insert("x-queue-type".into(), s("stream"));
        args.insert("x-max-age".into(), s(&self.max_age));
        args.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(self.max_bytes.min(i64::MAX as u64) as i64),
        );
        args.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(self.segment_bytes as i64),
        );
        args
    }
}

/// Whether `age` is what RabbitMQ takes as `x-max-age`.
fn valid_age(age: &str) -> bool {
    let Some(unit) = age.chars().last() else {
        return false;
    };
    let digits = &age[..age.len() - unit.len_utf8()];
    "YMDhms".contains(unit)
        && !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

/// The content type of an audit message: JSON lines.
pub const CONTENT_TYPE_JSONL: &str = "application/x-ndjson";

/// The AMQP `type` of an audit message.
pub const MESSAGE_TYPE: &str = "infq.audit";

/// The records as one message body: JSON lines.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 256);
    for r in records {
        serde_json::to_writer(&mut out, r).expect("a record serialises");
        out.push(b'\n');
    }
    out
}

/// Why a message's body is not audit records.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DecodeError {
    /// Its line, from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The records of one message body; a line that is not a record is an
/// error naming it (whoever can publish to the stream is not trusted to
/// write records that parse).
pub fn decode(body: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let mut out = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r: Record = serde_json::from_slice(line).map_err(|e| DecodeError {
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Publishes `records` to `stream` as one persistent, `mandatory` message
/// on `lease`, and waits for the broker's confirm. Nothing to publish is a
/// success.
pub async fn publish(
    lease: &Lease,
    stream: &str,
    records: &[Record],
    timeout: Duration,
) -> Result<(), crate::amqp::PublishError> {
    if records.is_empty() {
        return Ok(());
    }
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE_JSONL.into())
        .with_type(MESSAGE_TYPE.into())
        .with_timestamp(now_ms() / 1000);
    let started = std::time::Instant::now();
    let r = lease
        .publish("", stream, &encode(records), props, timeout)
        .await;
    metrics::histogram!(crate::metrics::AUDIT_PUBLISH_SECONDS)
        .record(started.elapsed().as_secs_f64());
    if r.is_err() {
        metrics::counter!(crate::metrics::AUDIT_PUBLISH_FAILURES).increment(1);
    }
    r
}

/// Appends `records` to `stream` on the lease `lease` resolves to (see
/// [`publish`]), all within `timeout`. A failure, to lease or to
/// publish, is logged and counted (`infq_audit_publish_failures_total`),
/// not returned: it comes after what the records record was done, and must
/// not undo it or turn it into an error a client would retry.
pub async fn append(
    lease: impl std::future::Future<Output = Result<Lease, crate::amqp::PublishError>>,
    stream: &str,
    records: &[Record],
    timeout: Duration,
) {
    let Some(first) = records.first() else {
        return;
    };
    let started = std::time::Instant::now();
    let r = match lease.await {
        Ok(lease) => {
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            publish(&lease, stream, records, left).await
        }
        Err(e) => {
            metrics::counter!(crate::metrics::AUDIT_PUBLISH_FAILURES).increment(1);
            Err(e)
        }
    };
    if let Err(e) = r {
        tracing::error!(
            error = %e,
            event = first.event.as_str(),
            job = first.job.as_deref().unwrap_or(""),
            batch = first.batch.as_deref().unwrap_or(""),
            records = records.len(),
            "audit records could not be written to the audit stream"
        );
    }
}

/// Group commit of audit records: concurrent callers' records go to the
/// stream together, as one message and one confirm, appended by one task
/// ([`append`]) while the callers wait for it. Under load the records of
/// many requests share a message, so the stream costs the broker one
/// write per group rather than one per request; alone, a caller's records
/// go at once. Order is kept: records are appended in the order handed
/// over. A caller is answered once its group is appended (or failed,
/// logged and counted as [`append`] does).
pub struct Groups {
    stream: String,
    timeout: Duration,
    tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<Grouped>>,
}

/// One caller's records, the confirm channels to append them on, and
/// where to say they were appended.
struct Grouped {
    records: Vec<Record>,
    pool: std::sync::Arc<crate::confirms::ConfirmChannels>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Most records in one message.
const MAX_GROUP: usize = 512;

impl Groups {
    /// Groups for `stream`, each appended within `timeout`.
    pub fn new(stream: String, timeout: Duration) -> Self {
        Self {
            stream,
            timeout,
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Appends `records` with whatever else is waiting, on `pool`, and
    /// returns once they are appended (or failed).
    pub async fn append(
        &self,
        pool: std::sync::Arc<crate::confirms::ConfirmChannels>,
        records: Vec<Record>,
    ) {
        if records.is_empty() {
            return;
        }
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
            tokio::spawn(appender(rx, self.stream.clone(), self.timeout));
            tx
        });
        let (done, appended) = tokio::sync::oneshot::channel();
        let item = Grouped {
            records,
            pool,
            done,
        };
        if let Err(e) = tx.send(item).await {
            let records = e.0.records;
            let gone = async {
                Err(crate::amqp::PublishError::Unavailable(
                    "the audit appender stopped".into(),
                ))
            };
            append(gone, &self.stream, &records, self.timeout).await;
            return;
        }
        let _ = appended.await;
    }
}

/// The task behind [`Groups`]: takes what is waiting (at most
/// [`MAX_GROUP`] records), appends it as one message on the newest pool
/// handed over, answers its callers, and again.
async fn appender(mut rx: tokio::sync::mpsc::Receiver<Grouped>, stream: String, timeout: Duration) {
    while let Some(first) = rx.recv().await {
        let mut pool = first.pool;
        let mut records = first.records;
        let mut done = vec![first.done];
        while records.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(g) => {
                    records.extend(g.records);
                    pool = g.pool;
                    done.push(g.done);
                }
                Err(_) => break,
            }
        }
        append(pool.lease(timeout), &stream, &records, timeout).await;
        for d in done {
            let _ = d.send(());
        }
    }
}

/// How far the broker's clock may be behind the clocks that stamp the
/// records, for a start given as a time: a broker 40 s behind its host
/// (an Erlang VM keeps the offset it started with when the system clock
/// is stepped) began past every record asked for, and the export was
/// empty.
pub const CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;

/// Where reading the stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The oldest record kept.
    First,
    /// Records appended from now on.
    Now,
    /// The stream's offset `n` (as `infq audit` prints it).
    Offset(u64),
    /// Records of this time (epoch ms) or later.
    At(u64),
}

impl Since {
    /// Parses `first`, `now`, `offset:N`, an RFC 3339 time
    /// (`2026-12-01T00:00:00Z`) or a span back from `now_ms` (`90s`,
    /// `15m`, `2h`, `7d`).
    pub fn parse(s: &str, now_ms: u64) -> Result<Self, String> {
        let s = s.trim();
        let rule = "expected first, now, offset:N, an RFC 3339 time (2026-12-01T00:00:00Z) or a span back from now (90s, 15m, 2h, 7d)";
        match s {
            "first" => return Ok(Since::First),
            "now" => return Ok(Since::Now),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("offset:") {
            return n
                .parse()
                .map(Since::Offset)
                .map_err(|_| format!("{s:?}: the offset is not a whole number; {rule}"));
        }
        if let Ok(t) =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        {
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            return u64::try_from(ms)
                .map(Since::At)
                .map_err(|_| format!("{s:?}: before 1970"));
        }
        let unit_ms: u64 = match s.chars().last() {
            Some('s') => 1_000,
            Some('m') => 60_000,
            Some('h') => 3_600_000,
            Some('d') => 86_400_000,
            _ => return Err(format!("{s:?}: {rule}")),
        };
        let n: u64 = s[..s.len() - 1]
            .parse()
            .map_err(|_| format!("{s:?}: {rule}"))?;
        let back = n
            .checked_mul(unit_ms)
            .filter(|b| *b <= now_ms)
            .ok_or_else(|| format!("{s:?}: reaches back before 1970"))?;
        Ok(Since::At(now_ms - back))
    }

    /// The consumer's `x-stream-offset` argument.
    fn offset_arg(self) -> AMQPValue {
        match self {
            Since::First => AMQPValue::LongString("first".into()),
            Since::Now => AMQPValue::LongString("next".into()),
            Since::Offset(n) => AMQPValue::LongLongInt(n.min(i64::MAX as u64) as i64),
            // The broker starts at the chunk holding that second by its
            // own clock, which may differ from the clocks that stamped the
            // records (`at`): it starts [`CLOCK_SKEW_MS`] earlier, and the
            // reader drops the records before the time asked for.
            Since::At(ms) => AMQPValue::Timestamp(ms.saturating_sub(CLOCK_SKEW_MS) / 1000),
        }
    }
}

/// One message read from the stream: its offset, and its records (or why
/// it holds none: anyone who can publish to the stream can put anything
/// there).
#[derive(Debug)]
pub struct Entry {
    /// Its offset in the stream.
    pub offset: u64,
    /// Its records, those before the start time left out.
    pub records: Result<Vec<Record>, DecodeError>,
}

/// Reads the audit stream from a starting point, in order.
pub struct Reader {
    consumer: lapin::Consumer,
    since: Since,
}

/// Messages the broker sends ahead of the reader's acknowledgements.
const READ_PREFETCH: u16 = 500;

impl Reader {
    /// Starts reading `stream` on a channel of its own of `conn`.
    pub async fn open(conn: &lapin::Connection, stream: &str, since: Since) -> lapin::Result<Self> {
        use lapin::options::{BasicConsumeOptions, BasicQosOptions};
        let ch = conn.create_channel().await?;
        ch.basic_qos(READ_PREFETCH, BasicQosOptions::default())
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), since.offset_arg());
        let consumer = ch
            .basic_consume(
                stream.into(),
                "infq-audit-reader".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        Ok(Self { consumer, since })
    }

    /// The next message, or `None` once none came for `idle` (with
    /// `None`, it waits for ever) or the stream ended (the channel
    /// closed).
    pub async fn next(&mut self, idle: Option<Duration>) -> lapin::Result<Option<Entry>> {
        use futures_util::StreamExt;
        let next = self.consumer.next();
        let delivery = match idle {
            Some(d) => match tokio::time::timeout(d, next).await {
                Ok(x) => x,
                Err(_) => return Ok(None),
            },
            None => next.await,
        };
        let Some(delivery) = delivery else {
            return Ok(None);
        };
        let delivery = delivery?;
        let offset = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
            .and_then(|v| match v {
                AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
                AMQPValue::LongInt(n) => u64::try_from(n).ok(),
                _ => None,
            })
            .unwrap_or(0);
        let records = decode(&delivery.data).map(|mut rs| {
            if let Since::At(from) = self.since {
                rs.retain(|r| at_ms(&r.at).is_none_or(|at| at >= from));
            }
            rs
        });
        delivery
            .acker
            .ack(lapin::options::BasicAckOptions::default())
            .await?;
        Ok(Some(Entry { offset, records }))
    }
}

/// A record's `at` as epoch ms.
fn at_ms(at: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_json_lines_and_leave_out_what_does_not_apply() {
        let a = Record::job(Event::JobSubmitted, "j1")
            .by(Some("acme"), Some("k1"))
            .of_model("credit-default", "1");
        let mut b = Record::batch(Event::BatchCompleted, "b1");
        b.status = Some("completed".into());
        b.rows = Some(3);
        let body = encode(&[a.clone(), b.clone()]);
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains(r#""event":"job.submitted""#));
        assert!(!text.lines().next().unwrap().contains("batch"));
        assert_eq!(decode(&body).unwrap(), vec![a, b]);
    }

    #[test]
    fn a_body_that_is_not_records_is_refused_naming_the_line() {
        let good = encode(&[Record::job(Event::JobCancelled, "j")]);
        for (bad, line) in [
            (b"not json".to_vec(), 1),
            ([good.clone(), b"{\"id\":1}\n".to_vec()].concat(), 2),
            (
                [
                    good.clone(),
                    b"{\"id\":\"x\",\"event\":\"job.lost\",\"at\":\"t\"}".to_vec(),
                ]
                .concat(),
                2,
            ),
            (
                br#"{"id":"x","event":"job.submitted","at":"t","inputs":[1,2]}"#.to_vec(),
                1,
            ),
        ] {
            let e = decode(&bad).unwrap_err();
            assert_eq!(e.line, line, "{e}");
        }
        assert!(decode(b"\n\n").unwrap().is_empty());
    }

    #[test]
    fn canonical_inputs_are_the_model_inputs_whatever_their_spelling() {
        assert_eq!(inputs_sha256(&[1.0, 2.5]), inputs_sha256(&[1.0f32, 2.50]));
        assert_ne!(inputs_sha256(&[1.0, 2.5]), inputs_sha256(&[2.5, 1.0]));
        // Of the bytes 00 00 80 3f: 1.0f32 little-endian.
        assert_eq!(inputs_sha256(&[1.0]), sha256_hex(&[0, 0, 0x80, 0x3f]));
    }

    #[test]
    fn a_start_time_asks_the_broker_for_earlier_chunks() {
        let at = 1_700_000_000_123;
        assert_eq!(
            Since::At(at).offset_arg(),
            AMQPValue::Timestamp((at - CLOCK_SKEW_MS) / 1000)
        );
        assert_eq!(Since::At(5).offset_arg(), AMQPValue::Timestamp(0));
    }

    #[test]
    fn start_points_parse_and_bad_ones_say_what_is_expected() {
        let now = 1_700_000_000_000;
        assert_eq!(Since::parse("first", now), Ok(Since::First));
        assert_eq!(Since::parse("now", now), Ok(Since::Now));
        assert_eq!(Since::parse("offset:42", now), Ok(Since::Offset(42)));
        assert_eq!(Since::parse("15m", now), Ok(Since::At(now - 900_000)));
        assert_eq!(Since::parse("2d", now), Ok(Since::At(now - 172_800_000)));
        assert_eq!(
            Since::parse("2023-11-14T22:13:20.123Z", now),
            Ok(Since::At(1_700_000_000_123))
        );
        for bad in [
            "",
            "yesterday",
            "offset:",
            "offset:-1",
            "offset:x",
            "15",
            "m",
            "-5m",
            "1.5h",
            "99999999999999999d",
            "2023-13-40T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let e = Since::parse(bad, now).unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad:?}: {e}");
        }
        assert_eq!(at_ms("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(at_ms("t"), None);
    }

    #[test]
    fn retention_settings_are_checked() {
        assert!(AuditConfig::default().problems().is_empty());
        for age in ["", "D", "0D", "12", "3W", "-1D", "1.5D", "99999999999D"] {
            let c = AuditConfig {
                max_age: age.into(),
                ..Default::default()
            };
            assert_eq!(c.problems().len(), 1, "{age:?}");
        }
        let c = AuditConfig {
            max_bytes: 0,
            segment_bytes: 10,
            ..Default::default()
        };
        assert_eq!(c.problems().len(), 2);
        let args = AuditConfig::default().stream_args();
        assert_eq!(
            args.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("stream".into()))
        );
    }
}

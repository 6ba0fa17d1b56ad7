//! The message a job travels in through RabbitMQ.
//!
//! JSON, so dead letters can be read by people and tools. A job's inputs
//! are numbers in their shortest round-trip form; a chunk's, its many
//! values as base64 of little-endian f32s (see `wire`). Either way an input
//! arrives at the model bit-for-bit as the producer parsed it.
//!
//! A message only names work: which job (or which chunk of which batch),
//! for which model, with which inputs. Whoever can publish to the broker
//! can write one, so nothing in it is trusted for what the stored record
//! says: tenant, webhook URL and retention come from Redis. Every field is
//! range-checked at decode, a job's message must match the digest its
//! record keeps ([`JobMessage::digest`]), and a chunk's place must match its
//! batch; a message that fails any check is dead-lettered with its reason.

use crate::job::{JobId, Priority};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};

mod wire;

pub use wire::ChunkRef;

/// Content type set on every job message.
pub const CONTENT_TYPE: &str = "application/json";
/// Message `type` property of a job message, versioned for rolling upgrades.
pub const MESSAGE_TYPE: &str = "infq.job.v1";
/// Largest message a worker will try to decode.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// Latest instant (epoch ms, the year 3000) a message may name: later ones
/// are not times but hostile numbers.
pub const MAX_EPOCH_MS: u64 = 32_503_680_000_000;
/// Most retries a message may say it went through.
pub const MAX_RETRIES: u32 = 1_000;
/// Longest retention (ms) a message may carry: ten years.
pub const MAX_RETENTION_MS: u64 = 10 * 366 * 86_400_000;
/// Longest model name, version, tenant or URL a message may carry.
pub const MAX_NAME_BYTES: usize = 2048;
/// Largest first-row number of a chunk (2^53: exact in every JSON reader).
pub const MAX_ROW: u64 = 1 << 53;

/// A unit of work on a job queue.
///
/// On the wire it is the JSON object it has always been (`id`, and a
/// `chunk` object on bulk chunks); in memory, what the work is (a job, or a
/// chunk of a batch) is [`Work`], so no code reads an id without knowing
/// which kind it names.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMessage {
    /// What the work is: a job, or which rows of which batch `inputs` holds.
    pub work: Work,
    /// Model name.
    pub model: String,
    /// Model version the job is pinned to.
    pub version: String,
    /// Lane the job travels in.
    pub priority: Priority,
    /// One row of features in schema order (several rows on a chunk).
    pub inputs: Vec<f32>,
    /// When the producer accepted the job (epoch ms), for end-to-end timing.
    pub created_at_ms: u64,
    /// After this instant (epoch ms) the job expires instead of running.
    pub deadline_at_ms: Option<u64>,
    /// Times a worker sent it back through a retry queue after a transient
    /// failure.
    pub retries: u32,
    /// Not used: the stored record names the webhook. Still read (and
    /// range-checked), so messages of earlier releases decode.
    pub webhook_url: Option<String>,
    /// On a bulk chunk, the tenant whose fair share of the lane it travels
    /// in ([`Self::share`]): routing only, the stored record names the
    /// tenant. Ignored on a single job (messages of earlier releases carry
    /// it there too).
    pub tenant: Option<String>,
    /// Not used: the stored record keeps the retention. Still read (and
    /// range-checked), so messages of earlier releases decode.
    pub retention_ms: Option<u64>,
    /// A chunk's passthrough values (the client's own columns, such as a
    /// loan id), row by row: every row's values in the batch's column
    /// order; empty when the batch names none. Part of the digest, so only
    /// the producer's values are ever stored.
    pub passthrough: Vec<String>,
}

/// What a job message asks for: one job, or one chunk of a bulk batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A single job.
    Job {
        /// The job.
        id: JobId,
    },
    /// Some consecutive rows of a batch.
    Chunk {
        /// The batch.
        batch: JobId,
        /// Chunk number, from 0, in input order.
        index: u32,
        /// Number (from 1) of the chunk's first data row in the uploaded
        /// file.
        first_row: u64,
    },
}

impl Work {
    /// The id of the stored record the work belongs to: the job's, or the
    /// chunk's batch's.
    pub fn record(&self) -> JobId {
        match *self {
            Work::Job { id } => id,
            Work::Chunk { batch, .. } => batch,
        }
    }

    /// What the message's AMQP `message_id` names.
    pub fn message_id(&self) -> MessageId {
        match *self {
            Work::Job { id } => MessageId::Job(id),
            Work::Chunk { batch, index, .. } => MessageId::Chunk { batch, index },
        }
    }

    /// The chunk's place in its batch, if the work is a chunk.
    pub fn chunk(&self) -> Option<ChunkRef> {
        match *self {
            Work::Job { .. } => None,
            Work::Chunk {
                index, first_row, ..
            } => Some(ChunkRef { index, first_row }),
        }
    }

    /// Whether the work is a chunk of a batch.
    pub fn is_chunk(&self) -> bool {
        matches!(self, Work::Chunk { .. })
    }
}

/// Routing key of a model's lane: what a job message is published with and
/// what the lane's queue is bound by.
pub fn routing_key(model: &str, lane: Priority) -> String {
    format!("{model}.{}", lane.as_str())
}

/// Routing key of a tenant's share of a model's bulk lane (see
/// [`crate::shares`]): the lane's, then the tenant.
pub fn share_routing_key(share: &crate::shares::Share) -> String {
    format!(
        "{}.{}",
        routing_key(&share.model, Priority::Bulk),
        share.tenant
    )
}

/// What an AMQP `message_id` names: a job, or one chunk of a batch (so a
/// chunk is never taken for a job of the batch's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageId {
    /// A single job.
    Job(JobId),
    /// Chunk `index` of batch `batch`.
    Chunk {
        /// The batch.
        batch: JobId,
        /// The chunk.
        index: u32,
    },
}

impl MessageId {
    /// Parses `<job id>` or `<batch id>:<chunk>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':') {
            None => JobId::parse_str(s).ok().map(MessageId::Job),
            Some((batch, index)) => Some(MessageId::Chunk {
                batch: JobId::parse_str(batch).ok()?,
                index: index.parse().ok().filter(|_| !index.starts_with('+'))?,
            }),
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageId::Job(id) => write!(f, "{id}"),
            MessageId::Chunk { batch, index } => write!(f, "{batch}:{index}"),
        }
    }
}

/// Why a message could not be decoded. Such a message is dead-lettered:
/// redelivering it would fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not a job message.
    #[error("malformed job message: {0}")]
    Malformed(String),
    /// Decoded, but a value cannot be used.
    #[error("invalid job message: {0}")]
    Invalid(&'static str),
}

impl JobMessage {
    /// What the message names; its AMQP `message_id` is this, written out.
    pub fn message_id(&self) -> MessageId {
        self.work.message_id()
    }

    /// The id of the stored record the message's work belongs to: the
    /// job's, or the chunk's batch's.
    pub fn record(&self) -> JobId {
        self.work.record()
    }

    /// The routing key the message is published with: its share's (see
    /// [`share_routing_key`]) if it travels in one, else its lane's (see
    /// [`routing_key`]).
    pub fn routing_key(&self) -> String {
        match self.share() {
            Some(s) => share_routing_key(&s),
            None => routing_key(&self.model, self.priority),
        }
    }

    /// The tenant's share of its model's bulk lane a chunk travels in (see
    /// [`crate::shares`]): a bulk chunk's with a `tenant`, none otherwise.
    pub fn share(&self) -> Option<crate::shares::Share> {
        if self.priority != Priority::Bulk || !self.work.is_chunk() {
            return None;
        }
        crate::shares::Share::new(&self.model, self.tenant.as_deref()?)
    }

    /// The AMQP properties every publisher of a job message sets: durable,
    /// typed, and named by [`Self::message_id`] (a chunk is never taken for
    /// a job of its batch's id), with the client's W3C `traceparent` in the
    /// headers when there is one.
    pub fn properties(&self, traceparent: Option<&str>) -> BasicProperties {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_type(MESSAGE_TYPE.into())
            .with_message_id(self.message_id().to_string().into())
            .with_timestamp(self.created_at_ms / 1000);
        match traceparent {
            None => props,
            Some(tp) => {
                let mut headers = FieldTable::default();
                headers.insert(
                    crate::trace::TRACEPARENT.into(),
                    AMQPValue::LongString(tp.into()),
                );
                props.with_headers(headers)
            }
        }
    }

    /// The digest a job's record (or a chunk's batch) keeps of the work its
    /// message names: model, version, lane, deadline, the chunk's place and
    /// every input, bit for bit. A message for the job's id (or the
    /// chunk's place) whose digest differs was not published by the
    /// producer that accepted the job, and does not run.
    pub fn digest(&self) -> String {
        // Hashed in pieces: a chunk's inputs are not copied whole first.
        let mut h = crate::sha256::Hasher::default();
        for part in [self.model.as_bytes(), self.version.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&[self.priority as u8]);
        h.update(&self.deadline_at_ms.unwrap_or(0).to_le_bytes());
        if let Some(c) = self.work.chunk() {
            h.update(&c.index.to_le_bytes());
            h.update(&c.first_row.to_le_bytes());
        }
        let mut block = [0u8; 4096];
        for values in self.inputs.chunks(block.len() / 4) {
            crate::f32le::write(values, &mut block);
            h.update(&block[..values.len() * 4]);
        }
        // Messages without passthrough values keep the digest they had.
        if !self.passthrough.is_empty() {
            h.update(b"passthrough");
            for p in &self.passthrough {
                h.update(&(p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
        }
        h.finish()
    }

    /// Serialises the message body, into a buffer sized for it first. A
    /// large body far shorter than that (a chunk of short values) is
    /// trimmed, since a chunk awaiting its confirm holds it.
    pub fn encode(&self) -> Vec<u8> {
        // About its size (a value takes 2 to 16 bytes, most near 10), so
        // the buffer seldom grows.
        let texts = [&self.model, &self.version]
            .into_iter()
            .chain(self.webhook_url.as_ref())
            .chain(self.tenant.as_ref())
            .chain(&self.passthrough)
            .map(|t| t.len() + 8)
            .sum::<usize>();
        let mut body = Vec::with_capacity(256 + texts + self.inputs.len() * 10);
        serde_json::to_writer(&mut body, self).expect("a job message always serialises");
        if body.capacity() - body.len() > 16 * 1024 {
            body.shrink_to_fit();
        }
        body
    }

    /// Parses and checks a message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let msg: JobMessage =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if msg.inputs.is_empty() {
            return Err(DecodeError::Invalid("no inputs"));
        }
        if msg.inputs.iter().any(|v| !v.is_finite()) {
            return Err(DecodeError::Invalid("non-finite input"));
        }
        if msg.model.is_empty() || msg.version.is_empty() {
            return Err(DecodeError::Invalid("no model"));
        }
        msg.check_ranges()?;
        Ok(msg)
    }

    /// Every number and string within what a producer can have written.
    fn check_ranges(&self) -> Result<(), DecodeError> {
        let long = |s: &str| s.len() > MAX_NAME_BYTES;
        if long(&self.model) || long(&self.version) {
            return Err(DecodeError::Invalid("model or version too long"));
        }
        if self.created_at_ms > MAX_EPOCH_MS {
            return Err(DecodeError::Invalid("created_at_ms out of range"));
        }
        if self.deadline_at_ms.is_some_and(|d| d > MAX_EPOCH_MS) {
            return Err(DecodeError::Invalid("deadline_at_ms out of range"));
        }
        if self.retries > MAX_RETRIES {
            return Err(DecodeError::Invalid("retries out of range"));
        }
        if self.retention_ms.is_some_and(|r| r > MAX_RETENTION_MS) {
            return Err(DecodeError::Invalid("retention_ms out of range"));
        }
        if self.tenant.as_deref().is_some_and(long) || self.webhook_url.as_deref().is_some_and(long)
        {
            return Err(DecodeError::Invalid("tenant or webhook_url too long"));
        }
        if let Some(c) = self.work.chunk() {
            if c.first_row == 0 || c.first_row > MAX_ROW {
                return Err(DecodeError::Invalid("chunk first_row out of range"));
            }
            if self.deadline_at_ms.is_some() {
                return Err(DecodeError::Invalid("a chunk has no deadline"));
            }
        } else if !self.passthrough.is_empty() {
            return Err(DecodeError::Invalid(
                "only a chunk carries passthrough values",
            ));
        }
        Ok(())
    }
}

impl TryFrom<wire::Wire> for JobMessage {
    type Error = &'static str;
    fn try_from(mut w: wire::Wire) -> Result<Self, Self::Error> {
        let inputs = w.take_inputs()?;
        let work = match w.chunk {
            None => Work::Job { id: w.id },
            Some(c) => Work::Chunk {
                batch: w.id,
                index: c.index,
                first_row: c.first_row,
            },
        };
        Ok(JobMessage {
            work,
            model: w.model,
            version: w.version,
            priority: w.priority,
            inputs,
            created_at_ms: w.created_at_ms,
            deadline_at_ms: w.deadline_at_ms,
            retries: w.retries,
            webhook_url: w.webhook_url,
            tenant: w.tenant,
            retention_ms: w.retention_ms,
            passthrough: w.passthrough,
        })
    }
}

impl Serialize for JobMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::WireRef {
            id: self.work.record(),
            model: &self.model,
            version: &self.version,
            priority: self.priority,
            // A chunk's many values in binary; a job's few as numbers.
            inputs: (!self.work.is_chunk()).then_some(&self.inputs[..]),
            inputs_f32le: self.work.is_chunk().then_some(&self.inputs[..]),
            created_at_ms: self.created_at_ms,
            deadline_at_ms: self.deadline_at_ms,
            chunk: self.work.chunk(),
            retries: self.retries,
            webhook_url: self.webhook_url.as_deref(),
            tenant: self.tenant.as_deref(),
            retention_ms: self.retention_ms,
            passthrough: &self.passthrough,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for JobMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = wire::Wire::deserialize(d)?;
        JobMessage::try_from(w).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobMessage {
        JobMessage {
            work: Work::Job {
                id: crate::job::new_job_id(),
            },
            model: "credit-default".into(),
            version: "1".into(),
            priority: Priority::Interactive,
            inputs: vec![1.0, 1_234.567_9, 0.1],
            created_at_ms: 1,
            deadline_at_ms: None,
            retries: 0,
            webhook_url: None,
            tenant: Some("acme".into()),
            retention_ms: Some(3_600_000),
            passthrough: Vec::new(),
        }
    }

    #[test]
    fn round_trips_floats_exactly() {
        let mut m = sample();
        m.inputs = vec![f32::MIN_POSITIVE, f32::MAX, -0.0, 0.1, 1.0e-45, 729.526_5];
        let back = JobMessage::decode(&m.encode()).unwrap();
        for (a, b) in m.inputs.iter().zip(&back.inputs) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(back, m);
    }

    #[test]
    fn a_chunk_with_a_tenant_routes_to_its_share_and_nothing_else_does() {
        let mut chunk = sample();
        chunk.priority = Priority::Bulk;
        chunk.work = Work::Chunk {
            batch: crate::job::new_job_id(),
            index: 0,
            first_row: 1,
        };
        assert_eq!(chunk.routing_key(), "credit-default.bulk.acme");
        assert_eq!(
            chunk.share(),
            crate::shares::Share::new("credit-default", "acme")
        );
        // Without a tenant, or with one that cannot name a share: the
        // lane's own queue.
        for t in [None, Some("ac.me"), Some(""), Some("a b")] {
            chunk.tenant = t.map(String::from);
            assert_eq!(chunk.routing_key(), "credit-default.bulk", "{t:?}");
        }
        // A single job is never routed by tenant.
        let job = sample();
        assert!(job.tenant.is_some());
        assert_eq!(job.routing_key(), "credit-default.interactive");
        assert_eq!(job.share(), None);
    }

    #[test]
    fn chunks_round_trip() {
        let mut m = sample();
        m.priority = Priority::Bulk;
        m.inputs = (0..768).map(|i| i as f32 * 0.5).collect();
        m.work = Work::Chunk {
            batch: m.record(),
            index: 7,
            first_row: 1793,
        };
        assert_eq!(JobMessage::decode(&m.encode()).unwrap(), m);
        let plain = String::from_utf8(sample().encode()).unwrap();
        assert!(!plain.contains("chunk"), "single jobs carry no chunk field");
        assert!(!plain.contains("passthrough"));
        // Passthrough values travel with a chunk, under its digest.
        let before = m.digest();
        m.passthrough = vec!["L-1\"\n".into(); 768 / 3];
        assert_eq!(JobMessage::decode(&m.encode()).unwrap(), m);
        assert_ne!(m.digest(), before, "the values are part of the digest");
        let other = m.digest();
        m.passthrough[5] = "L-2".into();
        assert_ne!(m.digest(), other);
        // A single job carries none.
        let mut job = sample();
        job.passthrough = vec!["x".into()];
        assert!(matches!(
            JobMessage::decode(&job.encode()),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn chunk_inputs_travel_as_binary_and_earlier_chunks_still_decode() {
        let mut m = sample();
        m.priority = Priority::Bulk;
        m.work = Work::Chunk {
            batch: m.record(),
            index: 2,
            first_row: 513,
        };
        m.inputs = vec![-0.0, f32::MIN_POSITIVE, 1.0e-45, f32::MAX, 0.1, 729.526_5];
        let text = String::from_utf8(m.encode()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("inputs").is_none(), "{text}");
        let b64 = v["inputs_f32le"].as_str().unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let le: Vec<u8> = m.inputs.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(bytes, le, "little-endian binary32, row after row");
        let back = JobMessage::decode(text.as_bytes()).unwrap();
        for (a, b) in m.inputs.iter().zip(&back.inputs) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(back, m);
        // A chunk as earlier releases wrote it: the same message.
        let mut old = v.clone();
        let obj = old.as_object_mut().unwrap();
        obj.remove("inputs_f32le");
        obj.insert("inputs".into(), serde_json::json!(m.inputs));
        let back = JobMessage::decode(old.to_string().as_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.digest(), m.digest());
        // Hostile forms: each is refused, none panics.
        let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut bad = v.clone();
            f(bad.as_object_mut().unwrap());
            bad.to_string()
        };
        let b64_of = |vals: &[f32]| {
            let raw: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
            base64::engine::general_purpose::STANDARD.encode(raw)
        };
        let hostile = [
            with(&|o| {
                o.remove("inputs_f32le");
            }),
            with(&|o| {
                o.insert("inputs".into(), serde_json::json!([1.0]));
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), "not base64!".into());
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), "AAAA".into()); // 3 bytes
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), "".into());
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), serde_json::json!([1, 2]));
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), serde_json::json!(null));
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), b64_of(&[1.0, f32::NAN]).into());
            }),
            with(&|o| {
                o.insert("inputs_f32le".into(), b64_of(&[f32::INFINITY]).into());
            }),
        ];
        for bad in hostile {
            assert!(JobMessage::decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        let hostile: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"{}".to_vec(),
            vec![0xff, 0xfe, 0x00],
            b"[1,2,3]".to_vec(),
            b"{\"id\":\"x\"}".to_vec(),
            "{".repeat(10_000).into_bytes(),
            sample().encode()[..20].to_vec(),
        ];
        for bytes in hostile {
            assert!(
                JobMessage::decode(&bytes).is_err(),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let mut m = sample();
        m.inputs.clear();
        assert!(matches!(
            JobMessage::decode(&m.encode()),
            Err(DecodeError::Invalid(_))
        ));
        let text = String::from_utf8(sample().encode()).unwrap();
        let inf = text.replace("1234.5679", "1e39");
        assert_ne!(inf, text);
        assert!(JobMessage::decode(inf.as_bytes()).is_err());
        let extra = text.replacen('{', "{\"evil\":1,", 1);
        assert!(JobMessage::decode(extra.as_bytes()).is_err());
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let text = String::from_utf8(sample().encode()).unwrap();
        for (from, to) in [
            (
                "\"retention_ms\":3600000",
                "\"retention_ms\":18446744073709551615",
            ),
            ("\"created_at_ms\":1", "\"created_at_ms\":99999999999999999"),
            (
                "\"created_at_ms\":1",
                "\"created_at_ms\":1,\"retries\":4294967295",
            ),
            (
                "\"created_at_ms\":1",
                "\"created_at_ms\":1,\"deadline_at_ms\":18446744073709551615",
            ),
            (
                "\"created_at_ms\":1",
                "\"created_at_ms\":1,\"chunk\":{\"index\":0,\"first_row\":0}",
            ),
            (
                "\"tenant\":\"acme\"",
                &format!("\"tenant\":\"{}\"", "a".repeat(5000)),
            ),
        ] {
            let bad = text.replace(from, to);
            assert_ne!(bad, text, "{from}");
            assert!(
                matches!(
                    JobMessage::decode(bad.as_bytes()),
                    Err(DecodeError::Invalid(_))
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn message_ids_name_jobs_and_chunks() {
        let id = crate::job::new_job_id();
        assert_eq!(MessageId::parse(&id.to_string()), Some(MessageId::Job(id)));
        let chunk = MessageId::Chunk {
            batch: id,
            index: 7,
        };
        assert_eq!(MessageId::parse(&chunk.to_string()), Some(chunk));
        for bad in [
            "",
            "x",
            &format!("{id}:"),
            &format!("{id}:-1"),
            &format!("{id}:+1"),
            &format!("{id}:1:2"),
            "a:1",
        ] {
            assert_eq!(MessageId::parse(bad), None, "{bad}");
        }
        let mut m = sample();
        assert_eq!(m.message_id(), MessageId::Job(m.record()));
        m.work = Work::Chunk {
            batch: m.record(),
            index: 3,
            first_row: 769,
        };
        assert_eq!(m.message_id().to_string(), format!("{}:3", m.record()));
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_layout_every_release_hashed() {
        let mut m = sample();
        m.work = Work::Chunk {
            batch: m.work.record(),
            index: 7,
            first_row: 1_793,
        };
        m.deadline_at_ms = Some(1_700_000_000_000);
        // More values than one hashing block holds, and passthrough.
        m.inputs = (0..3_000).map(|i| i as f32 * 0.37 - 11.0).collect();
        m.passthrough = vec!["L-1".into(), "".into(), "ünï".into()];
        let mut bytes = Vec::new();
        for part in [m.model.as_bytes(), m.version.as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.push(m.priority as u8);
        bytes.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&1_793u64.to_le_bytes());
        let head = bytes.len();
        for v in &m.inputs {
            bytes.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        bytes.extend_from_slice(b"passthrough");
        for p in &m.passthrough {
            bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
            bytes.extend_from_slice(p.as_bytes());
        }
        assert_eq!(m.digest(), crate::sha256::hex(&bytes));
        m.passthrough.clear();
        m.inputs.truncate(1_024);
        assert_eq!(
            m.digest(),
            crate::sha256::hex(&bytes[..head + 1_024 * 4]),
            "without passthrough, the digest stops after the inputs"
        );
    }

    #[test]
    fn digests_change_with_the_work() {
        let m = sample();
        let same = JobMessage::decode(&m.encode()).unwrap();
        assert_eq!(m.digest(), same.digest());
        let mut other = m.clone();
        other.inputs[1] = 1_234.568;
        assert_ne!(m.digest(), other.digest());
        let mut other = m.clone();
        other.deadline_at_ms = Some(5);
        assert_ne!(m.digest(), other.digest());
        let mut other = m.clone();
        other.tenant = Some("evil".into());
        other.retries = 3;
        assert_eq!(
            m.digest(),
            other.digest(),
            "tenant and retries are not the work"
        );
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            JobMessage::decode(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}

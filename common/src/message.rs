//! The message a job travels in through RabbitMQ.
//!
//! JSON, so dead letters can be read by people and tools; floats are written
//! in their shortest round-trip form, so an input arrives at the model
//! bit-for-bit as the producer parsed it.

use crate::job::{JobId, Priority};
use serde::{Deserialize, Serialize};

/// Content type set on every job message.
pub const CONTENT_TYPE: &str = "application/json";
/// Message `type` property of a job message, versioned for rolling upgrades.
pub const MESSAGE_TYPE: &str = "infq.job.v1";
/// Largest message a worker will try to decode.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// A unit of work on a job queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// The job's id; also the AMQP `message_id`.
    pub id: JobId,
    /// Model name.
    pub model: String,
    /// Model version the job is pinned to.
    pub version: String,
    /// Lane the job travels in.
    pub priority: Priority,
    /// One row of features in schema order.
    pub inputs: Vec<f32>,
    /// When the producer accepted the job (epoch ms), for end-to-end timing.
    pub created_at_ms: u64,
    /// After this instant (epoch ms) the job expires instead of running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<u64>,
    /// Set on bulk chunks: which rows of which batch `inputs` holds. Then
    /// `id` is the batch id and `inputs` holds several rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkRef>,
    /// Times a worker sent it back through a retry queue after a transient
    /// failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Where the job's terminal event (or, on chunks, the batch's
    /// `batch.completed`) is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// The tenant that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// How long its record and results are kept (the tenant's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a bulk chunk's rows sit in their batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Chunk number, from 0, in input order.
    pub index: u32,
    /// Number (from 1) of the chunk's first data row in the uploaded file.
    pub first_row: u64,
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
    /// Serialises the message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job message always serialises")
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
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobMessage {
        JobMessage {
            id: crate::job::new_job_id(),
            model: "credit-default".into(),
            version: "1".into(),
            priority: Priority::Interactive,
            inputs: vec![1.0, 1_234.567_9, 0.1],
            created_at_ms: 1,
            deadline_at_ms: None,
            chunk: None,
            retries: 0,
            webhook_url: None,
            tenant: Some("acme".into()),
            retention_ms: Some(3_600_000),
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
    fn chunks_round_trip() {
        let mut m = sample();
        m.priority = Priority::Bulk;
        m.inputs = (0..768).map(|i| i as f32 * 0.5).collect();
        m.chunk = Some(ChunkRef {
            index: 7,
            first_row: 1793,
        });
        assert_eq!(JobMessage::decode(&m.encode()).unwrap(), m);
        let plain = String::from_utf8(sample().encode()).unwrap();
        assert!(!plain.contains("chunk"), "single jobs carry no chunk field");
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
    fn oversized_is_refused_before_parsing() {
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            JobMessage::decode(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}

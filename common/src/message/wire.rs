//! The wire form of a job message: the JSON object every release has
//! written (`id`, and a `chunk` object on bulk chunks). The message module
//! reads it into, and writes it from, the typed `Work`.
//!
//! A job's inputs are a JSON array of numbers (`inputs`). A chunk's are
//! `inputs_f32le`: the base64 (standard alphabet, padded) of every value as
//! a little-endian IEEE 754 binary32, row after row. That is about half the
//! bytes of the text form, and neither side formats or parses a float.
//! Chunks of earlier releases, with `inputs`, still decode.

use crate::job::{JobId, Priority};
use serde::{Deserialize, Serialize};

/// Where a bulk chunk's rows sit in their batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Chunk number, from 0, in input order.
    pub index: u32,
    /// Number (from 1) of the chunk's first data row in the uploaded file.
    pub first_row: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The wire form of a job message, as every release has written it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Wire {
    pub(super) id: JobId,
    pub(super) model: String,
    pub(super) version: String,
    pub(super) priority: Priority,
    #[serde(default)]
    pub(super) inputs: Option<Vec<f32>>,
    #[serde(default, deserialize_with = "f32le::read")]
    pub(super) inputs_f32le: Option<Vec<f32>>,
    pub(super) created_at_ms: u64,
    #[serde(default)]
    pub(super) deadline_at_ms: Option<u64>,
    #[serde(default)]
    pub(super) chunk: Option<ChunkRef>,
    #[serde(default)]
    pub(super) retries: u32,
    #[serde(default)]
    pub(super) webhook_url: Option<String>,
    #[serde(default)]
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) retention_ms: Option<u64>,
    #[serde(default)]
    pub(super) passthrough: Vec<String>,
}

/// [`Wire`], borrowed, for writing without copying the inputs.
#[derive(Serialize)]
pub(super) struct WireRef<'a> {
    pub(super) id: JobId,
    pub(super) model: &'a str,
    pub(super) version: &'a str,
    pub(super) priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) inputs: Option<&'a [f32]>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "f32le::write"
    )]
    pub(super) inputs_f32le: Option<&'a [f32]>,
    pub(super) created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) deadline_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) chunk: Option<ChunkRef>,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) webhook_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) retention_ms: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub(super) passthrough: &'a [String],
}

impl Wire {
    /// The inputs, from whichever form the message carries; an error when
    /// it carries both or neither.
    pub(super) fn take_inputs(&mut self) -> Result<Vec<f32>, &'static str> {
        match (self.inputs.take(), self.inputs_f32le.take()) {
            (Some(v), None) | (None, Some(v)) => Ok(v),
            (None, None) => Err("missing field `inputs`"),
            (Some(_), Some(_)) => Err("both `inputs` and `inputs_f32le`"),
        }
    }
}

/// `inputs_f32le`: base64 of the values laid out as [`crate::f32le`] says.
mod f32le {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de, Deserializer, Serializer};

    pub(super) fn write<S: Serializer>(values: &Option<&[f32]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(crate::f32le::bytes(values.unwrap_or_default())))
    }

    pub(super) fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Vec<f32>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 of little-endian f32 values")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<f32>, E> {
                let bytes = STANDARD
                    .decode(text)
                    .map_err(|e| E::custom(format_args!("inputs_f32le: {e}")))?;
                crate::f32le::read(&bytes)
                    .ok_or_else(|| E::custom("inputs_f32le: not a whole number of f32 values"))
            }
        }
        d.deserialize_str(Visitor).map(Some)
    }
}

//! The wire form of a job message: the JSON object every release has
//! written (`id`, and a `chunk` object on bulk chunks). The message module
//! reads it into, and writes it from, the typed `Work`.

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
    pub(super) inputs: Vec<f32>,
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
    pub(super) inputs: &'a [f32],
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

//! The wire form of a [`JobMessage`]: the JSON object every release has
//! written (`id`, and a `chunk` object on bulk chunks), read into and
//! written from the typed [`Work`].

use super::{is_zero, ChunkRef, JobMessage, Work};
use crate::job::{JobId, Priority};
use serde::{Deserialize, Serialize};

/// The wire form of [`JobMessage`], as every release has written it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: JobId,
    model: String,
    version: String,
    priority: Priority,
    inputs: Vec<f32>,
    created_at_ms: u64,
    #[serde(default)]
    deadline_at_ms: Option<u64>,
    #[serde(default)]
    chunk: Option<ChunkRef>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    retention_ms: Option<u64>,
}

/// [`Wire`], borrowed, for writing without copying the inputs.
#[derive(Serialize)]
struct WireRef<'a> {
    id: JobId,
    model: &'a str,
    version: &'a str,
    priority: Priority,
    inputs: &'a [f32],
    created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<ChunkRef>,
    #[serde(skip_serializing_if = "is_zero")]
    retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_ms: Option<u64>,
}

impl From<Wire> for JobMessage {
    fn from(w: Wire) -> Self {
        let work = match w.chunk {
            None => Work::Job { id: w.id },
            Some(c) => Work::Chunk {
                batch: w.id,
                index: c.index,
                first_row: c.first_row,
            },
        };
        JobMessage {
            work,
            model: w.model,
            version: w.version,
            priority: w.priority,
            inputs: w.inputs,
            created_at_ms: w.created_at_ms,
            deadline_at_ms: w.deadline_at_ms,
            retries: w.retries,
            webhook_url: w.webhook_url,
            tenant: w.tenant,
            retention_ms: w.retention_ms,
        }
    }
}

impl Serialize for JobMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef {
            id: self.work.record(),
            model: &self.model,
            version: &self.version,
            priority: self.priority,
            inputs: &self.inputs,
            created_at_ms: self.created_at_ms,
            deadline_at_ms: self.deadline_at_ms,
            chunk: self.work.chunk(),
            retries: self.retries,
            webhook_url: self.webhook_url.as_deref(),
            tenant: self.tenant.as_deref(),
            retention_ms: self.retention_ms,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for JobMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Wire::deserialize(d).map(JobMessage::from)
    }
}

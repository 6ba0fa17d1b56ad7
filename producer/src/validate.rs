//! Checking a job submission against the model registry. Plain logic, no
//! I/O: every problem in a request is collected, so a client fixes them all
//! at once. Its errors are its own ([`ValidationError`]); the HTTP layer
//! turns them into answers ([`crate::error`]).

mod error;
mod features;
mod limits;
mod number;
mod shape;
mod v2;

pub use error::ValidationError;
pub use features::features;
pub use limits::{
    MAX_DEADLINE_MS, MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_PROBLEMS, MAX_STRING_CHARS,
};
pub use shape::check_shape;
pub use v2::{v2_tensors, DATATYPES};

use crate::detail::Detail;
use infq_common::job::Priority;
use infq_common::registry::{ModelSpec, Registry};
use infq_common::webhooks::guard::Guard;
use serde::Deserialize;
use serde_json::Value;

/// The body of `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `name` or `name@version`.
    pub model: String,
    /// Named features (object) or values in schema order (array).
    pub inputs: Value,
    /// Lane; `interactive` unless given.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Callback URL for the result.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Milliseconds from now after which the job expires unrun.
    #[serde(default, deserialize_with = "whole_number")]
    pub deadline_ms: Option<u64>,
    /// Client data stored with the job and returned with it.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Explain the score: each feature's attribution and the principal
    /// reasons (the model's registry entry must have an `explain` section).
    #[serde(default)]
    pub explain: bool,
}

/// A whole number, also when written with a fraction of zero (`5.0`), as
/// JSON Schema's `integer` allows; a negative one or a fraction is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= u64::MAX as f64 => Ok(Some(x as u64)),
        _ => Err(D::Error::custom(format!(
            "invalid value: {n}, expected a whole number of at least 0"
        ))),
    }
}

/// A submission that passed every check.
#[derive(Debug)]
pub struct ValidJob<'r> {
    /// The resolved model version.
    pub spec: &'r ModelSpec,
    /// One row of f32 features in schema order.
    pub inputs: Vec<f32>,
    /// Lane.
    pub priority: Priority,
    /// Relative deadline, if any.
    pub deadline_ms: Option<u64>,
    /// Client metadata as JSON text.
    pub metadata: Option<String>,
    /// Callback URL, past the checks that need no lookup.
    pub webhook_url: Option<String>,
    /// Whether the score is to be explained.
    pub explain: bool,
}

/// Checks a callback URL's form and, for an address literal, its address;
/// `None` if webhooks are off (no signing secret).
pub fn webhook_url(url: &str, guard: Option<&Guard>, problems: &mut Vec<Detail>) -> Option<String> {
    let Some(guard) = guard else {
        problems.push(Detail::field(
            "webhook_url",
            "webhook callbacks are not enabled on this deployment",
        ));
        return None;
    };
    match guard.parse(url) {
        Ok(t) => Some(t.url.to_string()),
        Err(e) => {
            problems.push(Detail::field("webhook_url", e.to_string()));
            None
        }
    }
}

/// Parses and validates a body; `guard` checks callback URLs (`None`:
/// callbacks are off).
pub fn validate<'r>(
    body: &[u8],
    registry: &'r Registry,
    guard: Option<&Guard>,
) -> Result<ValidJob<'r>, ValidationError> {
    check_shape(body, MAX_JSON_DEPTH, MAX_STRING_CHARS)?;
    let req: JobRequest =
        serde_json::from_slice(body).map_err(|e| ValidationError::Malformed(e.to_string()))?;
    let spec = registry
        .resolve(&req.model)
        .ok_or_else(|| ValidationError::UnknownModel(req.model.clone()))?;
    let mut problems = Vec::new();
    if req.explain {
        if let Err(p) = explainable(spec) {
            problems.push(p);
        }
    }
    let inputs = features(spec, &req.inputs, &mut problems);
    let webhook_url = req
        .webhook_url
        .as_deref()
        .and_then(|u| webhook_url(u, guard, &mut problems));
    if let Some(d) = req.deadline_ms {
        if d == 0 || d > MAX_DEADLINE_MS {
            problems.push(Detail::field(
                "deadline_ms",
                format!("must be between 1 and {MAX_DEADLINE_MS}"),
            ));
        }
    }
    let metadata = match &req.metadata {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                problems.push(Detail::field(
                    "metadata",
                    format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Some(text)
        }
        Some(_) => {
            problems.push(Detail::field("metadata", "must be an object"));
            None
        }
    };
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(ValidationError::Invalid(problems));
    }
    Ok(ValidJob {
        spec,
        inputs,
        priority: req.priority.unwrap_or_default(),
        deadline_ms: req.deadline_ms,
        metadata,
        webhook_url,
        explain: req.explain,
    })
}

/// Whether `explain` may be asked of this model version: its registry
/// entry must say how ([`infq_common::registry::ExplainSpec`]).
pub fn explainable(spec: &ModelSpec) -> Result<(), Detail> {
    if spec.explain.is_some() {
        return Ok(());
    }
    Err(Detail::field(
        "explain",
        format!(
            "model {} has no explain section in its registry entry, so it gives no reason codes",
            spec.id()
        ),
    ))
}

#[cfg(test)]
mod tests;

//! The HTTP side of `Idempotency-Key`: reading the header, answering
//! repeats from the stored answer (with `Idempotent-Replayed: true`), and
//! refusing a key reused with another body (`409`).

use crate::error::ApiError;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infq_common::idempotency::Claimed;
use serde_json::Value;

/// The request header clients set.
pub const HEADER: &str = "idempotency-key";
/// Set on an answer replayed from a stored one.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The key of a request, if it has one; refused unless it is 1 to 255
/// printable ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::Invalid(vec![crate::detail::Detail::field(
            "Idempotency-Key",
            "use 1 to 255 printable ASCII characters",
        )])
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad());
    }
    Ok(Some(s))
}

/// An accepted submission: what is stored for repeats and sent back.
pub struct Accepted {
    /// `/v1/jobs/{id}` or `/v1/batches/{id}`.
    pub location: String,
    /// The JSON body.
    pub body: Value,
}

impl Accepted {
    /// The `202` answer.
    pub fn response(&self, replayed: bool) -> Response {
        let mut resp = (StatusCode::ACCEPTED, Json(&self.body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        if replayed {
            resp.headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
        }
        resp
    }

    /// Rebuilds a stored answer; `path` is `/v1/jobs` or `/v1/batches`.
    pub fn stored(path: &str, response: &str) -> Result<Self, ApiError> {
        let body: Value = serde_json::from_str(response)
            .map_err(|e| ApiError::Internal(format!("stored idempotent answer: {e}")))?;
        let id = body["id"].as_str().unwrap_or_default().to_string();
        Ok(Self {
            location: format!("{path}/{id}"),
            body,
        })
    }
}

/// How long a single job's key stays pending at most.
pub const PENDING_JOB_MS: u64 = 15 * 60 * 1000;
/// How long a batch upload's key stays pending at most: long enough for the
/// largest upload to be read and published.
pub const PENDING_BATCH_MS: u64 = 6 * 3600 * 1000;

/// Stores an accepted submission's answer under its key. The job is
/// accepted whatever happens here: if Redis fails now, repeats get `409`
/// until the pending key expires.
pub async fn remember(
    state: &crate::state::AppState,
    claimed: &Claimed,
    hash: &str,
    accepted: &Accepted,
) {
    if let Err(e) = state
        .idempotency
        .finish(claimed, hash, 202, &accepted.body.to_string())
        .await
    {
        tracing::warn!(error = %e, "could not store the answer of an idempotent request");
    }
}

/// The error for a key in use by a request still running.
pub fn in_progress() -> ApiError {
    ApiError::IdempotencyConflict("a request with this Idempotency-Key is still running".into())
}

/// The error for a key used before with another body.
pub fn mismatch() -> ApiError {
    ApiError::IdempotencyConflict(
        "this Idempotency-Key was used with a different request body".into(),
    )
}

/// Hash of a JSON body that ignores formatting and key order; other bodies
/// hash as bytes.
pub fn json_body_hash(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => infq_common::sha256::hex(v.to_string().as_bytes()),
        Err(_) => infq_common::sha256::hex(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h).unwrap(), None);
        h.insert(HEADER, HeaderValue::from_static("order-17"));
        assert_eq!(key(&h).unwrap(), Some("order-17"));
        for bad in ["", "has space", &"k".repeat(256)] {
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            assert!(key(&h).is_err(), "{bad:?}");
        }
        h.insert(HEADER, HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert!(key(&h).is_err());
    }

    #[test]
    fn json_hash_ignores_key_order_and_spacing() {
        let a = json_body_hash(br#"{"model":"m","inputs":[1,2]}"#);
        let b = json_body_hash(b"{ \"inputs\": [1, 2],\n \"model\": \"m\" }");
        assert_eq!(a, b);
        assert_ne!(a, json_body_hash(br#"{"model":"m","inputs":[1,3]}"#));
    }
}

//! The API's error type. Every failure a client can see is one variant
//! here, and this file alone maps variants to status codes and to the JSON
//! body `{"error": {"code", "message", "details"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

pub use crate::detail::Detail;
use crate::validate::ValidationError;

/// Everything the API can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// The body parsed but values are wrong; every problem is listed.
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<Detail>),
    /// An uploaded file has bad rows; each is listed with its line.
    #[error("the file has invalid rows{}", if *.truncated { " (the first 100 problems are listed)" } else { "" })]
    InvalidFile {
        /// The problems, in file order.
        problems: Vec<Detail>,
        /// Reading stopped early.
        truncated: bool,
    },
    /// The model (or version) is not in the registry.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// No such job (or it expired).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// An `Idempotency-Key` is in use by a running request, or was used
    /// with another body.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// The body is over the size limit.
    #[error("request body over the limit of {0} bytes")]
    TooLarge(usize),
    /// A structural limit of the input (nesting depth, string length, line
    /// length, row count) is passed; the message names it.
    #[error("{0}")]
    LimitExceeded(String),
    /// No API key, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The key is valid but may not use this route.
    #[error("{0}")]
    Forbidden(String),
    /// Over the tenant's rate or queued-work limit, or the queue is full:
    /// try again after the given time.
    #[error("{message}")]
    TooMany {
        /// What limit was hit.
        message: String,
        /// When trying again makes sense.
        retry_after: std::time::Duration,
    },
    /// A dependency (broker, Redis) cannot take the request now.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected reply.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of each variant.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) | ApiError::InvalidFile { .. } | ApiError::UnknownModel(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::IdempotencyConflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) | ApiError::LimitExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of each variant.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::InvalidFile { .. } => "invalid_file",
            ApiError::UnknownModel(_) => "unknown_model",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::LimitExceeded(_) => "limit_exceeded",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooMany { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    details: &'a [Detail],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let details: &[Detail] = match &self {
            ApiError::Invalid(d) => d,
            ApiError::InvalidFile { problems, .. } => problems,
            _ => &[],
        };
        let body = Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
                details,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read; the connection cannot be
            // reused, and saying so keeps clients from sending on it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::TooMany { retry_after, .. } = &self {
            // Whole seconds, rounded up, at least 1.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"infq\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<crate::publisher::PublishError> for ApiError {
    fn from(e: crate::publisher::PublishError) -> Self {
        match e {
            // Job queues refuse publishes past their maximum length.
            crate::publisher::PublishError::Nacked => ApiError::TooMany {
                message: "the job queue is full; try again later".into(),
                retry_after: std::time::Duration::from_secs(5),
            },
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::Malformed(m) => ApiError::Malformed(m),
            ValidationError::LimitExceeded(m) => ApiError::LimitExceeded(m),
            ValidationError::UnknownModel(m) => ApiError::UnknownModel(m),
            ValidationError::Invalid(problems) => ApiError::Invalid(problems),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        infq_common::store::StoreError::from(e).into()
    }
}

impl From<infq_common::store::StoreError> for ApiError {
    fn from(e: infq_common::store::StoreError) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "the result store is unavailable");
            ApiError::Unavailable("the result store is unavailable".into())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

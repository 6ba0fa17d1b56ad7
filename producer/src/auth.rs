//! Bearer API keys. Every `/v1` route runs behind [`require_key`], which
//! resolves `Authorization: Bearer <key>` to its tenant and puts a
//! [`Caller`] in the request; `/v1/admin` also runs behind
//! [`require_admin`]. A job or batch of another tenant is answered like
//! one that does not exist ([`Caller::check_owner`]), so ids cannot be
//! probed.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use infq_common::audit::{Event, Record};
use infq_common::tenants::{Admission, Tenant};
use std::sync::Arc;

/// The tenant a request acts for, and the public id of the key it
/// presented (for the audit trail).
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Tenant>, pub Arc<str>);

impl Caller {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The public id of the key it presented.
    pub fn key_id(&self) -> &str {
        &self.1
    }

    /// An audit record of `event` about job `job`, by this caller.
    pub fn audit_job(&self, event: Event, job: &impl std::fmt::Display) -> Record {
        Record::job(event, &job.to_string()).by(Some(self.name()), Some(self.key_id()))
    }

    /// An audit record of `event` about batch `batch`, by this caller.
    pub fn audit_batch(&self, event: Event, batch: &impl std::fmt::Display) -> Record {
        Record::batch(event, &batch.to_string()).by(Some(self.name()), Some(self.key_id()))
    }

    /// `Ok` if the record's owner is this tenant; otherwise the same 404
    /// as for an unknown id (`what` and `id` name it).
    pub fn check_owner(&self, owner: Option<&str>, what: &str, id: &str) -> Result<(), ApiError> {
        if owner == Some(self.name()) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("{what} {id}")))
        }
    }

    /// The tenant's retention in ms, stored with each record.
    pub fn retention_ms(&self) -> u64 {
        self.0.limits.retention_secs * 1000
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized("an API key is required: send `Authorization: Bearer <key>`".into())
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, key) = value.split_once(' ').ok_or_else(missing)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.len() > 256 {
        return Err(missing());
    }
    Ok(key)
}

/// Middleware: refuses requests without a valid key (`401`), and hands the
/// handlers the [`Caller`].
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = bearer(req.headers())?;
    let tenant = state
        .tenants
        .authenticate(key)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
    let key_id = infq_common::tenants::key_id(&infq_common::tenants::key_hash(key));
    req.extensions_mut().insert(Caller(tenant, key_id.into()));
    Ok(next.run(req).await)
}

/// Middleware after [`require_key`]: only admin tenants pass (`403`).
pub async fn require_admin(req: Request, next: Next) -> Result<Response, ApiError> {
    let admin = req.extensions().get::<Caller>().is_some_and(|c| c.0.admin);
    if !admin {
        return Err(ApiError::Forbidden(
            "this route needs the key of an admin tenant".into(),
        ));
    }
    Ok(next.run(req).await)
}

/// Counts a submission of `rows` jobs or rows (0: the rate alone) against
/// the caller's quota; `429` with `Retry-After` when over it.
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    subject: &infq_common::job::JobId,
    rows: u64,
    rate: bool,
) -> Result<(), ApiError> {
    let check = state.tenants.check(&caller.0, subject, rows, rate);
    let admission = state.tenants.admit(&check).await?;
    answer(caller, admission, rows)
}

/// `Ok` for an admitted submission of `rows`; otherwise the `429` that
/// says which limit it hit.
pub fn answer(caller: &Caller, admission: Admission, rows: u64) -> Result<(), ApiError> {
    match admission {
        Admission::Admitted => Ok(()),
        Admission::RateLimited(wait) => {
            metrics::counter!(infq_common::metrics::JOBS_REJECTED, "outcome" => "rate_limited")
                .increment(1);
            Err(ApiError::TooMany {
                message: format!(
                    "tenant {} is over its rate of {} submissions per second",
                    caller.name(),
                    caller.0.limits.rate_per_sec
                ),
                retry_after: wait,
            })
        }
        Admission::Full { queued, max } => {
            metrics::counter!(infq_common::metrics::JOBS_REJECTED, "outcome" => "quota_full")
                .increment(1);
            Err(ApiError::TooMany {
                message: format!(
                    "tenant {} has {queued} jobs and rows queued; adding {rows} would pass its limit of {max}",
                    caller.name()
                ),
                retry_after: std::time::Duration::from_secs(5),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_keys_are_read_strictly() {
        assert_eq!(bearer(&with("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&with("bearer  abc ")).unwrap(), "abc");
        for bad in [
            "abc",
            "Basic abc",
            "Bearer ",
            "Bearer",
            &format!("Bearer {}", "k".repeat(300)),
        ] {
            assert!(
                matches!(bearer(&with(bad)), Err(ApiError::Unauthorized(_))),
                "{bad}"
            );
        }
        assert!(bearer(&HeaderMap::new()).is_err());
    }
}

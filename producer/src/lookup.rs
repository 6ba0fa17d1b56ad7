//! Finding the caller's own job or batch from the id in a path: an id of
//! another shape, an erased record and another tenant's record are all
//! answered alike, `404`, so ids cannot be probed.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use infq_common::job::JobId;
use infq_common::store::{BatchRecord, JobRecord};

/// Parses an id from a path; unknown shapes are simply not found.
pub fn parse_id(id: &str, what: &str) -> Result<JobId, ApiError> {
    JobId::parse_str(id).map_err(|_| ApiError::NotFound(format!("{what} {id}")))
}

/// The caller's job `job_id` (`id` as written); 404 when unknown, erased
/// or another tenant's.
pub async fn owned_job(
    state: &AppState,
    caller: &Caller,
    job_id: &JobId,
    id: &str,
) -> Result<JobRecord, ApiError> {
    let rec = state
        .store
        .get(job_id)
        .await?
        .filter(|r| !r.erased)
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    caller.check_owner(rec.tenant.as_deref(), "job", id)?;
    Ok(rec)
}

/// The caller's batch `batch_id` (`id` as written); 404 when unknown,
/// erased or another tenant's.
pub async fn owned_batch(
    state: &AppState,
    caller: &Caller,
    batch_id: &JobId,
    id: &str,
) -> Result<BatchRecord, ApiError> {
    let rec = state
        .store
        .get_batch(batch_id)
        .await?
        .filter(|r| !r.erased)
        .ok_or_else(|| ApiError::NotFound(format!("batch {id}")))?;
    caller.check_owner(rec.tenant.as_deref(), "batch", id)?;
    Ok(rec)
}

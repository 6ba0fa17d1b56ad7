//! Bulk batches: `POST /v1/batches` ([`upload`]), `GET /v1/batches/{id}`,
//! `GET /v1/batches/{id}/results` ([`results`]), `DELETE /v1/batches/{id}`
//! and `POST /v1/batches/{id}/cancel`.
//!
//! An upload is read as it streams in and validated row by row on a
//! blocking thread ([`crate::bulk`]); valid rows wait in a spool file,
//! within the producer's spool budget ([`crate::spool`]). Only when the
//! whole file has passed is the batch recorded and its rows published,
//! `chunk_rows` rows per message (fewer for a model too wide for that many
//! in one message), with publisher confirms; the client gets `202` once
//! the broker holds every chunk. Results are read back chunk by chunk and
//! streamed in input order.

mod parquet_out;
mod publish;
pub mod results;
pub mod upload;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::lookup::{owned_batch, parse_id};
use crate::state::AppState;
use crate::wait::{poll_until, WaitQuery};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use infq_common::audit::Event;
use infq_common::job::JobStatus;
use infq_common::store::{BatchRecord, Cancelled};
use infq_common::views::BatchView;
use std::sync::Arc;

/// `GET /v1/batches/{id}`, optionally long-polling with `?wait=SECONDS`.
#[utoipa::path(get, path = "/v1/batches/{id}", tag = "batches",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id"),
           ("wait" = Option<f64>, Query, description = "Seconds to wait for the batch to end")),
    responses(
        (status = 200, description = "The batch: counts, rows/s, time left", body = infq_common::views::BatchView),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn get_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<BatchView>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let batch_id = parse_id(&id, "batch")?;
    let wait = q.seconds(state.settings.producer.max_wait_secs)?;
    let read = || async { owned_batch(&state, &caller, &batch_id, &id).await };
    let rec = poll_until(&state, batch_id, wait, read, |b: &BatchRecord| {
        b.status.is_terminal()
    })
    .await?;
    Ok(Json(rec.into()))
}

/// `DELETE /v1/batches/{id}`: erases the batch at once, every stored
/// result included; chunks not yet run never will. `204`.
#[utoipa::path(delete, path = "/v1/batches/{id}", tag = "batches",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 204, description = "Erased with every stored result"),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn delete_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let batch_id = parse_id(&id, "batch")?;
    owned_batch(&state, &caller, &batch_id, &id).await?;
    if !state
        .store
        .erase(infq_common::keys::Subject::Batch(batch_id))
        .await?
    {
        return Err(ApiError::NotFound(format!("batch {id}")));
    }
    tracing::info!(batch_id = %batch_id, tenant = caller.name(), "batch erased");
    state
        .publisher
        .audit(vec![caller.audit_batch(Event::BatchErased, &batch_id)])
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/batches/{id}/cancel`: cancels what has not run yet; what
/// ran stays readable until the retention ends.
#[utoipa::path(post, path = "/v1/batches/{id}/cancel", tag = "batches",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, description = "Cancelled: rows not yet run never run", body = infq_common::views::BatchView),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "Already ended", body = crate::openapi::ErrorBody),
    ))]
pub async fn cancel_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    let batch_id = parse_id(&id, "batch")?;
    owned_batch(&state, &caller, &batch_id, &id).await?;
    match state
        .store
        .cancel(
            infq_common::keys::Subject::Batch(batch_id),
            &[JobStatus::Queued, JobStatus::Running],
        )
        .await?
    {
        Cancelled::Yes => {
            state
                .publisher
                .audit(vec![caller.audit_batch(Event::BatchCancelled, &batch_id)])
                .await;
        }
        Cancelled::Missing => return Err(ApiError::NotFound(format!("batch {id}"))),
        Cancelled::Refused(st) => {
            return Err(ApiError::Conflict(format!("batch {id} is already {st}")))
        }
    }
    let rec = state
        .store
        .get_batch(&batch_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("batch {id}")))?;
    Ok(Json(rec.into()))
}

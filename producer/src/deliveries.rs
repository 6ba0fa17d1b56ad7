//! Webhook visibility: `GET /v1/jobs/{id}/deliveries` (and for batches)
//! lists a subject's event with every attempt (time, status code, error);
//! `POST .../deliveries/{event}/retry` sends the event again by hand, with
//! the same `webhook-id` and body, under a new chain that retires any
//! automatic attempts still waiting. A manual redelivery to an endpoint
//! disabled by `410 Gone` enables it again: the operator has fixed it.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::lookup::{owned_batch, owned_job, parse_id};
use crate::state::AppState;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::Json;
use infq_common::job::JobId;
use infq_common::webhooks::event::{generation_of, EventMessage, SubjectKind};
use infq_common::webhooks::store::Redeliver;
use serde_json::{json, Value};
use std::sync::Arc;

async fn list(
    state: &AppState,
    caller: &Caller,
    kind: SubjectKind,
    raw: &str,
) -> Result<Json<Value>, ApiError> {
    let what = match kind {
        SubjectKind::Job => "job",
        SubjectKind::Batch => "batch",
    };
    let id = parse_id(raw, what)?;
    let reopened = reopened(state, caller, kind, &id).await?;
    let events = state.deliveries.deliveries(&id, reopened).await?;
    Ok(Json(json!({ "id": id, "events": events })))
}

/// How often the caller's job or batch was reopened (its last event
/// generation); `404` if there is no such record of the caller's.
async fn reopened(
    state: &AppState,
    caller: &Caller,
    kind: SubjectKind,
    id: &JobId,
) -> Result<u32, ApiError> {
    let raw = id.to_string();
    Ok(match kind {
        SubjectKind::Job => owned_job(state, caller, id, &raw).await?.reopened,
        SubjectKind::Batch => owned_batch(state, caller, id, &raw).await?.reopened,
    })
}

async fn retry(
    state: &AppState,
    caller: &Caller,
    kind: SubjectKind,
    raw: &str,
    event: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.guard.is_none() {
        return Err(ApiError::Conflict(
            "webhook callbacks are not enabled on this deployment".into(),
        ));
    }
    let what = match kind {
        SubjectKind::Job => "job",
        SubjectKind::Batch => "batch",
    };
    let id: JobId = parse_id(raw, what)?;
    let plural = match kind {
        SubjectKind::Job => "jobs",
        SubjectKind::Batch => "batches",
    };
    let missing = || {
        ApiError::NotFound(format!(
            "event `{event}` of {what} {raw} (GET /v1/{plural}/{raw}/deliveries lists its events)"
        ))
    };
    let last = match reopened(state, caller, kind, &id).await {
        Err(ApiError::NotFound(_)) => return Err(missing()),
        other => other?,
    };
    // A webhook-id names its generation; a type means the latest event of
    // that type.
    let gens: Vec<u32> = match generation_of(&id, event) {
        Some(g) if g <= last => vec![g],
        Some(_) => Vec::new(),
        None => (0..=last).rev().collect(),
    };
    let chain = uuid::Uuid::new_v4();
    let mut found = None;
    for gen in gens {
        if let Redeliver::Go { event, url, before } =
            state.deliveries.redeliver(&id, gen, event, &chain).await?
        {
            found = Some((gen, event, url, before));
            break;
        }
    }
    let (gen, built, url, before) = found.ok_or_else(missing)?;
    let enabled_again = state.deliveries.enable(&url).await?;
    // The message names the event; the dispatcher sends the body kept
    // for it, to the record's URL, signed for the record's tenant.
    let msg = EventMessage {
        kind,
        subject: id,
        chain,
        attempt: 0,
        gen: Some(gen),
        progress: None,
    };
    if let Err(e) = state.publisher.publish_event(&msg).await {
        // Back to where it stood: automatic attempts still waiting go on.
        if let Err(se) = state.deliveries.restore(&id, gen, &chain, &before).await {
            tracing::warn!(subject = %id, error = %se, "could not restore an event after a failed redelivery");
        }
        return Err(ApiError::Unavailable(e.to_string()));
    }
    tracing::info!(subject = %id, webhook_id = %built.id, "webhook event redelivered by hand");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "webhook_id": built.id,
            "type": built.kind,
            "url": url,
            "state": "pending",
            "endpoint_enabled_again": enabled_again,
        })),
    ))
}

/// `GET /v1/jobs/{id}/deliveries`.
#[utoipa::path(get, path = "/v1/jobs/{id}/deliveries", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job's webhook event and every attempt", body = crate::openapi::DeliveryLog),
        (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn job_deliveries(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list(&state, &caller, SubjectKind::Job, &id).await
}

/// `GET /v1/batches/{id}/deliveries`.
#[utoipa::path(get, path = "/v1/batches/{id}/deliveries", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The batch's webhook event and every attempt", body = crate::openapi::DeliveryLog),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn batch_deliveries(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list(&state, &caller, SubjectKind::Batch, &id).await
}

/// `POST /v1/jobs/{id}/deliveries/{event}/retry`; `event` is the
/// `webhook-id` or the event type.
#[utoipa::path(post, path = "/v1/jobs/{id}/deliveries/{event}/retry", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Job id"),
           ("event" = String, Path, description = "The event's `webhook-id` or type")),
    responses(
        (status = 202, description = "Sent again", body = crate::openapi::Redelivery),
        (status = 404, description = "No such job or event", body = crate::openapi::ErrorBody),
    ))]
pub async fn retry_job_event(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((id, event)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    retry(&state, &caller, SubjectKind::Job, &id, &event).await
}

/// `POST /v1/batches/{id}/deliveries/{event}/retry`.
#[utoipa::path(post, path = "/v1/batches/{id}/deliveries/{event}/retry", tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id"),
           ("event" = String, Path, description = "The event's `webhook-id` or type")),
    responses(
        (status = 202, description = "Sent again", body = crate::openapi::Redelivery),
        (status = 404, description = "No such batch or event", body = crate::openapi::ErrorBody),
    ))]
pub async fn retry_batch_event(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((id, event)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    retry(&state, &caller, SubjectKind::Batch, &id, &event).await
}

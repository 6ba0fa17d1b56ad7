//! Webhook visibility: `GET /v1/jobs/{id}/deliveries` (and for batches)
//! lists a subject's event with every attempt (time, status code, error);
//! `POST .../deliveries/{event}/retry` sends the event again by hand, with
//! the same `webhook-id` and body, under a new chain that retires any
//! automatic attempts still waiting. A manual redelivery to an endpoint
//! disabled by `410 Gone` enables it again: the operator has fixed it.

use crate::error::{ApiError, Detail};
use crate::routes::parse_id;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use infq_common::job::JobId;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use infq_common::webhooks::guard::GuardError;
use infq_common::webhooks::store::{EventState, Redeliver};
use serde_json::{json, Value};
use std::sync::Arc;

/// The submit-time lookup of a callback host: a name that resolves to a
/// forbidden address is refused now rather than at the first attempt.
pub async fn check_url_resolves(state: &AppState, url: &str) -> Result<(), ApiError> {
    let Some(guard) = &state.guard else {
        return Ok(());
    };
    match guard.check_submitted(url).await {
        Ok(_) | Err(GuardError::Unresolvable { .. }) => Ok(()),
        Err(e) => Err(ApiError::Invalid(vec![Detail::field(
            "webhook_url",
            e.to_string(),
        )])),
    }
}

async fn list(state: &AppState, kind: SubjectKind, raw: &str) -> Result<Json<Value>, ApiError> {
    let what = match kind {
        SubjectKind::Job => "job",
        SubjectKind::Batch => "batch",
    };
    let id = parse_id(raw, what)?;
    let found = match kind {
        SubjectKind::Job => state.store.get(&id).await?.is_some(),
        SubjectKind::Batch => state.store.get_batch(&id).await?.is_some(),
    };
    let events = state.deliveries.deliveries(&id).await?;
    if !found && events.is_none() {
        return Err(ApiError::NotFound(format!("{what} {raw}")));
    }
    Ok(Json(json!({
        "id": id,
        "events": events.into_iter().collect::<Vec<_>>(),
    })))
}

async fn retry(
    state: &AppState,
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
    let chain = uuid::Uuid::new_v4();
    let (built, url) = match state.deliveries.redeliver(&id, event, &chain).await? {
        Redeliver::Go(e, url) => (e, url),
        Redeliver::Missing => {
            return Err(ApiError::NotFound(format!(
                "event `{event}` of {what} {raw} (it is listed by GET /v1/{what}s/{raw}/deliveries once built)"
            )))
        }
    };
    let enabled_again = state.deliveries.enable(&url).await?;
    let msg = EventMessage {
        kind,
        subject: id,
        url: url.clone(),
        chain,
        attempt: 0,
        event: Some(built.clone()),
    };
    if let Err(e) = state.publisher.publish_event(&msg).await {
        let _ = state
            .deliveries
            .set_state(&id, &chain, EventState::Failed)
            .await;
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
pub async fn job_deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list(&state, SubjectKind::Job, &id).await
}

/// `GET /v1/batches/{id}/deliveries`.
pub async fn batch_deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list(&state, SubjectKind::Batch, &id).await
}

/// `POST /v1/jobs/{id}/deliveries/{event}/retry`; `event` is the
/// `webhook-id` or the event type.
pub async fn retry_job_event(
    State(state): State<Arc<AppState>>,
    Path((id, event)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    retry(&state, SubjectKind::Job, &id, &event).await
}

/// `POST /v1/batches/{id}/deliveries/{event}/retry`.
pub async fn retry_batch_event(
    State(state): State<Arc<AppState>>,
    Path((id, event)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    retry(&state, SubjectKind::Batch, &id, &event).await
}

//! HTTP handlers of the producer's API.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idempotency::{self, Accepted};
use crate::lookup::{owned_job, parse_id};
use crate::state::AppState;
use crate::validate::validate;
use crate::wait::{poll_registered, poll_until, WaitQuery};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use infq_common::audit::{inputs_sha256, Event};
use infq_common::idempotency::Begin;
use infq_common::job::JobStatus;
use infq_common::job::{format_ms, new_job_id, now_ms, JobError, JobId};
use infq_common::message::{JobMessage, Work};
use infq_common::metrics as m;
use infq_common::registry::ModelSpec;
use infq_common::store::{Cancelled, JobRecord, NewJob, Transition};
use infq_common::views::JobView;
use serde_json::json;
use std::sync::Arc;
use tracing::Instrument;

pub(crate) fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::Malformed(rejection.body_text())
    }
}

/// `POST /v1/jobs`: validate, record as queued, publish with confirm, and
/// answer `202` only once the broker holds the job.
/// With an `Idempotency-Key`, a repeat of the same body gets the original
/// answer and no second job.
///
/// With `?wait=SECONDS` the answer waits for the job to finish: `200` with
/// the finished job if it ends in time, else the usual `202`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    security(("api_key" = [])),
    params(("wait" = Option<f64>, Query, description = "Seconds to wait for the job to finish (at most producer.max_wait_secs)"),
           ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same body returns the original answer and creates nothing"),
           ("traceparent" = Option<String>, Header, description = "W3C trace context; its trace id names the job's spans")),
    request_body(content = crate::openapi::JobSubmission, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued: the broker holds the job", body = crate::openapi::JobAccepted),
        (status = 200, description = "With `wait`: the job ended in time", body = infq_common::views::JobView),
        (status = 400, description = "Malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 409, description = "Idempotency key in use or used with another body", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body or structure over a limit", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid inputs (every problem listed) or unknown model", body = crate::openapi::ErrorBody),
        (status = 429, description = "Over the tenant's rate or quota, or the queue is full", body = crate::openapi::ErrorBody),
        (status = 503, description = "Broker or Redis unavailable", body = crate::openapi::ErrorBody),
    ))]
pub async fn submit_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let wait = q.seconds(state.settings.producer.max_wait_secs)?;
    let body = body.map_err(|r| body_error(r, state.settings.producer.max_body_bytes))?;
    let key = idempotency::key(&headers)?.map(str::to_string);
    let trace = headers
        .get(infq_common::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(infq_common::trace::parse_traceparent);
    let span = tracing::debug_span!(
        target: infq_common::trace::JOB_TARGET,
        "job",
        stage = "submit",
        job_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    // A wait is registered before the job exists, so its end cannot be
    // missed and the record need not be read until it is announced.
    let id = new_job_id();
    let early = (wait > 0.0).then(|| state.waiters.register(id));
    // The submission runs to its end even if the client goes away, so no
    // job is left recorded but unpublished and no key is left pending.
    let (accepted, replayed) = tokio::spawn(
        {
            let state = state.clone();
            async move { submit_idempotent(&state, &caller, key, body, trace, id).await }
        }
        .instrument(span),
    )
    .await
    .map_err(|e| ApiError::Internal(format!("submission task: {e}")))??;
    // The wait runs in the request's own future, not in the task: when the
    // client goes away, the server drops this future and the wait stops
    // reading Redis.
    if wait > 0.0 {
        // A replay answers for an earlier job, which may have ended.
        let early = early.filter(|_| !replayed);
        if let Some(finished) = finished_in_time(&state, &accepted, wait, early).await {
            return Ok(finished);
        }
    }
    Ok(accepted.response(replayed))
}

/// Waits up to `wait` seconds for an accepted job to end: its view, with
/// its `Location`, if it does. `None` when the wait ends first, and also
/// when reading the job fails: the broker holds the job, so the answer is
/// then the submission's `202` with its id, never an error that a client
/// would retry into a second job. `early` is a wait registered for the
/// job before it was published.
async fn finished_in_time(
    state: &AppState,
    accepted: &Accepted,
    wait: f64,
    early: Option<crate::waiters::WaitGuard>,
) -> Option<Response> {
    let id = JobId::parse_str(accepted.body["id"].as_str()?).ok()?;
    let read = || async {
        state
            .store
            .get(&id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("job {id}")))
    };
    let terminal = |r: &JobRecord| r.status.is_terminal();
    let polled = match early {
        Some(guard) => poll_registered(state, guard, true, wait, read, terminal).await,
        None => poll_until(state, id, wait, read, terminal).await,
    };
    let rec = match polled {
        Ok(rec) if rec.status.is_terminal() => rec,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(job_id = %id, error = %e, "reading an accepted job while waiting failed; answering 202");
            return None;
        }
    };
    let mut resp = Json(JobView::from(rec)).into_response();
    if let Ok(v) = HeaderValue::from_str(&accepted.location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Some(resp)
}

/// Submits, honouring an `Idempotency-Key`; `true` when the answer is a
/// replay of an earlier one.
async fn submit_idempotent(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    body: Bytes,
    trace: Option<String>,
    id: JobId,
) -> Result<(Accepted, bool), ApiError> {
    let Some(key) = key else {
        return Ok((submit(state, caller, &body, trace, id).await?, false));
    };
    // Keys are the tenant's own: another tenant's key never collides.
    let scope = format!("{}/jobs", caller.name());
    let redis_key = state.idempotency.redis_key(&scope, &key);
    let hash = idempotency::json_body_hash(&body);
    match state
        .idempotency
        .begin(&redis_key, &hash, idempotency::PENDING_JOB_MS)
        .await?
    {
        Begin::New(claimed) => match submit(state, caller, &body, trace, id).await {
            Ok(accepted) => {
                idempotency::remember(state, &claimed, &hash, &accepted).await;
                Ok((accepted, false))
            }
            Err(e) => {
                let _ = state.idempotency.abandon(&claimed).await;
                Err(e)
            }
        },
        Begin::Pending => Err(idempotency::in_progress()),
        Begin::Mismatch => Err(idempotency::mismatch()),
        Begin::Done { response, .. } => Ok((Accepted::stored("/v1/jobs", &response)?, true)),
    }
}

async fn submit(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
    trace: Option<String>,
    id: JobId,
) -> Result<Accepted, ApiError> {
    let registry = state.registry();
    let job = match validate(body, &registry, state.guard.as_ref()) {
        Ok(job) => job,
        Err(e) => {
            metrics::counter!(m::JOBS_REJECTED, "outcome" => "invalid").increment(1);
            return Err(e.into());
        }
    };
    if let Some(url) = &job.webhook_url {
        crate::callback::check_url_resolves(state, url).await?;
    }
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("job_id", tracing::field::display(id));
        span.record(
            "trace_id",
            infq_common::trace::trace_id(trace.as_deref(), &id),
        );
    }
    let created_at_ms = now_ms();
    // The message names the work; the record is the truth about who owns
    // it, where its callback goes and how long it is kept, and keeps the
    // message's digest so that no other message runs as this job.
    let msg = JobMessage {
        work: Work::Job { id },
        model: job.spec.name.clone(),
        version: job.spec.version.clone(),
        priority: job.priority,
        inputs: job.inputs,
        created_at_ms,
        deadline_at_ms: job.deadline_ms.map(|d| created_at_ms + d),
        retries: 0,
        webhook_url: None,
        tenant: None,
        retention_ms: None,
        passthrough: Vec::new(),
    };
    let record = NewJob {
        id,
        model: msg.model.clone(),
        version: msg.version.clone(),
        priority: job.priority,
        created_at_ms,
        metadata: job.metadata,
        webhook_url: job.webhook_url,
        tenant: Some(caller.name().to_string()),
        retention_ms: Some(caller.retention_ms()),
        digest: msg.digest(),
        explain: job.explain,
    };
    // The quota check and the record are one round trip.
    let quota = state.tenants.check(&caller.0, &id, 1, true);
    let admission = state.store.create_admitted(&record, &quota).await?;
    crate::auth::answer(caller, admission, 1)?;
    let mut audit = caller
        .audit_job(Event::JobSubmitted, &id)
        .of_model(&msg.model, &msg.version);
    audit.model_sha256 = registry.file_sha256(job.spec).map(str::to_string);
    audit.inputs_sha256 = Some(inputs_sha256(&msg.inputs));
    let traceparent = trace.as_deref().map(infq_common::trace::traceparent);
    state.pacing.note_job();
    if let Err(e) = state.publisher.publish_traced(&msg, traceparent).await {
        let full = matches!(e, crate::publisher::PublishError::Nacked);
        let outcome = if full { "queue_full" } else { "unavailable" };
        metrics::counter!(m::JOBS_REJECTED, "model" => record.model.clone(), "outcome" => outcome)
            .increment(1);
        let t = Transition::failed(JobError::new("not_enqueued", e.to_string()));
        if let Err(se) = state.store.transition(&id, &t).await {
            tracing::warn!(job_id = %id, error = %se, "could not record the failed enqueue");
        }
        return Err(e.into());
    }
    metrics::counter!(m::JOBS_SUBMITTED, "model" => record.model.clone(), "priority" => record.priority.as_str())
        .increment(1);
    state.publisher.audit(vec![audit]).await;
    Ok(Accepted {
        location: format!("/v1/jobs/{id}"),
        body: json!({
            "id": id,
            "status": "queued",
            "model": record.model,
            "version": record.version,
            "priority": record.priority.as_str(),
            "created_at": format_ms(created_at_ms),
        }),
    })
}

/// `GET /v1/jobs/{id}`, optionally long-polling with `?wait=SECONDS`.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Job id"),
           ("wait" = Option<f64>, Query, description = "Seconds to wait for a terminal state")),
    responses(
        (status = 200, description = "The job", body = infq_common::views::JobView),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn get_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let job_id = parse_id(&id, "job")?;
    let wait = q.seconds(state.settings.producer.max_wait_secs)?;
    let read = || async { owned_job(&state, &caller, &job_id, &id).await };
    let rec = poll_until(&state, job_id, wait, read, |r: &JobRecord| {
        r.status.is_terminal()
    })
    .await?;
    Ok(Json(rec.into()))
}

/// `DELETE /v1/jobs/{id}`: erases the job at once, its output and
/// metadata included; if it has not run yet, it never will. `204`.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 204, description = "Erased: output, metadata and delivery log"),
        (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
    ))]
pub async fn delete_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let job_id = parse_id(&id, "job")?;
    owned_job(&state, &caller, &job_id, &id).await?;
    if !state
        .store
        .erase(infq_common::keys::Subject::Job(job_id))
        .await?
    {
        return Err(ApiError::NotFound(format!("job {id}")));
    }
    tracing::info!(job_id = %job_id, tenant = caller.name(), "job erased");
    state
        .publisher
        .audit(vec![caller.audit_job(Event::JobErased, &job_id)])
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/jobs/{id}/cancel`: cancels a job that has not started
/// running; its record stays until its retention ends.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = infq_common::views::JobView),
        (status = 404, description = "No such job of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "Already running or ended", body = crate::openapi::ErrorBody),
    ))]
pub async fn cancel_job(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id = parse_id(&id, "job")?;
    owned_job(&state, &caller, &job_id, &id).await?;
    match state
        .store
        .cancel(
            infq_common::keys::Subject::Job(job_id),
            &[JobStatus::Queued, JobStatus::Retrying],
        )
        .await?
    {
        Cancelled::Yes => {
            state
                .publisher
                .audit(vec![caller.audit_job(Event::JobCancelled, &job_id)])
                .await;
        }
        Cancelled::Missing => return Err(ApiError::NotFound(format!("job {id}"))),
        Cancelled::Refused(st) => {
            return Err(ApiError::Conflict(format!(
                "job {id} is {st}; only queued jobs can be cancelled"
            )))
        }
    }
    let rec = state
        .store
        .get(&job_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id}")))?;
    Ok(Json(rec.into()))
}

/// One model version as `GET /v1/models` describes it.
fn version_view(state: &AppState, m: &ModelSpec) -> serde_json::Value {
    json!({
        "name": m.name,
        "version": m.version,
        "default": state.registry().resolve(&m.name).is_some_and(|d| d.version == m.version),
        "description": m.description,
        "inputs": m.inputs.iter().map(|f| json!({
            "name": f.name, "dtype": "f32", "shape": f.shape, "min": f.min, "max": f.max,
            "description": f.description, "categories": f.categories, "reason": f.reason,
        })).collect::<Vec<_>>(),
        "outputs": m.outputs.iter().map(|o| json!({"name": o.name, "description": o.description})).collect::<Vec<_>>(),
        "width": m.width(),
        "max_batch_size": m.max_batch_size,
        "max_batch_delay_ms": m.max_batch_delay_ms,
        "device": m.device,
        "instances": m.instances,
        "precision": m.precision.as_str(),
        "sha256": state.registry().file_sha256(m),
        "explain": m.explain.as_ref().map(|x| json!({
            "method": "integrated_gradients",
            "steps": x.steps,
            "baseline": x.baseline,
            "output": x.output_index(&m.outputs).map(|i| m.outputs[i].name.clone()),
            "adverse": match x.adverse {
                infq_common::registry::Adverse::Higher => "higher",
                infq_common::registry::Adverse::Lower => "lower",
            },
            "top_k": x.top_k,
            "min_contribution": x.min_contribution,
        })),
    })
}

/// `GET /v1/models`: every model version, its schemas and batching.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    security(("api_key" = [])),
    responses((status = 200, description = "Every model version", body = crate::openapi::ModelList)))]
pub async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<_> = state
        .registry()
        .models()
        .iter()
        .map(|m| version_view(&state, m))
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /v1/models/{name}`: one model, its default version and every
/// version; `name@version` gives that version alone.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    security(("api_key" = [])),
    params(("name" = String, Path, description = "`name`, or `name@version` for one version")),
    responses(
        (status = 200, description = "The model and its versions (one version for `name@version`)", body = crate::openapi::ModelAnswer),
        (status = 404, description = "No such model", body = crate::openapi::ErrorBody),
    ))]
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let registry = state.registry();
    if name.contains('@') {
        let m = registry
            .resolve(&name)
            .ok_or_else(|| ApiError::NotFound(format!("model {name}")))?;
        return Ok(Json(version_view(&state, m)));
    }
    let default = registry
        .resolve(&name)
        .ok_or_else(|| ApiError::NotFound(format!("model {name}")))?;
    let versions: Vec<_> = registry
        .models()
        .iter()
        .filter(|m| m.name == name)
        .map(|m| version_view(&state, m))
        .collect();
    Ok(Json(json!({
        "name": name,
        "default_version": default.version,
        "versions": versions,
    })))
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = crate::openapi::Health)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the broker and Redis can be reached.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Broker and Redis reachable", body = crate::openapi::Readiness),
        (status = 503, description = "A dependency is down; `checks` says which", body = crate::openapi::Readiness),
    ))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let broker = state.publisher.ready().await.is_ok();
    let redis = state.store.ping().await.is_ok();
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let ready = broker && redis;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {"broker": word(broker), "redis": word(redis)},
        })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
              (status = 404, description = "This process has no metrics recorder (the router embedded elsewhere)", body = String, content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    match &state.prometheus {
        Some(h) => h.render().into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n").into_response(),
    }
}

/// Any other path.
pub async fn fallback() -> ApiError {
    ApiError::NotFound("route".into())
}

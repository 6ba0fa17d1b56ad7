//! Bulk batches: `POST /v1/batches`, `GET /v1/batches/{id}`,
//! `GET /v1/batches/{id}/results`, `DELETE /v1/batches/{id}`.
//!
//! An upload is read as it streams in and validated row by row on a
//! blocking thread ([`crate::bulk`]); valid rows wait in a spool file,
//! within the producer's spool budget ([`crate::spool`]). Only when the
//! whole file has passed is the batch recorded and its rows published,
//! `chunk_rows` rows per message (fewer for a model too wide for that many
//! in one message), with publisher confirms; the client gets `202` once
//! the broker holds every chunk. Results are read back chunk by chunk and
//! streamed in input order.

use crate::auth::Caller;
use crate::bulk::{read_rows, Format, SpoolReader};
use crate::error::ApiError;
use crate::idempotency::{self, Accepted};
use crate::lookup::{owned_batch, parse_id};
use crate::record_limit::RecordTooLong;
use crate::spool::{SpoolFile, SpoolRefused};
use crate::state::AppState;
use crate::wait::{poll_until, WaitQuery};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use infq_common::idempotency::{Begin, BodyHasher};
use infq_common::job::{new_job_id, now_ms, JobError, JobStatus, Priority};
use infq_common::message::{ChunkRef, JobMessage};
use infq_common::registry::ModelSpec;
use infq_common::results::{parse_chunk, NamedOutputs, RowResult};
use infq_common::store::{BatchRecord, Cancelled, NewBatch};
use infq_common::views::BatchView;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek};
use std::sync::Arc;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Query of `POST /v1/batches`.
#[derive(Deserialize)]
pub struct CreateQuery {
    /// `name` or `name@version`.
    model: Option<String>,
    /// `csv` or `jsonl`; else the `Content-Type` decides.
    format: Option<String>,
    /// Where `batch.completed` is sent.
    webhook_url: Option<String>,
}

/// Reads from an upload stream, hashing what passes, and failing once more
/// than `limit` bytes came.
struct UploadRead<R> {
    inner: R,
    left: u64,
    limit: u64,
    hash: BodyHasher,
}

impl<R: Read> Read for UploadRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("upload over the limit of {} bytes", self.limit),
            ));
        }
        self.left -= n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// How long a client whose upload found the spool budget spent waits
/// before trying again: other uploads end and give theirs back.
const SPOOL_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer to an upload that could not be read to its end.
fn upload_error(e: std::io::Error, limit: u64) -> ApiError {
    if let Some(too_long) = RecordTooLong::of(&e) {
        return ApiError::LimitExceeded(too_long.to_string());
    }
    match SpoolRefused::of(&e) {
        Some(r @ SpoolRefused::TooLarge { .. }) => return ApiError::LimitExceeded(r.to_string()),
        Some(r @ SpoolRefused::Busy { .. }) => {
            return ApiError::TooMany {
                message: r.to_string(),
                retry_after: SPOOL_RETRY_AFTER,
            }
        }
        None => {}
    }
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        return ApiError::TooLarge(limit as usize);
    }
    ApiError::Malformed(format!("reading the upload failed: {e}"))
}

/// An error response that also closes the connection: the rest of the
/// upload is not read, so the connection cannot carry another request.
fn closing(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// `POST /v1/batches?model=...`: stream, validate, spool, publish, `202`.
/// With an `Idempotency-Key`, a repeat of the same file gets the original
/// answer and no second batch.
#[utoipa::path(post, path = "/v1/batches", tag = "batches",
    security(("api_key" = [])),
    params(("model" = String, Query, description = "`name` or `name@version`"),
           ("format" = Option<String>, Query, description = "`csv` or `jsonl`; else the Content-Type decides"),
           ("webhook_url" = Option<String>, Query, description = "Where `batch.completed` is sent"),
           ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same bytes returns the original answer")),
    request_body(content = String, description = "CSV with a header row naming the features, or JSONL: one row per line", content_type = "text/csv"),
    responses(
        (status = 202, description = "Every row is with the broker", body = infq_common::views::BatchView),
        (status = 401, description = "No valid API key", body = crate::openapi::ErrorBody),
        (status = 413, description = "Over the size, record or row limit, or the spool space one upload may hold", body = crate::openapi::ErrorBody),
        (status = 422, description = "Bad rows (each listed with its line) or unknown model", body = crate::openapi::ErrorBody),
        (status = 429, description = "Over the tenant's rate or quota, or the spool space is taken by other uploads (with Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "Broker or Redis unavailable", body = crate::openapi::ErrorBody),
    ))]
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The work runs to its end even if the client goes away, so a batch is
    // never left half published and no key is left pending.
    let task = tokio::spawn(create_idempotent(state, caller, query, headers, body));
    match task.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => closing(e),
        Err(e) => closing(ApiError::Internal(format!("upload task: {e}"))),
    }
}

async fn create_idempotent(
    state: Arc<AppState>,
    caller: Caller,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(key) = idempotency::key(&headers)? else {
        let (accepted, _) = create(state, &caller, query, headers, body).await?;
        return Ok(accepted.response(false));
    };
    let scope = format!("{}/batches", caller.name());
    let redis_key = state.idempotency.redis_key(&scope, key);
    // The body's hash is known only once it is read, so the key is claimed
    // first and compared after.
    match state
        .idempotency
        .begin(&redis_key, "", idempotency::PENDING_BATCH_MS)
        .await?
    {
        Begin::New(claimed) => match create(state.clone(), &caller, query, headers, body).await {
            Ok((accepted, hash)) => {
                idempotency::remember(&state, &claimed, &hash, &accepted).await;
                Ok(accepted.response(false))
            }
            Err(e) => {
                let _ = state.idempotency.abandon(&claimed).await;
                Err(e)
            }
        },
        Begin::Pending => Err(idempotency::in_progress()),
        Begin::Mismatch => Err(idempotency::mismatch()),
        Begin::Done {
            body: stored,
            response,
            ..
        } => {
            let hash = hash_upload(&state, body).await?;
            if hash != stored {
                return Err(idempotency::mismatch());
            }
            Ok(Accepted::stored("/v1/batches", &response)?.response(true))
        }
    }
}

/// Reads a whole upload only to hash it (a repeat of a finished request).
async fn hash_upload(state: &AppState, body: Body) -> Result<String, ApiError> {
    let limit = state.settings.producer.max_upload_bytes;
    let mut hash = BodyHasher::default();
    let mut seen = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(part) = stream.next().await {
        let bytes =
            part.map_err(|e| ApiError::Malformed(format!("reading the upload failed: {e}")))?;
        seen += bytes.len() as u64;
        if seen > limit {
            return Err(ApiError::TooLarge(limit as usize));
        }
        hash.update(&bytes);
    }
    Ok(hash.finish())
}

/// Reads, validates, records and publishes an upload; returns the answer
/// and the hash of the bytes read.
async fn create(
    state: Arc<AppState>,
    caller: &Caller,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(Accepted, String), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let field = |f: &str, m: String| ApiError::Invalid(vec![crate::detail::Detail::field(f, m)]);
    let model = q
        .model
        .ok_or_else(|| field("model", "the query parameter `model` is required".into()))?;
    let spec = state
        .registry()
        .resolve(&model)
        .ok_or_else(|| ApiError::UnknownModel(model.clone()))?
        .clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format =
        Format::detect(q.format.as_deref(), content_type).map_err(|m| field("format", m))?;
    let webhook_url = match q.webhook_url.as_deref() {
        None => None,
        Some(u) => {
            let mut problems = Vec::new();
            let url = crate::validate::webhook_url(u, state.guard.as_ref(), &mut problems);
            if !problems.is_empty() {
                return Err(ApiError::Invalid(problems));
            }
            if let Some(url) = &url {
                crate::callback::check_url_resolves(&state, url).await?;
            }
            url
        }
    };

    // The upload counts against the rate before a byte is read, and its
    // rows against the queued limit once they are counted.
    let id = new_job_id();
    crate::auth::admit(&state, caller, &id, 0, true).await?;
    let cfg = &state.settings.producer;
    let file = match &cfg.spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ApiError::Internal(format!("cannot create a spool file: {e}")))?;
    // The file grows within the producer's spool budget, and gives its
    // share back when dropped, however the upload ends.
    let spool = SpoolFile::new(file, state.spool.lease(caller.name()));
    let upload = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let limit = cfg.max_upload_bytes;
    let max_rows = cfg.max_batch_rows;
    let parse_spec = spec.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let mut input = UploadRead {
            inner: SyncIoBridge::new(upload),
            left: limit,
            limit,
            hash: BodyHasher::default(),
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 16, spool);
        let report = read_rows(format, &mut input, &parse_spec, &mut out, max_rows)?;
        let mut spool = out.into_inner().map_err(|e| e.into_error())?;
        spool.rewind()?;
        Ok::<_, std::io::Error>((report, spool, input.hash.finish()))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("upload reader: {e}")))?;
    let (report, spool, hash) = parsed.map_err(|e| upload_error(e, limit))?;
    if let Some(limit) = report.over_limit {
        return Err(ApiError::LimitExceeded(limit));
    }
    if !report.problems.is_empty() {
        metrics::counter!(infq_common::metrics::JOBS_REJECTED, "model" => spec.name.clone(), "outcome" => "invalid")
            .increment(1);
        return Err(ApiError::InvalidFile {
            problems: report.problems,
            truncated: report.truncated,
        });
    }

    let created_at_ms = now_ms();
    // Fewer rows per chunk for a wide model, so every chunk fits in a
    // message a worker decodes.
    let chunk_rows = spec.chunk_rows(cfg.chunk_rows);
    let chunks = report.rows.div_ceil(u64::from(chunk_rows));
    let chunks = u32::try_from(chunks).map_err(|_| {
        ApiError::Invalid(vec![crate::detail::Detail::field(
            "rows",
            "too many chunks",
        )])
    })?;
    crate::auth::admit(&state, caller, &id, report.rows, false).await?;
    let batch = NewBatch {
        id,
        model: spec.name.clone(),
        version: spec.version.clone(),
        total: report.rows,
        chunks,
        chunk_rows,
        created_at_ms,
        webhook_url,
        tenant: Some(caller.name().to_string()),
        retention_ms: Some(caller.retention_ms()),
        outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
    };
    match state.store.create_batch(&batch).await {
        Ok(true) => {}
        // The rows were counted: give them back (a batch failed later
        // gives them back through its record).
        other => {
            if let Err(e) = state.tenants.release(caller.name(), &id).await {
                tracing::warn!(batch_id = %id, error = %e, "could not give back the quota of a batch not recorded");
            }
            other?;
            return Err(ApiError::Internal(format!("batch id {id} exists")));
        }
    }
    if let Err(e) = publish_chunks(&state, &spec, &batch, spool).await {
        let err = JobError::new("not_enqueued", e.to_string());
        if let Err(se) = state.store.fail_batch(&id, &err).await {
            tracing::warn!(batch_id = %id, error = %se, "could not record the failed enqueue");
        }
        return Err(e);
    }
    metrics::counter!(infq_common::metrics::JOBS_SUBMITTED, "model" => spec.name.clone(), "priority" => Priority::Bulk.as_str())
        .increment(report.rows);
    tracing::info!(batch_id = %id, rows = report.rows, chunks, "batch accepted");
    // Every chunk is with the broker: the answer is built from what is
    // known, since a failed read now must not turn an accepted batch into
    // an error the client would retry.
    let rec = BatchRecord {
        id,
        status: JobStatus::Queued,
        model: batch.model,
        version: batch.version,
        total: batch.total,
        chunks: batch.chunks,
        chunk_rows: batch.chunk_rows,
        done_chunks: 0,
        succeeded: 0,
        failed: 0,
        created_at_ms,
        started_at_ms: None,
        finished_at_ms: None,
        error: None,
        webhook_url: batch.webhook_url,
        reopened: 0,
        tenant: batch.tenant,
        erased: false,
        outputs: batch.outputs,
    };
    let body = serde_json::to_value(BatchView::from(rec))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        Accepted {
            location: format!("/v1/batches/{id}"),
            body,
        },
        hash,
    ))
}

/// Publishes the spooled rows as chunk messages, `publish_window` awaiting
/// their confirms at once; the first failure stops the upload.
async fn publish_chunks(
    state: &Arc<AppState>,
    spec: &ModelSpec,
    batch: &NewBatch,
    spool: SpoolFile<std::fs::File>,
) -> Result<(), ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<f32>>>(64);
    let width = spec.width();
    let rows = batch.total;
    let chunk_rows = batch.chunk_rows as usize;
    let reader = tokio::task::spawn_blocking(move || {
        let mut r = SpoolReader::new(spool, width, rows);
        loop {
            let next = r.next_chunk(chunk_rows).transpose();
            let Some(item) = next else { break };
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
    });
    let window = state.settings.producer.publish_window.max(1);
    let result = tokio_stream_of(rx)
        .enumerate()
        .map(|(index, inputs)| async move {
            let inputs = inputs.map_err(|e| ApiError::Internal(format!("spool: {e}")))?;
            let msg = JobMessage {
                id: batch.id,
                model: batch.model.clone(),
                version: batch.version.clone(),
                priority: Priority::Bulk,
                inputs,
                created_at_ms: batch.created_at_ms,
                deadline_at_ms: None,
                chunk: Some(ChunkRef {
                    index: index as u32,
                    first_row: index as u64 * batch.chunk_rows as u64 + 1,
                }),
                retries: 0,
                webhook_url: None,
                tenant: None,
                retention_ms: None,
            };
            // Noted before it is published, so no other message for this
            // place of the batch can run.
            state
                .store
                .note_chunk_digest(&batch.id, index as u32, &msg.digest())
                .await?;
            state.publisher.publish(&msg).await.map_err(ApiError::from)
        })
        .buffer_unordered(window)
        .try_for_each(|()| async { Ok(()) })
        .await;
    reader.abort();
    result
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

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
    if !state.store.erase(&state.store.batch_key(&batch_id)).await? {
        return Err(ApiError::NotFound(format!("batch {id}")));
    }
    tracing::info!(batch_id = %batch_id, tenant = caller.name(), "batch erased");
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
    let key = state.store.batch_key(&batch_id);
    match state
        .store
        .cancel(&key, &batch_id, &[JobStatus::Queued, JobStatus::Running])
        .await?
    {
        Cancelled::Yes => {}
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

/// Query of `GET /v1/batches/{id}/results`.
#[derive(Deserialize)]
pub struct ResultsQuery {
    /// `csv` or `jsonl`; else the `Accept` header decides (CSV by default).
    format: Option<String>,
}

/// Chunk results fetched from Redis per round trip while streaming.
const CHUNKS_PER_READ: u32 = 32;

/// `GET /v1/batches/{id}/results`: every row in input order, as CSV
/// (`row,<outputs...>,error`) or JSONL (`{"row", "output"}` or
/// `{"row", "error"}`), streamed.
#[utoipa::path(get, path = "/v1/batches/{id}/results", tag = "batches",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id"),
           ("format" = Option<String>, Query, description = "`csv` or `jsonl`; else the Accept header decides (CSV by default)")),
    responses(
        (status = 200, description = "Every row in input order: CSV `row,<outputs...>,error`, or JSONL `{\"row\", \"output\"}` / `{\"row\", \"error\"}`", body = String, content_type = "text/csv"),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "The batch has not ended", body = crate::openapi::ErrorBody),
    ))]
pub async fn batch_results(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let batch_id = parse_id(&id, "batch")?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = match q.format.as_deref() {
        Some(f) => Format::detect(Some(f), None),
        None => Ok(match accept {
            Some(a) if a.contains("ndjson") || a.contains("jsonl") || a.contains("jsonlines") => {
                Format::Jsonl
            }
            _ => Format::Csv,
        }),
    }
    .map_err(|m| ApiError::Invalid(vec![crate::detail::Detail::field("format", m)]))?;
    let rec = owned_batch(&state, &caller, &batch_id, &id).await?;
    if !rec.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "batch {id} is {}; its results are ready once it finishes (GET /v1/batches/{id}?wait=60 waits for that)",
            rec.status
        )));
    }
    // The names recorded with the batch; a record from before they were
    // falls back to the registry's version of today.
    let outputs = if rec.outputs.is_empty() {
        let address = format!("{}@{}", rec.model, rec.version);
        state
            .registry()
            .resolve(&address)
            .map(|s| s.outputs.clone())
            .unwrap_or_default()
    } else {
        rec.outputs
            .iter()
            .map(|name| infq_common::registry::OutputSpec {
                name: name.clone(),
                description: String::new(),
            })
            .collect()
    };
    let render = Renderer {
        format,
        outputs: Arc::new(outputs),
        chunk_rows: u64::from(rec.chunk_rows),
        total: rec.total,
        missing: format!("not run: batch {}", rec.status),
    };
    let header_line = render.header();
    let store = state.store.clone();
    let chunks = rec.chunks;
    let stream = futures_util::stream::unfold(0u32, move |from| {
        let store = store.clone();
        let render = render.clone();
        async move {
            if from >= chunks {
                return None;
            }
            let to = (from + CHUNKS_PER_READ).min(chunks);
            let part = match store.get_chunks(&batch_id, from, to).await {
                Ok(texts) => render.chunks(from, &texts),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            Some((part, to))
        }
    });
    let body = futures_util::stream::once(async move { Ok(header_line) }).chain(stream);
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response())
}

/// Turns stored chunks into lines of the chosen format.
#[derive(Clone)]
struct Renderer {
    format: Format,
    outputs: Arc<Vec<infq_common::registry::OutputSpec>>,
    chunk_rows: u64,
    total: u64,
    missing: String,
}

#[derive(Serialize)]
struct JsonlRow<'a> {
    row: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<NamedOutputs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl Renderer {
    fn header(&self) -> Vec<u8> {
        match self.format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                let mut cols = vec!["row".to_string()];
                cols.extend(self.outputs.iter().map(|o| o.name.clone()));
                cols.push("error".into());
                let _ = w.write_record(&cols);
                w.into_inner().unwrap_or_default()
            }
            Format::Jsonl => Vec::new(),
        }
    }

    /// Renders chunks `from..` whose stored texts are `texts`.
    fn chunks(&self, from: u32, texts: &[Option<String>]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(texts.len() * self.chunk_rows as usize * 24);
        let mut csv = csv::WriterBuilder::new().from_writer(Vec::new());
        for (i, text) in texts.iter().enumerate() {
            let index = u64::from(from) + i as u64;
            let first = index * self.chunk_rows + 1;
            let rows = self.chunk_rows.min(self.total + 1 - first);
            let parsed = match text {
                Some(t) => parse_chunk(t).map_err(std::io::Error::other)?,
                None => Vec::new(),
            };
            for r in 0..rows {
                let row = first + r;
                let result = parsed.get(r as usize);
                let (values, error): (Option<&[f32]>, Option<&str>) = match result {
                    Some(RowResult::Values(v)) => (Some(v), None),
                    Some(RowResult::Error(e)) => (None, Some(e)),
                    None => (None, Some(&self.missing)),
                };
                match self.format {
                    Format::Jsonl => {
                        let line = JsonlRow {
                            row,
                            output: values.map(|v| NamedOutputs(&self.outputs, v)),
                            error,
                        };
                        serde_json::to_writer(&mut out, &line)?;
                        out.push(b'\n');
                    }
                    Format::Csv => {
                        let mut rec = Vec::with_capacity(self.outputs.len() + 2);
                        rec.push(row.to_string());
                        for k in 0..self.outputs.len() {
                            rec.push(
                                values
                                    .and_then(|v| v.get(k))
                                    .map(|x| x.to_string())
                                    .unwrap_or_default(),
                            );
                        }
                        rec.push(error.unwrap_or("").to_string());
                        csv.write_record(&rec)?;
                    }
                }
            }
        }
        if self.format == Format::Csv {
            out = csv.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::registry::OutputSpec;

    fn renderer(format: Format) -> Renderer {
        Renderer {
            format,
            outputs: Arc::new(vec![OutputSpec {
                name: "p".into(),
                description: String::new(),
            }]),
            chunk_rows: 2,
            total: 5,
            missing: "not run: batch cancelled".into(),
        }
    }

    #[test]
    fn csv_rows_in_input_order_with_errors() {
        let r = renderer(Format::Csv);
        let texts = vec![
            Some("[[0.25],[0.5]]".to_string()),
            Some(r#"[[0.125],"bad, row"]"#.to_string()),
            None,
        ];
        let out = String::from_utf8(r.chunks(0, &texts).unwrap()).unwrap();
        assert_eq!(String::from_utf8(r.header()).unwrap(), "row,p,error\n");
        assert_eq!(
            out,
            "1,0.25,\n2,0.5,\n3,0.125,\n4,,\"bad, row\"\n5,,not run: batch cancelled\n"
        );
    }

    #[test]
    fn jsonl_rows_carry_row_numbers() {
        let r = renderer(Format::Jsonl);
        let out = String::from_utf8(r.chunks(2, &[Some("[[0.75]]".into())]).unwrap()).unwrap();
        assert_eq!(out, "{\"row\":5,\"output\":{\"p\":0.75}}\n");
        assert!(r.header().is_empty());
        let bad = r.chunks(0, &[Some("not json".into())]);
        assert!(bad.is_err());
    }
}

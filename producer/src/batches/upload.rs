//! `POST /v1/batches`: an upload is read as it streams in and validated
//! row by row on a blocking thread ([`crate::bulk`]); valid rows wait in a
//! spool file, within the producer's spool budget ([`crate::spool`]). Only
//! when the whole file has passed is the batch recorded and its rows
//! published ([`super::publish`]); the client gets `202` once the broker
//! holds every chunk.

use super::publish::publish_chunks;
use crate::auth::Caller;
use crate::bulk::{
    parse_delimiter, parse_passthrough, read_parquet, read_upload, Format, Passthrough,
};
use crate::error::ApiError;
use crate::idempotency::{self, Accepted};
use crate::record_limit::RecordTooLong;
use crate::spool::{SpoolFile, SpoolRefused};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use infq_common::audit::Event;
use infq_common::idempotency::Begin;
use infq_common::job::{new_job_id, now_ms, JobError, JobStatus, Priority};
use infq_common::sha256::Hasher;
use infq_common::store::{BatchRecord, NewBatch};
use infq_common::views::BatchView;
use serde::Deserialize;
use std::io::{Read, Seek};
use std::sync::Arc;
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Query of `POST /v1/batches`.
#[derive(Deserialize, serde::Serialize)]
pub struct CreateQuery {
    /// `name` or `name@version`.
    model: Option<String>,
    /// `csv`, `jsonl` or `parquet`; else the `Content-Type` decides.
    format: Option<String>,
    /// Where `batch.completed` is sent.
    webhook_url: Option<String>,
    /// Also send `batch.progress` events while it runs. (Left out of the
    /// request's idempotency hash when not asked, like the interval, so
    /// the hashes of earlier requests stay as they were.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    progress: bool,
    /// The least time between two progress events (asks for them too).
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_interval_secs: Option<u64>,
    /// CSV field separator: `,`, `;`, `|` or `tab`; else found from the
    /// header line.
    delimiter: Option<String>,
    /// Explain every row's score (reason codes).
    #[serde(default)]
    explain: bool,
    /// The client's own columns to carry through to the results
    /// (`loan_id,branch`).
    passthrough: Option<String>,
}

/// Reads from an upload stream, hashing what passes, and failing once more
/// than `limit` bytes came.
struct UploadRead<R> {
    inner: R,
    left: u64,
    limit: u64,
    hash: Hasher,
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
           ("format" = Option<String>, Query, description = "`csv`, `jsonl` or `parquet`; else the Content-Type decides (`application/vnd.apache.parquet` for Parquet)"),
           ("webhook_url" = Option<String>, Query, description = "Where `batch.completed` is sent"),
           ("progress" = Option<bool>, Query, description = "Also send `batch.progress` events (counts, rate, ETA) to `webhook_url` while the batch runs, at most one every `progress_interval_secs`"),
           ("progress_interval_secs" = Option<u64>, Query, description = "The least time between two `batch.progress` events, 1 to 86400 (default 30); asks for them too"),
           ("explain" = Option<bool>, Query, description = "Explain every row's score: attributions and reason codes (the model needs an `explain` section)"),
           ("passthrough" = Option<String>, Query, description = "The client's own columns (`loan_id,branch`) to carry through to every result row, next to `row`; at most 16, values of at most 256 bytes"),
           ("delimiter" = Option<String>, Query, description = "CSV field separator: `,`, `;`, `|` or `tab`; else the header line's most frequent of them. With `;`, decimals may use a comma"),
           ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same bytes returns the original answer")),
    request_body(content = String, description = "CSV with a header row naming the features, JSONL (one row per line), or Apache Parquet (columns named as CSV's)", content_type = "text/csv"),
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
    // What the request asks besides its file: the same file with other
    // parameters is another request.
    let asked = query.as_ref().ok().map(|Query(q)| {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        asked_of(q, content_type)
    });
    // The body's hash is known only once it is read, so the key is claimed
    // first and compared after.
    match state
        .idempotency
        .begin(&redis_key, "", idempotency::PENDING_BATCH_MS)
        .await?
    {
        Begin::New(claimed) => match create(state.clone(), &caller, query, headers, body).await {
            Ok((accepted, file)) => {
                let hash = request_hash(asked.as_deref(), &file);
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
            let file = hash_upload(&state, body).await?;
            // A key stored by an earlier release holds the file's hash
            // alone.
            let same = stored == request_hash(asked.as_deref(), &file)
                || (!stored.starts_with(REQUEST_HASH_PREFIX) && stored == file);
            if !same {
                return Err(idempotency::mismatch());
            }
            Ok(Accepted::stored("/v1/batches", &response)?.response(true))
        }
    }
}

/// Marks a stored request hash of parameters and file (see
/// [`request_hash`]).
const REQUEST_HASH_PREFIX: &str = "q1:";

/// An upload's parameters, canonical: the query's fields by name, and the
/// format the `Content-Type` picks when the query names none.
fn asked_of(q: &CreateQuery, content_type: Option<&str>) -> String {
    let mut v = serde_json::to_value(q).expect("a query serialises");
    if q.format.is_none() {
        if let Ok(f) = Format::detect(None, content_type) {
            v["format"] = format!("{f:?}").to_ascii_lowercase().into();
        }
    }
    v.to_string()
}

/// What an idempotent upload is compared by: its parameters (see
/// [`asked_of`]) and the SHA-256 of its file.
fn request_hash(asked: Option<&str>, file: &str) -> String {
    let mut h = Hasher::default();
    h.update(asked.unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(file.as_bytes());
    format!("{REQUEST_HASH_PREFIX}{}", h.finish())
}

/// Reads a whole upload only to hash it (a repeat of a finished request).
async fn hash_upload(state: &AppState, body: Body) -> Result<String, ApiError> {
    let limit = state.settings.producer.max_upload_bytes;
    let mut hash = Hasher::default();
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

/// What an upload is checked against before a byte of it is read.
struct Unread {
    spec: infq_common::registry::ModelSpec,
    format: Format,
    delimiter: Option<u8>,
    explain: Option<infq_common::explain::ExplainPlan>,
    passthrough: Vec<String>,
    webhook_url: Option<String>,
    progress_ms: Option<u64>,
    id: infq_common::job::JobId,
}

/// The checks of an upload that need none of its bytes: the query, the
/// format, the callback URL, the caller's rate.
async fn before_reading(
    state: &Arc<AppState>,
    caller: &Caller,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Unread, ApiError> {
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
    let explain = if q.explain {
        crate::validate::explainable(&spec).map_err(|p| ApiError::Invalid(vec![p]))?;
        infq_common::explain::ExplainPlan::of(&spec)
    } else {
        None
    };
    let passthrough = q
        .passthrough
        .as_deref()
        .map(parse_passthrough)
        .transpose()
        .map_err(|m| field("passthrough", m))?
        .unwrap_or_default();
    // A result line's columns are the model's outputs and reasons too.
    if let Some(n) = passthrough.iter().find(|n| {
        spec.outputs.iter().any(|o| &o.name == *n)
            || n.strip_prefix("reason_")
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return Err(field(
            "passthrough",
            format!("`{n}` is a column of the results; rename it"),
        ));
    }
    let delimiter = q
        .delimiter
        .as_deref()
        .map(parse_delimiter)
        .transpose()
        .map_err(|m| field("delimiter", m))?;
    let webhook_url = match q.webhook_url.as_deref() {
        None => None,
        Some(u) => {
            let mut problems = Vec::new();
            let url = crate::validate::webhook_url(u, state.guard.as_ref(), &mut problems);
            if !problems.is_empty() {
                return Err(ApiError::Invalid(problems));
            }
            if let Some(url) = &url {
                crate::callback::check_url_resolves(state, url).await?;
            }
            url
        }
    };
    let progress_ms = progress_interval(q.progress, q.progress_interval_secs, &webhook_url)
        .map_err(|m| field("progress_interval_secs", m))?;

    // The upload counts against the rate before a byte is read, and its
    // rows against the queued limit once they are counted.
    let id = new_job_id();
    crate::auth::admit(state, caller, &id, 0, true).await?;
    Ok(Unread {
        spec,
        format,
        delimiter,
        explain,
        passthrough,
        webhook_url,
        progress_ms,
        id,
    })
}

/// Longest interval between two progress events a batch may ask for.
pub const MAX_PROGRESS_SECS: u64 = 86_400;
/// The interval when a batch asks for progress without one.
const DEFAULT_PROGRESS_SECS: u64 = 30;

/// The interval (ms) between progress events a batch asked for with
/// `progress` and `progress_interval_secs`, if it did; they go to its
/// `webhook_url`, so it needs one.
fn progress_interval(
    asked: bool,
    secs: Option<u64>,
    webhook_url: &Option<String>,
) -> Result<Option<u64>, String> {
    if !asked && secs.is_none() {
        return Ok(None);
    }
    let secs = secs.unwrap_or(DEFAULT_PROGRESS_SECS);
    if !(1..=MAX_PROGRESS_SECS).contains(&secs) {
        return Err(format!(
            "the interval between progress events is 1 to {MAX_PROGRESS_SECS} seconds, not {secs}"
        ));
    }
    if webhook_url.is_none() {
        return Err("progress events go to the batch's `webhook_url`: give one".into());
    }
    Ok(Some(secs * 1000))
}

/// How much of an upload refused before it was read is read anyway, and
/// for how long at most: enough for a client that sends the whole body
/// before reading the answer (most do) to get the refusal, not a broken
/// pipe, for any but large files, whose connection is closed instead.
const DISCARD_BYTES: usize = 8 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops the start of an upload refused unread (see
/// [`DISCARD_BYTES`]).
async fn discard(body: Body) {
    let mut data = body.into_data_stream();
    let mut seen = 0;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while let Some(Ok(chunk)) = data.next().await {
            seen += chunk.len();
            if seen > DISCARD_BYTES {
                break;
            }
        }
    })
    .await;
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
    let Unread {
        spec,
        format,
        delimiter,
        explain,
        passthrough,
        webhook_url,
        progress_ms,
        id,
    } = match before_reading(&state, caller, query, &headers).await {
        Ok(u) => u,
        Err(e) => {
            // A client that asked to hear first (`Expect: 100-continue`)
            // has not sent the body, and is not sent a `100` for it.
            if !headers.contains_key(header::EXPECT) {
                discard(body).await;
            }
            return Err(e);
        }
    };
    let cfg = &state.settings.producer;
    let file = match &cfg.spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ApiError::Internal(format!("cannot create a spool file: {e}")))?;
    // The file grows within the producer's spool budget, and gives its
    // share back when dropped, however the upload ends.
    let spool = SpoolFile::new(file, state.spool.lease(caller.name()));
    // The passthrough values wait in a spool of their own, within the same
    // budgets.
    let ids = if passthrough.is_empty() {
        None
    } else {
        let file = match &cfg.spool_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|e| ApiError::Internal(format!("cannot create a spool file: {e}")))?;
        Some(SpoolFile::new(file, state.spool.lease(caller.name())))
    };
    // A Parquet file is spooled whole before it is read (its footer says
    // where its columns are), within the same budgets.
    let whole = if format == Format::Parquet {
        let file = match &cfg.spool_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|e| ApiError::Internal(format!("cannot create a spool file: {e}")))?;
        Some(SpoolFile::new(file, state.spool.lease(caller.name())))
    } else {
        None
    };
    let names = passthrough.clone();
    let upload = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let limit = cfg.max_upload_bytes;
    let max_rows = cfg.max_batch_rows;
    let parse_spec = spec.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let mut input = UploadRead {
            inner: SyncIoBridge::new(upload),
            left: limit,
            limit,
            hash: Hasher::default(),
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 16, spool);
        let mut ids_out = ids.map(|f| std::io::BufWriter::with_capacity(1 << 16, f));
        let report = {
            let mut carry = match ids_out.as_mut() {
                Some(w) => Passthrough::new(&names, w),
                None => Passthrough::none(),
            };
            match whole {
                Some(whole) => {
                    let mut w = std::io::BufWriter::with_capacity(1 << 16, whole);
                    std::io::copy(&mut input, &mut w)?;
                    let whole = w.into_inner().map_err(|e| e.into_error())?;
                    // Read through a second handle; `whole` holds the
                    // budget until the rows are spooled.
                    let file = whole.file().try_clone()?;
                    read_parquet(file, &parse_spec, &mut out, &mut carry, max_rows)?
                }
                None => read_upload(
                    format,
                    delimiter,
                    &mut input,
                    &parse_spec,
                    &mut out,
                    &mut carry,
                    max_rows,
                )?,
            }
        };
        let mut spool = out.into_inner().map_err(|e| e.into_error())?;
        spool.rewind()?;
        let ids = match ids_out {
            Some(w) => {
                let mut f = w.into_inner().map_err(|e| e.into_error())?;
                f.rewind()?;
                Some(f)
            }
            None => None,
        };
        Ok::<_, std::io::Error>((report, spool, ids, input.hash.finish()))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("upload reader: {e}")))?;
    let (report, spool, ids, hash) = parsed.map_err(|e| upload_error(e, limit))?;
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
    let chunk_rows = spec.chunk_rows_carrying(cfg.chunk_rows, passthrough.len());
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
        progress_ms,
        tenant: Some(caller.name().to_string()),
        retention_ms: Some(caller.retention_ms()),
        outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
        explain,
        passthrough,
        lineage: {
            let registry = state.registry();
            infq_common::store::Lineage {
                model_sha256: registry.file_sha256(&spec).map(str::to_string),
                registry_sha256: Some(registry.digest().to_string()),
                infq_version: Some(infq_common::lineage::INFQ_VERSION.to_string()),
            }
        },
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
    if let Err(e) = publish_chunks(&state, &spec, &batch, spool, ids).await {
        let err = JobError::new("not_enqueued", e.to_string());
        if let Err(se) = state.store.fail_batch(&id, &err).await {
            tracing::warn!(batch_id = %id, error = %se, "could not record the failed enqueue");
        }
        return Err(e);
    }
    metrics::counter!(infq_common::metrics::JOBS_SUBMITTED, "model" => spec.name.clone(), "priority" => Priority::Bulk.as_str())
        .increment(report.rows);
    tracing::info!(batch_id = %id, rows = report.rows, chunks, "batch accepted");
    let mut audit = caller
        .audit_batch(Event::BatchSubmitted, &id)
        .of_model(&batch.model, &batch.version);
    audit.model_sha256 = batch.lineage.model_sha256.clone();
    // The file as uploaded: `sha256sum` of the client's copy.
    audit.inputs_sha256 = Some(hash.clone());
    audit.rows = Some(report.rows);
    state.publisher.audit(vec![audit]).await;
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
        progress_ms: batch.progress_ms,
        progress_seq: 0,
        reopened: 0,
        tenant: batch.tenant,
        erased: false,
        outputs: batch.outputs,
        explain: batch.explain,
        passthrough: batch.passthrough,
        lineage: batch.lineage,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str) -> CreateQuery {
        let uri: axum::http::Uri = format!("/v1/batches?{text}").parse().unwrap();
        Query::<CreateQuery>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn a_request_is_its_parameters_and_its_file() {
        let plain = asked_of(&query("model=m"), Some("text/csv"));
        // Order and a named default do not matter.
        assert_eq!(
            plain,
            asked_of(&query("format=csv&model=m"), Some("text/csv"))
        );
        assert_eq!(plain, asked_of(&query("model=m"), None));
        for other in [
            "model=m&explain=true",
            "model=m@2",
            "model=m&passthrough=id",
            "model=m&delimiter=%3B",
            "model=m&webhook_url=https://example.com/h",
            "model=m&progress=true",
            "model=m&progress_interval_secs=30",
        ] {
            assert_ne!(plain, asked_of(&query(other), None), "{other}");
        }
        assert_ne!(
            plain,
            asked_of(&query("model=m"), Some("application/x-ndjson"))
        );
        let a = request_hash(Some(&plain), "f1");
        assert!(a.starts_with(REQUEST_HASH_PREFIX));
        assert_ne!(a, request_hash(Some(&plain), "f2"));
        assert_ne!(a, request_hash(None, "f1"));
        // Not asking for progress leaves the hash as it was before
        // progress events existed.
        assert_eq!(
            asked_of(&query("model=m&progress=false"), Some("text/csv")),
            plain
        );
        assert_eq!(
            plain,
            r#"{"delimiter":null,"explain":false,"format":"csv","model":"m","passthrough":null,"webhook_url":null}"#
        );
    }

    #[test]
    fn progress_events_need_a_url_and_a_sane_interval() {
        let url = Some("https://hooks.example.com/h".to_string());
        assert_eq!(progress_interval(false, None, &url), Ok(None));
        assert_eq!(progress_interval(false, None, &None), Ok(None));
        assert_eq!(progress_interval(true, None, &url), Ok(Some(30_000)));
        assert_eq!(progress_interval(false, Some(5), &url), Ok(Some(5_000)));
        assert_eq!(
            progress_interval(true, Some(86_400), &url),
            Ok(Some(86_400_000))
        );
        for bad in [0, 86_401, u64::MAX] {
            let e = progress_interval(true, Some(bad), &url).unwrap_err();
            assert!(e.contains("1 to 86400 seconds"), "{bad}: {e}");
        }
        let e = progress_interval(true, None, &None).unwrap_err();
        assert!(e.contains("webhook_url"), "{e}");
    }
}

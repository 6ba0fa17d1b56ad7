//! `GET /v1/batches/{id}/results`: a finished batch's results, read back
//! chunk by chunk and streamed in input order as CSV or JSONL; with
//! `partial=true`, the rows a running batch has finished so far.

use super::parquet_out::{ParquetSink, RowView};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::lookup::{owned_batch, parse_id};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use infq_common::explain::{ExplainPlan, Explanation};
use infq_common::results::{parse_chunk, NamedOutputs, RowResult};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Query of `GET /v1/batches/{id}/results`.
#[derive(Deserialize)]
pub struct ResultsQuery {
    /// `csv`, `jsonl` or `parquet`; else the `Accept` header decides (CSV
    /// by default).
    format: Option<String>,
    /// `true`: a batch that is still running answers with the rows it has
    /// finished so far instead of `409`.
    partial: Option<bool>,
}

/// The formats results come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFormat {
    /// A header line, then a line per row.
    Csv,
    /// A JSON object per line.
    Jsonl,
    /// Apache Parquet (see [`super::parquet_out`]).
    Parquet,
}

impl ResultsFormat {
    /// From `?format=`, or else from the `Accept` header; CSV when neither
    /// says.
    pub fn detect(query: Option<&str>, accept: Option<&str>) -> Result<Self, String> {
        if let Some(q) = query {
            return match q {
                "csv" => Ok(Self::Csv),
                "jsonl" | "ndjson" => Ok(Self::Jsonl),
                "parquet" => Ok(Self::Parquet),
                other => Err(format!("format `{other}`: use csv, jsonl or parquet")),
            };
        }
        let accept = accept.unwrap_or("").to_ascii_lowercase();
        Ok(if accept.contains("parquet") {
            Self::Parquet
        } else if ["ndjson", "jsonl", "jsonlines"]
            .iter()
            .any(|t| accept.contains(t))
        {
            Self::Jsonl
        } else {
            Self::Csv
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Jsonl => "application/x-ndjson",
            Self::Parquet => super::parquet_out::CONTENT_TYPE,
        }
    }
}

/// Response header: how many of the batch's rows the body does not carry
/// (not finished yet); `0` once the batch has ended.
pub const ROWS_MISSING: &str = "x-infq-rows-missing";

/// Chunk results fetched from Redis per round trip while streaming.
const CHUNKS_PER_READ: u32 = 32;

/// `GET /v1/batches/{id}/results`: every row in input order, as CSV
/// (`row,<passthrough...>,<outputs...>,model,version,model_sha256,error`,
/// with `reason_1..reason_k` after the outputs for an explained batch) or
/// JSONL (`{"row", "output", "model", "version", "model_sha256"}`, with
/// `explanation` for an explained batch, or `{"row", "model", "version",
/// "error"}`), streamed. With
/// `partial=true`, a running batch answers with the rows finished so far,
/// in order, and [`ROWS_MISSING`] says how many are not there yet.
#[utoipa::path(get, path = "/v1/batches/{id}/results", tag = "batches",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Batch id"),
           ("format" = Option<String>, Query, description = "`csv`, `jsonl` or `parquet`; else the Accept header decides (CSV by default)"),
           ("partial" = Option<bool>, Query, description = "`true`: while the batch runs, the rows finished so far (in order, each with its row number) instead of 409")),
    responses(
        (status = 200, description = "Every row in input order: CSV `row,<outputs...>,model,version,model_sha256,error`, or JSONL `{\"row\", \"output\", \"model\", \"version\", \"model_sha256\"}` / `{\"row\", \"model\", \"version\", \"error\"}`; with `partial=true`, the rows finished so far", body = String, content_type = "text/csv",
            headers(("x-infq-rows-missing" = u64, description = "Rows of the batch the body does not carry because they have not finished (0 once the batch has ended)"))),
        (status = 404, description = "No such batch of this tenant", body = crate::openapi::ErrorBody),
        (status = 409, description = "The batch has not ended (and `partial=true` was not asked)", body = crate::openapi::ErrorBody),
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
    let format = ResultsFormat::detect(q.format.as_deref(), accept)
        .map_err(|m| ApiError::Invalid(vec![crate::detail::Detail::field("format", m)]))?;
    let rec = owned_batch(&state, &caller, &batch_id, &id).await?;
    let running = !rec.status.is_terminal();
    if running && q.partial != Some(true) {
        return Err(ApiError::Conflict(format!(
            "batch {id} is {}; its results are ready once it finishes (GET /v1/batches/{id}?wait=60 waits for that), and the rows finished so far are at GET /v1/batches/{id}/results?partial=true",
            rec.status
        )));
    }
    // Which chunks to read: all of an ended batch; of a running one, those
    // stored when this request came, so that the count of missing rows
    // holds for the body.
    let source = if running {
        ChunkSource::Finished(Arc::new(state.store.finished_chunks(&batch_id).await?))
    } else {
        ChunkSource::All(rec.chunks)
    };
    let chunk_rows = u64::from(rec.chunk_rows);
    let missing_rows = match &source {
        ChunkSource::All(_) => 0,
        ChunkSource::Finished(done) => {
            let carried: u64 = done
                .iter()
                .map(|&i| rows_of_chunk(i, chunk_rows, rec.total))
                .sum();
            rec.total.saturating_sub(carried)
        }
    };
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
        model: Arc::from(rec.model.as_str()),
        version: Arc::from(rec.version.as_str()),
        outputs: Arc::new(outputs),
        explain: rec.explain.map(Arc::new),
        passthrough: Arc::new(rec.passthrough),
        chunk_rows,
        total: rec.total,
        // A running batch's body leaves out what is not stored (a chunk
        // reopened since the request came).
        missing: (!running).then(|| format!("not run: batch {}", rec.status)),
    };
    let header_line = render.header();
    let parquet = match format {
        ResultsFormat::Parquet => Some(
            render
                .parquet_sink()
                .map_err(|e| ApiError::Internal(format!("starting the Parquet results: {e}")))?,
        ),
        _ => None,
    };
    let store = state.store.clone();
    let count = source.len();
    // Each step reads up to CHUNKS_PER_READ chunks and renders them (one
    // row group of a Parquet file); a step past the last closes the file.
    let stream = futures_util::stream::unfold((Some(0u32), parquet), move |(from, mut sink)| {
        let store = store.clone();
        let render = render.clone();
        let source = source.clone();
        async move {
            let from = from?;
            if from >= count {
                let last = sink.map(|s| s.finish().map_err(std::io::Error::other))?;
                return Some((last, (None, None)));
            }
            let to = (from + CHUNKS_PER_READ).min(count);
            let read = match &source {
                ChunkSource::All(_) => store
                    .get_chunks(&batch_id, from, to)
                    .await
                    .map(|texts| (from..to).zip(texts).collect::<Vec<_>>()),
                ChunkSource::Finished(done) => {
                    let indices = &done[from as usize..to as usize];
                    store
                        .get_chunks_at(&batch_id, indices)
                        .await
                        .map(|texts| indices.iter().copied().zip(texts).collect())
                }
            };
            let part = match read {
                Err(e) => Err(std::io::Error::other(e.to_string())),
                Ok(chunks) => match sink.as_mut() {
                    None => render.chunks(&chunks),
                    Some(sink) => render
                        .rows(&chunks, |r| sink.push(&r))
                        .and_then(|()| sink.group().map_err(std::io::Error::other)),
                },
            };
            // The sink goes on to the next step; an error ends the body.
            let next = part.is_ok().then_some(to);
            Some((part, (next, sink)))
        }
    });
    let body = futures_util::stream::once(async move { Ok(header_line) }).chain(stream);
    let content_type = format.content_type();
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::HeaderName::from_static(ROWS_MISSING),
                missing_rows.to_string(),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The chunks a results body reads.
#[derive(Clone)]
enum ChunkSource {
    /// Every chunk of an ended batch, `0..n`.
    All(u32),
    /// The chunks a running batch had stored, in order.
    Finished(Arc<Vec<u32>>),
}

impl ChunkSource {
    fn len(&self) -> u32 {
        match self {
            ChunkSource::All(n) => *n,
            ChunkSource::Finished(done) => done.len() as u32,
        }
    }
}

/// Rows in chunk `index` of a batch of `total` rows in chunks of
/// `chunk_rows` (the last may be short; an index past the end has none).
fn rows_of_chunk(index: u32, chunk_rows: u64, total: u64) -> u64 {
    let first = u64::from(index) * chunk_rows;
    chunk_rows.min(total.saturating_sub(first))
}

/// Turns stored chunks into lines of the chosen format.
#[derive(Clone)]
struct Renderer {
    format: ResultsFormat,
    /// The batch's model and version: every row names them (lineage).
    model: Arc<str>,
    version: Arc<str>,
    outputs: Arc<Vec<infq_common::registry::OutputSpec>>,
    /// How rows are explained, for a batch that asked for reasons.
    explain: Option<Arc<ExplainPlan>>,
    /// The client's columns carried through, next to `row`.
    passthrough: Arc<Vec<String>>,
    chunk_rows: u64,
    total: u64,
    /// The error of a row whose chunk is not stored; `None`: such rows
    /// are left out (a running batch's partial results).
    missing: Option<String>,
}

#[derive(Serialize)]
struct JsonlRow<'a> {
    row: u64,
    #[serde(flatten)]
    ids: Ids<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<NamedOutputs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<Explanation<'a>>,
    /// The model and version asked for, and the file that ran the row
    /// (lineage).
    model: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// A row's passthrough values by column name.
struct Ids<'a>(&'a [String], &'a [String]);

impl Serialize for Ids<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().zip(self.1))
    }
}

impl Renderer {
    /// What comes before the rows: CSV's header line.
    fn header(&self) -> Vec<u8> {
        match self.format {
            ResultsFormat::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                let mut cols = vec!["row".to_string()];
                cols.extend(self.passthrough.iter().cloned());
                cols.extend(self.outputs.iter().map(|o| o.name.clone()));
                if let Some(plan) = &self.explain {
                    cols.extend((1..=plan.top_k).map(|k| format!("reason_{k}")));
                }
                cols.extend(["model", "version", "model_sha256", "error"].map(String::from));
                let _ = w.write_record(&cols);
                w.into_inner().unwrap_or_default()
            }
            ResultsFormat::Jsonl | ResultsFormat::Parquet => Vec::new(),
        }
    }

    /// A Parquet writer with this batch's columns.
    fn parquet_sink(&self) -> parquet::errors::Result<ParquetSink> {
        let outputs: Vec<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        ParquetSink::new(
            &self.passthrough,
            &outputs,
            self.explain.as_deref(),
            self.model.clone(),
            self.version.clone(),
        )
    }

    /// Calls `each` with every row of `chunks` (each its index and its
    /// stored text if it has one), in order.
    fn rows(
        &self,
        chunks: &[(u32, Option<String>)],
        mut each: impl FnMut(RowView<'_>),
    ) -> std::io::Result<()> {
        for (index, text) in chunks {
            let first = u64::from(*index) * self.chunk_rows + 1;
            let rows = rows_of_chunk(*index, self.chunk_rows, self.total);
            let stored = match text {
                Some(t) => Some(parse_chunk(t).map_err(std::io::Error::other)?),
                None if self.missing.is_none() => continue,
                None => None,
            };
            let parsed = stored.as_ref().map_or(&[][..], |c| c.rows.as_slice());
            let sha256 = stored.as_ref().and_then(|c| c.sha256.as_deref());
            let columns = self.passthrough.len();
            let ids = stored.as_ref().map_or(&[][..], |c| c.ids.as_slice());
            for r in 0..rows as usize {
                let result = parsed.get(r);
                let (values, error): (Option<&[f32]>, Option<&str>) = match result {
                    Some(RowResult::Error(e)) => (None, Some(e)),
                    Some(r) => (r.values(), None),
                    None => (None, self.missing.as_deref()),
                };
                each(RowView {
                    row: first + r as u64,
                    // None where the chunk has none (it never ran, or was
                    // stored before ids were).
                    ids: ids.get(r * columns..(r + 1) * columns).unwrap_or_default(),
                    values,
                    explanation: self
                        .explain
                        .as_deref()
                        .zip(result.and_then(RowResult::attributions))
                        .map(|(plan, a)| plan.explain(a)),
                    sha256,
                    error,
                });
            }
        }
        Ok(())
    }

    /// Writes one row as a CSV record, field by field (no allocation per
    /// row: a million-row download spends its time here).
    fn csv_row(
        &self,
        csv: &mut csv::Writer<Vec<u8>>,
        field: &mut String,
        r: &RowView<'_>,
    ) -> std::io::Result<()> {
        use std::fmt::Write;
        let number = |field: &mut String, x: &dyn std::fmt::Display| {
            field.clear();
            let _ = write!(field, "{x}");
        };
        number(field, &r.row);
        csv.write_field(&*field)?;
        for k in 0..self.passthrough.len() {
            csv.write_field(r.ids.get(k).map_or("", String::as_str))?;
        }
        for k in 0..self.outputs.len() {
            match r.values.and_then(|v| v.get(k)) {
                Some(x) => number(field, x),
                None => field.clear(),
            }
            csv.write_field(&*field)?;
        }
        if let Some(plan) = &self.explain {
            let mut texts = r.explanation.as_ref().map(|e| e.reason_texts());
            for _ in 0..plan.top_k {
                csv.write_field(texts.as_mut().and_then(Iterator::next).unwrap_or(""))?;
            }
        }
        csv.write_field(&*self.model)?;
        csv.write_field(&*self.version)?;
        csv.write_field(r.values.and(r.sha256).unwrap_or(""))?;
        csv.write_field(r.error.unwrap_or(""))?;
        csv.write_record(None::<&[u8]>)?;
        Ok(())
    }

    /// Renders chunks as lines of text (CSV or JSONL).
    fn chunks(&self, chunks: &[(u32, Option<String>)]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(chunks.len() * self.chunk_rows as usize * 24);
        let mut csv = csv::WriterBuilder::new().from_writer(Vec::new());
        // A number's text, reused from row to row.
        let mut field = String::new();
        let mut failed = None;
        self.rows(chunks, |r| {
            if failed.is_some() {
                return;
            }
            let done = match self.format {
                ResultsFormat::Jsonl | ResultsFormat::Parquet => {
                    let line = JsonlRow {
                        row: r.row,
                        ids: Ids(&self.passthrough, r.ids),
                        output: r.values.map(|v| NamedOutputs(&self.outputs, v)),
                        explanation: r.explanation,
                        model: &self.model,
                        version: &self.version,
                        model_sha256: r.values.and(r.sha256),
                        error: r.error,
                    };
                    serde_json::to_writer(&mut out, &line)
                        .map(|()| out.push(b'\n'))
                        .map_err(std::io::Error::from)
                }
                ResultsFormat::Csv => self.csv_row(&mut csv, &mut field, &r),
            };
            failed = done.err();
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if self.format == ResultsFormat::Csv {
            out = csv.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::registry::OutputSpec;

    fn renderer(format: ResultsFormat) -> Renderer {
        Renderer {
            format,
            model: Arc::from("m"),
            version: Arc::from("1"),
            outputs: Arc::new(vec![OutputSpec {
                name: "p".into(),
                description: String::new(),
            }]),
            explain: None,
            passthrough: Arc::new(Vec::new()),
            chunk_rows: 2,
            total: 5,
            missing: Some("not run: batch cancelled".into()),
        }
    }

    fn indexed(from: u32, texts: Vec<Option<String>>) -> Vec<(u32, Option<String>)> {
        (from..).zip(texts).collect()
    }

    #[test]
    fn csv_rows_in_input_order_with_errors() {
        let r = renderer(ResultsFormat::Csv);
        let texts = vec![
            Some(r#"{"sha256":"ab12","rows":[[0.25],[0.5]]}"#.to_string()),
            Some(r#"[[0.125],"bad, row"]"#.to_string()),
            None,
        ];
        let out = String::from_utf8(r.chunks(&indexed(0, texts)).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(r.header()).unwrap(),
            "row,p,model,version,model_sha256,error\n"
        );
        // The file's digest where it ran (a chunk stored before lineage
        // has none); the model and version on every row.
        assert_eq!(
            out,
            "1,0.25,m,1,ab12,\n2,0.5,m,1,ab12,\n3,0.125,m,1,,\n4,,m,1,,\"bad, row\"\n5,,m,1,,not run: batch cancelled\n"
        );
    }

    #[test]
    fn jsonl_rows_carry_row_numbers() {
        let r = renderer(ResultsFormat::Jsonl);
        let out = String::from_utf8(r.chunks(&[(2, Some("[[0.75]]".into()))]).unwrap()).unwrap();
        assert_eq!(
            out,
            "{\"row\":5,\"output\":{\"p\":0.75},\"model\":\"m\",\"version\":\"1\"}\n"
        );
        assert!(r.header().is_empty());
        let bad = r.chunks(&[(0, Some("not json".into()))]);
        assert!(bad.is_err());
    }

    #[test]
    fn partial_results_carry_the_stored_chunks_only_with_their_row_numbers() {
        let r = Renderer {
            missing: None,
            ..renderer(ResultsFormat::Csv)
        };
        // Chunks 0 and 2 of 3 stored; 1 is not (a reopened chunk read
        // after the request came is left out too).
        let out = r
            .chunks(&[
                (0, Some("[[0.25],[0.5]]".into())),
                (1, None),
                (2, Some("[[0.125]]".into())),
            ])
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1,0.25,m,1,,\n2,0.5,m,1,,\n5,0.125,m,1,,\n"
        );
    }

    #[test]
    fn chunk_sizes_follow_the_total() {
        assert_eq!(rows_of_chunk(0, 256, 1000), 256);
        assert_eq!(rows_of_chunk(3, 256, 1000), 232);
        assert_eq!(rows_of_chunk(4, 256, 1000), 0);
        assert_eq!(rows_of_chunk(u32::MAX, 256, 1000), 0);
    }
}

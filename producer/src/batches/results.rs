//! `GET /v1/batches/{id}/results`: a finished batch's results, read back
//! chunk by chunk and streamed in input order as CSV or JSONL.

use crate::auth::Caller;
use crate::bulk::Format;
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
    /// `csv` or `jsonl`; else the `Accept` header decides (CSV by default).
    format: Option<String>,
}

/// Chunk results fetched from Redis per round trip while streaming.
const CHUNKS_PER_READ: u32 = 32;

/// `GET /v1/batches/{id}/results`: every row in input order, as CSV
/// (`row,<outputs...>,error`, with `reason_1..reason_k` before `error` for
/// an explained batch) or JSONL (`{"row", "output"}`, with `explanation`
/// for an explained batch, or `{"row", "error"}`), streamed.
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
        explain: rec.explain.map(Arc::new),
        passthrough: Arc::new(rec.passthrough),
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
    /// How rows are explained, for a batch that asked for reasons.
    explain: Option<Arc<ExplainPlan>>,
    /// The client's columns carried through, next to `row`.
    passthrough: Arc<Vec<String>>,
    chunk_rows: u64,
    total: u64,
    missing: String,
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
    /// The model file that ran the row (lineage).
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
    fn header(&self) -> Vec<u8> {
        match self.format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                let mut cols = vec!["row".to_string()];
                cols.extend(self.passthrough.iter().cloned());
                cols.extend(self.outputs.iter().map(|o| o.name.clone()));
                if let Some(plan) = &self.explain {
                    cols.extend((1..=plan.top_k).map(|k| format!("reason_{k}")));
                }
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
            let stored = match text {
                Some(t) => Some(parse_chunk(t).map_err(std::io::Error::other)?),
                None => None,
            };
            let parsed = stored.as_ref().map_or(&[][..], |c| c.rows.as_slice());
            let sha256 = stored.as_ref().and_then(|c| c.sha256.as_deref());
            let columns = self.passthrough.len();
            let ids = stored.as_ref().map_or(&[][..], |c| c.ids.as_slice());
            // A row's values, or none where the chunk has none (it was
            // dead-lettered, or never ran).
            let ids_of = |r: usize| -> &[String] {
                ids.get(r * columns..(r + 1) * columns).unwrap_or_default()
            };
            for r in 0..rows {
                let row = first + r;
                let result = parsed.get(r as usize);
                let (values, error): (Option<&[f32]>, Option<&str>) = match result {
                    Some(RowResult::Error(e)) => (None, Some(e)),
                    Some(r) => (r.values(), None),
                    None => (None, Some(&self.missing)),
                };
                let explanation = self
                    .explain
                    .as_deref()
                    .zip(result.and_then(RowResult::attributions))
                    .map(|(plan, a)| plan.explain(a));
                match self.format {
                    Format::Jsonl => {
                        let line = JsonlRow {
                            row,
                            ids: Ids(&self.passthrough, ids_of(r as usize)),
                            output: values.map(|v| NamedOutputs(&self.outputs, v)),
                            explanation,
                            model_sha256: values.and(sha256),
                            error,
                        };
                        serde_json::to_writer(&mut out, &line)?;
                        out.push(b'\n');
                    }
                    Format::Csv => {
                        let mut rec = Vec::with_capacity(self.outputs.len() + columns + 6);
                        rec.push(row.to_string());
                        let mine = ids_of(r as usize);
                        for k in 0..columns {
                            rec.push(mine.get(k).cloned().unwrap_or_default());
                        }
                        for k in 0..self.outputs.len() {
                            rec.push(
                                values
                                    .and_then(|v| v.get(k))
                                    .map(|x| x.to_string())
                                    .unwrap_or_default(),
                            );
                        }
                        if let Some(plan) = &self.explain {
                            let mut texts = explanation.as_ref().map(|e| e.reason_texts());
                            for _ in 0..plan.top_k {
                                let text = texts.as_mut().and_then(Iterator::next);
                                rec.push(text.unwrap_or("").to_string());
                            }
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
            explain: None,
            passthrough: Arc::new(Vec::new()),
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

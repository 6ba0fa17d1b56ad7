//! What the completion stage writes for each job of a forward pass: a
//! single job's new state, a chunk's rows, or a retry for a transient
//! model error; and the webhook events due once that is stored. Plain
//! logic, no I/O: [`crate::completion`] does the writing and the
//! acknowledging.

use crate::outcome::{InferError, ModelOutcome};
use crate::pending::Pending;
use infq_common::explain::ExplainPlan;
use infq_common::job::{JobError, JobStatus};
use infq_common::message::Work;
use infq_common::registry::ModelSpec;
use infq_common::results::{chunk_json, output_json, RowOut};
use infq_common::store::{Applied, ChunkResult, Transition};
use infq_common::webhooks::event::EventMessage;

/// Why one row has no result.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum RowError<'a> {
    /// The forward pass failed.
    #[error("{0}")]
    Model(&'a InferError),
    /// It returned NaN or an infinity.
    #[error("the model returned a non-finite value")]
    NonFinite,
}

/// What one job's rows came to: outputs (`n_out` values each) or errors.
fn row_results<'a>(
    outcome: &'a ModelOutcome,
    first_row: usize,
    rows: usize,
    n_out: usize,
) -> Vec<Result<&'a [f32], RowError<'a>>> {
    let check = |values: &'a [f32]| {
        if values.iter().all(|v| v.is_finite()) {
            Ok(values)
        } else {
            Err(RowError::NonFinite)
        }
    };
    match outcome {
        ModelOutcome::Batch(values) => values[first_row * n_out..(first_row + rows) * n_out]
            .chunks(n_out)
            .map(check)
            .collect(),
        ModelOutcome::PerRow(results) => results[first_row..first_row + rows]
            .iter()
            .map(|r| match r {
                Ok(values) => check(values),
                Err(e) => Err(RowError::Model(e)),
            })
            .collect(),
    }
}

/// What to store for one job of a forward pass.
#[derive(Debug)]
pub enum Outcome {
    /// A single job's new state.
    Job(Transition),
    /// A bulk chunk's results.
    Chunk(ChunkResult),
    /// A transient model error: send the job back for another attempt.
    Retry(InferError),
}

impl Outcome {
    /// The outcome label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Job(t) => t.status.as_str(),
            Outcome::Chunk(c) if c.failed == 0 => "succeeded",
            Outcome::Chunk(_) => "partial",
            Outcome::Retry(_) => "retrying",
        }
    }
}

/// The outcome of each job of a forward pass; `explained` holds, per job,
/// the attributions of its rows when its record asked for them (empty: none
/// asked). An explanation that failed fails the rows it was for, with the
/// reason, as a model error does (or sends the job back, if it may pass
/// another time). Every result records `model_sha256`, the model file that
/// ran it.
pub fn outcomes(
    spec: &ModelSpec,
    jobs: &[Pending],
    outcome: &ModelOutcome,
    explained: &[Option<Result<Vec<f32>, InferError>>],
    model_sha256: &str,
) -> Vec<Outcome> {
    let width = spec.width();
    let n_out = spec.outputs.len();
    let plan = explained
        .iter()
        .any(Option::is_some)
        .then(|| ExplainPlan::of(spec))
        .flatten();
    let mut row = 0;
    jobs.iter()
        .enumerate()
        .map(|(i, j)| {
            let rows = j.rows(width);
            let results = row_results(outcome, row, rows, n_out);
            row += rows;
            if let Some(Err(RowError::Model(e))) = results
                .iter()
                .find(|r| matches!(r, Err(RowError::Model(e)) if e.is_retryable()))
            {
                return Outcome::Retry((*e).clone());
            }
            // Asked for and missing is an error, never a row without
            // reasons: empty reason cells mean "no adverse reason".
            let attributions = match (explained.get(i), plan.as_ref()) {
                (Some(Some(Ok(a))), Some(p)) if a.len() == rows * width => Some((p, a)),
                (Some(Some(Ok(a))), _) => {
                    let error = format!(
                        "explaining the score failed: {} attributions for {rows} rows of {width} values, or no explain section in this worker's registry",
                        a.len()
                    );
                    return failed_for_good(j, rows, &error);
                }
                (Some(Some(Err(e))), _) if e.is_retryable() => return Outcome::Retry(e.clone()),
                (Some(Some(Err(e))), _) => {
                    let error = format!("explaining the score failed: {e}");
                    return failed_for_good(j, rows, &error);
                }
                _ => None,
            };
            // A row whose attributions are not all finite has no usable
            // explanation: it fails, as a non-finite output does.
            let finite = |k: usize| {
                attributions.is_none_or(|(_, a)| {
                    a[k * width..(k + 1) * width].iter().all(|x| x.is_finite())
                })
            };
            match j.msg.work {
                Work::Job { .. } => Outcome::Job(
                    match results.first() {
                        Some(Ok(_)) if !finite(0) => Transition::failed(JobError::new(
                            "model_error",
                            NON_FINITE_ATTRIBUTION,
                        )),
                        Some(Ok(values)) => {
                            let t = Transition::succeeded(output_json(&spec.outputs, values));
                            match attributions {
                                Some((p, a)) => t.explained(p.explain(a).to_json()),
                                None => t,
                            }
                        }
                        Some(Err(e)) => {
                            Transition::failed(JobError::new("model_error", e.to_string()))
                        }
                        None => Transition::failed(JobError::new("model_error", "no output")),
                    }
                    .ran(model_sha256),
                ),
                Work::Chunk { batch, index, .. } => {
                    let failed = results
                        .iter()
                        .enumerate()
                        .filter(|(k, r)| r.is_err() || !finite(*k))
                        .count() as u32;
                    // Texts of the failed rows only: none is made (or
                    // allocated) for a chunk whose rows all ran.
                    let errors: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                        .collect();
                    let mut texts = errors.iter();
                    let rows_json: Vec<RowOut> = results
                        .iter()
                        .enumerate()
                        .map(|(k, r)| match (r, attributions) {
                            (Ok(_), Some(_)) if !finite(k) => RowOut::Error(NON_FINITE_ATTRIBUTION),
                            (Ok(v), Some((_, a))) => RowOut::Explained {
                                v,
                                a: &a[k * width..(k + 1) * width],
                            },
                            (Ok(v), None) => RowOut::Values(v),
                            (Err(_), _) => RowOut::Error(texts.next().map_or("", String::as_str)),
                        })
                        .collect();
                    Outcome::Chunk(ChunkResult {
                        batch,
                        index,
                        rows_json: chunk_json(Some(model_sha256), &rows_json, &j.msg.passthrough),
                        succeeded: rows as u32 - failed,
                        failed,
                    })
                }
            }
        })
        .collect()
}

/// Why a row whose explanation was asked for has none it could use.
const NON_FINITE_ATTRIBUTION: &str =
    "explaining the score gave a non-finite attribution (a gradient overflowed)";

/// The outcome of a job whose error is final: a failed job, or a chunk
/// whose every row failed.
pub fn failed_for_good(job: &Pending, rows: usize, error: &str) -> Outcome {
    match job.msg.work {
        Work::Job { .. } => Outcome::Job(Transition::failed(JobError::new("model_error", error))),
        Work::Chunk { batch, index, .. } => {
            // Its rows keep their passthrough values.
            let rows_json: Vec<RowOut> = std::iter::repeat_n(RowOut::Error(error), rows).collect();
            Outcome::Chunk(ChunkResult {
                batch,
                index,
                rows_json: chunk_json(None, &rows_json, &job.msg.passthrough),
                succeeded: 0,
                failed: rows as u32,
            })
        }
    }
}

/// The events due once these outcomes are stored: a single job's terminal
/// state, a batch completed by one of its chunks, and a batch's progress
/// event its chunk made due; one entry per job.
pub fn due_events(
    jobs: &[Pending],
    updates: &[Outcome],
    applied: &[Option<Applied>],
) -> Vec<Option<EventMessage>> {
    jobs.iter()
        .zip(updates)
        .zip(applied)
        .map(|((job, out), applied)| {
            if let (Outcome::Chunk(c), Some(Applied::Progress(n))) = (out, applied) {
                // Its batch runs on; its progress event is due.
                return job.webhook.then(|| EventMessage::progress(c.batch, *n));
            }
            let due = match out {
                Outcome::Job(t) => t.status.is_terminal() && t.status != JobStatus::Cancelled,
                Outcome::Chunk(_) => matches!(applied, Some(Applied::Completed)),
                Outcome::Retry(_) => false,
            };
            if due {
                job.event()
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(outputs: usize) -> ModelSpec {
        let text = format!(
            "[[model]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ninputs = [{{ name = \"a\" }}, {{ name = \"b\" }}]\noutputs = [{}]\n",
            (0..outputs).map(|i| format!("{{ name = \"o{i}\" }}")).collect::<Vec<_>>().join(", ")
        );
        let r = infq_common::registry::Registry::parse(
            &text,
            std::path::Path::new("m.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        r.models()[0].clone()
    }

    fn pending(rows: usize, chunk: Option<u32>) -> Pending {
        let mut p = Pending::made_up(
            "m",
            "1",
            infq_common::job::Priority::Bulk,
            vec![0.0; rows * 2],
            1,
        );
        if let Some(index) = chunk {
            p.msg.work = Work::Chunk {
                batch: p.msg.record(),
                index,
                first_row: 1,
            };
        }
        p
    }

    #[test]
    fn outputs_are_split_among_jobs_and_chunks_in_row_order() {
        let spec = spec(2);
        let jobs = vec![pending(1, None), pending(3, Some(4)), pending(1, None)];
        let values: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let out = outcomes(&spec, &jobs, &ModelOutcome::Batch(values), &[], "ab12");
        let Outcome::Job(t) = &out[0] else { panic!() };
        assert_eq!(t.output.as_deref(), Some(r#"{"o0":0.0,"o1":1.0}"#));
        assert_eq!(t.model_sha256.as_deref(), Some("ab12"), "lineage");
        let Outcome::Chunk(c) = &out[1] else { panic!() };
        assert_eq!((c.index, c.succeeded, c.failed), (4, 3, 0));
        assert_eq!(
            c.rows_json,
            r#"{"sha256":"ab12","rows":[[2.0,3.0],[4.0,5.0],[6.0,7.0]]}"#
        );
        let Outcome::Job(t) = &out[2] else { panic!() };
        assert_eq!(t.output.as_deref(), Some(r#"{"o0":8.0,"o1":9.0}"#));
    }

    #[test]
    fn a_chunk_out_of_retries_fails_every_row() {
        let chunk = pending(3, Some(2));
        let Outcome::Chunk(c) = failed_for_good(&chunk, 3, "out of memory") else {
            panic!("a chunk stays a chunk")
        };
        assert_eq!((c.index, c.succeeded, c.failed), (2, 0, 3));
        assert_eq!(
            c.rows_json,
            r#"["out of memory","out of memory","out of memory"]"#
        );
        let job = pending(1, None);
        assert!(
            matches!(failed_for_good(&job, 1, "x"), Outcome::Job(t) if t.status == JobStatus::Failed)
        );
    }

    #[test]
    fn failed_rows_fail_alone() {
        let spec = spec(1);
        let jobs = vec![pending(2, Some(0)), pending(1, None)];
        let per_row = ModelOutcome::PerRow(vec![
            Ok(vec![0.5]),
            Err(InferError::Torch("bad row".into())),
            Ok(vec![f32::NAN]),
        ]);
        let out = outcomes(&spec, &jobs, &per_row, &[], "ab12");
        let Outcome::Chunk(c) = &out[0] else { panic!() };
        assert_eq!((c.succeeded, c.failed), (1, 1));
        assert_eq!(c.rows_json, r#"{"sha256":"ab12","rows":[[0.5],"bad row"]}"#);
        let Outcome::Job(t) = &out[1] else { panic!() };
        assert_eq!(t.status, JobStatus::Failed);
        assert!(t.error.as_ref().unwrap().message.contains("non-finite"));
    }

    fn explained_spec() -> ModelSpec {
        let text = "[[model]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ninputs = [{ name = \"a\", reason = \"A\" }, { name = \"b\", reason = \"B\" }]\noutputs = [{ name = \"o0\" }]\nexplain = { method = \"integrated_gradients\", baseline = { a = 0, b = 0 } }\n";
        infq_common::registry::Registry::parse(
            text,
            std::path::Path::new("m.toml"),
            std::path::Path::new("."),
        )
        .unwrap()
        .models()[0]
            .clone()
    }

    #[test]
    fn explanations_that_cannot_be_used_fail_their_rows_never_pass_as_no_reason() {
        let explained_model = explained_spec();
        let mut chunk = pending(2, Some(0));
        chunk.msg.passthrough = vec!["L-1".into(), "L-2".into()];
        let jobs = vec![chunk, pending(1, None)];
        let values = vec![0.5, 0.25, 0.75];
        // Row 2 of the chunk has a NaN attribution; the job an infinite one.
        let explained = vec![
            Some(Ok(vec![0.1, 0.2, f32::NAN, 0.0])),
            Some(Ok(vec![f32::INFINITY, 0.0])),
        ];
        let out = outcomes(
            &explained_model,
            &jobs,
            &ModelOutcome::Batch(values.clone()),
            &explained,
            "ab",
        );
        let Outcome::Chunk(c) = &out[0] else { panic!() };
        assert_eq!((c.succeeded, c.failed), (1, 1));
        let stored = infq_common::results::parse_chunk(&c.rows_json).unwrap();
        assert!(stored.rows[0].attributions().is_some());
        assert!(
            matches!(&stored.rows[1], infq_common::results::RowResult::Error(e) if e.contains("non-finite"))
        );
        assert_eq!(stored.ids, ["L-1", "L-2"]);
        let Outcome::Job(t) = &out[1] else { panic!() };
        assert_eq!(t.status, JobStatus::Failed);
        // Attributions missing, or of the wrong length, fail the job.
        let short = vec![Some(Ok(vec![0.1])), Some(Ok(vec![0.1]))];
        let out = outcomes(
            &explained_model,
            &jobs,
            &ModelOutcome::Batch(values.clone()),
            &short,
            "ab",
        );
        let Outcome::Chunk(c) = &out[0] else { panic!() };
        assert_eq!(c.failed, 2);
        let stored = infq_common::results::parse_chunk(&c.rows_json).unwrap();
        assert_eq!(
            stored.ids,
            ["L-1", "L-2"],
            "a chunk failed whole keeps its ids"
        );
        let Outcome::Job(t) = &out[1] else { panic!() };
        assert_eq!(t.status, JobStatus::Failed);
        let out = outcomes(
            &spec(1),
            &jobs,
            &ModelOutcome::Batch(values),
            &explained,
            "ab",
        );
        assert!(
            out.iter().all(
                |o| matches!(o, Outcome::Job(t) if t.status == JobStatus::Failed)
                    || matches!(o, Outcome::Chunk(c) if c.failed == 2)
            ),
            "no explain section here: every asked-for row fails"
        );
    }
}

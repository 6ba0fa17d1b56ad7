//! Reading a bulk file in Apache Parquet. A Parquet file says where its
//! columns are in a footer at its end, so the upload is spooled whole
//! first (within the producer's spool budget) and then read a record
//! batch at a time, only the columns the model and the passthrough list
//! name: memory stays bounded by one batch whatever the file's size.
//!
//! Columns are named as in CSV (a number's name, `name[k]` for value `k`
//! of a tensor feature). A feature's column holds numbers (any integer,
//! float or decimal type); a categorical feature's may hold its names
//! (strings, or a dictionary of strings) instead. A passthrough column may
//! be of any type that has a text form, and is carried as that text. A
//! problem is reported with the data row's number (from 1) as its line.

use super::{over_limit, write_row, Passthrough, Report, MAX_PROBLEMS};
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use infq_common::registry::{FeatureSpec, ModelSpec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::io::Write;

/// Runs a call into the Parquet and Arrow libraries, which may panic on
/// a malformed file: a panic is the file's problem, answered like any
/// other, not the server's.
fn contained<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the Parquet reader failed on its contents".into()),
    }
}

/// Rows per record batch read.
const BATCH_ROWS: usize = 8192;

/// How a column's values become a feature's.
#[derive(Clone, Copy)]
enum Kind {
    /// Cast to f64, then checked as a number.
    Number,
    /// Cast to text, then looked up as a category's name.
    Name,
}

/// Whether a column of type `t` can feed `feature`, and how.
fn kind_of(t: &DataType, feature: &FeatureSpec) -> Option<Kind> {
    let text = matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        || matches!(t, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
    if t.is_numeric() {
        Some(Kind::Number)
    } else if text && feature.is_categorical() {
        Some(Kind::Name)
    } else {
        None
    }
}

/// Reads a Parquet `file`, writes each valid row to `spool` (f32 LE, in
/// schema order) and its passthrough values through `passthrough`, and
/// stops after [`MAX_PROBLEMS`] problems or more than `max_rows` rows.
/// What is wrong with the file (not Parquet, truncated, a column missing
/// or of the wrong type, a bad value) goes into the report; I/O errors of
/// the spools are returned.
pub fn read_parquet<W: Write>(
    file: std::fs::File,
    spec: &ModelSpec,
    spool: &mut W,
    passthrough: &mut Passthrough,
    max_rows: u64,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let builder = match contained(|| ParquetRecordBatchReaderBuilder::try_new(file)) {
        Ok(b) => b,
        Err(e) => {
            report.problem(1, None, format!("not a readable Parquet file: {e}"));
            return Ok(report);
        }
    };
    let schema = builder.schema().clone();
    let wanted = spec.columns();
    let mut kinds = Vec::with_capacity(wanted.len());
    let mut roots = Vec::new();
    for (feature, name) in &wanted {
        let f = &spec.inputs[*feature];
        match schema.index_of(name) {
            Err(_) => report.problem(1, Some(name.clone()), "missing column"),
            Ok(i) => {
                let t = schema.field(i).data_type();
                match kind_of(t, f) {
                    Some(k) => kinds.push(k),
                    None => report.problem(
                        1,
                        Some(name.clone()),
                        if f.is_categorical() {
                            format!(
                                "a column of {t}: expected numbers, or the names {}",
                                f.category_names()
                            )
                        } else {
                            format!("a column of {t}: expected numbers")
                        },
                    ),
                }
                roots.push(i);
            }
        }
    }
    for name in passthrough.names {
        match schema.index_of(name) {
            Err(_) => report.problem(
                1,
                Some(name.clone()),
                "unknown passthrough column: the file has no such column",
            ),
            Ok(i) => {
                let t = schema.field(i).data_type();
                if !arrow_cast::can_cast_types(t, &DataType::Utf8) {
                    report.problem(
                        1,
                        Some(name.clone()),
                        format!("a column of {t}, which has no text form to carry"),
                    );
                }
                roots.push(i);
            }
        }
    }
    if !report.problems.is_empty() {
        return Ok(report);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = match contained(|| {
        builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
    }) {
        Ok(r) => r,
        Err(e) => {
            report.problem(1, None, format!("not a readable Parquet file: {e}"));
            return Ok(report);
        }
    };
    let mut row = vec![0f32; spec.width()];
    let mut seen = 0u64;
    let mut reader = reader;
    'batches: loop {
        let batch = match contained(|| reader.next().transpose()) {
            Ok(None) => break,
            Ok(Some(b)) => Ok(b),
            Err(e) => Err(e),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                report.problem(
                    seen + 1,
                    None,
                    format!("the file cannot be read past here: {e}"),
                );
                break;
            }
        };
        let cast = |name: &str, to: &DataType| -> Result<ArrayRef, String> {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| format!("column `{name}` is missing from a row group"))?;
            contained(|| arrow_cast::cast(column, to))
        };
        let mut features = Vec::with_capacity(wanted.len());
        for ((_, name), kind) in wanted.iter().zip(&kinds) {
            let to = match kind {
                Kind::Number => DataType::Float64,
                Kind::Name => DataType::Utf8,
            };
            match cast(name, &to) {
                Ok(a) => features.push(a),
                Err(m) => {
                    report.problem(seen + 1, Some(name.clone()), m);
                    break 'batches;
                }
            }
        }
        let mut carried = Vec::with_capacity(passthrough.names.len());
        for name in passthrough.names {
            match cast(name, &DataType::Utf8) {
                Ok(a) => carried.push(a),
                Err(m) => {
                    report.problem(seen + 1, Some(name.clone()), m);
                    break 'batches;
                }
            }
        }
        for r in 0..batch.num_rows() {
            seen += 1;
            if over_limit(&mut report, seen, max_rows) {
                break 'batches;
            }
            let before = report.problems.len();
            passthrough.values.clear();
            for (i, (((feature, name), kind), column)) in
                wanted.iter().zip(&kinds).zip(&features).enumerate()
            {
                let f = &spec.inputs[*feature];
                let value = if column.is_null(r) {
                    Err("missing value".to_string())
                } else {
                    match kind {
                        Kind::Number => f.number(column.as_primitive::<Float64Type>().value(r)),
                        Kind::Name => f.category(column.as_string::<i32>().value(r)),
                    }
                };
                match value {
                    Ok(y) => row[i] = y,
                    Err(message) => report.problem(seen, Some(name.clone()), message),
                }
            }
            for (name, column) in passthrough.names.iter().zip(&carried) {
                let text = column.as_string::<i32>();
                let value = if text.is_null(r) { "" } else { text.value(r) };
                if let Err(message) = passthrough.push(value.to_string()) {
                    report.problem(seen, Some(name.clone()), message);
                }
            }
            if report.problems.len() == before {
                passthrough.write()?;
                write_row(spool, &row)?;
                report.rows += 1;
            } else if report.full() {
                report.problems.truncate(MAX_PROBLEMS);
                report.truncated = true;
                break 'batches;
            }
        }
    }
    if report.rows == 0 && report.problems.is_empty() {
        report.problem(1, None, "no data rows");
    }
    Ok(report)
}

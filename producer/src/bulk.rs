//! Reading bulk files: CSV (a header row naming the features; fields
//! separated by `,`, `;`, tab or `|`, given or found from the header) or
//! JSONL (one job's `inputs` per line), validated row by row as the upload
//! streams in. A categorical feature's cells may hold its names.
//!
//! Valid rows are appended to a spool file as little-endian f32, so memory
//! stays flat whatever the file size, and nothing is published until the
//! whole file has passed: a file with bad rows is refused with the line and
//! reason of each problem (the first [`MAX_PROBLEMS`]) and enqueues nothing.
//! No record is held past [`MAX_RECORD_BYTES`], however it is quoted
//! ([`crate::record_limit`]).

use crate::detail::Detail;
use crate::record_limit::{LineLimit, RecordLimit};
use crate::validate::features;
use infq_common::registry::ModelSpec;
use std::io::{BufRead, BufReader, Read, Write};

mod parquet_in;
pub use parquet_in::read_parquet;

/// Problems reported for one file before reading stops.
pub const MAX_PROBLEMS: usize = 100;

pub use crate::record_limit::{RecordTooLong, MAX_RECORD_BYTES};

/// The formats a bulk file may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, with a header row.
    Csv,
    /// One JSON value per line: an object of named features or an array.
    Jsonl,
    /// Apache Parquet ([`read_parquet`]).
    Parquet,
}

impl Format {
    /// Every name `?format=` accepts ([`Format::detect`]).
    pub const NAMES: [&'static str; 4] = ["csv", "jsonl", "ndjson", "parquet"];

    /// From `?format=`, or else from the `Content-Type`; CSV when neither says.
    pub fn detect(query: Option<&str>, content_type: Option<&str>) -> Result<Self, String> {
        if let Some(q) = query {
            return match q {
                "csv" => Ok(Format::Csv),
                "jsonl" | "ndjson" => Ok(Format::Jsonl),
                "parquet" => Ok(Format::Parquet),
                other => Err(format!("format `{other}`: use csv, jsonl or parquet")),
            };
        }
        let ct = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match ct.as_str() {
            "application/jsonl"
            | "application/x-ndjson"
            | "application/x-jsonlines"
            | "application/json-lines"
            | "application/ndjson" => Ok(Format::Jsonl),
            "application/vnd.apache.parquet" | "application/x-parquet" | "application/parquet" => {
                Ok(Format::Parquet)
            }
            _ => Ok(Format::Csv),
        }
    }
}

/// What reading a file found.
#[derive(Debug, Default)]
pub struct Report {
    /// Valid rows spooled.
    pub rows: u64,
    /// Problems, each with its line (the first [`MAX_PROBLEMS`]).
    pub problems: Vec<Detail>,
    /// Whether reading stopped early (too many problems or rows).
    pub truncated: bool,
    /// The row limit that stopped reading, if one did.
    pub over_limit: Option<String>,
}

impl Report {
    fn problem(&mut self, line: u64, field: Option<String>, message: impl Into<String>) {
        self.problems.push(Detail {
            field,
            line: Some(line),
            message: message.into(),
        });
    }

    fn full(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }
}

/// Reads `input` in `format`, writes each valid row to `spool` (f32 LE, in
/// schema order), and stops early after [`MAX_PROBLEMS`] problems or more
/// than `max_rows` rows. I/O errors of the upload or the spool are returned
/// as errors, and so is a record longer than [`MAX_RECORD_BYTES`] (a
/// [`RecordTooLong`] inside the I/O error); everything else wrong with the
/// content goes into the report.
pub fn read_rows<R: Read, W: Write>(
    format: Format,
    input: R,
    spec: &ModelSpec,
    spool: &mut W,
    max_rows: u64,
) -> std::io::Result<Report> {
    read_rows_within(format, input, spec, spool, max_rows, MAX_RECORD_BYTES)
}

/// [`read_rows`] with records of at most `max_record_bytes` (tests and
/// fuzzing use small limits, to reach them with small inputs).
pub fn read_rows_within<R: Read, W: Write>(
    format: Format,
    input: R,
    spec: &ModelSpec,
    spool: &mut W,
    max_rows: u64,
    max_record_bytes: u64,
) -> std::io::Result<Report> {
    let mut none = Passthrough::none();
    read_all(
        format,
        None,
        input,
        spec,
        spool,
        &mut none,
        max_rows,
        max_record_bytes,
    )
}

/// Most passthrough columns an upload may name.
pub const MAX_PASSTHROUGH_COLUMNS: usize = 16;
pub use infq_common::registry::MAX_PASSTHROUGH_VALUE_BYTES;
/// Names a passthrough column may not take: the keys of a result line.
pub const RESERVED_NAMES: [&str; 7] = [
    "row",
    "output",
    "error",
    "explanation",
    "model",
    "version",
    "model_sha256",
];

/// The client's own columns to carry through to the results
/// (`passthrough=loan_id,branch`), and where each valid row's values go:
/// a spool of their own, each value a little-endian u32 length and its
/// bytes, row after row.
pub struct Passthrough<'a> {
    names: &'a [String],
    out: Option<&'a mut dyn Write>,
    values: Vec<String>,
}

impl<'a> Passthrough<'a> {
    /// No passthrough columns.
    pub fn none() -> Self {
        Self {
            names: &[],
            out: None,
            values: Vec::new(),
        }
    }

    /// The columns `names`, spooled to `out`.
    pub fn new(names: &'a [String], out: &'a mut dyn Write) -> Self {
        Self {
            names,
            out: Some(out),
            values: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Checks one value; a problem's message otherwise.
    fn push(&mut self, value: String) -> Result<(), String> {
        if value.len() > MAX_PASSTHROUGH_VALUE_BYTES {
            return Err(format!(
                "passthrough values are at most {MAX_PASSTHROUGH_VALUE_BYTES} bytes"
            ));
        }
        self.values.push(value);
        Ok(())
    }

    /// Writes the row's values (once the row is valid).
    fn write(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            for v in &self.values {
                out.write_all(&(v.len() as u32).to_le_bytes())?;
                out.write_all(v.as_bytes())?;
            }
        }
        self.values.clear();
        Ok(())
    }
}

/// Parses `?passthrough=a,b`: distinct names, none of them a result key.
pub fn parse_passthrough(s: &str) -> Result<Vec<String>, String> {
    // `passthrough=`: an empty list, as OpenAPI writes one.
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = s.split(',').map(|n| n.trim().to_string()).collect();
    if names.len() > MAX_PASSTHROUGH_COLUMNS {
        return Err(format!("at most {MAX_PASSTHROUGH_COLUMNS} columns"));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || n.chars().count() > 64 {
            return Err("column names of 1 to 64 characters, separated by commas".into());
        }
        if RESERVED_NAMES.contains(&n.as_str()) {
            return Err(format!(
                "`{n}` is a key of every result line; rename the column"
            ));
        }
        if names[..i].contains(n) {
            return Err(format!("`{n}` is named twice"));
        }
    }
    Ok(names)
}

/// Reads passthrough values back from their spool, `n` at a time.
pub fn read_passthrough<R: Read>(input: &mut R, n: usize) -> std::io::Result<Vec<String>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut bytes)?;
        out.push(String::from_utf8(bytes).map_err(std::io::Error::other)?);
    }
    Ok(out)
}

/// [`read_rows`] with the CSV field separator given (`?delimiter=`); with
/// `None` it is found from the header line ([`sniff`]).
#[allow(clippy::too_many_arguments)]
pub fn read_upload<R: Read, W: Write>(
    format: Format,
    delimiter: Option<u8>,
    input: R,
    spec: &ModelSpec,
    spool: &mut W,
    passthrough: &mut Passthrough,
    max_rows: u64,
) -> std::io::Result<Report> {
    read_all(
        format,
        delimiter,
        input,
        spec,
        spool,
        passthrough,
        max_rows,
        MAX_RECORD_BYTES,
    )
}

/// Field separators a CSV file may use: `,` and the `;` of European
/// spreadsheet exports, tab and `|`.
pub const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Every spelling `?delimiter=` accepts ([`parse_delimiter`]).
pub const DELIMITER_NAMES: [&str; 6] = [",", ";", "|", "tab", "\t", "\\t"];

/// `?delimiter=`: `,`, `;`, `|`, or `tab` (also `\t`).
pub fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "," => Ok(b','),
        ";" => Ok(b';'),
        "|" => Ok(b'|'),
        "tab" | "\t" | "\\t" => Ok(b'\t'),
        _ => Err("use `,`, `;`, `|` or `tab`".into()),
    }
}

/// The separator of a header line: whichever of [`DELIMITERS`] occurs
/// most often outside quotes (the first listed on a tie), `,` when none.
pub fn sniff(header: &[u8]) -> u8 {
    let mut counts = [0usize; DELIMITERS.len()];
    let mut quoted = false;
    for &b in header.split(|&b| b == b'\n').next().unwrap_or_default() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if let Some(k) = DELIMITERS.iter().position(|&d| d == b) {
                counts[k] += 1;
            }
        }
    }
    let best = (0..DELIMITERS.len())
        .rev()
        .max_by_key(|&k| counts[k])
        .filter(|&k| counts[k] > 0);
    best.map_or(b',', |k| DELIMITERS[k])
}

/// Reads up to the end of the first line (at most `max` bytes, never more)
/// so the header's separator can be found, and gives the bytes read back to
/// be read again.
fn peek_line<R: Read>(input: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(max.min(8 << 10));
    let mut buf = [0u8; 8 << 10];
    while head.len() < max && !head.contains(&b'\n') {
        let room = (max - head.len()).min(buf.len());
        let n = match input.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[allow(clippy::too_many_arguments)]
fn read_all<R: Read, W: Write>(
    format: Format,
    delimiter: Option<u8>,
    mut input: R,
    spec: &ModelSpec,
    spool: &mut W,
    passthrough: &mut Passthrough,
    max_rows: u64,
    max_record_bytes: u64,
) -> std::io::Result<Report> {
    match format {
        Format::Csv => {
            // Within the record limit: the header is a record too.
            let peek = usize::try_from(max_record_bytes).unwrap_or(usize::MAX);
            let head = peek_line(&mut input, peek.min(64 << 10))?;
            let delimiter = delimiter.unwrap_or_else(|| sniff(&head));
            read_csv(
                RecordLimit::new(std::io::Cursor::new(head).chain(input), max_record_bytes),
                delimiter,
                spec,
                spool,
                passthrough,
                max_rows,
            )
        }
        Format::Jsonl => read_jsonl(
            LineLimit::new(input, max_record_bytes),
            spec,
            spool,
            passthrough,
            max_rows,
        ),
        // Read from a file, not a stream: the upload spools it first.
        Format::Parquet => Err(std::io::Error::other(
            "a Parquet file is read with read_parquet",
        )),
    }
}

fn write_row<W: Write>(spool: &mut W, row: &[f32]) -> std::io::Result<()> {
    for v in row {
        spool.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

fn over_limit(report: &mut Report, line: u64, max_rows: u64) -> bool {
    if report.rows >= max_rows {
        report.problem(line, None, format!("more than {max_rows} rows"));
        report.over_limit = Some(format!(
            "the file has more than {max_rows} rows (producer.max_batch_rows)"
        ));
        report.truncated = true;
        return true;
    }
    false
}

/// Ends the record the CSV reader just read: refuses it if it passed the
/// record limit (the feed stops only a little past it), and marks where
/// the next one starts.
fn end_record<R: Read>(rdr: &mut csv::Reader<RecordLimit<R>>) -> std::io::Result<()> {
    let end = rdr.position().clone();
    rdr.get_mut()
        .next_record(&end)
        .map_err(RecordTooLong::into_io)
}

fn read_csv<R: Read, W: Write>(
    input: RecordLimit<R>,
    delimiter: u8,
    spec: &ModelSpec,
    spool: &mut W,
    passthrough: &mut Passthrough,
    max_rows: u64,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    // Files separated by `;` write decimals with a comma.
    let decimal_comma = delimiter == b';';
    // Fields are trimmed where they are read (`str::trim`, as csv's
    // `Trim::All` does): that copies no record.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .trim(csv::Trim::Headers)
        .from_reader(input);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return csv_error(e, report, 1),
    };
    end_record(&mut rdr)?;
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        report.problem(
            1,
            None,
            "empty file: expected a header row naming the features",
        );
        return Ok(report);
    }
    // One column per value: a number's name, or `name[k]` for value k
    // (row-major) of a tensor feature.
    let wanted = spec.columns();
    let mut at: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        at.entry(h).or_default().push(i);
    }
    let mut columns = Vec::with_capacity(wanted.len());
    for (_, name) in &wanted {
        match at.get(name.as_str()).map(Vec::as_slice) {
            Some([i]) => columns.push(*i),
            None | Some([]) => report.problem(1, Some(name.clone()), "missing column"),
            Some(_) => report.problem(1, Some(name.clone()), "column named more than once"),
        }
        if report.full() {
            report.truncated = true;
            break;
        }
    }
    let mut carried = Vec::with_capacity(passthrough.names.len());
    for name in passthrough.names {
        match at.get(name.as_str()).map(Vec::as_slice) {
            Some([i]) => carried.push(*i),
            None | Some([]) => report.problem(
                1,
                Some(name.clone()),
                "unknown passthrough column: the header has no such column",
            ),
            Some(_) => report.problem(1, Some(name.clone()), "column named more than once"),
        }
    }
    if !report.problems.is_empty() {
        return Ok(report);
    }
    let mut record = csv::StringRecord::new();
    let mut row = vec![0f32; spec.width()];
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => end_record(&mut rdr)?,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return csv_error(e, report, line);
                }
                end_record(&mut rdr)?;
                report.problem(line, None, csv_message(&e));
                if report.full() {
                    report.truncated = true;
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if over_limit(&mut report, line, max_rows) {
            break;
        }
        let before = report.problems.len();
        passthrough.values.clear();
        for (i, ((feature, name), &col)) in wanted.iter().zip(&columns).enumerate() {
            match spec.inputs[*feature].text(record[col].trim(), decimal_comma) {
                Ok(y) => row[i] = y,
                Err(message) => report.problem(line, Some(name.clone()), message),
            }
        }
        for (name, &col) in passthrough.names.iter().zip(&carried) {
            if let Err(message) = passthrough.push(record[col].trim().to_string()) {
                report.problem(line, Some(name.clone()), message);
            }
        }
        if report.problems.len() == before {
            passthrough.write()?;
            write_row(spool, &row)?;
            report.rows += 1;
        } else if report.full() {
            report.problems.truncate(MAX_PROBLEMS);
            report.truncated = true;
            break;
        }
    }
    if report.rows == 0 && report.problems.is_empty() {
        report.problem(1, None, "no data rows");
    }
    Ok(report)
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        _ => e.to_string(),
    }
}

fn csv_error(e: csv::Error, mut report: Report, line: u64) -> std::io::Result<Report> {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Err(io),
        other => {
            report.problem(line, None, format!("{other:?}"));
            Ok(report)
        }
    }
}

fn read_jsonl<R: Read, W: Write>(
    input: R,
    spec: &ModelSpec,
    spool: &mut W,
    passthrough: &mut Passthrough,
    max_rows: u64,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut buf = Vec::with_capacity(256);
    let mut line = 0u64;
    let mut problems = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line += 1;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        if over_limit(&mut report, line, max_rows) {
            break;
        }
        problems.clear();
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(mut value) => {
                // A line's passthrough values sit beside its features (or
                // beside `inputs`); a line without one carries "".
                if !passthrough.is_empty() {
                    for name in passthrough.names {
                        // Taken out, unless it is a feature too.
                        let is_feature = spec.inputs.iter().any(|f| &f.name == name);
                        let v = match value.as_object_mut().and_then(|o| {
                            if is_feature {
                                o.get(name).cloned()
                            } else {
                                o.remove(name)
                            }
                        }) {
                            None | Some(serde_json::Value::Null) => String::new(),
                            Some(serde_json::Value::String(s)) => s,
                            Some(
                                v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)),
                            ) => v.to_string(),
                            Some(_) => {
                                problems.push(Detail::field(
                                    name.clone(),
                                    "a passthrough value is a string, a number or a boolean",
                                ));
                                continue;
                            }
                        };
                        if let Err(message) = passthrough.push(v) {
                            problems.push(Detail::field(name.clone(), message));
                        }
                    }
                }
                let inputs = match value.get("inputs") {
                    Some(inner) if value.is_object() => inner,
                    _ => &value,
                };
                let row = features(spec, inputs, &mut problems);
                if problems.is_empty() {
                    passthrough.write()?;
                    write_row(spool, &row)?;
                    report.rows += 1;
                } else {
                    passthrough.values.clear();
                }
            }
            Err(e) => problems.push(Detail {
                field: None,
                line: None,
                message: format!("not JSON: {e}"),
            }),
        }
        for mut p in problems.drain(..) {
            p.line = Some(line);
            report.problems.push(p);
        }
        if report.full() {
            report.problems.truncate(MAX_PROBLEMS);
            report.truncated = true;
            break;
        }
    }
    if report.rows == 0 && report.problems.is_empty() {
        report.problem(1, None, "no data rows");
    }
    Ok(report)
}

/// Reads spooled rows back, `rows_per_chunk` rows at a time.
pub struct SpoolReader<R> {
    inner: BufReader<R>,
    width: usize,
    left: u64,
}

impl<R: Read> SpoolReader<R> {
    /// A reader of `rows` rows of `width` f32 each.
    pub fn new(inner: R, width: usize, rows: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(1 << 16, inner),
            width,
            left: rows,
        }
    }

    /// The next chunk of up to `n` rows, flat; `None` when all are read.
    pub fn next_chunk(&mut self, n: usize) -> std::io::Result<Option<Vec<f32>>> {
        if self.left == 0 {
            return Ok(None);
        }
        let rows = (n as u64).min(self.left) as usize;
        let mut bytes = vec![0u8; rows * self.width * 4];
        self.inner.read_exact(&mut bytes)?;
        self.left -= rows as u64;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod record_limit_tests;

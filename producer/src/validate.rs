//! Checking a job submission against the model registry. Plain logic, no
//! I/O: every problem in a request is collected, so a client fixes them all
//! at once. Its errors are its own ([`ValidationError`]); the HTTP layer
//! turns them into answers ([`crate::error`]).

use crate::detail::Detail;
use infq_common::job::Priority;
use infq_common::registry::{ModelSpec, Registry};
use infq_common::webhooks::guard::Guard;
use serde::Deserialize;
use serde_json::Value;

/// Why a job submission was refused: the body's shape, its syntax, its
/// model, or its values (every problem listed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not JSON of the expected shape.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// A structural limit of the body (nesting depth, string length) is
    /// passed; the message names it.
    #[error("{0}")]
    LimitExceeded(String),
    /// The model (or version) is not in the registry.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The body parsed but values are wrong; every problem is listed.
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<Detail>),
}

/// Longest deadline a job may ask for: a week.
pub const MAX_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Deepest nesting of arrays and objects in a job body.
pub const MAX_JSON_DEPTH: usize = 16;
/// Longest string (key or value) in a job body, in bytes as sent.
pub const MAX_STRING_BYTES: usize = 4096;

/// Checks a JSON text's nesting depth and string lengths before it is
/// parsed, so a hostile body costs a linear scan and nothing more.
/// Malformed JSON passes here and fails in the parser.
pub fn check_shape(
    body: &[u8],
    max_depth: usize,
    max_string: usize,
) -> Result<(), ValidationError> {
    let (mut depth, mut in_string, mut escaped, mut run) = (0usize, false, false, 0usize);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                continue;
            }
            run += 1;
            if run > max_string {
                return Err(ValidationError::LimitExceeded(format!(
                    "a string is longer than {max_string} bytes"
                )));
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                run = 0;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ValidationError::LimitExceeded(format!(
                        "JSON nested deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The body of `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// `name` or `name@version`.
    pub model: String,
    /// Named features (object) or values in schema order (array).
    pub inputs: Value,
    /// Lane; `interactive` unless given.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Callback URL for the result.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Milliseconds from now after which the job expires unrun.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Client data stored with the job and returned with it.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// A submission that passed every check.
#[derive(Debug)]
pub struct ValidJob<'r> {
    /// The resolved model version.
    pub spec: &'r ModelSpec,
    /// One row of f32 features in schema order.
    pub inputs: Vec<f32>,
    /// Lane.
    pub priority: Priority,
    /// Relative deadline, if any.
    pub deadline_ms: Option<u64>,
    /// Client metadata as JSON text.
    pub metadata: Option<String>,
    /// Callback URL, past the checks that need no lookup.
    pub webhook_url: Option<String>,
}

/// Checks a callback URL's form and, for an address literal, its address;
/// `None` if webhooks are off (no signing secret).
pub fn webhook_url(url: &str, guard: Option<&Guard>, problems: &mut Vec<Detail>) -> Option<String> {
    let Some(guard) = guard else {
        problems.push(Detail::field(
            "webhook_url",
            "webhook callbacks are not enabled on this deployment",
        ));
        return None;
    };
    match guard.parse(url) {
        Ok(t) => Some(t.url.to_string()),
        Err(e) => {
            problems.push(Detail::field("webhook_url", e.to_string()));
            None
        }
    }
}

/// Parses and validates a body; `guard` checks callback URLs (`None`:
/// callbacks are off).
pub fn validate<'r>(
    body: &[u8],
    registry: &'r Registry,
    guard: Option<&Guard>,
) -> Result<ValidJob<'r>, ValidationError> {
    check_shape(body, MAX_JSON_DEPTH, MAX_STRING_BYTES)?;
    let req: JobRequest =
        serde_json::from_slice(body).map_err(|e| ValidationError::Malformed(e.to_string()))?;
    let spec = registry
        .resolve(&req.model)
        .ok_or_else(|| ValidationError::UnknownModel(req.model.clone()))?;
    let mut problems = Vec::new();
    let inputs = features(spec, &req.inputs, &mut problems);
    let webhook_url = req
        .webhook_url
        .as_deref()
        .and_then(|u| webhook_url(u, guard, &mut problems));
    if let Some(d) = req.deadline_ms {
        if d == 0 || d > MAX_DEADLINE_MS {
            problems.push(Detail::field(
                "deadline_ms",
                format!("must be between 1 and {MAX_DEADLINE_MS}"),
            ));
        }
    }
    let metadata = match &req.metadata {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                problems.push(Detail::field(
                    "metadata",
                    format!("at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Some(text)
        }
        Some(_) => {
            problems.push(Detail::field("metadata", "must be an object"));
            None
        }
    };
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(ValidationError::Invalid(problems));
    }
    Ok(ValidJob {
        spec,
        inputs,
        priority: req.priority.unwrap_or_default(),
        deadline_ms: req.deadline_ms,
        metadata,
        webhook_url,
    })
}

/// Converts `inputs` to one row in schema order, recording problems.
/// Accepted: an object of named features; an array of every value in
/// schema order (flat), or of one value per feature; or Open Inference
/// Protocol (KServe v2) tensors, an array of `{name, shape, datatype,
/// data}` objects (see [`v2_tensors`]).
pub fn features(spec: &ModelSpec, inputs: &Value, problems: &mut Vec<Detail>) -> Vec<f32> {
    let width = spec.width();
    let offsets = spec.offsets();
    let mut row = vec![0f32; width];
    match inputs {
        Value::Object(map) => {
            for (i, f) in spec.inputs.iter().enumerate() {
                let path = format!("inputs.{}", f.name);
                match map.get(&f.name) {
                    Some(v) => feature(spec, i, &path, v, &mut row[offsets[i]..], problems),
                    None => problems.push(Detail::field(path, "missing")),
                }
            }
            for key in map.keys() {
                if !spec.inputs.iter().any(|f| &f.name == key) {
                    problems.push(Detail::field(
                        format!("inputs.{}", truncate(key, 64)),
                        "unknown feature",
                    ));
                }
            }
        }
        Value::Array(values) if values.first().is_some_and(Value::is_object) => {
            v2_tensors(spec, values, &mut row, problems);
        }
        Value::Array(values) if values.len() == width && values.iter().all(Value::is_number) => {
            for (j, (i, _)) in spec.columns().into_iter().enumerate() {
                let path = format!("inputs[{j}]");
                if let Some(x) = number(spec, i, &path, &values[j], problems) {
                    row[j] = x;
                }
            }
        }
        Value::Array(values) if values.len() == spec.inputs.len() => {
            for (i, v) in values.iter().enumerate() {
                feature(spec, i, &format!("inputs[{i}]"), v, &mut row[offsets[i]..], problems);
            }
        }
        Value::Array(values) => {
            let names: Vec<_> = spec.inputs.iter().map(|f| f.name.as_str()).collect();
            let per_feature = if spec.is_scalar() {
                String::new()
            } else {
                format!(", or {} (one per feature)", spec.inputs.len())
            };
            problems.push(Detail::field(
                "inputs",
                format!(
                    "expected {width} values in schema order ({}){per_feature}, got {}",
                    names.join(", "),
                    values.len()
                ),
            ));
        }
        _ => problems.push(Detail::field(
            "inputs",
            "must be an object of named features, an array in schema order, or an array of v2 tensors",
        )),
    }
    row
}

/// One feature's value into `out` (which starts at the feature's offset):
/// a number, or for a tensor feature a nested array of its shape or a flat
/// array of its values.
fn feature(
    spec: &ModelSpec,
    i: usize,
    path: &str,
    v: &Value,
    out: &mut [f32],
    problems: &mut Vec<Detail>,
) {
    let f = &spec.inputs[i];
    if f.shape.is_empty() {
        if let Some(x) = number(spec, i, path, v, problems) {
            out[0] = x;
        }
        return;
    }
    let mut flat = Vec::with_capacity(f.size());
    if !flatten(v, &f.shape, &mut flat) {
        flat.clear();
        match v {
            Value::Array(a) if a.len() == f.size() && !a.iter().any(Value::is_array) => {
                flat.extend(a.iter());
            }
            _ => {
                problems.push(Detail::field(
                    path,
                    format!(
                        "expected an array of shape {:?} (or {} values in row-major order)",
                        f.shape,
                        f.size()
                    ),
                ));
                return;
            }
        }
    }
    for (k, x) in flat.iter().enumerate() {
        if let Some(y) = number(spec, i, &format!("{path}[{k}]"), x, problems) {
            out[k] = y;
        }
        if problems.len() >= MAX_PROBLEMS {
            return;
        }
    }
}

/// Most problems reported for one request.
const MAX_PROBLEMS: usize = 100;

/// Collects the leaves of `v` if it is a nested array of exactly `shape`.
fn flatten<'v>(v: &'v Value, shape: &[usize], out: &mut Vec<&'v Value>) -> bool {
    match (shape.split_first(), v) {
        (None, Value::Array(_)) => false,
        (None, leaf) => {
            out.push(leaf);
            true
        }
        (Some((n, rest)), Value::Array(a)) if a.len() == *n => {
            a.iter().all(|x| flatten(x, rest, out))
        }
        _ => false,
    }
}

/// One tensor of an Open Inference Protocol (KServe v2) request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Tensor {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

/// Open Inference Protocol inputs: one tensor per feature, named as the
/// feature, of the feature's shape with or without a leading batch
/// dimension of 1 (a number: `[1]`, `[1, 1]` or `[]`); or a single tensor
/// of shape `[1, width]` (or `[width]`) holding the whole row in schema
/// order. Numeric datatypes (`FP32`, `FP64`, `FP16`, `INT*`, `UINT*`) and
/// `BOOL` (as 0 and 1); `data` flat (row-major) or nested.
pub fn v2_tensors(
    spec: &ModelSpec,
    tensors: &[Value],
    row: &mut [f32],
    problems: &mut Vec<Detail>,
) {
    let offsets = spec.offsets();
    let mut seen = vec![false; spec.inputs.len()];
    for (t_i, raw) in tensors.iter().enumerate() {
        if problems.len() >= MAX_PROBLEMS {
            return;
        }
        let at = format!("inputs[{t_i}]");
        let t: V2Tensor = match serde_json::from_value(raw.clone()) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Detail::field(at, format!("not a v2 tensor: {e}")));
                continue;
            }
        };
        const NUMERIC: [&str; 11] = [
            "FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
            "UINT64",
        ];
        let boolean = t.datatype == "BOOL";
        if !boolean && !NUMERIC.contains(&t.datatype.as_str()) {
            problems.push(Detail::field(
                format!("{at}.datatype"),
                format!("`{}` is not a numeric datatype", truncate(&t.datatype, 16)),
            ));
            continue;
        }
        let mut leaves = Vec::new();
        collect_leaves(&t.data, &mut leaves, 0);
        let count = t
            .shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .unwrap_or(u64::MAX);
        if leaves.len() as u64 != count {
            problems.push(Detail::field(
                format!("{at}.data"),
                format!("{} values for shape {:?}", leaves.len(), t.shape),
            ));
            continue;
        }
        let values: Vec<Value> = leaves
            .into_iter()
            .map(|v| match (boolean, v) {
                (true, Value::Bool(b)) => Value::from(u8::from(*b)),
                (_, v) => v.clone(),
            })
            .collect();
        let fits = |shape: &[usize]| {
            let want: Vec<u64> = shape.iter().map(|d| *d as u64).collect();
            t.shape == want
                || (t.shape.first() == Some(&1) && t.shape[1..] == want[..])
                || (want.is_empty() && t.shape == [1, 1])
        };
        match spec.inputs.iter().position(|f| f.name == t.name) {
            Some(i) => {
                let f = &spec.inputs[i];
                if std::mem::replace(&mut seen[i], true) {
                    problems.push(Detail::field(
                        format!("{at}.name"),
                        format!("`{}` given twice", f.name),
                    ));
                    continue;
                }
                if !fits(&f.shape) {
                    problems.push(Detail::field(
                        format!("{at}.shape"),
                        format!(
                            "`{}` has shape {:?} (a leading 1 may be added)",
                            f.name, f.shape
                        ),
                    ));
                    continue;
                }
                for (k, v) in values.iter().enumerate() {
                    if let Some(y) = number(spec, i, &format!("{at}.data[{k}]"), v, problems) {
                        row[offsets[i] + k] = y;
                    }
                }
            }
            None if tensors.len() == 1 => {
                if !fits(&[spec.width()]) {
                    problems.push(Detail::field(
                        format!("{at}.shape"),
                        format!(
                            "`{}` is no feature; a single tensor holding the whole row has shape [1, {}]",
                            truncate(&t.name, 64),
                            spec.width()
                        ),
                    ));
                    continue;
                }
                seen.iter_mut().for_each(|s| *s = true);
                for (j, (i, _)) in spec.columns().into_iter().enumerate() {
                    if let Some(y) =
                        number(spec, i, &format!("{at}.data[{j}]"), &values[j], problems)
                    {
                        row[j] = y;
                    }
                }
            }
            None => problems.push(Detail::field(
                format!("{at}.name"),
                format!("unknown feature `{}`", truncate(&t.name, 64)),
            )),
        }
        if problems.len() >= MAX_PROBLEMS {
            return;
        }
    }
    for (i, f) in spec.inputs.iter().enumerate() {
        if !seen[i] {
            problems.push(Detail::field(format!("inputs.{}", f.name), "missing"));
        }
    }
}

/// Leaves of a (possibly nested) array, depth-first; non-arrays are leaves.
fn collect_leaves<'v>(v: &'v Value, out: &mut Vec<&'v Value>, depth: usize) {
    match v {
        Value::Array(a) if depth < MAX_JSON_DEPTH => {
            for x in a {
                collect_leaves(x, out, depth + 1);
            }
        }
        leaf => out.push(leaf),
    }
}

fn number(
    spec: &ModelSpec,
    i: usize,
    path: &str,
    v: &Value,
    problems: &mut Vec<Detail>,
) -> Option<f32> {
    let f = &spec.inputs[i];
    let Some(x) = v.as_f64() else {
        problems.push(Detail::field(path, "must be a number"));
        return None;
    };
    let y = x as f32;
    if !y.is_finite() {
        problems.push(Detail::field(path, "must be a finite 32-bit float"));
        return None;
    }
    if f.min.is_some_and(|lo| x < lo) || f.max.is_some_and(|hi| x > hi) {
        let range = match (f.min, f.max) {
            (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => unreachable!("a bound was crossed"),
        };
        problems.push(Detail::field(path, format!("must be {range}")));
        return None;
    }
    Some(y)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    #[test]
    fn hostile_shapes_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            check_shape(deep.as_bytes(), 16, 4096),
            Err(ValidationError::LimitExceeded(m)) if m.contains("16 levels")
        ));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(5000));
        assert!(matches!(
            check_shape(long.as_bytes(), 16, 4096),
            Err(ValidationError::LimitExceeded(m)) if m.contains("4096 bytes")
        ));
        // Brackets and escaped quotes inside strings do not count.
        let ok = r#"{"a":"[[[[[[[[[[[[[[[[[[[[\"{{{{{{{{{{{{{{{{{{{{{","b":[[1]]}"#;
        assert!(check_shape(ok.as_bytes(), 3, 4096).is_ok());
        assert!(check_shape(b"[[[[", 3, 10).is_err());
        // The limit itself is allowed; one byte more is not.
        let at = |n: usize| format!(r#"{{"k":"{}"}}"#, "s".repeat(n));
        assert!(check_shape(at(10).as_bytes(), 3, 10).is_ok());
        assert!(check_shape(at(11).as_bytes(), 3, 10).is_err());
    }
    use std::path::Path;

    fn registry() -> Registry {
        Registry::parse(
            r#"
[[model]]
name = "credit-default"
version = "1"
path = "x.pt"
inputs = [{ name = "student", min = 0, max = 1 }, { name = "balance", min = 0 }, { name = "income" }]
outputs = [{ name = "p" }]
"#,
            Path::new("models.toml"),
            Path::new("."),
        )
        .unwrap()
    }

    fn details(body: &str) -> Vec<Detail> {
        match validate(body.as_bytes(), &registry(), None) {
            Err(ValidationError::Invalid(d)) => d,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn named_and_positional_inputs_agree() {
        let r = registry();
        let a = validate(
            br#"{"model":"credit-default","inputs":{"income":40000.5,"student":1,"balance":729.52}}"#,
            &r,
            None,
        )
        .unwrap();
        let b = validate(
            br#"{"model":"credit-default@1","inputs":[1,729.52,40000.5]}"#,
            &r,
            None,
        )
        .unwrap();
        assert_eq!(a.inputs, vec![1.0, 729.52, 40000.5]);
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.priority, Priority::Interactive);
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let d =
            details(r#"{"model":"credit-default","inputs":{"student":2,"balance":"x","extra":1}}"#);
        let fields: Vec<_> = d.iter().map(|d| d.field.clone().unwrap()).collect();
        assert_eq!(
            fields,
            vec![
                "inputs.student",
                "inputs.balance",
                "inputs.income",
                "inputs.extra"
            ]
        );
    }

    #[test]
    fn wrong_count_names_the_schema() {
        let d = details(r#"{"model":"credit-default","inputs":[1,2]}"#);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].message.contains("student, balance, income"),
            "{:?}",
            d[0]
        );
    }

    #[test]
    fn non_finite_values_are_refused() {
        let d = details(r#"{"model":"credit-default","inputs":[0, 1e39, 1]}"#);
        assert_eq!(d[0].field.as_deref(), Some("inputs[1]"));
        for body in [
            r#"{"model":"credit-default","inputs":[0, NaN, 1]}"#,
            r#"{"model":"credit-default","inputs":[0, Infinity, 1]}"#,
            r#"{"model":"credit-default","inputs":[0, 1e400, 1]}"#,
        ] {
            assert!(matches!(
                validate(body.as_bytes(), &registry(), None),
                Err(ValidationError::Malformed(_))
            ));
        }
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let r = registry();
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let long_key = format!(
            r#"{{"model":"credit-default","inputs":{{"{}":1}}}}"#,
            "k".repeat(100_000)
        );
        for body in [
            "".to_string(),
            "null".into(),
            "{".into(),
            "\u{0}\u{1}".into(),
            r#"{"model":"credit-default"}"#.into(),
            r#"{"model":"credit-default","inputs":[1,2,3],"surprise":1}"#.into(),
            r#"{"model":7,"inputs":[1,2,3]}"#.into(),
            deep,
        ] {
            let err = validate(body.as_bytes(), &r, None).unwrap_err();
            assert!(
                ApiError::from(err.clone()).status().is_client_error(),
                "{body:.40}: {err:?}"
            );
        }
        // A key past the string limit is refused before parsing (413).
        let err = validate(long_key.as_bytes(), &r, None).unwrap_err();
        assert!(matches!(err, ValidationError::LimitExceeded(_)), "{err:?}");
        // One within it is an unknown feature, named without echoing it all.
        let key = format!(
            r#"{{"model":"credit-default","inputs":{{"{}":1}}}}"#,
            "k".repeat(4000)
        );
        let err = validate(key.as_bytes(), &r, None).unwrap_err();
        let ValidationError::Invalid(d) = err else {
            panic!()
        };
        assert!(d.iter().all(|d| d.field.as_ref().unwrap().len() < 100));
    }

    #[test]
    fn webhook_urls_are_checked_when_callbacks_are_on() {
        let body = |url: &str| {
            format!(
                r#"{{"model":"credit-default","inputs":[1,2,3],"webhook_url":{}}}"#,
                serde_json::json!(url)
            )
        };
        // Off: any URL is refused with the reason.
        let d = details(&body("https://hooks.example.com/x"));
        assert!(d[0].message.contains("not enabled"), "{d:?}");
        let guard = Guard::default();
        let r = registry();
        let ok = validate(
            body("https://hooks.example.com/x").as_bytes(),
            &r,
            Some(&guard),
        )
        .unwrap();
        assert_eq!(
            ok.webhook_url.as_deref(),
            Some("https://hooks.example.com/x")
        );
        for (url, why) in [
            ("http://hooks.example.com/x", "scheme `http`"),
            ("https://169.254.169.254/latest", "cloud metadata"),
            ("https://0x7f.1/", "loopback"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            ("https://u:p@hooks.example.com/", "user name"),
            ("hooks.example.com", "not a valid URL"),
        ] {
            let Err(ValidationError::Invalid(d)) = validate(body(url).as_bytes(), &r, Some(&guard))
            else {
                panic!("{url} passed")
            };
            assert_eq!(d[0].field.as_deref(), Some("webhook_url"));
            assert!(d[0].message.contains(why), "{url}: {d:?}");
        }
    }

    #[test]
    fn unknown_model_and_options() {
        assert!(matches!(
            validate(br#"{"model":"nope","inputs":[1,2,3]}"#, &registry(), None),
            Err(ValidationError::UnknownModel(_))
        ));
        let d = details(
            r#"{"model":"credit-default","inputs":[1,2,3],"deadline_ms":0,"metadata":[1]}"#,
        );
        let fields: Vec<_> = d.iter().map(|d| d.field.clone().unwrap()).collect();
        assert_eq!(fields, vec!["deadline_ms", "metadata"]);
    }

    fn seq_registry() -> Registry {
        Registry::parse(
            r#"
[[model]]
name = "seq"
version = "1"
path = "x.pt"
inputs = [{ name = "h", shape = [2, 3], min = 0 }, { name = "t" }]
outputs = [{ name = "p" }]
"#,
            Path::new("models.toml"),
            Path::new("."),
        )
        .unwrap()
    }

    fn row(body: &str, r: &Registry) -> Result<Vec<f32>, Vec<Detail>> {
        match validate(body.as_bytes(), r, None) {
            Ok(j) => Ok(j.inputs),
            Err(ValidationError::Invalid(d)) => Err(d),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn fields(d: &[Detail]) -> Vec<String> {
        d.iter()
            .map(|d| d.field.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn tensor_features_nested_flat_and_positional_agree() {
        let r = seq_registry();
        let want = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        for body in [
            r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,5,6]],"t":7}}"#,
            r#"{"model":"seq","inputs":{"h":[1,2,3,4,5,6],"t":7}}"#,
            r#"{"model":"seq","inputs":[[[1,2,3],[4,5,6]],7]}"#,
            r#"{"model":"seq","inputs":[1,2,3,4,5,6,7]}"#,
        ] {
            assert_eq!(row(body, &r).unwrap(), want, "{body}");
        }
    }

    #[test]
    fn tensor_features_of_the_wrong_shape_or_range_are_named() {
        let r = seq_registry();
        let d = row(r#"{"model":"seq","inputs":{"h":[[1,2],[4,5]],"t":7}}"#, &r).unwrap_err();
        assert_eq!(fields(&d), vec!["inputs.h"]);
        assert!(d[0].message.contains("[2, 3]"), "{d:?}");
        let d = row(
            r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,-5,"x"]],"t":7}}"#,
            &r,
        )
        .unwrap_err();
        assert_eq!(fields(&d), vec!["inputs.h[4]", "inputs.h[5]"]);
        let d = row(r#"{"model":"seq","inputs":[1,2,3]}"#, &r).unwrap_err();
        assert!(d[0].message.contains("expected 7 values"), "{d:?}");
        let d = row(r#"{"model":"seq","inputs":{"h":[[[1]]],"t":7}}"#, &r).unwrap_err();
        assert_eq!(fields(&d), vec!["inputs.h"]);
    }

    #[test]
    fn v2_tensors_give_the_same_row_as_named_inputs() {
        let r = seq_registry();
        let named = row(
            r#"{"model":"seq","inputs":{"h":[[1,2,3],[4,5,6]],"t":7}}"#,
            &r,
        )
        .unwrap();
        for body in [
            r#"{"model":"seq","inputs":[
                {"name":"t","shape":[1],"datatype":"INT64","data":[7]},
                {"name":"h","shape":[1,2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]}"#,
            r#"{"model":"seq","inputs":[
                {"name":"h","shape":[2,3],"datatype":"FP64","data":[[1,2,3],[4,5,6]]},
                {"name":"t","shape":[1,1],"datatype":"FP32","data":[[7]],"parameters":{}}]}"#,
            r#"{"model":"seq","inputs":[
                {"name":"input-0","shape":[1,7],"datatype":"FP32","data":[1,2,3,4,5,6,7]}]}"#,
        ] {
            assert_eq!(row(body, &r).unwrap(), named, "{body}");
        }
        let credit = registry();
        let b = row(
            r#"{"model":"credit-default","inputs":[
                {"name":"student","shape":[1],"datatype":"BOOL","data":[true]},
                {"name":"balance","shape":[1],"datatype":"FP32","data":[729.5]},
                {"name":"income","shape":[],"datatype":"FP32","data":40000}]}"#,
            &credit,
        )
        .unwrap();
        assert_eq!(b, vec![1.0, 729.5, 40000.0]);
    }

    #[test]
    fn a_flood_of_bad_tensors_reports_at_most_a_hundred_problems() {
        let r = seq_registry();
        let tensors = vec!["{}"; 50_000].join(",");
        let body = format!(r#"{{"model":"seq","inputs":[{tensors}]}}"#);
        let d = row(&body, &r).unwrap_err();
        assert_eq!(d.len(), MAX_PROBLEMS);
    }

    #[test]
    fn malformed_and_hostile_v2_tensors_are_refused_with_their_field() {
        let r = seq_registry();
        let cases: &[(&str, &str)] = &[
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"BYTES","data":["a"]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].datatype",
            ),
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].data",
            ),
            (
                r#"[{"name":"h","shape":[3,2],"datatype":"FP32","data":[1,2,3,4,5,6]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].shape",
            ),
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]},{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]"#,
                "inputs[1].name",
            ),
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6]}]"#,
                "inputs.t",
            ),
            (
                r#"[{"name":"zz","shape":[1],"datatype":"FP32","data":[1]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].name",
            ),
            (
                r#"[{"name":"h","shape":[18446744073709551615,2],"datatype":"FP32","data":[1]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].data",
            ),
            (
                r#"[{"name":"h","datatype":"FP32","data":[1]}]"#,
                "inputs[0]",
            ),
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,1e40]},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0].data[5]",
            ),
            (
                r#"[{"name":"h","shape":[2,3],"datatype":"FP32","data":[1,2,3,4,5,6],"extra":1},{"name":"t","shape":[1],"datatype":"FP32","data":[1]}]"#,
                "inputs[0]",
            ),
        ];
        for (tensors, field) in cases {
            let body = format!(r#"{{"model":"seq","inputs":{tensors}}}"#);
            let d = row(&body, &r).unwrap_err();
            assert!(fields(&d).iter().any(|f| f == field), "{field}: {d:?}");
        }
    }
}

//! Checking a job submission against the model registry. Plain logic, no
//! I/O: every problem in a request is collected, so a client fixes them all
//! at once.

use crate::error::{ApiError, Detail};
use infq_common::job::Priority;
use infq_common::registry::{ModelSpec, Registry};
use infq_common::webhooks::guard::Guard;
use serde::Deserialize;
use serde_json::Value;

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
pub fn check_shape(body: &[u8], max_depth: usize, max_string: usize) -> Result<(), ApiError> {
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
                return Err(ApiError::LimitExceeded(format!(
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
                    return Err(ApiError::LimitExceeded(format!(
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
) -> Result<ValidJob<'r>, ApiError> {
    check_shape(body, MAX_JSON_DEPTH, MAX_STRING_BYTES)?;
    let req: JobRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let spec = registry
        .resolve(&req.model)
        .ok_or_else(|| ApiError::UnknownModel(req.model.clone()))?;
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
        return Err(ApiError::Invalid(problems));
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
pub fn features(spec: &ModelSpec, inputs: &Value, problems: &mut Vec<Detail>) -> Vec<f32> {
    let width = spec.width();
    let mut row = vec![0f32; width];
    match inputs {
        Value::Object(map) => {
            for (i, f) in spec.inputs.iter().enumerate() {
                let path = format!("inputs.{}", f.name);
                match map.get(&f.name) {
                    Some(v) => {
                        if let Some(x) = number(spec, i, &path, v, problems) {
                            row[i] = x;
                        }
                    }
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
        Value::Array(values) => {
            if values.len() != width {
                let names: Vec<_> = spec.inputs.iter().map(|f| f.name.as_str()).collect();
                problems.push(Detail::field(
                    "inputs",
                    format!(
                        "expected {width} values in schema order ({}), got {}",
                        names.join(", "),
                        values.len()
                    ),
                ));
            } else {
                for (i, v) in values.iter().enumerate() {
                    if let Some(x) = number(spec, i, &format!("inputs[{i}]"), v, problems) {
                        row[i] = x;
                    }
                }
            }
        }
        _ => problems.push(Detail::field(
            "inputs",
            "must be an object of named features or an array in schema order",
        )),
    }
    row
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

    #[test]
    fn hostile_shapes_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            check_shape(deep.as_bytes(), 16, 4096),
            Err(ApiError::LimitExceeded(m)) if m.contains("16 levels")
        ));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(5000));
        assert!(matches!(
            check_shape(long.as_bytes(), 16, 4096),
            Err(ApiError::LimitExceeded(m)) if m.contains("4096 bytes")
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
            Err(ApiError::Invalid(d)) => d,
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
                Err(ApiError::Malformed(_))
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
            assert!(err.status().is_client_error(), "{body:.40}: {err:?}");
        }
        // A key past the string limit is refused before parsing (413).
        let err = validate(long_key.as_bytes(), &r, None).unwrap_err();
        assert!(matches!(err, ApiError::LimitExceeded(_)), "{err:?}");
        // One within it is an unknown feature, named without echoing it all.
        let key = format!(
            r#"{{"model":"credit-default","inputs":{{"{}":1}}}}"#,
            "k".repeat(4000)
        );
        let err = validate(key.as_bytes(), &r, None).unwrap_err();
        let ApiError::Invalid(d) = err else { panic!() };
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
            let Err(ApiError::Invalid(d)) = validate(body(url).as_bytes(), &r, Some(&guard)) else {
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
            Err(ApiError::UnknownModel(_))
        ));
        let d = details(
            r#"{"model":"credit-default","inputs":[1,2,3],"deadline_ms":0,"metadata":[1]}"#,
        );
        let fields: Vec<_> = d.iter().map(|d| d.field.clone().unwrap()).collect();
        assert_eq!(fields, vec!["deadline_ms", "metadata"]);
    }
}

//! One input value: a finite f32 within its feature's bounds.

use crate::detail::Detail;
use infq_common::registry::ModelSpec;
use serde_json::Value;

/// One value as an f32 within the feature's bounds (a categorical
/// feature's name or code); a problem at `path` otherwise. The feature's
/// spec owns the rules ([`infq_common::registry::FeatureSpec::number`]).
pub(super) fn number(
    spec: &ModelSpec,
    i: usize,
    path: &str,
    v: &Value,
    problems: &mut Vec<Detail>,
) -> Option<f32> {
    let f = &spec.inputs[i];
    let got = match v {
        Value::Number(_) => v
            .as_f64()
            .map_or_else(|| Err("must be a number".into()), |x| f.number(x)),
        Value::String(name) => f.category(name),
        _ if f.is_categorical() => Err(format!("must be one of {}", f.category_names())),
        _ => Err("must be a number".into()),
    };
    got.map_err(|message| problems.push(Detail::field(path, message)))
        .ok()
}

/// `s` cut to `max` characters, marked with `...` when cut, so a
/// problem never echoes a whole hostile key.
pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

//! One input value: a finite f32 within its feature's bounds.

use crate::detail::Detail;
use infq_common::registry::ModelSpec;
use serde_json::Value;

/// One value as an f32 within the feature's bounds; a problem at `path`
/// otherwise.
pub(super) fn number(
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

/// `s` cut to `max` characters, marked with `...` when cut, so a
/// problem never echoes a whole hostile key.
pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

//! A job's `inputs` as one row in schema order: named features, values
//! in schema order, one value per feature, or v2 tensors.

use super::limits::MAX_PROBLEMS;
use super::number::{number, truncate};
use super::v2::v2_tensors;
use crate::detail::Detail;
use infq_common::registry::ModelSpec;
use serde_json::Value;

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

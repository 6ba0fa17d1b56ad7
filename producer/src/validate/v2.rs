//! Open Inference Protocol (KServe v2) tensors as a job's inputs.

use super::limits::{MAX_JSON_DEPTH, MAX_PROBLEMS};
use super::number::{number, truncate};
use crate::detail::Detail;
use infq_common::registry::ModelSpec;
use serde::Deserialize;
use serde_json::Value;

/// The datatypes a tensor may have: every numeric one, and `BOOL` (as 0
/// and 1).
pub const DATATYPES: [&str; 12] = [
    "FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
    "UINT64", "BOOL",
];

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
        let boolean = t.datatype == "BOOL";
        if !DATATYPES.contains(&t.datatype.as_str()) {
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

//! The checks of a registry file's entries: a bad value stops start-up
//! with the file, the model and the field.

use super::device::{parse_device, DeviceChoice};
use super::error::RegistryError;
use super::name::valid_name;
use super::size::{rows_per_message, F16_MAX, MAX_WIDTH};
use super::spec::{ExplainSpec, ModelSpec, Precision};
use std::collections::HashSet;
use std::path::Path;

fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// Checks every entry, naming the first bad value by model and field.
pub(super) fn validate(models: &[ModelSpec], path: &Path) -> Result<(), RegistryError> {
    let invalid = |model: String, field: &str, message: String| RegistryError::Invalid {
        path: path.to_path_buf(),
        model,
        field: field.to_string(),
        message,
    };
    if models.is_empty() {
        return Err(RegistryError::Parse {
            path: path.to_path_buf(),
            message: "no [[model]] entries".into(),
        });
    }
    let mut ids = HashSet::new();
    let mut defaults = HashSet::new();
    for (i, m) in models.iter().enumerate() {
        let label = if m.name.is_empty() {
            format!("#{}", i + 1)
        } else {
            m.id()
        };
        if !valid_name(&m.name) {
            return Err(invalid(
                label,
                "name",
                "use 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit".into(),
            ));
        }
        if !valid_version(&m.version) {
            return Err(invalid(
                label,
                "version",
                "use 1 to 32 of A-Z, a-z, 0-9, '.', '-' and '_'".into(),
            ));
        }
        if !ids.insert(m.id()) {
            return Err(invalid(label, "version", "listed twice".into()));
        }
        if m.default && !defaults.insert(m.name.clone()) {
            return Err(invalid(
                label,
                "default",
                "another version of this model is already the default".into(),
            ));
        }
        if m.inputs.is_empty() {
            return Err(invalid(
                label,
                "inputs",
                "at least one input is needed".into(),
            ));
        }
        let mut names = HashSet::new();
        for f in &m.inputs {
            if f.name.is_empty() || !names.insert(f.name.as_str()) {
                return Err(invalid(
                    label,
                    "inputs",
                    format!("input names must be non-empty and unique (`{}`)", f.name),
                ));
            }
            if f.shape.iter().any(|d| !(1..=MAX_WIDTH).contains(d))
                || f.shape.len() > 4
                || f.shape
                    .iter()
                    .try_fold(1usize, |a, d| a.checked_mul(*d))
                    .is_none_or(|n| n > MAX_WIDTH)
            {
                return Err(invalid(
                    label,
                    "inputs.shape",
                    format!(
                        "`{}`: at most 4 dimensions of at least 1, and at most {MAX_WIDTH} values",
                        f.name
                    ),
                ));
            }
            if f.is_categorical() {
                if !f.shape.is_empty() {
                    return Err(invalid(
                        label,
                        "inputs.categories",
                        format!("`{}`: only a single number can be categorical", f.name),
                    ));
                }
                let mut codes = HashSet::new();
                for (name, &code) in &f.categories {
                    if name.is_empty() || name.len() > 64 || name.trim() != name {
                        return Err(invalid(
                            label,
                            "inputs.categories",
                            format!(
                                "`{}`: names are 1 to 64 bytes, without spaces at either end",
                                f.name
                            ),
                        ));
                    }
                    if !code.is_finite()
                        || f64::from(code as f32) != code
                        || !codes.insert(code.to_bits())
                        || f.min.is_some_and(|lo| code < lo)
                        || f.max.is_some_and(|hi| code > hi)
                    {
                        return Err(invalid(
                            label,
                            "inputs.categories",
                            format!(
                                "`{}`: `{name}` = {code}: codes are distinct 32-bit floats within min and max",
                                f.name
                            ),
                        ));
                    }
                }
            }
            match (f.min, f.max) {
                (Some(lo), _) if !lo.is_finite() => {
                    return Err(invalid(label, "inputs.min", "must be finite".into()))
                }
                (_, Some(hi)) if !hi.is_finite() => {
                    return Err(invalid(label, "inputs.max", "must be finite".into()))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(invalid(
                        label,
                        "inputs",
                        format!("`{}`: min is above max", f.name),
                    ))
                }
                _ => {}
            }
        }
        if m.width() > MAX_WIDTH {
            return Err(invalid(
                label,
                "inputs",
                format!("{} values in all; at most {MAX_WIDTH}", m.width()),
            ));
        }
        if rows_per_message(m.width()) == 0 {
            return Err(invalid(
                label,
                "inputs",
                format!(
                    "{} values in all: one row would not fit in a job message of {} bytes",
                    m.width(),
                    crate::message::MAX_MESSAGE_BYTES
                ),
            ));
        }
        if m.outputs.is_empty() {
            return Err(invalid(
                label,
                "outputs",
                "at least one output is needed".into(),
            ));
        }
        if !(1..=65_536).contains(&m.max_batch_size) {
            return Err(invalid(
                label,
                "max_batch_size",
                "must be between 1 and 65536".into(),
            ));
        }
        if m.max_batch_delay_ms > 10_000 {
            return Err(invalid(
                label,
                "max_batch_delay_ms",
                "must be at most 10000".into(),
            ));
        }
        if parse_device(&m.device).is_none() {
            return Err(invalid(
                label,
                "device",
                format!("`{}`: use auto, cpu or cuda:N", m.device),
            ));
        }
        if !(1..=16).contains(&m.instances) {
            return Err(invalid(
                label,
                "instances",
                "must be between 1 and 16".into(),
            ));
        }
        if m.precision != Precision::F32 && parse_device(&m.device) == Some(DeviceChoice::Cpu) {
            return Err(invalid(
                label,
                "precision",
                format!("`{}` needs a GPU; device is cpu", m.precision.as_str()),
            ));
        }
        if let Some(digest) = &m.sha256 {
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(
                    label,
                    "sha256",
                    "64 lowercase hex digits, as sha256sum prints them".into(),
                ));
            }
        }
        if let Some(x) = &m.explain {
            check_explain(m, x)
                .map_err(|(field, message)| invalid(label.clone(), field, message))?;
        }
        // f16 inputs are converted with the weights: a value past the
        // largest f16 would reach the model as infinity, so every input
        // must be bounded within it (bf16 has f32's range).
        if m.precision == Precision::F16 {
            if let Some(f) = m.inputs.iter().find(|f| {
                !matches!((f.min, f.max), (Some(lo), Some(hi)) if lo >= -F16_MAX && hi <= F16_MAX)
            }) {
                return Err(invalid(
                    label,
                    "precision",
                    format!(
                        "`f16` takes inputs within ±{F16_MAX}, and `{}` is not bounded so: give it min and max in that range, or use bf16",
                        f.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The checks of an `explain` section: a baseline value for every feature
/// and none other, a reason text for every feature, the explained output,
/// and sizes within reason.
fn check_explain(m: &ModelSpec, x: &ExplainSpec) -> Result<(), (&'static str, String)> {
    if !(1..=1024).contains(&x.steps) {
        return Err(("explain.steps", "must be between 1 and 1024".into()));
    }
    if !x.min_contribution.is_finite() || x.min_contribution < 0.0 {
        return Err((
            "explain.min_contribution",
            "must be a finite number, 0 or more".into(),
        ));
    }
    if !(1..=64).contains(&x.top_k) {
        return Err(("explain.top_k", "must be between 1 and 64".into()));
    }
    if x.output_index(&m.outputs).is_none() {
        return Err((
            "explain.output",
            format!(
                "`{}` is not an output",
                x.output.as_deref().unwrap_or_default()
            ),
        ));
    }
    for f in &m.inputs {
        match x.baseline.get(&f.name) {
            None => {
                return Err((
                    "explain.baseline",
                    format!("`{}` has no baseline value", f.name),
                ))
            }
            Some(b) => match b.values(f) {
                None => {
                    return Err((
                        "explain.baseline",
                        format!(
                            "`{}`: one number, {} values, or one per entry of its last dimension",
                            f.name,
                            f.size()
                        ),
                    ))
                }
                Some(v) if v.iter().any(|x| !(*x as f32).is_finite()) => {
                    return Err((
                        "explain.baseline",
                        format!("`{}`: must be finite 32-bit floats", f.name),
                    ))
                }
                Some(_) => {}
            },
        }
        match f.reason.as_deref() {
            Some(r) if !r.trim().is_empty() && r.len() <= 200 => {}
            _ => {
                return Err((
                    "inputs.reason",
                    format!(
                        "`{}`: a model with an explain section needs a reason text (1 to 200 bytes) for every input",
                        f.name
                    ),
                ))
            }
        }
    }
    if let Some(name) = x
        .baseline
        .keys()
        .find(|k| !m.inputs.iter().any(|f| &f.name == *k))
    {
        return Err(("explain.baseline", format!("`{name}` is not an input")));
    }
    Ok(())
}

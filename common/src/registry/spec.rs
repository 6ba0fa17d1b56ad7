//! One model version as the registry describes it: its input features,
//! its outputs, and how it is batched and run.

use super::size::{rows_per_message_carrying, MAX_PASSTHROUGH_VALUE_BYTES};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Element type of a feature. Only `f32` exists today; the field is in the
/// schema so that files written now stay valid when more types arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float, the model's input type.
    #[default]
    F32,
}

/// One named input feature, in the order the model expects it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The feature's name, as clients send it.
    pub name: String,
    /// Element type.
    #[serde(default)]
    pub dtype: Dtype,
    /// Dimensions of a tensor feature (`[12, 4]`: 12 rows of 4); empty
    /// for a single number. Its values follow one another in row-major
    /// order in the model's input row.
    #[serde(default)]
    pub shape: Vec<usize>,
    /// Smallest accepted value, if the domain is bounded.
    pub min: Option<f64>,
    /// Largest accepted value, if the domain is bounded.
    pub max: Option<f64>,
    /// What the feature means, for `GET /v1/models`.
    #[serde(default)]
    pub description: String,
    /// A categorical feature's values by name (`{ No = 0, Yes = 1 }`):
    /// clients may send the name or its code, and nothing else.
    #[serde(default)]
    pub categories: BTreeMap<String, f64>,
    /// The principal reason this feature states when it pushes a score
    /// toward the adverse outcome (`"Credit card balance is high"`);
    /// needed by every feature of a model with an `explain` section.
    pub reason: Option<String>,
}

impl FeatureSpec {
    /// Number of values: the product of the shape (1 for a number).
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the feature is categorical.
    pub fn is_categorical(&self) -> bool {
        !self.categories.is_empty()
    }

    /// The allowed names, for messages: `No, Yes`.
    pub fn category_names(&self) -> String {
        let names: Vec<&str> = self.categories.keys().map(String::as_str).collect();
        names.join(", ")
    }

    /// A number sent for this feature, as the model's f32: finite, within
    /// the bounds, and for a categorical feature one of its codes. The
    /// error says what is wrong in words a client can act on.
    pub fn number(&self, x: f64) -> Result<f32, String> {
        let y = x as f32;
        // Beyond f32::MAX is refused even where it would round down to it,
        // so the bound is the one the API's schema states.
        if !y.is_finite() || x.abs() > f64::from(f32::MAX) {
            return Err("must be a finite 32-bit float".into());
        }
        if self.is_categorical() {
            if self.categories.values().any(|&c| c == x) {
                return Ok(y);
            }
            return Err(format!("must be one of {}", self.allowed()));
        }
        match (self.min, self.max) {
            (Some(lo), Some(hi)) if x < lo || x > hi => {
                Err(format!("must be between {lo} and {hi}"))
            }
            (Some(lo), None) if x < lo => Err(format!("must be at least {lo}")),
            (None, Some(hi)) if x > hi => Err(format!("must be at most {hi}")),
            _ => Ok(y),
        }
    }

    /// A category sent by name, as its code.
    pub fn category(&self, name: &str) -> Result<f32, String> {
        match self.categories.get(name) {
            Some(&code) => Ok(code as f32),
            None if self.is_categorical() => {
                Err(format!("`{}` is not one of {}", clip(name), self.allowed()))
            }
            None => Err("must be a number".into()),
        }
    }

    /// One text cell (CSV) as the model's f32: a category's name, or a
    /// number. With `decimal_comma`, `1234,5` is read as `1234.5` (files
    /// whose fields are separated by `;` write numbers so).
    pub fn text(&self, text: &str, decimal_comma: bool) -> Result<f32, String> {
        if let Some(&code) = self.categories.get(text) {
            return Ok(code as f32);
        }
        let parsed = text.parse::<f64>().ok().or_else(|| {
            (decimal_comma
                && text.bytes().filter(|&b| b == b',').count() == 1
                && !text.contains('.'))
            .then(|| text.replace(',', ".").parse::<f64>().ok())
            .flatten()
        });
        match parsed {
            Some(x) => self.number(x),
            None if self.is_categorical() => {
                Err(format!("`{}` is not one of {}", clip(text), self.allowed()))
            }
            None => Err(format!("`{}` is not a number", clip(text))),
        }
    }

    /// `No (0), Yes (1)`: the names with their codes.
    fn allowed(&self) -> String {
        let all: Vec<String> = self
            .categories
            .iter()
            .map(|(name, code)| format!("{name} ({code})"))
            .collect();
        all.join(", ")
    }
}

/// `s` cut to 32 characters, marked with `...` when cut, so a message never
/// echoes a whole hostile value.
fn clip(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// One named output column of the model's `[N, outputs]` result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output's name in results.
    pub name: String,
    /// What the output means.
    #[serde(default)]
    pub description: String,
}

/// One model version as the registry describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name clients address it by; also part of its queue names.
    pub name: String,
    /// Version label; `name@version` pins it.
    pub version: String,
    /// Whether this is the version plain `name` resolves to. Without any
    /// entry marked, the last listed version is the default.
    #[serde(default)]
    pub default: bool,
    /// The TorchScript file, relative to the registry file.
    pub path: PathBuf,
    /// What the model does.
    #[serde(default)]
    pub description: String,
    /// Input features in the order of the model's input columns.
    pub inputs: Vec<FeatureSpec>,
    /// Output columns in order.
    pub outputs: Vec<OutputSpec>,
    /// Most rows in one forward pass.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Longest a batch waits to fill after its first job, in milliseconds.
    #[serde(default = "default_max_batch_delay_ms")]
    pub max_batch_delay_ms: u64,
    /// `auto` (a GPU when present), `cpu`, or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Model threads on the device, each with its own copy of the model,
    /// taking batches in turn.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// Arithmetic on a GPU: `f32`, `f16` or `bf16` (inputs and outputs stay
    /// f32); on a CPU always `f32`.
    #[serde(default)]
    pub precision: Precision,
    /// How a score is explained when a job or batch asks for reasons;
    /// without it, asking is refused.
    pub explain: Option<ExplainSpec>,
    /// The SHA-256 (hex) the TorchScript file must have: a worker refuses
    /// to serve a file with another.
    pub sha256: Option<String>,
}

/// How a model's scores are explained: attributions by integrated
/// gradients from a baseline, and the features that push the explained
/// output toward the adverse outcome the most, as reasons.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainSpec {
    /// The attribution method; `integrated_gradients` is the one there is.
    pub method: ExplainMethod,
    /// Points on the straight path from the baseline to the row: more
    /// steps, a smaller completeness error (see `infq-worker`'s
    /// `explain`).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Each feature's value at the baseline; every feature is named. A
    /// tensor feature takes one number for every value, its every value in
    /// row-major order, or one value per entry of its last dimension,
    /// repeated (a month's `[spend, payment_ratio, ...]` for every month).
    pub baseline: BTreeMap<String, Baseline>,
    /// The output explained; the first when not named.
    pub output: Option<String>,
    /// Which way of that output is adverse: `higher` (a probability of
    /// default) or `lower` (a credit score).
    #[serde(default)]
    pub adverse: Adverse,
    /// Reasons given per row, at most (no more than there are inputs).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// The least push toward the adverse outcome that makes a feature a
    /// reason, in units of the output: a feature that moved a probability
    /// by 0.0005 is not a principal reason.
    #[serde(default)]
    pub min_contribution: f64,
}

/// A feature's value at the baseline.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Baseline {
    /// One number for every value of the feature.
    One(f64),
    /// Its values: all of them, or one per entry of its last dimension.
    Many(Vec<f64>),
}

impl Baseline {
    /// The feature's `size` values at the baseline, if this fits `f`.
    pub fn values(&self, f: &FeatureSpec) -> Option<Vec<f64>> {
        let size = f.size();
        match self {
            Baseline::One(v) => Some(vec![*v; size]),
            Baseline::Many(v) if v.len() == size => Some(v.clone()),
            Baseline::Many(v) if f.shape.last() == Some(&v.len()) && !v.is_empty() => {
                Some(v.iter().copied().cycle().take(size).collect())
            }
            Baseline::Many(_) => None,
        }
    }
}

/// The attribution methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMethod {
    /// Integrated gradients (Sundararajan et al., 2017), by the midpoint
    /// rule over `steps` points.
    IntegratedGradients,
}

/// Which direction of the explained output is adverse to the applicant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Adverse {
    /// A higher output is adverse.
    #[default]
    Higher,
    /// A lower output is adverse.
    Lower,
}

fn default_steps() -> usize {
    32
}
fn default_top_k() -> usize {
    4
}

impl ExplainSpec {
    /// The index of the explained output among `outputs`.
    pub fn output_index(&self, outputs: &[OutputSpec]) -> Option<usize> {
        match &self.output {
            None => Some(0),
            Some(name) => outputs.iter().position(|o| &o.name == name),
        }
    }

    /// The baseline as one input row in schema order, if every feature has
    /// a value.
    pub fn baseline_row(&self, inputs: &[FeatureSpec]) -> Option<Vec<f32>> {
        let mut row = Vec::new();
        for f in inputs {
            let values = self.baseline.get(&f.name)?.values(f)?;
            row.extend(values.into_iter().map(|v| v as f32));
        }
        Some(row)
    }
}

/// Floating-point precision a model runs in on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// The name used in the registry.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

fn default_max_batch_size() -> usize {
    64
}
fn default_max_batch_delay_ms() -> u64 {
    2
}
fn default_device() -> String {
    "auto".into()
}
fn default_instances() -> usize {
    1
}

impl ModelSpec {
    /// Number of values in one input row: every feature's, in order.
    pub fn width(&self) -> usize {
        self.inputs.iter().map(FeatureSpec::size).sum()
    }

    /// Where each feature's values start in the input row.
    pub fn offsets(&self) -> Vec<usize> {
        self.inputs
            .iter()
            .scan(0, |at, f| {
                let start = *at;
                *at += f.size();
                Some(start)
            })
            .collect()
    }

    /// Whether every feature is a single number.
    pub fn is_scalar(&self) -> bool {
        self.inputs.iter().all(|f| f.shape.is_empty())
    }

    /// Names of the input row's values, for CSV headers: a number's name,
    /// and `name[k]` for value k (row-major) of a tensor feature, each with
    /// the index of its feature.
    pub fn columns(&self) -> Vec<(usize, String)> {
        let mut out = Vec::with_capacity(self.width());
        for (i, f) in self.inputs.iter().enumerate() {
            if f.shape.is_empty() {
                out.push((i, f.name.clone()));
            } else {
                out.extend((0..f.size()).map(|k| (i, format!("{}[{k}]", f.name))));
            }
        }
        out
    }

    /// `name@version`, the model's full address.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The longest a batch waits for more jobs.
    pub fn max_batch_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_batch_delay_ms)
    }

    /// Rows per bulk chunk message of this model: `configured`
    /// (`producer.chunk_rows`), or fewer where that many rows of this
    /// model's width would not fit in one message. Every chunk of a batch
    /// has this many rows but the last, so row `r` is in chunk
    /// `r / chunk_rows`.
    pub fn chunk_rows(&self, configured: u32) -> u32 {
        self.chunk_rows_carrying(configured, 0)
    }

    /// [`Self::chunk_rows`] for a batch whose rows also carry `columns`
    /// passthrough values (each at most [`MAX_PASSTHROUGH_VALUE_BYTES`],
    /// which JSON may escape to six times as many).
    pub fn chunk_rows_carrying(&self, configured: u32, columns: usize) -> u32 {
        let extra = columns * (MAX_PASSTHROUGH_VALUE_BYTES * 6 + 3);
        let fits =
            u32::try_from(rows_per_message_carrying(self.width(), extra)).unwrap_or(u32::MAX);
        configured.clamp(1, fits.max(1))
    }
}

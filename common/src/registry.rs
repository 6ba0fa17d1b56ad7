//! The model registry: which models exist, their input and output schemas,
//! and how each is batched. Read from `config/models.toml`.
//!
//! The producer validates requests against it; the worker loads the
//! TorchScript files it names. Problems are reported with the file and the
//! field, so a bad entry stops start-up with a message an operator can act on.

use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What went wrong reading the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The registry file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("{path}: {message}")]
    Parse {
        /// The registry file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("{path}: model `{model}`, field `{field}`: {message}")]
    Invalid {
        /// The registry file.
        path: PathBuf,
        /// The model entry (`name@version`, or its index when unnamed).
        model: String,
        /// The offending field.
        field: String,
        /// Why the value is refused.
        message: String,
    },
}

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
}

impl FeatureSpec {
    /// Number of values: the product of the shape (1 for a number).
    pub fn size(&self) -> usize {
        self.shape.iter().product()
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

/// Most values in one model input row.
pub const MAX_WIDTH: usize = 65_536;

/// The largest finite IEEE half-precision value.
pub const F16_MAX: f64 = 65_504.0;

/// Most bytes one input value takes in a job message: an f32 in its
/// shortest round-trip JSON form is at most 17 characters
/// (`-0.0000012345678`), plus the comma after it.
pub const MAX_ENCODED_VALUE_BYTES: usize = 18;

/// Bytes of a job message set aside for everything but its input values
/// (ids, names, webhook URL, tenant, numbers).
pub const MESSAGE_ENVELOPE_BYTES: usize = 64 << 10;

/// Most rows of `width` values that one job message carries within
/// [`crate::message::MAX_MESSAGE_BYTES`], whatever the values; 0 when not
/// even one row fits. The one rule for the size of a bulk chunk.
pub const fn rows_per_message(width: usize) -> usize {
    let budget = crate::message::MAX_MESSAGE_BYTES - MESSAGE_ENVELOPE_BYTES;
    match width.checked_mul(MAX_ENCODED_VALUE_BYTES) {
        Some(row) if row > 0 => budget / row,
        _ => 0,
    }
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
        let fits = u32::try_from(rows_per_message(self.width())).unwrap_or(u32::MAX);
        configured.clamp(1, fits.max(1))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    model: Vec<ModelSpec>,
}

/// All models of a deployment.
#[derive(Debug, Clone)]
pub struct Registry {
    models: Vec<ModelSpec>,
}

/// Model names become queue names and URL segments, so they are kept to a
/// safe alphabet.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

impl Registry {
    /// Reads and validates the registry file; relative model paths are
    /// resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses registry text; `path` is used in messages, `base` to resolve
    /// model files.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(text).map_err(|e| RegistryError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut models = file.model;
        for m in &mut models {
            if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
        }
        let registry = Registry { models };
        registry.validate(path)?;
        Ok(registry)
    }

    fn validate(&self, path: &Path) -> Result<(), RegistryError> {
        let invalid = |model: String, field: &str, message: String| RegistryError::Invalid {
            path: path.to_path_buf(),
            model,
            field: field.to_string(),
            message,
        };
        if self.models.is_empty() {
            return Err(RegistryError::Parse {
                path: path.to_path_buf(),
                message: "no [[model]] entries".into(),
            });
        }
        let mut ids = HashSet::new();
        let mut defaults = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
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

    /// Every model version, in file order.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// The registry less the models whose names are not in `names` (a
    /// reload keeps to the names a process declared queues for), and the
    /// names left out.
    pub fn retain_names(mut self, names: &[&str]) -> (Self, Vec<String>) {
        let mut dropped = Vec::new();
        self.models.retain(|m| {
            let keep = names.contains(&m.name.as_str());
            if !keep && !dropped.contains(&m.name) {
                dropped.push(m.name.clone());
            }
            keep
        });
        (self, dropped)
    }

    /// Distinct model names, in file order; each has its own queues.
    pub fn names(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .filter(|n| seen.insert(*n))
            .collect()
    }

    /// Resolves `name` (its default version) or `name@version`.
    pub fn resolve(&self, address: &str) -> Option<&ModelSpec> {
        match address.split_once('@') {
            Some((name, version)) => self
                .models
                .iter()
                .find(|m| m.name == name && m.version == version),
            None => self
                .models
                .iter()
                .find(|m| m.name == address && m.default)
                .or_else(|| self.models.iter().rev().find(|m| m.name == address)),
        }
    }
}

/// Where a model runs, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when one is present, else the CPU.
    Auto,
    /// Always the CPU.
    Cpu,
    /// The given CUDA device.
    Cuda(usize),
}

/// Parses `auto`, `cpu` or `cuda:N`.
pub fn parse_device(s: &str) -> Option<DeviceChoice> {
    match s {
        "auto" => Some(DeviceChoice::Auto),
        "cpu" => Some(DeviceChoice::Cpu),
        "cuda" => Some(DeviceChoice::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[model]]
name = "credit-default"
version = "1"
path = "credit-default.pt"
inputs = [{ name = "student", min = 0, max = 1 }, { name = "balance" }, { name = "income" }]
outputs = [{ name = "default_probability" }]

[[model]]
name = "credit-default"
version = "2"
default = true
path = "/abs/credit-default-2.pt"
inputs = [{ name = "student" }, { name = "balance" }, { name = "income" }]
outputs = [{ name = "default_probability" }]
max_batch_size = 128
"#;

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(text, Path::new("config/models.toml"), Path::new("config"))
    }

    #[test]
    fn parses_and_resolves_versions() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.names(), vec!["credit-default"]);
        assert_eq!(r.resolve("credit-default").unwrap().version, "2");
        let v1 = r.resolve("credit-default@1").unwrap();
        assert_eq!(v1.path, Path::new("config/credit-default.pt"));
        assert_eq!(v1.max_batch_size, 64);
        assert_eq!(v1.width(), 3);
        assert_eq!(
            r.resolve("credit-default@2").unwrap().path,
            Path::new("/abs/credit-default-2.pt")
        );
        assert!(r.resolve("credit-default@3").is_none());
        assert!(r.resolve("other").is_none());
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let text = GOOD.replace("max_batch_size = 128", "max_batch_sise = 128");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("config/models.toml:"), "{err}");
        assert!(err.contains("max_batch_sise"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn tensor_features_lay_out_row_major_after_one_another() {
        let text = GOOD.replacen(
            "{ name = \"balance\" }",
            "{ name = \"balance\", shape = [2, 3] }",
            1,
        );
        let r = parse(&text).unwrap();
        let m = r.resolve("credit-default@1").unwrap();
        assert_eq!(m.width(), 8);
        assert_eq!(m.offsets(), vec![0, 1, 7]);
        assert!(!m.is_scalar());
        let cols: Vec<String> = m.columns().into_iter().map(|(_, c)| c).collect();
        assert_eq!(cols[0], "student");
        assert_eq!(cols[1], "balance[0]");
        assert_eq!(cols[6], "balance[5]");
        assert_eq!(cols[7], "income");
        assert_eq!(m.instances, 1);
        assert_eq!(m.precision, Precision::F32);
    }

    #[test]
    fn bad_values_name_model_and_field() {
        let cases = [
            (
                "max_batch_size = 128",
                "max_batch_size = 0",
                "max_batch_size",
            ),
            (
                "name = \"credit-default\"\nversion = \"2\"",
                "name = \"Credit Default\"\nversion = \"2\"",
                "name",
            ),
            (
                "max_batch_size = 128",
                "max_batch_size = 8\nmax_batch_delay_ms = 99999",
                "max_batch_delay_ms",
            ),
            ("max_batch_size = 128", "device = \"tpu\"", "device"),
            ("version = \"2\"", "version = \"1\"", "version"),
            (
                "{ name = \"student\" }, { name = \"balance\" }",
                "{ name = \"x\" }, { name = \"x\" }",
                "inputs",
            ),
            ("min = 0, max = 1", "min = 2, max = 1", "inputs"),
            (
                "{ name = \"balance\" }",
                "{ name = \"balance\", shape = [0, 4] }",
                "inputs.shape",
            ),
            (
                "{ name = \"balance\" }",
                "{ name = \"balance\", shape = [1000, 1000] }",
                "inputs.shape",
            ),
            (
                "{ name = \"balance\" }",
                "{ name = \"balance\", shape = [1, 1, 1, 1, 1] }",
                "inputs.shape",
            ),
            ("max_batch_size = 128", "instances = 0", "instances"),
            (
                "max_batch_size = 128",
                "device = \"cpu\"\nprecision = \"f16\"",
                "precision",
            ),
            // Unbounded inputs would overflow in f16.
            ("max_batch_size = 128", "precision = \"f16\"", "precision"),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "case {field} did not apply");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("field `{field}`")), "{field}: {err}");
            assert!(err.starts_with("config/models.toml: model `"), "{err}");
        }
    }

    #[test]
    fn f16_needs_inputs_bounded_within_its_range_and_bf16_does_not() {
        let bounded = GOOD.replacen(
            "inputs = [{ name = \"student\" }, { name = \"balance\" }, { name = \"income\" }]",
            "inputs = [{ name = \"student\", min = 0, max = 1 }, { name = \"balance\", min = 0, max = 20000 }, { name = \"income\", min = 0, max = 65504 }]",
            1,
        );
        assert_ne!(bounded, GOOD);
        let f16 = bounded.replace("max_batch_size = 128", "precision = \"f16\"");
        assert_eq!(
            parse(&f16)
                .unwrap()
                .resolve("credit-default@2")
                .unwrap()
                .precision,
            Precision::F16
        );
        let wide = f16.replace("max = 65504", "max = 100000");
        let err = parse(&wide).unwrap_err().to_string();
        assert!(
            err.contains("field `precision`") && err.contains("`income`"),
            "{err}"
        );
        let low = f16.replace(
            "{ name = \"balance\", min = 0,",
            "{ name = \"balance\", min = -70000,",
        );
        assert!(parse(&low).unwrap_err().to_string().contains("`balance`"));
        let bf16 = wide.replace("\"f16\"", "\"bf16\"");
        assert!(parse(&bf16).is_ok());
    }

    #[test]
    fn hostile_files_are_refused_cleanly() {
        for text in [
            "",
            "[[model]]",
            "model = 3",
            "\u{0}\u{1}garbage[[",
            "[[model]]\nname = 1",
        ] {
            assert!(parse(text).is_err(), "{text:?} accepted");
        }
        let missing = Registry::load(Path::new("/nonexistent/models.toml")).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/models.toml"));
    }

    #[test]
    fn chunks_of_any_width_fit_in_a_message() {
        use crate::message::MAX_MESSAGE_BYTES;
        // f32s in their JSON form, across every exponent: at most 17
        // characters (a sign, `0.00000` and 9 digits).
        let longest = (0..=u32::MAX)
            .step_by(9_973)
            .map(f32::from_bits)
            .chain([-0.000_001_234_567_8, -f32::MAX, -f32::MIN_POSITIVE])
            .filter(|v| v.is_finite())
            .map(|v| serde_json::to_string(&v).unwrap().len())
            .max();
        assert!(longest.is_some_and(|n| (15..MAX_ENCODED_VALUE_BYTES).contains(&n)));
        let r = parse(GOOD).unwrap();
        let mut spec = r.resolve("credit-default@1").unwrap().clone();
        assert_eq!(spec.chunk_rows(256), 256, "narrow models keep chunk_rows");
        assert_eq!(spec.chunk_rows(0), 1);
        for width in [3usize, 4096, 8192, MAX_WIDTH] {
            spec.inputs = vec![FeatureSpec {
                name: "x".into(),
                dtype: Dtype::F32,
                shape: vec![width],
                min: None,
                max: None,
                description: String::new(),
            }];
            let rows = spec.chunk_rows(65_536) as usize;
            assert!(rows >= 1 && rows <= rows_per_message(width), "{width}");
            // A full chunk of the longest values leaves the envelope's
            // share of the message.
            let values = vec![-0.000_001_234_567_8f32; rows * width];
            let len = serde_json::to_vec(&values).unwrap().len();
            assert!(
                len + MESSAGE_ENVELOPE_BYTES <= MAX_MESSAGE_BYTES,
                "width {width}: {len} bytes"
            );
        }
        assert_eq!(rows_per_message(0), 0);
        assert_eq!(rows_per_message(MAX_MESSAGE_BYTES), 0);
        assert_eq!(rows_per_message(usize::MAX), 0);
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("auto"), Some(DeviceChoice::Auto));
        assert_eq!(parse_device("cpu"), Some(DeviceChoice::Cpu));
        assert_eq!(parse_device("cuda:1"), Some(DeviceChoice::Cuda(1)));
        assert_eq!(parse_device("cuda:x"), None);
        assert_eq!(parse_device("gpu"), None);
    }
}

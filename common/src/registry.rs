//! The model registry: which models exist, their input and output schemas,
//! and how each is batched. Read from `config/models.toml`.
//!
//! The producer validates requests against it; the worker loads the
//! TorchScript files it names. Problems are reported with the file and the
//! field, so a bad entry stops start-up with a message an operator can act on.

mod device;
mod error;
mod models;
pub(crate) mod name;
mod size;
mod spec;
mod validate;

pub use device::{parse_device, DeviceChoice};
pub use error::RegistryError;
pub use models::Registry;
pub use size::{
    rows_per_message, rows_per_message_carrying, F16_MAX, MAX_ENCODED_VALUE_BYTES,
    MAX_PASSTHROUGH_VALUE_BYTES, MAX_WIDTH, MESSAGE_ENVELOPE_BYTES,
};
pub use spec::{
    Adverse, Baseline, Dtype, ExplainMethod, ExplainSpec, FeatureSpec, ModelSpec, OutputSpec,
    Precision,
};

#[cfg(test)]
mod tests;

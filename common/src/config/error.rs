//! Why a configuration cannot be used.

use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config file {0} not found")]
    Missing(PathBuf),
    /// A layer could not be read or a value has the wrong type.
    #[error("{0}")]
    Load(String),
    /// Values that parse but cannot work, each named by its key.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

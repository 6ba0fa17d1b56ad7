//! What can be wrong with a registry file.

use std::path::PathBuf;

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

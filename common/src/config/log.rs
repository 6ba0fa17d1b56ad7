//! The `[log]` section.

use serde::{Deserialize, Serialize};

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Default filter when `RUST_LOG` is unset.
    pub filter: String,
    /// A line when each enabled span closes, with its duration: per job
    /// (`infq::job` at debug) and per batch.
    pub spans: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            json: false,
            filter: "info".into(),
            spans: false,
        }
    }
}

//! One problem with a request, located by field path or line number: what
//! validation collects (every problem at once) and what an error answer
//! lists under `details`.

use serde::Serialize;

/// One problem with a request, located by field path or line number.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detail {
    /// Where: a field path such as `inputs.balance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where: a line of an uploaded file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl Detail {
    /// A problem with a field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            line: None,
            message: message.into(),
        }
    }
}

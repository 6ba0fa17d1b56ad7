//! Why a job submission was refused, in validation's own terms.

use crate::detail::Detail;

/// Why a job submission was refused: the body's shape, its syntax, its
/// model, or its values (every problem listed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not JSON of the expected shape.
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// A structural limit of the body (nesting depth, string length) is
    /// passed; the message names it.
    #[error("{0}")]
    LimitExceeded(String),
    /// The model (or version) is not in the registry.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// The body parsed but values are wrong; every problem is listed.
    #[error("the request has {} invalid field(s)", .0.len())]
    Invalid(Vec<Detail>),
}

//! The bounds of a job body.

/// Longest deadline a job may ask for: a week.
pub const MAX_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Deepest nesting of arrays and objects in a job body.
pub const MAX_JSON_DEPTH: usize = 16;
/// Longest string (key or value) in a job body, in characters (an escape
/// such as `\u00e9` is one).
pub const MAX_STRING_CHARS: usize = 4096;

/// Most problems reported for one request.
pub const MAX_PROBLEMS: usize = 100;

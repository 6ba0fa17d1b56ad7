//! How wide a model may be, and how many of its rows one job message
//! carries: the one rule for the size of a bulk chunk.

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

/// Longest passthrough value (a client's own column, such as a loan id)
/// a bulk row may carry, in bytes.
pub const MAX_PASSTHROUGH_VALUE_BYTES: usize = 256;

/// Most rows of `width` values that one job message carries within
/// [`crate::message::MAX_MESSAGE_BYTES`], whatever the values; 0 when not
/// even one row fits. The one rule for the size of a bulk chunk.
pub const fn rows_per_message(width: usize) -> usize {
    rows_per_message_carrying(width, 0)
}

/// [`rows_per_message`] for rows that also carry up to `extra` bytes each
/// (encoded passthrough values).
pub const fn rows_per_message_carrying(width: usize, extra: usize) -> usize {
    let budget = crate::message::MAX_MESSAGE_BYTES - MESSAGE_ENVELOPE_BYTES;
    match width.checked_mul(MAX_ENCODED_VALUE_BYTES) {
        Some(row) if row > 0 => budget / (row + extra),
        _ => 0,
    }
}

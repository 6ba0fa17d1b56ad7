//! What a model name may be: a leaf, so that whatever builds a name from
//! one (queues, fair shares) can check it without the registry.

/// Model names become queue names and URL segments, so they are kept to a
/// safe alphabet.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

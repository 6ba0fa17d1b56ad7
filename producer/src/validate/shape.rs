//! The scan of a JSON text before it is parsed: nesting depth and string
//! lengths, so a hostile body costs a linear scan and nothing more.

use super::error::ValidationError;

/// Checks a JSON text's nesting depth and string lengths before it is
/// parsed, so a hostile body costs a linear scan and nothing more.
/// Malformed JSON passes here and fails in the parser.
pub fn check_shape(
    body: &[u8],
    max_depth: usize,
    max_string: usize,
) -> Result<(), ValidationError> {
    // A string's length is counted in characters, as JSON Schema's
    // `maxLength` counts them: an escape (`\n`, `\u00e9`) is one, and so
    // is a character of several UTF-8 bytes.
    let (mut depth, mut in_string, mut escaped, mut run) = (0usize, false, false, 0usize);
    let mut hex_left = 0u8;
    for &b in body {
        if in_string {
            if hex_left > 0 {
                hex_left -= 1;
                continue;
            }
            if escaped {
                escaped = false;
                if b == b'u' {
                    hex_left = 4;
                }
                continue;
            }
            if b == b'"' {
                in_string = false;
                continue;
            }
            if b == b'\\' {
                escaped = true;
            } else if b & 0xC0 == 0x80 {
                continue;
            }
            run += 1;
            if run > max_string {
                return Err(ValidationError::LimitExceeded(format!(
                    "a string is longer than {max_string} characters"
                )));
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                run = 0;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ValidationError::LimitExceeded(format!(
                        "JSON nested deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_shapes_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            check_shape(deep.as_bytes(), 16, 4096),
            Err(ValidationError::LimitExceeded(m)) if m.contains("16 levels")
        ));
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(5000));
        assert!(matches!(
            check_shape(long.as_bytes(), 16, 4096),
            Err(ValidationError::LimitExceeded(m)) if m.contains("4096 characters")
        ));
        // Brackets and escaped quotes inside strings do not count.
        let ok = r#"{"a":"[[[[[[[[[[[[[[[[[[[[\"{{{{{{{{{{{{{{{{{{{{{","b":[[1]]}"#;
        assert!(check_shape(ok.as_bytes(), 3, 4096).is_ok());
        assert!(check_shape(b"[[[[", 3, 10).is_err());
        // The limit itself is allowed; one byte more is not.
        let at = |n: usize| format!(r#"{{"k":"{}"}}"#, "s".repeat(n));
        assert!(check_shape(at(10).as_bytes(), 3, 10).is_ok());
        assert!(check_shape(at(11).as_bytes(), 3, 10).is_err());
        // Characters, not bytes: escapes and multi-byte characters are one.
        let wide = |n: usize, c: &str| format!(r#"{{"k":"{}"}}"#, c.repeat(n));
        for c in ["é", "\\u00e9", "\\n", "\\\"", "€"] {
            assert!(check_shape(wide(10, c).as_bytes(), 3, 10).is_ok(), "{c}");
            assert!(check_shape(wide(11, c).as_bytes(), 3, 10).is_err(), "{c}");
        }
    }
}

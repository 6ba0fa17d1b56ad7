//! How input values are laid out as bytes wherever infq hashes or sends
//! them raw: each an IEEE 754 binary32, little-endian, one after another.
//! A job's digest, the audit trail's `inputs_sha256` and a chunk's
//! `inputs_f32le` all use this one layout.

/// `values` laid out as bytes.
pub fn bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 4];
    write(values, &mut out);
    out
}

/// Lays `values` out into the start of `out`, which holds at least
/// `values.len() * 4` bytes.
pub fn write(values: &[f32], out: &mut [u8]) {
    for (v, b) in values.iter().zip(out.chunks_exact_mut(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

/// The values `bytes` lays out; `None` unless it holds a whole number of
/// them.
pub fn read(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_bit_for_bit_and_partial_values_are_refused() {
        let values = [-0.0, 1.0, f32::MIN_POSITIVE, 1.0e-45, f32::MAX];
        let b = bytes(&values);
        assert_eq!(&b[4..8], &[0, 0, 0x80, 0x3f], "1.0, little-endian");
        let back = read(&b).unwrap();
        assert!(values
            .iter()
            .zip(&back)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(read(&b[..7]), None);
        assert_eq!(read(&[]), Some(vec![]));
    }
}

//! Lineage: which exact files produced a result. A model file is named by
//! the SHA-256 of its bytes (hex, as `sha256sum` prints it), a registry by
//! that of its text, and the software by infq's version.

use std::io::Read;
use std::path::Path;

/// infq's version, recorded with every batch.
pub const INFQ_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The SHA-256 of a file's bytes, read in pieces, in lowercase hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crate::sha256::Hasher::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256(&path).unwrap(), expected);
        assert!(file_sha256(&dir.path().join("missing")).is_err());
    }
}

//! SHA-256 in lowercase hex, the one form infq writes it in: keys and
//! bodies (idempotency), job messages (their digest), model files and
//! uploads (lineage), API keys (tenants).

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(Sha256::digest(bytes))
}

/// Incremental hashing of what arrives in pieces (a streamed body, a file,
/// a message's fields).
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        ::hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_sha256_and_pieces_add_up() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hex(b""), empty);
        assert_eq!(Hasher::default().finish(), empty);
        let mut h = Hasher::default();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), hex(b"abc"));
        assert_eq!(
            hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

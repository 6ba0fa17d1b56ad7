//! Signing events: `webhook-signature` is `v1,` and the base64 HMAC-SHA256
//! of `<webhook-id>.<webhook-timestamp>.<body>`, computed by the
//! `standardwebhooks` crate, the specification's own implementation. With
//! several secrets (during a rotation) the header lists one signature per
//! secret, separated by spaces; a receiver accepts any one it can verify.

use base64::Engine;

/// The prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Checks a secret's form: `whsec_` and 24 to 64 random bytes in base64.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let Some(b64) = secret.strip_prefix(SECRET_PREFIX) else {
        return Err(format!("must start with `{SECRET_PREFIX}`"));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not base64 after `{SECRET_PREFIX}`: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "holds {} bytes; use 24 to 64 random bytes",
            key.len()
        ));
    }
    Ok(())
}

/// A new random secret in `whsec_` form (32 bytes from the OS).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Signs with every active secret.
pub struct Signer {
    keys: Vec<standardwebhooks::Webhook>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secrets)", self.keys.len())
    }
}

impl Signer {
    /// A signer over `secrets` (checked with [`check_secret`]).
    pub fn new(secrets: &[String]) -> Result<Self, String> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                check_secret(s).map_err(|e| format!("webhooks.secrets[{i}]: {e}"))?;
                standardwebhooks::Webhook::new(s).map_err(|e| format!("webhooks.secrets[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("webhooks.secrets: no secret to sign with".into());
        }
        Ok(Self { keys })
    }

    /// The `webhook-signature` header value for one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        self.keys
            .iter()
            .map(|k| {
                k.sign(id, timestamp, body.as_bytes())
                    .expect("a str body is valid UTF-8")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_have_the_prefix_and_enough_bytes() {
        assert!(check_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_ok());
        assert!(check_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .unwrap_err()
            .contains("whsec_"));
        assert!(check_secret("whsec_c2hvcnQ=")
            .unwrap_err()
            .contains("bytes"));
        assert!(check_secret("whsec_not base64!")
            .unwrap_err()
            .contains("base64"));
        assert!(check_secret(&generate_secret()).is_ok());
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn the_specification_example_signs_as_published() {
        let s = Signer::new(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()]).unwrap();
        assert_eq!(
            s.sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn every_secret_signs_during_a_rotation() {
        let a = generate_secret();
        let b = generate_secret();
        let both = Signer::new(&[a.clone(), b.clone()])
            .unwrap()
            .sign("msg_1", 1, "{}");
        let only_a = Signer::new(&[a]).unwrap().sign("msg_1", 1, "{}");
        let only_b = Signer::new(&[b]).unwrap().sign("msg_1", 1, "{}");
        assert_eq!(both, format!("{only_a} {only_b}"));
        assert!(Signer::new(&[]).is_err());
    }
}

//! The `[redis]` section: the Redis connection and how long results are
//! kept, and the one way a URL is shown in messages ([`redacted`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Redis connection and retention settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL (`redis://` or `rediss://`).
    pub url: String,
    /// PEM file of the certificate authorities trusted for `rediss://`
    /// instead of the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Timeout for connecting and for each command.
    pub timeout_ms: u64,
    /// How long job records and results are kept.
    pub result_ttl_secs: u64,
}

/// `url` without its user name and password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

impl RedisConfig {
    /// A client of the configured server, trusting `ca_file` for
    /// `rediss://` when it is set.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca_file {
            None => redis::Client::open(self.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path)?;
                redis::Client::build_with_tls(
                    self.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            ca_file: None,
            timeout_ms: 2_000,
            result_ttl_secs: 86_400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_out_of_messages() {
        let r = redacted("rediss://:s3cret@redis.internal:6380/");
        assert!(!r.contains("s3cret") && r.contains("redis.internal"), "{r}");
        assert!(!redacted("amqps://infq:pw@rabbit/%2f").contains("pw@"));
        assert_eq!(redacted("not a url ::"), "(an unparsable URL)");
    }
}

//! The `[redis]` section: the Redis deployment (one server, a primary
//! watched by Sentinel, or a Redis Cluster), how long results are kept,
//! and the one way a URL is shown in messages ([`redacted`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How Redis is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (or a primary whose address never changes): `url`.
    #[default]
    Standalone,
    /// A primary and its replicas watched by Redis Sentinel: `nodes` are
    /// the sentinels, `service` the name they know the primary by.
    Sentinel,
    /// A Redis Cluster: `nodes` are some of its nodes (the others are
    /// found from them).
    Cluster,
}

impl RedisMode {
    /// The mode's name in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// Redis connection and retention settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `standalone` (`url`), `sentinel` or `cluster` (`nodes`).
    pub mode: RedisMode,
    /// Server URL (`redis://` or `rediss://`), in `standalone` mode.
    pub url: String,
    /// In `cluster` mode, seed nodes of the cluster; in `sentinel` mode,
    /// the sentinels. Each a URL like `url`; a password in the first is
    /// used for every node (and, with sentinels, for the primary).
    pub nodes: Vec<String>,
    /// In `sentinel` mode, the name the sentinels monitor the primary by.
    pub service: String,
    /// Replicas that must hold a result before its job's delivery is
    /// acknowledged (`WAIT`); 0: acknowledged once the primary has it.
    /// Redis replication is asynchronous, so without it a primary lost
    /// right after a write can lose results already acknowledged.
    pub min_replicas_ack: u32,
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

fn scheme_ok(u: &str) -> bool {
    u.starts_with("redis://") || u.starts_with("rediss://")
}

impl RedisConfig {
    /// A client of the configured server (`url`), trusting `ca_file` for
    /// `rediss://` when it is set.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        self.client_of(&self.url)
    }

    /// A client of the server at `url`, with `ca_file` as [`Self::client`].
    pub fn client_of(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match self.ca_certificates()? {
            None => redis::Client::open(url),
            Some(certs) => redis::Client::build_with_tls(url, certs),
        }
    }

    /// `ca_file`'s certificates, if one is set.
    pub fn ca_certificates(&self) -> redis::RedisResult<Option<redis::TlsCertificates>> {
        Ok(match &self.ca_file {
            None => None,
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path)?),
            }),
        })
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        match self.mode {
            RedisMode::Standalone => self.url.starts_with("rediss://"),
            _ => self.nodes.iter().any(|n| n.starts_with("rediss://")),
        }
    }

    /// Problems with the deployment's settings, each naming its key.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.mode {
            RedisMode::Standalone => {
                if !scheme_ok(&self.url) {
                    problems.push("redis.url: must start with redis:// or rediss://".into());
                }
                if !self.nodes.is_empty() {
                    problems.push(
                        "redis.nodes: only read in sentinel or cluster mode (set redis.mode)"
                            .into(),
                    );
                }
            }
            RedisMode::Sentinel | RedisMode::Cluster => {
                let mode = self.mode.as_str();
                if self.nodes.is_empty() {
                    problems.push(format!("redis.nodes: {mode} mode needs at least one node"));
                }
                for (i, u) in self.nodes.iter().enumerate() {
                    if !scheme_ok(u) {
                        problems.push(format!(
                            "redis.nodes[{i}]: must start with redis:// or rediss://"
                        ));
                    } else if url::Url::parse(u).map_or(true, |p| p.host_str().is_none()) {
                        problems.push(format!("redis.nodes[{i}]: not a URL with a host"));
                    } else if self.nodes[..i].contains(u) {
                        problems.push(format!("redis.nodes[{i}]: lists the same node twice"));
                    }
                }
                if self.nodes.len() > 64 {
                    problems.push("redis.nodes: at most 64 nodes".into());
                }
            }
        }
        match self.mode {
            RedisMode::Sentinel => {
                let ok = !self.service.is_empty()
                    && self.service.len() <= 128
                    && self
                        .service
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"');
                if !ok {
                    problems.push(
                        "redis.service: sentinel mode needs the primary's name (1 to 128 printable characters)"
                            .into(),
                    );
                }
            }
            _ if !self.service.is_empty() => {
                problems.push("redis.service: only read in sentinel mode".into());
            }
            _ => {}
        }
        if self.ca_file.is_some() && !self.tls() {
            problems.push("redis.ca_file: needs rediss:// URLs".into());
        }
        if self.min_replicas_ack > 16 {
            problems.push("redis.min_replicas_ack: at most 16".into());
        }
        problems
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379/".into(),
            nodes: Vec::new(),
            service: String::new(),
            min_replicas_ack: 0,
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
    fn each_mode_reads_its_own_keys() {
        let ok = RedisConfig::default();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let cluster = RedisConfig {
            mode: RedisMode::Cluster,
            nodes: vec!["redis://a:7001/".into(), "rediss://b:7002/".into()],
            ..Default::default()
        };
        assert!(cluster.problems().is_empty(), "{:?}", cluster.problems());
        assert!(cluster.tls());
        let sentinel = RedisConfig {
            mode: RedisMode::Sentinel,
            nodes: vec!["redis://s1:26379/".into()],
            service: "infq".into(),
            min_replicas_ack: 1,
            ..Default::default()
        };
        assert!(sentinel.problems().is_empty(), "{:?}", sentinel.problems());
        let bad = RedisConfig {
            mode: RedisMode::Sentinel,
            nodes: vec![
                "redis://s1:26379/".into(),
                "redis://s1:26379/".into(),
                "http://x/".into(),
                "redis://".into(),
            ],
            service: "bad name".into(),
            min_replicas_ack: 99,
            ..Default::default()
        };
        let problems = bad.problems().join("\n");
        for part in [
            "redis.nodes[1]: lists the same node twice",
            "redis.nodes[2]: must start with",
            "redis.nodes[3]: not a URL with a host",
            "redis.service",
            "redis.min_replicas_ack",
        ] {
            assert!(problems.contains(part), "{part} missing from {problems}");
        }
        let stray = RedisConfig {
            nodes: vec!["redis://a/".into()],
            service: "x".into(),
            ..Default::default()
        };
        let problems = stray.problems().join("\n");
        assert!(problems.contains("redis.nodes: only read"), "{problems}");
        assert!(problems.contains("redis.service: only read"), "{problems}");
    }

    #[test]
    fn passwords_are_kept_out_of_messages() {
        let r = redacted("rediss://:s3cret@redis.internal:6380/");
        assert!(!r.contains("s3cret") && r.contains("redis.internal"), "{r}");
        assert!(!redacted("amqps://infq:pw@rabbit/%2f").contains("pw@"));
        assert_eq!(redacted("not a url ::"), "(an unparsable URL)");
    }
}

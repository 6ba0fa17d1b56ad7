//! The `[amqp]` section: the RabbitMQ connection and the queues' limits.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// RabbitMQ connection and queue settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL (`amqp://` or `amqps://`); `?heartbeat=N` sets the
    /// heartbeat that detects half-open connections. One node; `urls`
    /// lists several and replaces it.
    pub url: String,
    /// The nodes of a RabbitMQ cluster, each a URL like `url`. Every
    /// (re)connect tries them in a new shuffled order, so a lost node costs
    /// one connect attempt and load spreads over the cluster. Empty: `url`.
    pub urls: Vec<String>,
    /// Members of each quorum queue when it is created
    /// (`x-quorum-initial-group-size`); unset: 3 when `urls` lists several
    /// nodes, else the broker's default (every node). Queues created this
    /// way also place their leaders across the nodes (balanced).
    pub quorum_initial_group_size: Option<u32>,
    /// PEM file of certificate authorities trusted for `amqps://` besides
    /// the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a connection to open.
    pub connect_timeout_ms: u64,
    /// Longest wait for the broker to confirm a publish before answering 503.
    pub publish_timeout_ms: u64,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Removes a queue unused for this long (for tests and ephemeral setups).
    pub queue_expires_ms: Option<u64>,
    /// Messages a job queue holds at most; past it the broker refuses
    /// publishes and submissions get `429`. A bulk chunk is one message.
    pub max_queue_length: u64,
    /// Delays of the retry tiers a job waits in before another attempt,
    /// shortest first; attempt n waits in tier n (or the last).
    pub retry_delays_ms: Vec<u64>,
    /// How often queue depths and consumer counts are read for `/metrics`.
    pub stats_interval_ms: u64,
    /// The audit stream (`[amqp.audit]`).
    pub audit: crate::audit::AuditConfig,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into(),
            urls: Vec::new(),
            quorum_initial_group_size: None,
            ca_file: None,
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
            delivery_limit: 5,
            queue_expires_ms: None,
            max_queue_length: 1_000_000,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            stats_interval_ms: 5_000,
            audit: crate::audit::AuditConfig::default(),
        }
    }
}

/// Initial members of a quorum queue when several nodes are listed and no
/// size is configured: a majority survives one node's loss.
pub const CLUSTER_QUORUM_GROUP_SIZE: u32 = 3;

impl AmqpConfig {
    /// The nodes to connect to: `urls`, or `url` alone when `urls` is
    /// empty.
    pub fn nodes(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.urls.iter().map(String::as_str).collect()
        }
    }

    /// Whether queues are placed for a cluster: several nodes listed, or
    /// an initial group size configured.
    pub fn clustered(&self) -> bool {
        self.initial_group_size().is_some()
    }

    /// The `x-quorum-initial-group-size` new queues are declared with, if
    /// any.
    pub fn initial_group_size(&self) -> Option<u32> {
        self.quorum_initial_group_size
            .or((self.urls.len() > 1).then_some(CLUSTER_QUORUM_GROUP_SIZE))
    }

    /// Problems with the node list, each naming its key.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let scheme_ok = |u: &str| u.starts_with("amqp://") || u.starts_with("amqps://");
        if self.urls.is_empty() && !scheme_ok(&self.url) {
            problems.push("amqp.url: must start with amqp:// or amqps://".into());
        }
        for (i, u) in self.urls.iter().enumerate() {
            if !scheme_ok(u) {
                problems.push(format!(
                    "amqp.urls[{i}]: must start with amqp:// or amqps://"
                ));
            } else if self.urls[..i].contains(u) {
                problems.push(format!("amqp.urls[{i}]: lists the same node twice"));
            }
        }
        if self.urls.len() > 64 {
            problems.push("amqp.urls: at most 64 nodes".into());
        }
        if let Some(n) = self.quorum_initial_group_size {
            if !(1..=64).contains(&n) {
                problems.push("amqp.quorum_initial_group_size: must be 1 to 64".into());
            }
        }
        problems.extend(self.audit.problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_replace_url_and_imply_a_group_of_three() {
        let mut cfg = AmqpConfig::default();
        assert_eq!(cfg.nodes(), vec![cfg.url.as_str()]);
        assert!(!cfg.clustered());
        assert_eq!(cfg.initial_group_size(), None);
        cfg.urls = vec!["amqp://a/".into(), "amqp://b/".into()];
        assert_eq!(cfg.nodes(), vec!["amqp://a/", "amqp://b/"]);
        assert!(cfg.clustered());
        assert_eq!(cfg.initial_group_size(), Some(CLUSTER_QUORUM_GROUP_SIZE));
        cfg.quorum_initial_group_size = Some(5);
        assert_eq!(cfg.initial_group_size(), Some(5));
    }

    #[test]
    fn bad_node_lists_name_the_entry() {
        let cfg = AmqpConfig {
            urls: vec![
                "amqp://a/".into(),
                "http://b/".into(),
                "amqp://a/".into(),
                String::new(),
            ],
            quorum_initial_group_size: Some(0),
            ..Default::default()
        };
        let problems = cfg.problems().join("\n");
        for part in [
            "amqp.urls[1]",
            "amqp.urls[2]: lists the same node twice",
            "amqp.urls[3]",
            "amqp.quorum_initial_group_size",
        ] {
            assert!(problems.contains(part), "{part} missing from {problems}");
        }
        assert!(!problems.contains("amqp.urls[0]"), "{problems}");
    }
}

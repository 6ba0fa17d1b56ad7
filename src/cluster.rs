//! The local scale-out deployment of `scripts/cluster`, for the chaos
//! suite and the benchmarks: they start and drill what an operator starts.

use std::process::Command;

/// Runs `scripts/cluster` with `args`; its standard output.
pub fn script(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(crate::root().join("scripts/cluster"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "scripts/cluster {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The 3-node RabbitMQ cluster (ports 5701-5703), stopped and its data
/// removed when dropped, however the caller ends.
pub struct RabbitCluster(());

impl RabbitCluster {
    /// Starts the nodes and forms the cluster (about 40 s here).
    pub fn up() -> anyhow::Result<Self> {
        let nodes = RabbitCluster(());
        script(&["up", "rabbitmq"])?;
        Ok(nodes)
    }

    /// The AMQP URLs of the three nodes.
    pub fn urls(&self) -> Vec<String> {
        (1..=3)
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=5", 5700 + n))
            .collect()
    }

    /// `amqp.urls` as an `INFQ_AMQP__URLS` value.
    pub fn urls_env(&self) -> String {
        serde_json::to_string(&self.urls()).expect("a list of strings")
    }

    /// The number (1-3) of the node leading `queue`.
    pub fn leader(&self, queue: &str) -> anyhow::Result<String> {
        Ok(script(&["rabbitmq-leader", queue])?.trim().to_string())
    }

    /// Stops node `n`'s broker app (`rabbitmqctl stop_app`), or with
    /// `kill` its whole process (`kill -9`).
    pub fn lose(&self, n: &str, kill: bool) -> anyhow::Result<()> {
        script(&[
            if kill {
                "rabbitmq-kill"
            } else {
                "rabbitmq-stop-app"
            },
            n,
        ])
        .map(drop)
    }

    /// Brings node `n` back after [`RabbitCluster::lose`].
    pub fn restore(&self, n: &str, killed: bool) -> anyhow::Result<()> {
        script(&[
            if killed {
                "rabbitmq-start"
            } else {
                "rabbitmq-start-app"
            },
            n,
        ])
        .map(drop)
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let _ = script(&["down", "rabbitmq"]);
    }
}

/// Which of `scripts/cluster`'s Redis deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    /// The 6-node Redis Cluster (ports 7001-7006).
    Cluster,
    /// A primary and two replicas (7101-7103) watched by three sentinels
    /// (26701-26703) as `infq`.
    Sentinel,
}

/// One of `scripts/cluster`'s Redis deployments, stopped and its data
/// removed when dropped, however the caller ends.
pub struct RedisNodes(RedisKind);

impl RedisNodes {
    /// Starts the nodes (and forms the cluster, or starts the sentinels).
    pub fn up(kind: RedisKind) -> anyhow::Result<Self> {
        let nodes = RedisNodes(kind);
        script(&["up", nodes.part()])?;
        Ok(nodes)
    }

    fn part(&self) -> &'static str {
        match self.0 {
            RedisKind::Cluster => "redis-cluster",
            RedisKind::Sentinel => "sentinel",
        }
    }

    /// The `INFQ_REDIS__*` settings that point infq at the nodes.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let (mode, ports): (&str, &[u16]) = match self.0 {
            RedisKind::Cluster => ("cluster", &[7001, 7002, 7003, 7004, 7005, 7006]),
            RedisKind::Sentinel => ("sentinel", &[26701, 26702, 26703]),
        };
        let nodes: Vec<String> = ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        let mut env = vec![
            ("INFQ_REDIS__MODE", mode.to_string()),
            (
                "INFQ_REDIS__NODES",
                serde_json::to_string(&nodes).expect("a list of strings"),
            ),
        ];
        if self.0 == RedisKind::Sentinel {
            env.push(("INFQ_REDIS__SERVICE", "infq".into()));
        }
        env
    }

    /// The port of the primary serving `key` (a cluster), or of the
    /// primary the sentinels name.
    pub fn primary(&self, key: &str) -> anyhow::Result<u16> {
        let out = match self.0 {
            RedisKind::Cluster => script(&["redis-primary-of", key])?,
            RedisKind::Sentinel => script(&["sentinel-primary"])?,
        };
        Ok(out.trim().parse()?)
    }

    /// Kills the node on `port` with `kill -9`.
    pub fn kill(&self, port: u16) -> anyhow::Result<()> {
        script(&["redis-kill", &port.to_string()]).map(drop)
    }

    /// Starts the node on `port` again, with its data.
    pub fn start(&self, port: u16) -> anyhow::Result<()> {
        script(&["redis-start", &port.to_string()]).map(drop)
    }
}

impl Drop for RedisNodes {
    fn drop(&mut self) {
        let _ = script(&["down", self.part()]);
    }
}

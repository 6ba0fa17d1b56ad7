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

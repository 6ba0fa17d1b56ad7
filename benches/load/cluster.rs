//! Interactive saturation on the system's single RabbitMQ node and on the
//! local 3-node cluster of `scripts/cluster` (quorum queues of 3 members,
//! the clients knowing every node), side by side in one run, each next to
//! the bare durable path's ceiling on the same broker. On one 2-core host
//! a cluster cannot be faster: every message is written by three nodes
//! sharing the same cores. The point is the cost of replication.

use crate::ceiling;
use crate::report::{median, thousands, Report};
use crate::stack::{settings, Stack};
use crate::Args;
use infq::cluster::RabbitCluster;

/// Ceiling, saturation and its p99, medians over `args.runs`, on the
/// system's broker or on `nodes`.
async fn measure(
    args: &Args,
    clients: usize,
    seconds: u64,
    nodes: Option<&RabbitCluster>,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut env = Vec::new();
    let mut cfg = settings()?;
    if let Some(nodes) = nodes {
        env.push(("INFQ_AMQP__URLS", nodes.urls_env()));
        cfg.amqp.urls = nodes.urls();
    }
    let (mut ceil, mut sat, mut p99) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        ceil.push(ceiling::ceiling(&cfg, if args.smoke { 1.0 } else { 4.0 }).await?);
        let stack = Stack::start_with(&args.profile, &env).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        let (rate, h) = stack.closed_loop(clients, seconds).await?;
        eprintln!(
            "{} run {}: {rate:.0} jobs/s",
            if nodes.is_some() {
                "cluster"
            } else {
                "single node"
            },
            run + 1
        );
        sat.push(rate);
        p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        stack.stop().await?;
    }
    Ok((median(ceil), median(sat), median(p99)))
}

pub(crate) async fn cluster(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (c1, s1, p1) = measure(args, clients, seconds, None).await?;
    let nodes = RabbitCluster::up()?;
    let (c3, s3, p3) = measure(args, clients, seconds, Some(&nodes)).await?;
    drop(nodes);
    report.row(
        "ceiling, one RabbitMQ node vs a 3-node cluster (quorum queues of 3)",
        format!("{} vs {} jobs/s", thousands(c1), thousands(c3)),
        "-".into(),
        format!("cluster: {:.0}% of one node", 100.0 * c3 / c1),
    );
    report.row(
        &format!(
            "interactive saturation ({clients} clients), one RabbitMQ node vs a 3-node cluster"
        ),
        format!(
            "{} jobs/s (p99 {:.1} ms) vs {} jobs/s (p99 {:.1} ms)",
            thousands(s1),
            p1,
            thousands(s3),
            p3
        ),
        format!("ceilings: {} / {} jobs/s", thousands(c1), thousands(c3)),
        format!(
            "{:.0}% / {:.0}% of ceiling; cluster: {:.0}% of one node",
            100.0 * s1 / c1,
            100.0 * s3 / c3,
            100.0 * s3 / s1
        ),
    );
    Ok(())
}

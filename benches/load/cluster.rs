//! Interactive saturation on the system's single RabbitMQ node and on the
//! local 3-node cluster of `scripts/cluster` (quorum queues of 3 members,
//! the clients knowing every node), side by side in one run, each next to
//! the bare durable path's ceiling on the same broker; then on the system's
//! Redis and on `scripts/cluster`'s Redis Cluster (3 primaries, 3
//! replicas) and Sentinel deployment, without and with
//! `redis.min_replicas_ack = 1`. On one 2-core host a cluster cannot be
//! faster: every message is written by three nodes sharing the same cores.
//! The point is the cost of replication.

use crate::ceiling;
use crate::report::{median, thousands, Report};
use crate::stack::{settings, Stack};
use crate::Args;
use infq::cluster::{RabbitCluster, RedisKind, RedisNodes};

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
    let label = if nodes.is_some() {
        "cluster"
    } else {
        "single node"
    };
    let mut ceil = Vec::new();
    for _ in 0..args.runs {
        ceil.push(
            ceiling::ceiling(&cfg, if args.smoke { 1.0 } else { 4.0 })
                .await?
                .rate,
        );
    }
    let (sat, p99) = saturate(args, clients, seconds, label, &env).await?;
    Ok((median(ceil), sat, p99))
}

/// Saturation and its p99, medians over `args.runs`, with `env`.
async fn saturate(
    args: &Args,
    clients: usize,
    seconds: u64,
    label: &str,
    env: &[(&'static str, String)],
) -> anyhow::Result<(f64, f64)> {
    let (mut sat, mut p99) = (vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start_with(&args.profile, env).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        let (rate, h) = stack.closed_loop(clients, seconds).await?;
        eprintln!("{label} run {}: {rate:.0} jobs/s", run + 1);
        sat.push(rate);
        p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        stack.stop().await?;
    }
    Ok((median(sat), median(p99)))
}

/// Saturation on the system's Redis and on `scripts/cluster`'s Redis
/// Cluster and Sentinel deployments.
async fn redis_modes(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (s1, p1) = saturate(args, clients, seconds, "one Redis", &[]).await?;
    let ack = ("INFQ_REDIS__MIN_REPLICAS_ACK", "1".to_string());
    let mut rows = vec![("one Redis server".to_string(), s1, p1)];
    for (kind, name) in [
        (RedisKind::Cluster, "Redis Cluster (3 primaries)"),
        (RedisKind::Sentinel, "Sentinel (primary + 2 replicas)"),
    ] {
        let nodes = RedisNodes::up(kind)?;
        let env = nodes.env();
        if kind == RedisKind::Cluster {
            let (s, p) = saturate(args, clients, seconds, name, &env).await?;
            rows.push((name.to_string(), s, p));
        }
        let mut env = env;
        env.push(ack.clone());
        let label = format!("{name}, min_replicas_ack 1");
        let (s, p) = saturate(args, clients, seconds, &label, &env).await?;
        rows.push((label, s, p));
        drop(nodes);
    }
    for (label, s, p) in rows {
        report.row(
            &format!("interactive saturation ({clients} clients), {label}"),
            format!("{} jobs/s (p99 {p:.1} ms)", thousands(s)),
            format!("one Redis server: {} jobs/s", thousands(s1)),
            format!("{:.0}% of one server", 100.0 * s / s1),
        );
    }
    Ok(())
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
    redis_modes(args, clients, seconds, report).await
}

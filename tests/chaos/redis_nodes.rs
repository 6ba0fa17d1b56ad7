//! The Redis deployments' scenarios: a producer and two workers on a Redis
//! of the suite's own that is more than one machine (started with
//! `scripts/cluster up redis-cluster|sentinel`, removed after), with
//! `redis.min_replicas_ack = 1`, under the steady load plus one
//! 100,000-row batch, lose a primary:
//!
//!   (h) Redis Cluster: `kill -9` a primary (the one serving a third of
//!       the slots), started again 5 s later; its replica takes over;
//!   (i) Sentinel: `kill -9` the primary, started again 5 s later; the
//!       sentinels promote a replica.
//!
//! Every `202` must end with the model's output, and every submission must
//! be answered within the client's 10 s.

use crate::harness::{submit_big_batch, Deployment, Scenario};
use infq::cluster::{RedisKind, RedisNodes};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the scenarios; appends their table to `table` and returns the
/// count of lost, failed, inconsistent, unanswered or otherwise answered
/// (neither 202 nor 503) jobs and rows.
pub(crate) async fn run(
    rows: &Arc<Vec<[f32; 3]>>,
    registry: &infq_common::registry::Registry,
    table: &mut Vec<String>,
) -> anyhow::Result<usize> {
    crate::harness::table_head(table, "Redis on more than one machine (`scripts/cluster up redis-cluster|sentinel`), `redis.min_replicas_ack = 1`, with a 100,000-row batch on top of the load:");
    let big: Vec<[f32; 3]> = rows.iter().cycle().take(100_000).copied().collect();
    let mut bad = 0;
    for (kind, name) in [
        (RedisKind::Cluster, "Redis Cluster: kill -9 a primary"),
        (RedisKind::Sentinel, "Sentinel: kill -9 the primary"),
    ] {
        eprintln!("[chaos] {name}");
        let started = Instant::now();
        let nodes = RedisNodes::up(kind)?;
        eprintln!("  up in {:.1} s", started.elapsed().as_secs_f64());
        let mut env = nodes.env();
        env.push(("INFQ_REDIS__MIN_REPLICAS_ACK", "1".into()));
        let d = Deployment::start(&env).await?;
        let run = Scenario::start(&d, rows);
        submit_big_batch(&d.http, &d.url(""), &big, run.accepted()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = nodes.primary("{0}")?;
        eprintln!("  killing the primary on port {victim}");
        let fault = Instant::now();
        nodes.kill(victim)?;
        let probe = Scenario::probe(&d, fault);
        tokio::time::sleep(Duration::from_secs(5)).await;
        nodes.start(victim)?;
        let recovered = probe.await?;
        let (row, lost, accepted) = run.finish(&d, name, recovered, registry).await?;
        table.push(format!(
            "{row} {} | {:.1} s |",
            accepted.unanswered,
            accepted.slowest.as_secs_f64()
        ));
        // A submission during the fault gets 202 or 503, in time.
        bad += lost + accepted.unanswered as usize + accepted.other.len();
        drop(d);
        drop(nodes);
    }
    Ok(bad)
}

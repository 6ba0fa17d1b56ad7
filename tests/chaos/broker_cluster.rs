//! The broker cluster's scenarios: a producer and two workers that know the
//! three nodes of a RabbitMQ cluster of the suite's own (started with
//! `scripts/cluster up rabbitmq`, on ports 5701-5703, and removed after),
//! under the steady load plus one 100,000-row batch, lose the node that
//! leads the interactive job queue:
//!
//!   (f) its broker app stopped (`rabbitmqctl stop_app`), started again 5 s later;
//!   (g) its Erlang process killed (`kill -9`), started again 5 s later.
//!
//! Every `202` must end with the model's output, and every submission must
//! be answered (`202` or `503`) within the client's 10 s: a publish
//! through a leader election is bounded, never a hang.

use crate::harness::{submit_big_batch, Deployment, Scenario};
use infq::cluster::RabbitCluster;
use infq::root;
use infq_common::job::Priority;
use infq_common::topology::Topology;
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
    eprintln!("[chaos] a 3-node RabbitMQ cluster (scripts/cluster up rabbitmq)");
    let started = Instant::now();
    let nodes = RabbitCluster::up()?;
    eprintln!("  up in {:.1} s", started.elapsed().as_secs_f64());
    let d = Deployment::start(&[("INFQ_AMQP__URLS", nodes.urls_env())]).await?;
    let settings =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?;
    let queue =
        Topology::new(&d.ns, &settings.amqp).job_queue("credit-default", Priority::Interactive);
    crate::harness::table_head(table, "A 3-node RabbitMQ cluster (`scripts/cluster up rabbitmq`), with a 100,000-row batch on top of the load:");
    let big: Vec<[f32; 3]> = rows.iter().cycle().take(100_000).copied().collect();
    let mut bad = 0;
    for (kill, name) in [
        (false, "stop_app the node leading the job queue"),
        (true, "kill -9 the node leading the job queue"),
    ] {
        eprintln!("[chaos] {name}");
        let run = Scenario::start(&d, rows);
        submit_big_batch(&d.http, &d.url(""), &big, run.accepted()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = nodes.leader(&queue)?;
        eprintln!("  {queue} is led by node {leader}");
        let fault = Instant::now();
        nodes.lose(&leader, kill)?;
        let probe = Scenario::probe(&d, fault);
        tokio::time::sleep(Duration::from_secs(5)).await;
        nodes.restore(&leader, kill)?;
        let recovered = probe.await?;
        let (row, lost, accepted) = run.finish(&d, name, recovered, registry).await?;
        table.push(format!(
            "{row} {} | {:.1} s |",
            accepted.unanswered,
            accepted.slowest.as_secs_f64()
        ));
        // A submission during the fault gets 202 or 503, in time.
        bad += lost + accepted.unanswered as usize + accepted.other.len();
    }
    drop(d);
    Ok(bad)
}

//! The fault-injection suite: a producer and two workers run as processes
//! against the real RabbitMQ and a Redis of the suite's own (AOF,
//! `everysec`), under a steady load of interactive jobs and bulk batches,
//! while faults are injected one scenario at a time:
//!
//!   (a) `kill -9` a worker mid-batch      (b) restart RabbitMQ
//!   (c) restart Redis                     (d) SIGTERM a worker
//!   (e) garbage and oversized messages published straight to the queues
//!
//! After each, every job and batch that got `202` must reach a terminal
//! state with the output the model gives when run directly. The suite
//! prints accepted, completed, lost, inconsistent and recovery time per
//! scenario, writes the table to target/chaos/results.md, and fails if
//! anything was lost or inconsistent. A job counts as inconsistent when its
//! stored output differs from the model's: a second run that wrote another
//! answer would show up there. Recovery is the time from the fault until a
//! job submitted after the fault hit completes end to end (probed every
//! 100 ms); for restarts it includes the 2 s the service stays down.
//!
//!   scripts/chaos          (also part of `cargo test`: `--test chaos`)

use anyhow::Context;
use infq::procs::Service;
use infq::redis_server::RedisServer;
use infq::{load_default_csv, reference_outputs, root};
use infq_common::job::Priority;
use infq_common::topology::Topology;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the load generator had accepted.
#[derive(Default)]
struct Accepted {
    /// Job id -> its features.
    jobs: HashMap<String, [f32; 3]>,
    /// Batch id -> its rows.
    batches: HashMap<String, Vec<[f32; 3]>>,
    /// Submissions refused with 503 (not accepted, so not owed).
    refused: u64,
}

struct Cluster {
    env: Vec<(&'static str, String)>,
    producer: Service,
    workers: Vec<Service>,
    redis: RedisServer,
    http: reqwest::Client,
    ns: String,
}

const PROFILE: &str = "debug";

impl Cluster {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start("everysec")?;
        let ns = format!("chaos{}", uuid::Uuid::new_v4().simple());
        let env = vec![
            ("INFQ_NAMESPACE", ns.clone()),
            ("INFQ_REDIS__URL", redis.url()),
            ("INFQ_REDIS__TIMEOUT_MS", "1000".to_string()),
            ("INFQ_AMQP__QUEUE_EXPIRES_MS", "300000".to_string()),
            ("INFQ_AMQP__RETRY_DELAYS_MS", "[500,1000,2000]".to_string()),
            ("INFQ_WORKER__STORE_RETRY_SECS", "5".to_string()),
            ("INFQ_WORKER__DRAIN_TIMEOUT_SECS", "20".to_string()),
            ("INFQ_LOG__FILTER", "warn".to_string()),
        ];
        let http = infq::http_builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()?;
        let mut workers = Vec::new();
        for _ in 0..2 {
            let mut w = Service::spawn(PROFILE, "infq-worker", &env)?;
            w.wait_ready(&http).await.context("worker")?;
            workers.push(w);
        }
        let mut producer = Service::spawn(PROFILE, "infq-producer", &env)?;
        producer.wait_ready(&http).await.context("producer")?;
        Ok(Self {
            env,
            producer,
            workers,
            redis,
            http,
            ns,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.producer.addr)
    }

    async fn replace_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let mut w = Service::spawn(PROFILE, "infq-worker", &self.env)?;
        w.wait_ready(&self.http).await?;
        self.workers[i] = w;
        Ok(())
    }
}

/// Offers interactive jobs and bulk batches until `stop`.
async fn load(
    http: reqwest::Client,
    base: String,
    rows: Arc<Vec<[f32; 3]>>,
    accepted: Arc<Mutex<Accepted>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.is_cancelled() {
        tick.tick().await;
        n += 1;
        let (http, base, accepted, rows) =
            (http.clone(), base.clone(), accepted.clone(), rows.clone());
        if n.is_multiple_of(200) {
            // A bulk batch of 2,000 rows every 2 s.
            tasks.spawn(async move {
                let start = (n * 7) % (rows.len() - 2000);
                let batch: Vec<[f32; 3]> = rows[start..start + 2000].to_vec();
                let mut csv = String::from("student,balance,income\n");
                for r in &batch {
                    csv.push_str(&format!("{},{},{}\n", r[0], r[1], r[2]));
                }
                match http
                    .post(format!("{base}/v1/batches?model=credit-default"))
                    .body(csv)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        if let Ok(v) = r.json::<Value>().await {
                            let id = v["id"].as_str().unwrap_or_default().to_string();
                            accepted.lock().unwrap().batches.insert(id, batch);
                        }
                    }
                    _ => accepted.lock().unwrap().refused += 1,
                }
            });
        } else {
            tasks.spawn(async move {
                let r = rows[(n * 13) % rows.len()];
                let body = json!({"model": "credit-default", "inputs": r});
                match http
                    .post(format!("{base}/v1/jobs"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(resp) if resp.status() == 202 => {
                        if let Ok(v) = resp.json::<Value>().await {
                            let id = v["id"].as_str().unwrap_or_default().to_string();
                            accepted.lock().unwrap().jobs.insert(id, r);
                        }
                    }
                    _ => accepted.lock().unwrap().refused += 1,
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Submits a job every 100 ms from `since` until one completes end to end;
/// returns the seconds from `since`.
async fn recovery(http: &reqwest::Client, base: &str, since: Instant) -> f64 {
    loop {
        let probe = async {
            let r = http
                .post(format!("{base}/v1/jobs"))
                .json(&json!({"model": "credit-default", "inputs": [0, 1000, 30000]}))
                .send()
                .await
                .ok()?;
            if r.status() != 202 {
                return None;
            }
            let id = r.json::<Value>().await.ok()?["id"].as_str()?.to_string();
            let v: Value = http
                .get(format!("{base}/v1/jobs/{id}?wait=2"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "succeeded").then_some(())
        };
        if probe.await.is_some() {
            return since.elapsed().as_secs_f64();
        }
        if since.elapsed() > Duration::from_secs(120) {
            return f64::INFINITY;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Verdict {
    accepted_jobs: usize,
    accepted_rows: usize,
    completed: usize,
    lost: usize,
    inconsistent: usize,
    failed: usize,
}

/// Waits for every accepted job and batch to end, then checks each output
/// against the model run directly.
async fn verify(
    cluster: &Cluster,
    accepted: &Accepted,
    registry: &infq_common::registry::Registry,
) -> anyhow::Result<Verdict> {
    let mut v = Verdict {
        accepted_jobs: accepted.jobs.len(),
        accepted_rows: accepted.batches.values().map(Vec::len).sum(),
        completed: 0,
        lost: 0,
        inconsistent: 0,
        failed: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let ids: Vec<&String> = accepted.jobs.keys().collect();
    let inputs: Vec<[f32; 3]> = ids.iter().map(|id| accepted.jobs[*id]).collect();
    let expected = reference_outputs(registry, &inputs)?;
    for (id, want) in ids.iter().zip(&expected) {
        let job = loop {
            let got = async {
                cluster
                    .http
                    .get(cluster.url(&format!("/v1/jobs/{id}?wait=5")))
                    .send()
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            }
            .await;
            match got {
                Some(j)
                    if j["status"] != "queued"
                        && j["status"] != "running"
                        && j["status"] != "retrying"
                        && j["error"]["code"] != "unavailable" =>
                {
                    break Some(j)
                }
                _ if Instant::now() > deadline => break None,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        match job {
            None => v.lost += 1,
            Some(j) if j["status"] == "succeeded" => {
                let got = j["output"]["default_probability"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                if (got - f64::from(*want)).abs() <= 1e-6 {
                    v.completed += 1;
                } else {
                    v.inconsistent += 1;
                }
            }
            Some(j) => {
                eprintln!("  job {id} ended {}: {}", j["status"], j["error"]);
                v.failed += 1;
            }
        }
    }
    for (id, rows) in &accepted.batches {
        let done = loop {
            let b: Option<Value> = async {
                cluster
                    .http
                    .get(cluster.url(&format!("/v1/batches/{id}?wait=5")))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            match b {
                Some(b)
                    if b["status"] == "succeeded"
                        || b["status"] == "failed"
                        || b["status"] == "cancelled" =>
                {
                    break Some(b)
                }
                _ if Instant::now() > deadline => break None,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let Some(b) = done else {
            v.lost += rows.len();
            continue;
        };
        let text = cluster
            .http
            .get(cluster.url(&format!("/v1/batches/{id}/results")))
            .send()
            .await?
            .text()
            .await?;
        let expected = reference_outputs(registry, rows)?;
        let mut seen = 0;
        for (i, line) in text.lines().skip(1).enumerate() {
            let mut cols = line.split(',');
            let row: usize = cols.next().unwrap_or("0").parse().unwrap_or(0);
            let value = cols.next().unwrap_or("");
            let error = cols.next().unwrap_or("");
            seen += 1;
            if row != i + 1 || i >= expected.len() {
                v.inconsistent += 1;
            } else if !error.is_empty() {
                eprintln!("  batch {id} row {row}: {error} ({})", b["status"]);
                v.failed += 1;
            } else if (value.parse::<f64>().unwrap_or(f64::NAN) - f64::from(expected[i])).abs()
                <= 1e-6
            {
                v.completed += 1;
            } else {
                v.inconsistent += 1;
            }
        }
        v.lost += rows.len().saturating_sub(seen);
    }
    Ok(v)
}

/// Publishes messages no producer would send, straight to the job queues.
async fn publish_garbage(ns: &str) -> anyhow::Result<usize> {
    let settings =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?;
    let topology = Topology::new(ns, &settings.amqp);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-chaos").await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let mut bodies: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        vec![0xff; 64],
        b"{\"id\":\"nope\"}".to_vec(),
        br#"{"id":"01a22848-1b5a-7259-ba90-2d787f609491","model":"credit-default","version":"1","priority":"interactive","inputs":[1,2],"created_at_ms":0}"#.to_vec(),
        vec![b'x'; 9 << 20],
    ];
    bodies.push("[".repeat(100_000).into_bytes());
    let mut sent = 0;
    for lane in Priority::ALL {
        for body in &bodies {
            ch.basic_publish(
                topology.jobs_exchange().as_str().into(),
                Topology::routing_key("credit-default", lane)
                    .as_str()
                    .into(),
                Default::default(),
                body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
            sent += 1;
        }
    }
    infq_common::amqp::close(&conn, "done").await;
    Ok(sent)
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let st = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "rabbitmqctl {args:?} failed");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let registry =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?
            .registry()?;
    let base: Vec<[f32; 3]> = load_default_csv(&root().join("data/Default.csv"))?
        .iter()
        .map(|b| b.features())
        .collect();
    let rows = Arc::new(base);
    let mut cluster = Cluster::start().await?;
    let scenarios = [
        "kill -9 a worker mid-batch",
        "restart RabbitMQ",
        "restart Redis",
        "SIGTERM a worker",
        "garbage and oversized messages",
    ];
    let mut table = vec![
        "| scenario | accepted: jobs + batch rows | refused with 503 | completed, correct output | failed | lost | duplicated with a different output | recovery |".to_string(),
        "|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut bad = 0;
    for (i, name) in scenarios.iter().enumerate() {
        eprintln!("[chaos] {name}");
        let accepted = Arc::new(Mutex::new(Accepted::default()));
        let stop = CancellationToken::new();
        let gen = tokio::spawn(load(
            cluster.http.clone(),
            cluster.url(""),
            rows.clone(),
            accepted.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The fault hits; recovery is timed from here, by jobs submitted
        // after this instant, while the restart (if any) goes on.
        let (probe_http, probe_base) = (cluster.http.clone(), cluster.url(""));
        let probe = |fault: Instant| {
            let (http, base) = (probe_http.clone(), probe_base.clone());
            tokio::spawn(async move { recovery(&http, &base, fault).await })
        };
        let probe = match i {
            0 => {
                cluster.workers[0].child.kill()?;
                let _ = cluster.workers[0].child.wait();
                let p = probe(Instant::now());
                tokio::time::sleep(Duration::from_secs(1)).await;
                cluster.replace_worker(0).await?;
                p
            }
            1 => {
                rabbitmqctl(&["stop_app"])?;
                let p = probe(Instant::now());
                tokio::time::sleep(Duration::from_secs(2)).await;
                rabbitmqctl(&["start_app"])?;
                p
            }
            2 => {
                cluster.redis.stop();
                let p = probe(Instant::now());
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster.redis.start_again()?;
                p
            }
            3 => {
                let p = probe(Instant::now());
                let status = cluster.workers[1].terminate(Duration::from_secs(25))?;
                anyhow::ensure!(
                    status.is_some_and(|s| s.success()),
                    "the worker did not drain and exit cleanly: {status:?}"
                );
                cluster.replace_worker(1).await?;
                p
            }
            _ => {
                let n = publish_garbage(&cluster.ns).await?;
                eprintln!("  published {n} bad messages");
                probe(Instant::now())
            }
        };
        let recovered = probe.await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        gen.await?;
        let accepted = std::mem::take(&mut *accepted.lock().unwrap());
        let v = verify(&cluster, &accepted, &registry).await?;
        eprintln!(
            "  accepted {} jobs + {} rows, refused {}, completed {}, failed {}, lost {}, inconsistent {}, recovery {:.1} s",
            v.accepted_jobs, v.accepted_rows, accepted.refused, v.completed, v.failed, v.lost, v.inconsistent, recovered
        );
        if v.lost + v.inconsistent + v.failed > 0 {
            // Say why, for a run whose only output is this log.
            let probe = cluster.http.get(cluster.url("/readyz")).send().await;
            eprintln!(
                "  producer /readyz: {:?}",
                match probe {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            );
            for s in std::iter::once(&cluster.producer).chain(&cluster.workers) {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("  last lines of {}:", s.log.display());
                for line in tail.iter().rev() {
                    eprintln!("    {line}");
                }
            }
        }
        bad += v.lost + v.inconsistent + v.failed;
        table.push(format!(
            "| {name} | {} + {} | {} | {} | {} | {} | {} | {:.1} s |",
            v.accepted_jobs,
            v.accepted_rows,
            accepted.refused,
            v.completed,
            v.failed,
            v.lost,
            v.inconsistent,
            recovered
        ));
    }
    // Bad messages end in the dead-letter queue, the rest is drained.
    let settings =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?;
    let topology = Topology::new(&cluster.ns, &settings.amqp);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-chaos").await?;
    let ch = conn.create_channel().await?;
    let depth = |q: String| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(
                q.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map(|q| q.message_count())
        }
    };
    let dead = depth(topology.dead_queue()).await?;
    let waiting = depth(topology.job_queue("credit-default", Priority::Interactive)).await?
        + depth(topology.job_queue("credit-default", Priority::Bulk)).await?;
    eprintln!("[chaos] dead letters: {dead}; left in job queues: {waiting}");
    table.push(String::new());
    table.push(format!(
        "Bad messages dead-lettered: {dead}; messages left in the job queues: {waiting}."
    ));
    let reg = registry
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let names: Vec<&str> = reg.iter().map(String::as_str).collect();
    drop(cluster);
    let _ = topology.delete(&ch, &names).await;
    infq_common::amqp::close(&conn, "done").await;

    let out = infq::procs::bin_dir("chaos");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.md"), table.join("\n") + "\n")?;
    println!("{}", table.join("\n"));
    anyhow::ensure!(
        bad == 0,
        "{bad} jobs or rows were lost, failed or inconsistent"
    );
    anyhow::ensure!(
        dead >= 10,
        "the bad messages did not all reach the dead-letter queue ({dead})"
    );
    anyhow::ensure!(
        waiting == 0,
        "{waiting} messages were left in the job queues"
    );
    Ok(())
}

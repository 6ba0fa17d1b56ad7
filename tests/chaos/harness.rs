//! The chaos suite's deployment, load generator and checks, shared by the
//! single-node scenarios and the broker cluster's.

use anyhow::Context;
use infq::procs::Service;
use infq::redis_server::RedisServer;
use infq::reference_outputs;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the load generator had accepted.
#[derive(Default)]
pub(crate) struct Accepted {
    /// Job id -> its features.
    pub(crate) jobs: HashMap<String, [f32; 3]>,
    /// Batch id -> its rows.
    pub(crate) batches: HashMap<String, Vec<[f32; 3]>>,
    /// Submissions refused with 503, or not answered (not accepted, so not
    /// owed).
    pub(crate) refused: u64,
    /// Submissions answered with neither `202` nor `503` (e.g. a `429`
    /// for a queue that is not full): their statuses.
    pub(crate) other: Vec<u16>,
    /// Submissions that got no answer at all within the client's timeout
    /// (10 s): a hang, where a `503` was owed.
    pub(crate) unanswered: u64,
    /// The longest a single job's submission took to be answered.
    pub(crate) slowest: Duration,
}

impl Accepted {
    /// Counts a submission answered with `status`, not `202`.
    fn refused_with(&mut self, status: reqwest::StatusCode) {
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            self.refused += 1;
        } else {
            self.other.push(status.as_u16());
        }
    }
}

pub(crate) struct Deployment {
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) producer: Service,
    pub(crate) workers: Vec<Service>,
    pub(crate) redis: RedisServer,
    pub(crate) http: reqwest::Client,
    pub(crate) ns: String,
}

const PROFILE: &str = "debug";

impl Deployment {
    /// A producer and two workers with their own Redis; `extra` adds or
    /// overrides settings (e.g. the broker's nodes).
    pub(crate) async fn start(extra: &[(&'static str, String)]) -> anyhow::Result<Self> {
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
            // Info, not warn: a failed scenario prints the log lines that
            // name its lost jobs and batches.
            ("INFQ_LOG__FILTER", "info".to_string()),
        ];
        let mut env = env;
        env.extend(extra.iter().cloned());
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.producer.addr)
    }

    pub(crate) async fn replace_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let mut w = Service::spawn(PROFILE, "infq-worker", &self.env)?;
        w.wait_ready(&self.http).await?;
        self.workers[i] = w;
        Ok(())
    }
}

/// Offers interactive jobs and bulk batches until `stop`.
pub(crate) async fn load(
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
                submit_batch(&http, &base, batch, &accepted).await;
            });
        } else {
            tasks.spawn(async move {
                let r = rows[(n * 13) % rows.len()];
                let body = json!({"model": "credit-default", "inputs": r});
                let sent = Instant::now();
                let answer = http
                    .post(format!("{base}/v1/jobs"))
                    .json(&body)
                    .send()
                    .await;
                {
                    let mut a = accepted.lock().unwrap();
                    a.slowest = a.slowest.max(sent.elapsed());
                    if answer.is_err() {
                        a.unanswered += 1;
                    }
                }
                match answer {
                    Ok(resp) if resp.status() == 202 => {
                        if let Ok(v) = resp.json::<Value>().await {
                            let id = v["id"].as_str().unwrap_or_default().to_string();
                            accepted.lock().unwrap().jobs.insert(id, r);
                        }
                    }
                    Ok(resp) => accepted.lock().unwrap().refused_with(resp.status()),
                    Err(_) => accepted.lock().unwrap().refused += 1,
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Uploads `batch` as CSV; records it as accepted on `202`, as refused
/// otherwise.
pub(crate) async fn submit_batch(
    http: &reqwest::Client,
    base: &str,
    batch: Vec<[f32; 3]>,
    accepted: &Mutex<Accepted>,
) {
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
        Ok(r) => accepted.lock().unwrap().refused_with(r.status()),
        Err(_) => accepted.lock().unwrap().refused += 1,
    }
}

/// Uploads the scenario's big batch before its fault, as a client would:
/// again after a `503` (a store call timed out on a busy host), up to 5
/// times, so that the fault meets it in flight.
pub(crate) async fn submit_big_batch(
    http: &reqwest::Client,
    base: &str,
    batch: &[[f32; 3]],
    accepted: &Mutex<Accepted>,
) {
    for _ in 0..5 {
        let before = accepted.lock().unwrap().batches.len();
        submit_batch(http, base, batch.to_vec(), accepted).await;
        if accepted.lock().unwrap().batches.len() > before {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("  the big batch was refused 5 times");
}

/// Submits a job every 100 ms from `since` until one completes end to end;
/// returns the seconds from `since`.
pub(crate) async fn recovery(http: &reqwest::Client, base: &str, since: Instant) -> f64 {
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

pub(crate) struct Verdict {
    pub(crate) accepted_jobs: usize,
    pub(crate) accepted_rows: usize,
    pub(crate) completed: usize,
    pub(crate) lost: usize,
    pub(crate) inconsistent: usize,
    pub(crate) failed: usize,
    /// The jobs and batches that did not end.
    pub(crate) lost_ids: Vec<String>,
}

/// Waits for every accepted job and batch to end, then checks each output
/// against the model run directly.
pub(crate) async fn verify(
    cluster: &Deployment,
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
        lost_ids: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let ids: Vec<&String> = accepted.jobs.keys().collect();
    let inputs: Vec<[f32; 3]> = ids.iter().map(|id| accepted.jobs[*id]).collect();
    let expected = reference_outputs(registry, &inputs)?;
    for (id, want) in ids.iter().zip(&expected) {
        let mut last = None;
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
                seen => {
                    last = seen.or(last);
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        };
        match job {
            None => {
                // Name it and say where it stopped, for a run whose only
                // output is this log.
                eprintln!("  job {id} did not end; last seen: {last:?}");
                v.lost_ids.push(id.to_string());
                v.lost += 1
            }
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
            eprintln!("  batch {id} did not end");
            v.lost_ids.push(id.to_string());
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
            // `error` is the last column (after the lineage columns); one
            // holding a comma is quoted, and still not empty.
            let error = cols.next_back().unwrap_or("");
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

/// Starts a table of scenarios on more than one node: its caption, then
/// the header of the rows [`Scenario::finish`] makes plus the columns on
/// submissions during the fault.
pub(crate) fn table_head(table: &mut Vec<String>, caption: &str) {
    table.push(String::new());
    table.push(caption.to_string());
    table.push(String::new());
    table.push("| scenario | accepted: jobs + batch rows | refused with 503 | completed, correct output | failed | lost | duplicated with a different output | recovery | unanswered submissions | slowest answer |".into());
    table.push("|---|---|---|---|---|---|---|---|---|---|".into());
}

/// One scenario's load, from its start until its verdict.
pub(crate) struct Scenario {
    accepted: Arc<Mutex<Accepted>>,
    stop: CancellationToken,
    gen: tokio::task::JoinHandle<()>,
}

impl Scenario {
    /// Starts the steady load against `d`.
    pub(crate) fn start(d: &Deployment, rows: &Arc<Vec<[f32; 3]>>) -> Self {
        let accepted = Arc::new(Mutex::new(Accepted::default()));
        let stop = CancellationToken::new();
        let gen = tokio::spawn(load(
            d.http.clone(),
            d.url(""),
            rows.clone(),
            accepted.clone(),
            stop.clone(),
        ));
        Self {
            accepted,
            stop,
            gen,
        }
    }

    /// What was accepted so far, for extra submissions of the scenario.
    pub(crate) fn accepted(&self) -> &Arc<Mutex<Accepted>> {
        &self.accepted
    }

    /// Starts timing recovery from `fault` (see [`recovery`]).
    pub(crate) fn probe(d: &Deployment, fault: Instant) -> tokio::task::JoinHandle<f64> {
        let (http, base) = (d.http.clone(), d.url(""));
        tokio::spawn(async move { recovery(&http, &base, fault).await })
    }

    /// Stops the load a few seconds after recovery, checks every accepted
    /// job and row, prints the figures (and the processes' last log lines
    /// when something went wrong), and returns the table row and the count
    /// of lost, failed and inconsistent jobs and rows.
    pub(crate) async fn finish(
        self,
        d: &Deployment,
        name: &str,
        recovered: f64,
        registry: &infq_common::registry::Registry,
    ) -> anyhow::Result<(String, usize, Accepted)> {
        tokio::time::sleep(Duration::from_secs(4)).await;
        self.stop.cancel();
        self.gen.await?;
        let accepted = std::mem::take(&mut *self.accepted.lock().unwrap());
        let v = verify(d, &accepted, registry).await?;
        eprintln!(
            "  accepted {} jobs + {} rows, refused {} ({} unanswered, slowest answer {:.1} s), answered otherwise {:?}, completed {}, failed {}, lost {}, inconsistent {}, recovery {:.1} s",
            v.accepted_jobs, v.accepted_rows, accepted.refused, accepted.unanswered, accepted.slowest.as_secs_f64(), accepted.other, v.completed, v.failed, v.lost, v.inconsistent, recovered
        );
        let bad = v.lost + v.inconsistent + v.failed;
        if bad > 0 {
            // Say why, for a run whose only output is this log.
            let probe = d.http.get(d.url("/readyz")).send().await;
            eprintln!(
                "  producer /readyz: {:?}",
                match probe {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            );
            for s in std::iter::once(&d.producer).chain(&d.workers) {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("  last lines of {}:", s.log.display());
                for line in tail.iter().rev() {
                    eprintln!("    {line}");
                }
                for line in log
                    .lines()
                    .filter(|l| v.lost_ids.iter().any(|id| l.contains(id.as_str())))
                {
                    eprintln!("    (names a lost job) {line}");
                }
            }
        }
        let row = format!(
            "| {name} | {} + {} | {} | {} | {} | {} | {} | {:.1} s |",
            v.accepted_jobs,
            v.accepted_rows,
            accepted.refused,
            v.completed,
            v.failed,
            v.lost,
            v.inconsistent,
            recovered
        );
        Ok((row, bad, accepted))
    }
}

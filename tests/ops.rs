//! Operations: the producer's and a worker's `/metrics` after a real run
//! (every documented metric there, with values that add up, and an
//! exposition `promtool check metrics` accepts), and horizontal scaling:
//! two worker processes on one queue share the load, run each job once,
//! and one left alone after the other is killed finishes everything.

use futures_util::stream::{self, StreamExt};
use infq::procs::{free_port, start_pair, Service};
use infq::{
    delete_namespace_named, load_default_csv, reference_outputs, root, test_settings, wait_job,
};
use infq_common::metrics::{Kind, Source, ALL};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const PROFILE: &str = "debug";

/// One sample of an exposition: labels (sorted `k="v"` text) and value.
type Samples = HashMap<String, Vec<(String, f64)>>;

/// Parses Prometheus text exposition into samples by metric name.
fn parse(text: &str) -> Samples {
    let mut out: Samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}').to_string()),
            None => (series, String::new()),
        };
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        out.entry(name.to_string()).or_default().push((labels, v));
    }
    out
}

/// Sum of a metric's samples whose labels contain every `filter` pair.
fn sum(s: &Samples, name: &str, filter: &[&str]) -> f64 {
    s.get(name)
        .map(|v| {
            v.iter()
                .filter(|(l, _)| filter.iter().all(|f| l.contains(f)))
                .map(|(_, x)| x)
                .sum()
        })
        .unwrap_or(0.0)
}

/// The promtool the set-up installed (or one on `PATH`).
fn promtool() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return p.into();
    }
    let local = root().join(".tools/usr/bin/promtool");
    if local.is_file() {
        return local;
    }
    "promtool".into()
}

/// Runs `promtool check metrics` on an exposition; panics with its
/// findings if it objects.
fn promtool_check(text: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (installed by scripts/setup into .tools/)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on the {what}'s exposition: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn env_of(ns: &str, log_filter: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INFQ_NAMESPACE", ns.to_string()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "300000".to_string()),
        ("INFQ_AMQP__STATS_INTERVAL_MS", "200".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HTTP", "true".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HOSTS", "[\"127.0.0.1\"]".to_string()),
        ("INFQ_LOG__FILTER", log_filter.to_string()),
        // The chunks these tests count are 256-row ones, as in
        // `infq::test_settings`.
        ("INFQ_PRODUCER__CHUNK_ROWS", "256".to_string()),
    ]
}

async fn scrape(http: &reqwest::Client, svc: &Service) -> String {
    let r = http
        .get(format!("http://{}/metrics", svc.addr))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Submits `rows` as single interactive jobs, `concurrency` at a time;
/// returns the ids accepted, in order.
async fn submit_all(
    http: &reqwest::Client,
    base: &str,
    rows: &[[f32; 3]],
    concurrency: usize,
) -> Vec<String> {
    stream::iter(rows.to_vec())
        .map(|r| {
            let (http, base) = (http.clone(), base.to_string());
            async move {
                let body = json!({"model": "credit-default", "inputs": [r[0], r[1], r[2]]});
                let resp = http
                    .post(format!("{base}/v1/jobs"))
                    .json(&body)
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
                let v: Value = resp.json().await.unwrap();
                v["id"].as_str().unwrap().to_string()
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

fn rows(n: usize) -> Vec<[f32; 3]> {
    let borrowers = load_default_csv(&root().join("data/Default.csv")).unwrap();
    borrowers.iter().take(n).map(|b| b.features()).collect()
}

async fn webhook_receiver() -> (String, Arc<std::sync::atomic::AtomicU64>) {
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = counted.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/hook"), hits)
}

/// Publishes a message no producer would send to a job queue.
async fn publish_garbage(queue: &str) {
    let conn = infq_common::amqp::connect(&test_settings().amqp, "ops-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "".into(),
        queue.into(),
        Default::default(),
        b"{not a job",
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    infq_common::amqp::close(&conn, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_export_every_documented_metric_with_values_that_add_up() {
    let ns = format!("ops{}", uuid::Uuid::new_v4().simple());
    // Debug lines of the model thread count the forward passes run.
    let env = env_of(&ns, "warn,infq_worker::model=debug");
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let (hook, hits) = webhook_receiver().await;

    // 300 single jobs, one of them with a webhook; 500 rows in a batch
    // (two chunks); one invalid submission; one undecodable message.
    let data = rows(800);
    let ids = submit_all(&http, &base, &data[..299], 32).await;
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"model": "credit-default", "inputs": data[299], "webhook_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hooked: Value = r.json().await.unwrap();
    let bad = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"model": "credit-default", "inputs": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let mut csv = String::from("student,balance,income\n");
    for r in &data[300..] {
        csv.push_str(&format!("{},{},{}\n", r[0], r[1], r[2]));
    }
    let r = http
        .post(format!("{base}/v1/batches?model=credit-default"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let batch: Value = r.json().await.unwrap();
    publish_garbage(&format!("{ns}.jobs.credit-default.interactive")).await;

    for id in ids
        .iter()
        .chain([hooked["id"].as_str().unwrap().to_string()].iter())
    {
        assert_eq!(wait_job(&http, &base, id).await["status"], "succeeded");
    }
    let r = http
        .get(format!(
            "{base}/v1/batches/{}?wait=60",
            batch["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["status"], "succeeded", "{b}");
    for _ in 0..100 {
        if hits.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Gauges are read every 200 ms here; settle a little past that.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let ptext = scrape(&http, &producer).await;
    let wtext = scrape(&http, &worker).await;
    let p = parse(&ptext);
    let w = parse(&wtext);
    for (name, kind, source, _) in ALL {
        let key = match kind {
            Kind::Histogram => format!("{name}_count"),
            _ => name.to_string(),
        };
        let wanted: &[(&str, &Samples)] = match source {
            Source::Producer => &[("producer", &p)],
            Source::Worker => &[("worker", &w)],
            Source::Both => &[("producer", &p), ("worker", &w)],
        };
        for (who, s) in wanted {
            assert!(s.contains_key(&key), "{who} /metrics lacks {key}");
        }
        assert!(
            ptext.contains(&format!("# HELP {name} "))
                || wtext.contains(&format!("# HELP {name} ")),
            "no help text for {name}"
        );
    }

    // Forward passes: the histogram counts each one the worker logged.
    let log = std::fs::read_to_string(&worker.log).unwrap();
    let batches_run = log.matches("batch ran").count() as f64;
    assert!(batches_run > 0.0);
    assert_eq!(sum(&w, "infq_batch_size_count", &[]), batches_run);
    assert_eq!(sum(&w, "infq_inference_seconds_count", &[]), batches_run);
    assert_eq!(
        sum(&w, "infq_batch_size_sum", &[]),
        800.0,
        "every row ran once"
    );
    assert_eq!(sum(&w, "infq_rows_total", &[]), 800.0);
    assert!(
        sum(&w, "infq_batch_size_count", &[]) < 800.0,
        "rows ran in batches"
    );
    // 300 jobs and 2 chunks completed; the producer counted 300 + 500 rows.
    assert_eq!(
        sum(&w, "infq_jobs_completed_total", &["outcome=\"succeeded\""]),
        302.0
    );
    // End to end is timed per single job; a batch's rows have their own.
    assert_eq!(sum(&w, "infq_job_end_to_end_seconds_count", &[]), 300.0);
    assert!(sum(&w, "infq_queue_wait_seconds_count", &[]) >= 302.0);
    assert_eq!(sum(&p, "infq_jobs_submitted_total", &[]), 800.0);
    assert_eq!(
        sum(&p, "infq_jobs_submitted_total", &["priority=\"bulk\""]),
        500.0
    );
    assert_eq!(
        sum(&p, "infq_jobs_rejected_total", &["outcome=\"invalid\""]),
        1.0
    );
    assert!(sum(&p, "infq_publish_seconds_count", &[]) >= 302.0);
    // Single jobs' publishes apart from chunks'.
    assert!(sum(&p, "infq_publish_seconds_count", &["message=\"job\""]) >= 300.0);
    assert_eq!(
        sum(&p, "infq_publish_seconds_count", &["message=\"chunk\""]),
        2.0
    );
    assert_eq!(
        sum(&w, "infq_dead_lettered_total", &["outcome=\"undecodable\""]),
        1.0
    );
    assert_eq!(
        sum(
            &w,
            "infq_webhook_attempts_total",
            &["outcome=\"delivered\""]
        ),
        1.0
    );
    assert_eq!(sum(&w, "infq_webhook_seconds_count", &[]), 1.0);
    // Queues drained and watched by both; the dead letter is in the DLQ.
    let interactive = format!("queue=\"{ns}.jobs.credit-default.interactive\"");
    for s in [&p, &w] {
        assert_eq!(sum(s, "infq_queue_depth", &[&interactive]), 0.0);
        assert_eq!(sum(s, "infq_queue_consumers", &[&interactive]), 1.0);
        assert_eq!(sum(s, "infq_dlq_depth", &[]), 1.0);
        assert_eq!(sum(s, "infq_dependency_reconnects_total", &[]), 0.0);
    }
    assert_eq!(
        sum(&w, "infq_queue_oldest_age_seconds", &[&interactive]),
        0.0
    );
    assert_eq!(sum(&w, "infq_worker_backlog", &[]), 0.0);
    let rate = sum(&w, "infq_rows_per_second", &[]);
    assert!(rate > 0.0 && rate <= 800.0, "rows/s {rate}");
    let p50_bucket = w["infq_inference_seconds_bucket"]
        .iter()
        .find(|(l, _)| l.contains("le=\"+Inf\""))
        .unwrap()
        .1;
    assert_eq!(p50_bucket, batches_run);

    promtool_check(&ptext, "producer");
    promtool_check(&wtext, "worker");
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_share_a_queue_and_one_finishes_after_the_other_is_killed() {
    let ns = format!("ops{}", uuid::Uuid::new_v4().simple());
    let env = env_of(&ns, "warn");
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut w = Service::spawn(PROFILE, "infq-worker", &env).unwrap();
        w.wait_ready(&http).await.unwrap();
        workers.push(w);
    }
    let mut producer = Service::spawn(PROFILE, "infq-producer", &env).unwrap();
    producer.wait_ready(&http).await.unwrap();
    let base = format!("http://{}", producer.addr);
    let data = rows(4000);
    let registry = test_settings().registry().unwrap();
    let expected = reference_outputs(&registry, &data).unwrap();

    // Both up: each takes a share, and each job runs exactly once.
    let ids = submit_all(&http, &base, &data[..2000], 64).await;
    for (i, id) in ids.iter().enumerate() {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["attempts"], 1, "job {id} ran more than once: {v}");
        let out = v["output"]["default_probability"].as_f64().unwrap() as f32;
        assert!((out - expected[i]).abs() < 1e-5, "{out} vs {}", expected[i]);
    }
    let mut shares = Vec::new();
    for w in &workers {
        shares.push(sum(&parse(&scrape(&http, w).await), "infq_rows_total", &[]));
    }
    println!("rows run per worker with both up: {shares:?}");
    assert!(
        shares.iter().all(|s| *s > 0.0),
        "a worker got no jobs: {shares:?}"
    );
    assert_eq!(shares.iter().sum::<f64>(), 2000.0, "a job ran twice");

    // Under load, kill -9 one: the other finishes everything, and only
    // what the killed one held (up to its prefetch) runs again.
    let (http2, base2) = (http.clone(), base.clone());
    let rest = data[2000..].to_vec();
    let load = tokio::spawn(async move { submit_all(&http2, &base2, &rest, 16).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed = workers.remove(0);
    drop(killed); // SIGKILL
    let ids = load.await.unwrap();
    let mut again = 0;
    for (i, id) in ids.iter().enumerate() {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let attempts = v["attempts"].as_u64().unwrap();
        assert!(attempts <= 2, "{v}");
        again += usize::from(attempts == 2);
        let out = v["output"]["default_probability"].as_f64().unwrap() as f32;
        assert!((out - expected[2000 + i]).abs() < 1e-5);
    }
    println!(
        "after the kill: {} jobs finished, {again} of them started twice",
        ids.len()
    );
    // A worker holds at most its prefetch (2 x max_batch_size) per queue.
    let spec = registry.resolve("credit-default").unwrap();
    assert!(again <= 4 * spec.max_batch_size, "{again} jobs ran twice");
    let survivor = parse(&scrape(&http, &workers[0]).await);
    assert!(sum(&survivor, "infq_rows_total", &[]) > shares[1]);
    drop(producer);
    drop(workers);
    delete_namespace_named(&ns).await;
}

#[test]
fn the_readme_documents_every_metric() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for (name, ..) in ALL {
        assert!(
            readme.contains(&format!("`{name}`")) || readme.contains(&format!("`{name}{{")),
            "README.md does not document {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_its_broker_is_alive_but_says_which_check_fails() {
    let ns = format!("ops{}", uuid::Uuid::new_v4().simple());
    let mut env = env_of(&ns, "warn");
    // Nothing listens on port 1.
    env.push((
        "INFQ_AMQP__URL",
        "amqp://guest:guest@127.0.0.1:1/%2f".into(),
    ));
    env.push(("INFQ_AMQP__CONNECT_TIMEOUT_MS", "500".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let worker = Service::spawn(PROFILE, "infq-worker", &env).unwrap();
    let base = format!("http://{}", worker.addr);
    let mut body = Value::Null;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            assert_eq!(r.status(), 503);
            body = r.json().await.unwrap();
            if body["checks"]["models"] == "ok" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(body["checks"]["models"], "ok", "{body}");
    assert_eq!(body["checks"]["broker"], "down", "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "alive all the same");
}

/// The JSON log lines written as spans named `name` closed.
fn closed_spans(log: &std::path::Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "close" && v["span"]["name"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_spans_carry_its_trace_from_submit_to_stored_result_and_name_its_batch() {
    let ns = format!("ops{}", uuid::Uuid::new_v4().simple());
    let mut env = env_of(&ns, "warn,infq::job=debug,infq_worker::batcher=info");
    env.push(("INFQ_LOG__JSON", "true".into()));
    env.push(("INFQ_LOG__SPANS", "true".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = json!({"model": "credit-default", "inputs": [0, 1500.0, 20000.0]});
    let traced: Value = http
        .post(format!("{base}/v1/jobs"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plain: Value = http
        .post(format!("{base}/v1/jobs"))
        .header("traceparent", "00-zz-not-a-trace")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = [
        traced["id"].as_str().unwrap(),
        plain["id"].as_str().unwrap(),
    ];
    for id in ids {
        assert_eq!(wait_job(&http, &base, id).await["status"], "succeeded");
    }
    let plain_trace = ids[1].replace('-', "");
    // Span lines are written as the spans close, just after the answer.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let submitted = closed_spans(&producer.log, "job");
    let run = closed_spans(&worker.log, "job");
    let batches = closed_spans(&worker.log, "batch");
    for (id, trace) in [(ids[0], trace), (ids[1], plain_trace.as_str())] {
        let s = submitted
            .iter()
            .find(|v| v["span"]["job_id"] == id)
            .unwrap_or_else(|| panic!("no submit span of {id}: {submitted:?}"));
        assert_eq!(s["span"]["trace_id"], trace, "{s}");
        assert_eq!(s["span"]["stage"], "submit");
        let r = run
            .iter()
            .find(|v| v["span"]["job_id"] == id)
            .unwrap_or_else(|| panic!("no worker span of {id}: {run:?}"));
        assert_eq!(r["span"]["trace_id"], trace, "{r}");
        assert_eq!(r["span"]["outcome"], "succeeded", "{r}");
        assert!(r["span"]["e2e_ms"].as_u64().is_some(), "{r}");
        assert!(
            r["time.busy"].is_string() && r["time.idle"].is_string(),
            "{r}"
        );
        let batch = &r["span"]["batch"];
        assert!(
            batches.iter().any(|b| &b["span"]["batch"] == batch),
            "batch {batch} of {id} has no span: {batches:?}"
        );
    }
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

//! The model registry end to end: two models served at once, each with its
//! own queues and batching settings; Open Inference Protocol (KServe v2)
//! tensors giving the same outputs as named inputs, singly and in bulk; a
//! bad registry entry or model file stopping start-up with the file and
//! the field or model named.

use futures_util::stream::{self, StreamExt};
use infq::procs::start_pair;
use infq::{
    delete_namespace_named, load_default_csv, model_outputs, reference_outputs, root, submit_job,
    test_settings, txn_rows, wait_job,
};
use serde_json::{json, Value};
use std::time::Duration;

const PROFILE: &str = "debug";

fn env_of(ns: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INFQ_NAMESPACE", ns.to_string()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "300000".to_string()),
        // Small chunks, so a bulk batch offers each model many messages
        // and its batcher fills batches up to its own max_batch_size.
        ("INFQ_PRODUCER__CHUNK_ROWS", "16".to_string()),
        ("INFQ_AMQP__STATS_INTERVAL_MS", "200".to_string()),
        ("INFQ_LOG__FILTER", "warn".to_string()),
    ]
}

fn named(row: &[f32]) -> Value {
    let history: Vec<Vec<f32>> = row[..48].chunks(4).map(<[f32]>::to_vec).collect();
    json!({"history": history, "tenure_months": row[48]})
}

fn v2(row: &[f32]) -> Value {
    json!([
        {"name": "history", "shape": [1, 12, 4], "datatype": "FP32", "data": &row[..48]},
        {"name": "tenure_months", "shape": [1], "datatype": "INT64", "data": [row[48] as i64]},
    ])
}

async fn upload(http: &reqwest::Client, base: &str, model: &str, jsonl: String) -> Vec<Value> {
    let r = http
        .post(format!("{base}/v1/batches?model={model}&format=jsonl"))
        .body(jsonl)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b: Value = http
        .get(format!("{base}/v1/batches/{id}?wait=120"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["status"], "succeeded", "{b}");
    let text = http
        .get(format!("{base}/v1/batches/{id}/results?format=jsonl"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Largest batch of a model in a worker's exposition: the smallest bucket
/// bound that holds every batch.
fn largest_batch_bound(metrics: &str, model: &str) -> f64 {
    let mut count = None;
    let mut buckets = Vec::new();
    for line in metrics.lines() {
        if !line.contains(&format!("model=\"{model}\"")) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if line.starts_with("infq_batch_size_count") {
            count = Some(value);
        } else if line.starts_with("infq_batch_size_bucket") {
            let le = line
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            buckets.push((le.parse::<f64>().unwrap_or(f64::INFINITY), value));
        }
    }
    let count = count.expect("batches of the model");
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.into_iter().find(|(_, v)| *v == count).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_run_side_by_side_with_their_own_queues_and_batch_sizes() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let env = env_of(&ns);
    let http = infq::http_builder()
        .timeout(Duration::from_secs(150))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let registry = test_settings().registry().unwrap();

    // The registry describes both, with their batching settings.
    let models: Value = http
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let txn = http
        .get(format!("{base}/v1/models/txn-risk"))
        .send()
        .await
        .unwrap();
    assert_eq!(txn.status(), 200);
    let txn: Value = txn.json().await.unwrap();
    assert_eq!(txn["name"], "txn-risk", "{txn}");
    assert_eq!(txn["versions"][0]["max_batch_size"], 256, "{txn}");
    assert_eq!(
        txn["versions"][0]["inputs"][0]["shape"],
        json!([12, 4]),
        "{txn}"
    );
    assert!(models.to_string().contains("credit-default"), "{models}");
    let missing = http
        .get(format!("{base}/v1/models/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Interactive jobs of both, interleaved.
    let credit: Vec<Vec<f32>> = load_default_csv(&root().join("data/Default.csv"))
        .unwrap()
        .iter()
        .take(150)
        .map(|b| b.features().to_vec())
        .collect();
    let txns = txn_rows(150, 7);
    let bodies: Vec<(bool, usize, Value)> = (0..150)
        .flat_map(|i| {
            [
                (
                    false,
                    i,
                    json!({"model": "credit-default", "inputs": credit[i]}),
                ),
                (
                    true,
                    i,
                    json!({"model": "txn-risk", "inputs": named(&txns[i])}),
                ),
            ]
        })
        .collect();
    let ids: Vec<(bool, usize, String)> = stream::iter(bodies)
        .map(|(t, i, body)| {
            let (http, base) = (http.clone(), base.clone());
            async move { (t, i, submit_job(&http, &base, &body).await) }
        })
        .buffered(32)
        .collect()
        .await;
    let want_credit = model_outputs(&registry, "credit-default", &credit).unwrap();
    let want_txn = model_outputs(&registry, "txn-risk", &txns).unwrap();
    for (is_txn, i, id) in &ids {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let (name, want) = if *is_txn {
            ("delinquency_probability", want_txn[*i][0])
        } else {
            ("default_probability", want_credit[*i][0])
        };
        let got = v["output"][name].as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-5, "{name}: {got} vs {want}");
    }

    // Bulk work for both: each model's batches grow to its own limit.
    let lines = |rows: &[Vec<f32>], f: fn(&[f32]) -> Value| {
        rows.iter()
            .map(|r| json!({"inputs": f(r)}).to_string() + "\n")
            .collect::<String>()
    };
    let bulk_txn = txn_rows(1024, 8);
    let bulk_credit: Vec<Vec<f32>> = (0..1024).map(|i| credit[i % 150].clone()).collect();
    let (txn_results, credit_results) = tokio::join!(
        upload(&http, &base, "txn-risk", lines(&bulk_txn, named)),
        upload(
            &http,
            &base,
            "credit-default",
            lines(&bulk_credit, |r| json!(r))
        ),
    );
    let want = model_outputs(&registry, "txn-risk", &bulk_txn).unwrap();
    for (r, w) in txn_results.iter().zip(&want) {
        let i = r["row"].as_u64().unwrap() as usize - 1;
        let got = r["output"]["delinquency_probability"].as_f64().unwrap() as f32;
        assert!((got - want[i][0]).abs() < 1e-5, "row {i}: {got} vs {w:?}");
    }
    assert_eq!(credit_results.len(), 1024);

    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = http
        .get(format!("http://{}/metrics", worker.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let credit_max = largest_batch_bound(&metrics, "credit-default");
    let txn_max = largest_batch_bound(&metrics, "txn-risk");
    println!("largest batch bound: credit-default {credit_max}, txn-risk {txn_max}");
    assert!(credit_max <= 64.0, "credit-default batches up to 64 rows");
    assert!(txn_max > 64.0 && txn_max <= 256.0, "txn-risk: {txn_max}");
    for model in ["credit-default", "txn-risk"] {
        for lane in ["interactive", "bulk"] {
            let q = format!("queue=\"{ns}.jobs.{model}.{lane}\"");
            assert!(
                metrics.contains(&format!("infq_queue_consumers{{{q}}} 1")),
                "{model} {lane}: its own queue, consumed"
            );
        }
    }
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_tensors_give_the_same_outputs_as_named_inputs_singly_and_in_bulk() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let env = env_of(&ns);
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();

    let rows = txn_rows(20, 9);
    for row in &rows {
        let whole = json!([{"name": "input-0", "shape": [1, 49], "datatype": "FP32", "data": row}]);
        let mut outs = Vec::new();
        for inputs in [named(row), v2(row), whole] {
            let id = submit_job(
                &http,
                &base,
                &json!({"model": "txn-risk", "inputs": inputs}),
            )
            .await;
            let v = wait_job(&http, &base, &id).await;
            assert_eq!(v["status"], "succeeded", "{v}");
            outs.push(v["output"].clone());
        }
        assert_eq!(outs[0], outs[1], "v2 per-feature tensors");
        assert_eq!(outs[0], outs[2], "one v2 tensor with the whole row");
    }
    // Bulk JSONL: named lines and v2 lines, the same rows.
    let named_lines: String = rows
        .iter()
        .map(|r| json!({"inputs": named(r)}).to_string() + "\n")
        .collect();
    let v2_lines: String = rows
        .iter()
        .map(|r| json!({"inputs": v2(r)}).to_string() + "\n")
        .collect();
    let a = upload(&http, &base, "txn-risk", named_lines).await;
    let b = upload(&http, &base, "txn-risk", v2_lines).await;
    assert_eq!(a.len(), 20);
    assert_eq!(a, b);
    // A v2 tensor of the wrong shape is refused with its field.
    let bad = json!({"model": "txn-risk", "inputs": [
        {"name": "history", "shape": [1, 4, 12], "datatype": "FP32", "data": &rows[0][..48]},
        {"name": "tenure_months", "shape": [1], "datatype": "FP32", "data": [12]},
    ]});
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("inputs[0].shape"), "{v}");
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

/// Runs a binary against a registry with `change` applied; returns its exit
/// status and output.
fn start_with_registry(bin: &str, from: &str, to: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("config/models.toml")).unwrap();
    let changed = text.replacen(from, to, 1);
    assert_ne!(text, changed, "{from} is in config/models.toml");
    // Model paths stay those of the repository.
    let changed = changed.replace("../models/", &format!("{}/models/", root().display()));
    let file = dir.path().join("models.toml");
    std::fs::write(&file, changed).unwrap();
    let out = std::process::Command::new(infq::procs::bin_dir(PROFILE).join(bin))
        .current_dir(root())
        .args([
            "--config",
            root().join("config/default.toml").to_str().unwrap(),
        ])
        .env("INFQ_MODELS_FILE", &file)
        .env("INFQ_LOG__FILTER", "error")
        .env(
            "INFQ_NAMESPACE",
            format!("bad{}", uuid::Uuid::new_v4().simple()),
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status,
        text.replace(&file.display().to_string(), "<file>"),
    )
}

#[test]
fn a_bad_registry_entry_stops_start_up_naming_the_file_and_field() {
    for bin in ["infq-worker", "infq-producer"] {
        let (status, out) = start_with_registry(bin, "max_batch_size = 256", "max_batch_size = 0");
        assert!(!status.success(), "{bin} started: {out}");
        assert!(
            out.contains("<file>: model `txn-risk@1`, field `max_batch_size`"),
            "{bin}: {out}"
        );
        let (status, out) = start_with_registry(bin, "shape = [12, 4]", "shape = [12, \"4\"]");
        assert!(!status.success(), "{bin} started: {out}");
        assert!(
            out.contains("<file>") && out.contains("shape"),
            "{bin}: {out}"
        );
    }
    // A file that is no TorchScript module stops the worker, naming it.
    let (status, out) = start_with_registry(
        "infq-worker",
        "../models/txn-risk.pt",
        "../models/txn_risk/train.py",
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("loading model txn-risk@1") && out.contains("train.py"),
        "{out}"
    );
}

#[test]
fn the_gpu_smoke_check_skips_without_a_gpu_and_checks_itself_on_the_cpu() {
    let bin = infq::procs::bin_dir(PROFILE).join("infq-gpu-smoke");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .current_dir(root())
            .args(args)
            .output()
            .expect("infq-gpu-smoke (cargo build --workspace --bins)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status, text)
    };
    if !tch::Cuda::is_available() {
        let (status, out) = run(&[]);
        assert!(status.success(), "{out}");
        assert!(
            out.contains("no CUDA device: GPU smoke test skipped"),
            "{out}"
        );
    }
    // The comparison and the rate table, CPU against CPU.
    let (status, out) = run(&["--device", "cpu", "--rows", "300"]);
    assert!(status.success(), "{out}");
    for model in ["credit-default@1", "txn-risk@1"] {
        assert!(
            out.contains(&format!("{model}: 300 rows, largest |cpu - cpu| = 0.00e0")),
            "{out}"
        );
    }
    assert!(out.contains("cpu rows/s"), "{out}");
    // The worker's own model threads, two instances, every batch matched.
    assert_eq!(
        out.matches("2 instances on cpu (worker model threads): largest |cpu - cpu| = 0.00e0")
            .count(),
        2,
        "{out}"
    );
    let (status, out) = run(&["--device", "tpu:0"]);
    assert!(
        !status.success() && out.contains("use cuda:N or cpu"),
        "{out}"
    );
}

/// A registry of the repository's models in a folder of its own, with
/// absolute model paths, so a test can add versions to it.
fn own_registry() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("config/models.toml"))
        .unwrap()
        .replace("../models/", &format!("{}/models/", root().display()));
    let file = dir.path().join("models.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// Adds a version of credit-default (a copy of its file) to the registry,
/// replacing the file at once as a configuration rollout would.
fn add_credit_version(file: &std::path::Path, version: &str, default: bool) {
    let dir = file.parent().unwrap();
    let model = dir.join(format!("credit-default-{version}.pt"));
    std::fs::copy(root().join("models/credit-default.pt"), &model).unwrap();
    let mut text = std::fs::read_to_string(file).unwrap();
    text.push_str(&format!(
        r#"
[[model]]
name = "credit-default"
version = "{version}"
default = {default}
path = "{}"
inputs = [{{ name = "student", min = 0, max = 1 }}, {{ name = "balance", min = 0 }}, {{ name = "income", min = 0 }}]
outputs = [{{ name = "default_probability" }}]
max_batch_size = 32
"#,
        model.display()
    ));
    let tmp = dir.join("models.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// `infq admin models reload` for namespace `ns` with registry `file`,
/// which must succeed.
fn admin_reload(ns: &str, file: &std::path::Path) {
    let out = std::process::Command::new(infq::procs::bin_dir(PROFILE).join("infq"))
        .current_dir(root())
        .args(["admin", "models", "reload"])
        .env("INFQ_NAMESPACE", ns)
        .env("INFQ_MODELS_FILE", file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Sends the request `make` builds until the producer takes it (`202`),
/// as it does once a reload has reached it, and returns the id it gives.
async fn accepted_id(make: impl Fn() -> reqwest::RequestBuilder) -> String {
    for _ in 0..50 {
        let r = make().send().await.unwrap();
        if r.status() == 202 {
            let v: Value = r.json().await.unwrap();
            return v["id"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not accepted within 5 s")
}

/// `GET /v1/models/credit-default`.
async fn credit_default_info(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/v1/models/credit-default"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn default_version(http: &reqwest::Client, base: &str) -> String {
    credit_default_info(http, base).await["default_version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_starts_serving_under_load_without_a_failed_job() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    let mut env = env_of(&ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    env.push(("INFQ_MODELS_POLL_MS", "300".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    assert_eq!(default_version(&http, &base).await, "1");

    // Plain `credit-default` jobs, 16 at a time, until told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = 0u32;
            while !stop.is_cancelled() {
                let batch: Vec<String> = stream::iter(0..16)
                    .map(|k| {
                        let (http, base) = (http.clone(), base.clone());
                        let income = 20_000.0 + f64::from(i * 16 + k);
                        async move {
                            let body =
                                json!({"model": "credit-default", "inputs": [0, 900.0, income]});
                            submit_job(&http, &base, &body).await
                        }
                    })
                    .buffer_unordered(16)
                    .collect()
                    .await;
                ids.extend(batch);
                i += 1;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    add_credit_version(&file, "2", true);
    let mut switched = false;
    for _ in 0..100 {
        if default_version(&http, &base).await == "2" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the producer did not pick up version 2");
    // Jobs pinned to the old version still run on it.
    let mut pinned = Vec::new();
    for k in 0..10 {
        let body =
            json!({"model": "credit-default@1", "inputs": [1, 500.0, 10_000.0 + f64::from(k)]});
        pinned.push(submit_job(&http, &base, &body).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let ids = load.await.unwrap();
    let mut by_version: std::collections::HashMap<String, usize> = Default::default();
    for id in &ids {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        *by_version
            .entry(v["version"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for id in &pinned {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        assert_eq!(v["version"], "1", "{v}");
    }
    println!("{} jobs under load, by version: {by_version:?}", ids.len());
    assert!(
        by_version.get("1").copied().unwrap_or(0) > 0,
        "{by_version:?}"
    );
    assert!(
        by_version.get("2").copied().unwrap_or(0) > 0,
        "{by_version:?}"
    );
    let metrics = http
        .get(format!("http://{}/metrics", worker.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("infq_registry_reloads_total{outcome=\"ok\"} ")
            && !metrics.contains("infq_registry_reloads_total{outcome=\"failed\"}"),
        "{metrics}"
    );
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infq_admin_models_reload_tells_every_process_and_refuses_a_bad_file() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    let mut env = env_of(&ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    // No polling: only the command reloads.
    env.push(("INFQ_MODELS_POLL_MS", "0".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let cli = |extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(infq::procs::bin_dir(PROFILE).join("infq"));
        cmd.current_dir(root())
            .args(["admin", "models", "reload"])
            .env("INFQ_NAMESPACE", &ns)
            .env("INFQ_MODELS_FILE", &file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    add_credit_version(&file, "3", false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"model": "credit-default@3", "inputs": [0, 900.0, 30000.0]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "no reload without the command");
    let (status, out) = cli(&[]);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("2 producer and worker process(es) told to reload"),
        "{out}"
    );
    let id = accepted_id(|| {
        http.post(format!("{base}/v1/jobs"))
            .json(&json!({"model": "credit-default@3", "inputs": [0, 900.0, 30000.0]}))
    })
    .await;
    let v = wait_job(&http, &base, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["version"], "3");

    // A broken file is refused by the command and tells no one.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        good.replace("max_batch_size = 32", "max_batch_size = -1"),
    )
    .unwrap();
    let (status, out) = cli(&[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("max_batch_size"), "{out}");
    // Unmarked, the last listed version is the default: 3 since the reload.
    assert_eq!(default_version(&http, &base).await, "3");
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_two_instances_runs_batches_on_two_threads() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    let text = std::fs::read_to_string(&file).unwrap();
    let two = text.replacen(
        "max_batch_size = 256",
        "max_batch_size = 256\ninstances = 2",
        1,
    );
    assert_ne!(text, two);
    std::fs::write(&file, two).unwrap();
    let mut env = env_of(&ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    // Two model threads, m0- and m1-, for txn-risk; one for credit-default.
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", worker.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    for t in ["m0-txn-risk", "m1-txn-risk", "m0-credit-defau"] {
        assert!(threads.iter().any(|c| c == t), "{t} in {threads:?}");
    }
    assert!(
        !threads.iter().any(|c| c == "m1-credit-defau"),
        "{threads:?}"
    );
    let model: Value = http
        .get(format!("{base}/v1/models/txn-risk"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["versions"][0]["instances"], 2, "{model}");

    let rows = txn_rows(200, 11);
    let want = model_outputs(&test_settings().registry().unwrap(), "txn-risk", &rows).unwrap();
    let ids: Vec<String> = stream::iter(
        rows.iter()
            .map(|r| json!({"model": "txn-risk", "inputs": named(r)})),
    )
    .map(|body| {
        let (http, base) = (http.clone(), base.clone());
        async move { submit_job(&http, &base, &body).await }
    })
    .buffered(64)
    .collect()
    .await;
    for (i, id) in ids.iter().enumerate() {
        let v = wait_job(&http, &base, id).await;
        let got = v["output"]["delinquency_probability"].as_f64().unwrap() as f32;
        assert!((got - want[i][0]).abs() < 1e-5, "{v}");
    }
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_for_a_version_whose_file_is_missing_waits_until_it_loads() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (dir, file) = own_registry();
    let mut env = env_of(&ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    env.push(("INFQ_MODELS_POLL_MS", "0".into()));
    env.push(("INFQ_AMQP__RETRY_DELAYS_MS", "[300, 600]".into()));
    env.push(("INFQ_WORKER__MAX_RETRIES", "20".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let reload = || admin_reload(&ns, &file);

    // Version 4 is listed before its file is in place: the producer takes
    // jobs for it, the worker cannot load it yet.
    add_credit_version(&file, "4", false);
    let model = dir.path().join("credit-default-4.pt");
    std::fs::rename(&model, dir.path().join("later.pt")).unwrap();
    reload();
    let id = accepted_id(|| {
        http.post(format!("{base}/v1/jobs"))
            .json(&json!({"model": "credit-default@4", "inputs": [0, 900.0, 30000.0]}))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v: Value = http
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "queued", "waiting, not failed: {v}");
    // The file arrives; the next reload serves it and the job runs.
    std::fs::rename(dir.path().join("later.pt"), &model).unwrap();
    reload();
    let v = wait_job(&http, &base, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["version"], "4");
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_results_keep_their_output_names_after_the_version_is_removed() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (dir, file) = own_registry();
    let original = std::fs::read_to_string(&file).unwrap();
    let mut env = env_of(&ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    env.push(("INFQ_MODELS_POLL_MS", "0".into()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let reload = || admin_reload(&ns, &file);

    // Version 7 names its output differently from version 1.
    let model = dir.path().join("credit-default-7.pt");
    std::fs::copy(root().join("models/credit-default.pt"), &model).unwrap();
    std::fs::write(
        &file,
        format!(
            r#"{original}
[[model]]
name = "credit-default"
version = "7"
path = "{}"
inputs = [{{ name = "student", min = 0, max = 1 }}, {{ name = "balance", min = 0 }}, {{ name = "income", min = 0 }}]
outputs = [{{ name = "p_default" }}]
"#,
            model.display()
        ),
    )
    .unwrap();
    reload();
    let borrowers = load_default_csv(&root().join("data/Default.csv")).unwrap();
    let rows: Vec<[f32; 3]> = borrowers.iter().take(40).map(|b| b.features()).collect();
    let jsonl: String = rows
        .iter()
        .map(|r| format!("[{}, {}, {}]\n", r[0], r[1], r[2]))
        .collect();
    let id = accepted_id(|| {
        http.post(format!(
            "{base}/v1/batches?model=credit-default@7&format=jsonl"
        ))
        .body(jsonl.clone())
    })
    .await;
    let b: Value = http
        .get(format!("{base}/v1/batches/{id}?wait=60"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["status"], "succeeded", "{b}");

    // Version 7 leaves the registry; its batch's results still name their
    // outputs and carry every value.
    std::fs::write(&file, &original).unwrap();
    reload();
    let mut gone = false;
    for _ in 0..50 {
        let info = credit_default_info(&http, &base).await.to_string();
        if !info.contains("\"7\"") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the producer still lists version 7");
    // The file is a copy of version 1's.
    let expected = reference_outputs(&test_settings().registry().unwrap(), &rows).unwrap();
    let results = |format: &'static str| {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        async move {
            http.get(format!("{base}/v1/batches/{id}/results?format={format}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let jsonl = results("jsonl").await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len());
    for (line, want) in lines.iter().zip(&expected) {
        let got = line["output"]["p_default"].as_f64().unwrap_or(f64::NAN) as f32;
        assert!((got - want).abs() <= 1e-6, "{line} against {want}");
    }
    let csv = results("csv").await;
    let mut csv_lines = csv.lines();
    assert_eq!(csv_lines.next(), Some("row,p_default,error"), "{csv}");
    assert!(
        csv_lines.all(|l| !l.split(',').nth(1).unwrap_or_default().is_empty()),
        "{csv}"
    );
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

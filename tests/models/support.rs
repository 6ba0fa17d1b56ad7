//! Environments, requests, registries and metrics shared by the model
//! tests.

use infq::root;
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) const PROFILE: &str = "debug";

pub(crate) fn env_of(ns: &str) -> Vec<(&'static str, String)> {
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

/// [`env_of`] with the registry `file`, polled every `poll_ms` (`0`: read
/// again only when told) or at the configured interval (`None`).
pub(crate) fn env_with_registry(
    ns: &str,
    file: &std::path::Path,
    poll_ms: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut env = env_of(ns);
    env.push(("INFQ_MODELS_FILE", file.display().to_string()));
    if let Some(ms) = poll_ms {
        env.push(("INFQ_MODELS_POLL_MS", ms.to_string()));
    }
    env
}

/// A client of the development tenant whose requests give up after
/// `secs`.
pub(crate) fn client(secs: u64) -> reqwest::Client {
    infq::http_builder()
        .timeout(Duration::from_secs(secs))
        .build()
        .unwrap()
}

pub(crate) fn named(row: &[f32]) -> Value {
    let history: Vec<Vec<f32>> = row[..48].chunks(4).map(<[f32]>::to_vec).collect();
    json!({"history": history, "tenure_months": row[48]})
}

pub(crate) fn v2(row: &[f32]) -> Value {
    json!([
        {"name": "history", "shape": [1, 12, 4], "datatype": "FP32", "data": &row[..48]},
        {"name": "tenure_months", "shape": [1], "datatype": "INT64", "data": [row[48] as i64]},
    ])
}

pub(crate) async fn upload(
    http: &reqwest::Client,
    base: &str,
    model: &str,
    jsonl: String,
) -> Vec<Value> {
    let query = format!("model={model}&format=jsonl");
    let r = infq::upload_batch(http, base, &query, None, jsonl).await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = infq::id_of(r).await;
    let b = infq::wait_batch(http, base, &id).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    let text = infq::batch_results(http, base, &id, "jsonl").await;
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Largest batch of a model in a worker's exposition: the smallest bucket
/// bound that holds every batch.
pub(crate) fn largest_batch_bound(metrics: &str, model: &str) -> f64 {
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

/// A registry of the repository's models in a folder of its own, with
/// absolute model paths, so a test can add versions to it.
pub(crate) fn own_registry() -> (tempfile::TempDir, std::path::PathBuf) {
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
pub(crate) fn add_credit_version(file: &std::path::Path, version: &str, default: bool) {
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
pub(crate) fn admin_reload(ns: &str, file: &std::path::Path) {
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
pub(crate) async fn accepted_id(make: impl Fn() -> reqwest::RequestBuilder) -> String {
    for _ in 0..50 {
        let r = make().send().await.unwrap();
        if r.status() == 202 {
            return infq::id_of(r).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not accepted within 5 s")
}

/// `GET /v1/models/credit-default`.
pub(crate) async fn credit_default_info(http: &reqwest::Client, base: &str) -> Value {
    infq::get_json(http, &format!("{base}/v1/models/credit-default")).await
}

pub(crate) async fn default_version(http: &reqwest::Client, base: &str) -> String {
    credit_default_info(http, base).await["default_version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

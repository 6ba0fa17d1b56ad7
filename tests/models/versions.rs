//! Versions: rolled out under load, reloaded by `infq admin models
//! reload`, waited for while their file is missing, and results that keep
//! their output names after the version is removed.

use crate::support::*;
use futures_util::stream::{self, StreamExt};
use infq::procs::start_pair;
use infq::{
    delete_namespace_named, load_default_csv, reference_outputs, root, submit_job, test_settings,
    wait_job,
};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_starts_serving_under_load_without_a_failed_job() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    let env = env_with_registry(&ns, &file, Some(300));
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
    let metrics = infq::get_text(&http, &format!("http://{}/metrics", worker.addr)).await;
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
    let mut env = env_with_registry(&ns, &file, None);
    // No polling: only the command reloads.
    env.push(("INFQ_MODELS_POLL_MS", "0".into()));
    let http = client(60);
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
async fn a_job_for_a_version_whose_file_is_missing_waits_until_it_loads() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let (dir, file) = own_registry();
    let mut env = env_with_registry(&ns, &file, Some(0));
    env.push(("INFQ_AMQP__RETRY_DELAYS_MS", "[300, 600]".into()));
    env.push(("INFQ_WORKER__MAX_RETRIES", "20".into()));
    let http = client(60);
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
    let v: Value = infq::get_json(&http, &format!("{base}/v1/jobs/{id}")).await;
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
    let env = env_with_registry(&ns, &file, Some(0));
    let http = client(60);
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
    let b: Value = infq::get_json(&http, &format!("{base}/v1/batches/{id}?wait=60")).await;
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
    let jsonl = infq::batch_results(&http, &base, &id, "jsonl").await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len());
    for (line, want) in lines.iter().zip(&expected) {
        let got = line["output"]["p_default"].as_f64().unwrap_or(f64::NAN) as f32;
        assert!((got - want).abs() <= 1e-6, "{line} against {want}");
    }
    let csv = infq::batch_results(&http, &base, &id, "csv").await;
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next(),
        Some("row,p_default,model,version,model_sha256,error"),
        "{csv}"
    );
    assert!(
        csv_lines.all(|l| !l.split(',').nth(1).unwrap_or_default().is_empty()),
        "{csv}"
    );
    drop(producer);
    drop(worker);
    delete_namespace_named(&ns).await;
}

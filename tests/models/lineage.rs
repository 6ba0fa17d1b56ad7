//! Lineage: every job, batch and result row names the model file that ran
//! it by its SHA-256, which equals `sha256sum` of the file; batches also
//! name the registry and infq's version; a worker refuses a file whose
//! digest is not the one the registry declares.

use crate::support::{client, env_with_registry, own_registry};
use infq::{get_json, load_default_csv, root, submit_job, test_settings, wait_job};
use serde_json::{json, Value};

/// `sha256sum`'s answer for a file.
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_name_the_model_file_and_registry_that_made_them() {
    let ns = format!("lineage{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    let env = env_with_registry(&ns, &file, Some(0));
    let http = client(120);
    let (worker, producer, base) = infq::procs::start_pair(&env, &http).await.unwrap();
    let credit = sha256sum(&root().join("models/credit-default.pt"));
    let txn = sha256sum(&root().join("models/txn-risk.pt"));
    let registry = sha256sum(&file);

    let models = get_json(&http, &format!("{base}/v1/models")).await;
    let shown: Vec<(String, String)> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["sha256"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        shown.contains(&("credit-default".into(), credit.clone())),
        "{models}"
    );
    assert!(
        shown.contains(&("txn-risk".into(), txn.clone())),
        "{models}"
    );

    let b = load_default_csv(&root().join("data/Default.csv")).unwrap()[7];
    let id = submit_job(
        &http,
        &base,
        &json!({"model": "credit-default", "inputs": b.features()}),
    )
    .await;
    let job = wait_job(&http, &base, &id).await;
    assert_eq!(job["model_sha256"], credit, "{job}");
    let row = infq::txn_rows(1, 2).remove(0);
    let id = submit_job(&http, &base, &json!({"model": "txn-risk", "inputs": row})).await;
    let job = wait_job(&http, &base, &id).await;
    assert_eq!(job["model_sha256"], txn, "{job}");

    let r = http
        .post(format!("{base}/v1/batches?model=credit-default"))
        .body("student,balance,income\nNo,100,20000\nYes,2000,10000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["model_sha256"], credit, "{accepted}");
    assert_eq!(accepted["registry_sha256"], registry, "{accepted}");
    assert_eq!(
        accepted["infq_version"],
        env!("CARGO_PKG_VERSION"),
        "{accepted}"
    );
    let id = accepted["id"].as_str().unwrap();
    let done = get_json(&http, &format!("{base}/v1/batches/{id}?wait=60")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["registry_sha256"], registry, "{done}");
    let text = infq::batch_results(&http, &base, id, "jsonl").await;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["model_sha256"], credit, "{v}");
        assert_eq!(
            (v["model"].as_str(), v["version"].as_str()),
            (Some("credit-default"), Some("1")),
            "{v}"
        );
    }
    let table = infq::batch_results(&http, &base, id, "csv").await;
    let mut rdr = csv::Reader::from_reader(table.as_bytes());
    assert_eq!(
        rdr.headers().unwrap(),
        vec![
            "row",
            "default_probability",
            "model",
            "version",
            "model_sha256",
            "error"
        ]
    );
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        assert_eq!(
            (&rec[2], &rec[3], &rec[4]),
            ("credit-default", "1", credit.as_str()),
            "{rec:?}"
        );
        rows += 1;
    }
    assert_eq!(rows, 2);
    drop((worker, producer));
    infq::delete_namespace_named(&ns).await;
}

#[test]
fn a_file_other_than_the_declared_one_is_refused() {
    let registry = test_settings().registry().unwrap();
    let mut spec = registry.resolve("credit-default").unwrap().clone();
    let actual = sha256sum(&spec.path);
    spec.sha256 = Some("0".repeat(64));
    let Err(err) = infq_worker::model::load(&spec, tch::Device::Cpu) else {
        panic!("a file with another digest was loaded");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("credit-default@1") && msg.contains(&actual) && msg.contains(&"0".repeat(64)),
        "{msg}"
    );
    spec.sha256 = Some(actual);
    assert!(infq_worker::model::load(&spec, tch::Device::Cpu).is_ok());
}

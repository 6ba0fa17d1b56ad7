//! Serving: two models side by side with their own queues and batch
//! sizes, v2 tensors against named inputs, and a model on two threads.

use crate::support::*;
use futures_util::stream::{self, StreamExt};
use infq::procs::start_pair;
use infq::{
    delete_namespace_named, load_default_csv, model_outputs, root, submit_job, test_settings,
    txn_rows, wait_job,
};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_run_side_by_side_with_their_own_queues_and_batch_sizes() {
    let ns = format!("models{}", uuid::Uuid::new_v4().simple());
    let env = env_of(&ns);
    let http = client(150);
    let (worker, producer, base) = start_pair(&env, &http).await.unwrap();
    let registry = test_settings().registry().unwrap();

    // The registry describes both, with their batching settings.
    let models: Value = infq::get_json(&http, &format!("{base}/v1/models")).await;
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
    let metrics = infq::get_text(&http, &format!("http://{}/metrics", worker.addr)).await;
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
    let http = client(60);
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
    let env = env_with_registry(&ns, &file, None);
    let http = client(60);
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
    let model: Value = infq::get_json(&http, &format!("{base}/v1/models/txn-risk")).await;
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

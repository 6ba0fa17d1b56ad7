//! Reason codes: integrated gradients through libtorch's autograd, checked
//! by completeness on both example models, and end to end: a job's reasons
//! equal the same row's in a bulk batch, in every results format.

use infq::{load_default_csv, root, test_settings, txn_rows};
use infq_worker::explain::Explainer;

/// The bound the README states: at the registry's 32 steps, a row's
/// attributions sum to `f(x) - f(baseline)` within 5% of that difference
/// (the check Sundararajan et al. recommend), or 0.005 where the
/// difference is small.
fn bound(delta: f64) -> f64 {
    (0.05 * delta.abs()).max(0.005)
}

/// For 1,000 rows of each example model: the attributions (32 steps, as
/// the registry declares) sum to `f(x) - f(baseline)`, and the error
/// shrinks as the steps grow.
#[test]
fn attributions_sum_to_the_score_less_the_baseline_score() {
    let registry = test_settings().registry().unwrap();
    let credit: Vec<f32> = load_default_csv(&root().join("data/Default.csv"))
        .unwrap()
        .iter()
        .step_by(10)
        .flat_map(|b| b.features())
        .collect();
    let txn: Vec<f32> = txn_rows(1000, 11).into_iter().flatten().collect();
    let mut results = Vec::new();
    for (model, inputs) in [("credit-default", credit), ("txn-risk", txn)] {
        let spec = registry.resolve(model).unwrap();
        let width = spec.width();
        let rows = inputs.len() / width;
        assert_eq!(rows, 1000);
        let module = infq_worker::model::load(spec, tch::Device::Cpu).unwrap();
        let x = Explainer::of(spec).expect("an explain section");
        let scores = {
            let _g = tch::no_grad_guard();
            infq_worker::model::forward(&module, tch::Device::Cpu, &inputs, rows, width).unwrap()
        };
        let base = {
            let _g = tch::no_grad_guard();
            infq_worker::model::forward(&module, tch::Device::Cpu, &x.baseline, 1, width).unwrap()
        }[x.output];
        let mut worst_at = Vec::new();
        for steps in [8, 32, 128, 512] {
            let x = Explainer { steps, ..x.clone() };
            let attr = x
                .attribute(
                    &module,
                    tch::Device::Cpu,
                    tch::Kind::Float,
                    &inputs,
                    rows,
                    width,
                )
                .unwrap();
            assert_eq!(attr.len(), rows * width);
            // The error of each row, against the tolerance's bound for it.
            let worst = (0..rows)
                .map(|r| {
                    let sum: f64 = attr[r * width..(r + 1) * width]
                        .iter()
                        .map(|&a| f64::from(a))
                        .sum();
                    let delta = f64::from(scores[r]) - f64::from(base);
                    let err = (sum - delta).abs();
                    (err, err / bound(delta))
                })
                .fold((0f64, 0f64), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            worst_at.push((steps, worst.0, worst.1));
        }
        println!("{model}: by steps, the worst |sum of attributions - (f(x) - f(baseline))| over 1000 rows, and the worst error as a share of its bound: {worst_at:?}");
        results.push((model, worst_at));
    }
    for (model, worst_at) in results {
        let (_, err, of_bound) = worst_at[1];
        assert!(
            of_bound <= 1.0,
            "{model}: an error of {err} at 32 steps is {of_bound} times its bound"
        );
        assert!(
            worst_at[3].1 < worst_at[2].1
                && worst_at[2].1 < worst_at[1].1
                && worst_at[1].1 < worst_at[0].1,
            "{model}: more steps, a smaller error: {worst_at:?}"
        );
    }
}

/// A model without a gradient path from its inputs cannot be explained: a
/// registry that declares `explain` for it stops the worker at load,
/// naming the model.
#[test]
fn a_model_with_no_gradient_path_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // A TorchScript module whose output does not depend on its input.
    let script = dir.path().join("make.py");
    let pt = dir.path().join("constant.pt");
    std::fs::write(
        &script,
        format!(
            "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        return torch.zeros(x.shape[0], 1) + 0.5\ntorch.jit.script(M()).save({:?})\n",
            pt.display().to_string()
        ),
    )
    .unwrap();
    let ok = std::process::Command::new(root().join(".venv/bin/python"))
        .arg(&script)
        .status()
        .unwrap();
    assert!(ok.success());
    let text = format!(
        r#"
[[model]]
name = "flat"
version = "1"
path = {:?}
inputs = [{{ name = "a", reason = "A is high" }}]
outputs = [{{ name = "p" }}]
explain = {{ method = "integrated_gradients", baseline = {{ a = 0 }} }}
"#,
        pt.display().to_string()
    );
    let reg =
        infq_common::registry::Registry::parse(&text, std::path::Path::new("m.toml"), dir.path())
            .unwrap();
    let Err(err) = infq_worker::model::load(&reg.models()[0], tch::Device::Cpu) else {
        panic!("a model with no gradient path was loaded with explain declared");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("flat@1") && msg.contains("no gradient path"),
        "{msg}"
    );
    // Without the explain section it serves.
    let plain = text.replace(
        "explain = { method = \"integrated_gradients\", baseline = { a = 0 } }",
        "",
    );
    let reg =
        infq_common::registry::Registry::parse(&plain, std::path::Path::new("m.toml"), dir.path())
            .unwrap();
    assert!(infq_worker::model::load(&reg.models()[0], tch::Device::Cpu).is_ok());
}

/// End to end: jobs and a batch of the same rows, explained; the job's
/// reasons are the batch row's, in CSV and JSONL; a tensor feature has
/// its per-value attributions; asking a version without an `explain`
/// section is refused and enqueues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_reasons_equal_the_same_rows_in_a_batch() {
    use crate::support::{add_credit_version, client, env_with_registry, own_registry};
    use infq::{get_json, submit_job, wait_job};
    use serde_json::{json, Value};
    let ns = format!("explain{}", uuid::Uuid::new_v4().simple());
    let (_dir, file) = own_registry();
    add_credit_version(&file, "2", false);
    let env = env_with_registry(&ns, &file, Some(0));
    let http = client(120);
    let (worker, producer, base) = infq::procs::start_pair(&env, &http).await.unwrap();

    // The registry shows how each version is explained.
    let v1 = get_json(&http, &format!("{base}/v1/models/credit-default@1")).await;
    assert_eq!(v1["explain"]["steps"], 32, "{v1}");
    assert_eq!(v1["inputs"][1]["reason"], "Credit card balance is high");
    let v2 = get_json(&http, &format!("{base}/v1/models/credit-default@2")).await;
    assert!(v2["explain"].is_null(), "{v2}");

    let borrowers = load_default_csv(&root().join("data/Default.csv")).unwrap();
    // High balances first: rows whose score is well above the baseline's.
    let mut rows: Vec<[f32; 3]> = borrowers.iter().map(|b| b.features()).collect();
    rows.sort_by(|a, b| b[1].total_cmp(&a[1]));
    let rows: Vec<[f32; 3]> = rows.into_iter().step_by(50).take(40).collect();
    let mut jobs = Vec::new();
    for r in &rows {
        let body = json!({"model": "credit-default@1", "inputs": r, "explain": true});
        jobs.push(submit_job(&http, &base, &body).await);
    }
    let mut explained = Vec::new();
    for id in &jobs {
        let v = wait_job(&http, &base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let x = v["explanation"].clone();
        assert_eq!(x["output"], "default_probability", "{v}");
        assert_eq!(x["attributions"].as_object().unwrap().len(), 3, "{v}");
        assert!(x.get("elements").is_none(), "no tensor feature: {v}");
        explained.push(x);
    }
    assert!(
        explained
            .iter()
            .any(|x| x["reasons"][0]["feature"] == "balance"),
        "a high balance is a principal reason somewhere"
    );

    // The same rows as one batch, with reasons.
    let mut csv = String::from("student,balance,income\n");
    for r in &rows {
        csv.push_str(&format!("{},{},{}\n", r[0], r[1], r[2]));
    }
    let r = http
        .post(format!(
            "{base}/v1/batches?model=credit-default@1&explain=true"
        ))
        .body(csv.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = infq::id_of(r).await;
    let b = get_json(&http, &format!("{base}/v1/batches/{id}?wait=60")).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["explain"], true, "{b}");
    let lines: Vec<Value> = infq::batch_results(&http, &base, &id, "jsonl")
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let table = infq::batch_results(&http, &base, &id, "csv").await;
    let mut rdr = csv::Reader::from_reader(table.as_bytes());
    assert_eq!(
        rdr.headers().unwrap(),
        vec![
            "row",
            "default_probability",
            "reason_1",
            "reason_2",
            "model",
            "version",
            "model_sha256",
            "error"
        ]
    );
    let records: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    for (k, (job, line)) in explained.iter().zip(&lines).enumerate() {
        let batch = &line["explanation"];
        let names = |x: &Value| -> Vec<Value> {
            x["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["reason"].clone())
                .collect()
        };
        assert_eq!(names(job), names(batch), "row {}: {job} vs {batch}", k + 1);
        for f in ["student", "balance", "income"] {
            let (a, b) = (
                job["attributions"][f].as_f64().unwrap(),
                batch["attributions"][f].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() <= 1e-6 + 1e-4 * a.abs(),
                "row {} {f}: {a} vs {b}",
                k + 1
            );
        }
        let in_csv: Vec<&str> = (2..4)
            .map(|c| &records[k][c])
            .filter(|t| !t.is_empty())
            .collect();
        let in_job: Vec<String> = names(job)
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(in_csv, in_job, "row {}", k + 1);
    }

    // A tensor feature: its sum, and its values one by one.
    let txn = txn_rows(1, 5).remove(0);
    let body = json!({"model": "txn-risk", "inputs": txn, "explain": true});
    let v = wait_job(&http, &base, &submit_job(&http, &base, &body).await).await;
    let x = &v["explanation"];
    let elements: Vec<f64> = x["elements"]["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|e| e.as_f64().unwrap())
        .collect();
    assert_eq!(elements.len(), 48);
    let sum = x["attributions"]["history"].as_f64().unwrap();
    assert!((elements.iter().sum::<f64>() - sum).abs() <= 1e-5, "{v}");

    // A version with no explain section: refused, nothing enqueued.
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"model": "credit-default@2", "inputs": rows[0], "explain": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["details"][0]["field"], "explain", "{v}");
    assert!(
        v["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("credit-default@2"),
        "{v}"
    );
    let r = http
        .post(format!(
            "{base}/v1/batches?model=credit-default@2&explain=true"
        ))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["details"][0]["field"], "explain", "{v}");
    // Nothing of it reached the model's bulk queue (the explained batch
    // before it has been consumed).
    let mut settings = test_settings();
    settings.namespace = ns.clone();
    // The development tenant's share of the lane, where its chunks go.
    let share =
        infq_common::shares::Share::new("credit-default", infq::broker::DEV_TENANT).unwrap();
    let queue = infq_common::topology::Topology::of(&settings).share_queue(&share);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "nothing enqueued");
    infq_common::amqp::close(&conn, "done").await;
    drop((worker, producer));
    infq::delete_namespace_named(&ns).await;
}

//! The OpenAPI document against the running server: it is OpenAPI 3.1,
//! every operation it lists is served (no request to one falls through to
//! the router's "route not found"), and real answers of a run, successes
//! and errors, validate against the schemas it gives for them.
//!
//! And the contract test: schemathesis, with every check it has
//! (`--checks all`), against a live producer and worker on this test's
//! own namespace. Requests the document allows must be accepted, requests
//! it forbids refused, every answer must match the document, and links
//! lead from created jobs and batches to the operations on them. The test
//! then requires that every operation of the document was reached: it
//! answered at least once with something other than "no such resource",
//! "no key", "wrong method" or a refusal of the request.
//! `tests/openapi/schemathesis_hooks.py` writes each upload's file to
//! match its query (a relation a schema cannot state) and gives each
//! positive submission its own idempotency key.

use infq::{root, test_settings, TestEnv};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// Checks `body` against the schema the document gives for `method path`
/// answering `status` as JSON.
fn check(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let errors = mismatches(doc, method, path, status, body);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the answer does not match the document: {errors:?}\n{body}"
    );
}

/// How `body` departs from the document's schema for the answer.
fn mismatches(doc: &Value, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} answered {status}, which the document does not describe: {body}"
    );
    against(doc, schema, body)
}

/// How `body` departs from `schema`, one of the document's; its
/// components travel with it, so `$ref`s resolve.
fn against(doc: &Value, schema: &Value, body: &Value) -> Vec<String> {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root).expect("a valid JSON Schema");
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

async fn call(
    env: &TestEnv,
    http: &reqwest::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = env.url(path);
    let req = match method {
        "get" => http.get(url),
        "post" => http.post(url),
        "delete" => http.delete(url),
        other => panic!("{other}"),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_what_is_served_and_real_answers_match_it() {
    let env = TestEnv::start().await.unwrap();
    let http = &env.http;
    let doc: Value = infq::get_json(http, &env.url("/openapi.json")).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "infq");
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    // Every documented operation is routed.
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "delete"].contains(&method.as_str()) {
                operations.insert((method.clone(), path.clone()));
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/{id}"),
        ("delete", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/cancel"),
        ("post", "/v1/batches"),
        ("get", "/v1/batches/{id}"),
        ("delete", "/v1/batches/{id}"),
        ("post", "/v1/batches/{id}/cancel"),
        ("get", "/v1/batches/{id}/results"),
        ("get", "/v1/jobs/{id}/deliveries"),
        ("post", "/v1/jobs/{id}/deliveries/{event}/retry"),
        ("get", "/v1/batches/{id}/deliveries"),
        ("post", "/v1/batches/{id}/deliveries/{event}/retry"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{name}"),
        ("get", "/v1/admin/dead-letters"),
        ("post", "/v1/admin/dead-letters/replay"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations, want, "the API's operations");
    let unknown = uuid::Uuid::now_v7().to_string();
    for (method, path) in &operations {
        let concrete = path
            .replace("{id}", &unknown)
            .replace("{name}", "credit-default")
            .replace("{event}", "job.succeeded");
        let (status, body) = call(&env, http, method, &concrete, Some(json!({}))).await;
        assert!(
            !body.to_string().contains("route not found"),
            "{method} {path} is documented but not routed ({status})"
        );
        // Every JSON error answer is described too.
        if status >= 400 && body.is_object() {
            check(&doc, method, path, status, &body);
        }
    }

    // Real answers of a run.
    let job = json!({"model": "credit-default", "inputs": {"student": 0, "balance": 1500.0, "income": 40000.0},
                     "metadata": {"ref": "loan-17"}});
    let (status, accepted) = call(&env, http, "post", "/v1/jobs", Some(job)).await;
    assert_eq!(status, 202);
    check(&doc, "post", "/v1/jobs", 202, &accepted);
    // The check has teeth: a field more, a field less or a wrong type fail.
    let mut extra = accepted.clone();
    extra["surprise"] = json!(1);
    let mut less = accepted.clone();
    less.as_object_mut().unwrap().remove("version");
    let mut wrong = accepted.clone();
    wrong["created_at"] = json!(17);
    for bad in [extra, less, wrong] {
        assert!(
            !mismatches(&doc, "post", "/v1/jobs", 202, &bad).is_empty(),
            "{bad}"
        );
    }
    let id = accepted["id"].as_str().unwrap();
    let (status, done) = call(&env, http, "get", &format!("/v1/jobs/{id}?wait=30"), None).await;
    assert_eq!((status, done["status"].as_str()), (200, Some("succeeded")));
    check(&doc, "get", "/v1/jobs/{id}", 200, &done);
    let (status, waited) = call(
        &env,
        http,
        "post",
        "/v1/jobs?wait=30",
        Some(json!({"model": "txn-risk", "inputs": [{"name": "input-0", "shape": [1, 49], "datatype": "FP32", "data": vec![0.5; 49]}]})),
    )
    .await;
    assert_eq!(status, 200, "{waited}");
    check(&doc, "post", "/v1/jobs", 200, &waited);
    let (status, explained) = call(
        &env,
        http,
        "post",
        "/v1/jobs?wait=30",
        Some(json!({"model": "txn-risk", "inputs": [{"name": "input-0", "shape": [1, 49], "datatype": "FP32", "data": vec![0.5; 49]}], "explain": true})),
    )
    .await;
    assert_eq!(status, 200, "{explained}");
    assert!(
        explained["explanation"]["elements"]["history"].is_array(),
        "{explained}"
    );
    check(&doc, "post", "/v1/jobs", 200, &explained);
    let (status, err) = call(
        &env,
        http,
        "post",
        "/v1/jobs",
        Some(json!({"model": "credit-default", "inputs": {"student": 7}})),
    )
    .await;
    assert_eq!(status, 422);
    check(&doc, "post", "/v1/jobs", 422, &err);
    let (status, err) = call(&env, http, "post", "/v1/jobs", Some(json!({"model": 1}))).await;
    assert_eq!(status, 400);
    check(&doc, "post", "/v1/jobs", 400, &err);
    let anonymous = reqwest::Client::new();
    let (status, err) = call(&env, &anonymous, "get", "/v1/models", None).await;
    assert_eq!(status, 401);
    check(&doc, "get", "/v1/models", 401, &err);
    // Probes, metrics and the document need none.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (status, _) = call(&env, &anonymous, "get", path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    // A wrong method, or an unknown path, needs a key first too.
    for (method, path) in [("delete", "/v1/models"), ("get", "/v1/nothing/here")] {
        let (status, _) = call(&env, &anonymous, method, path, None).await;
        assert_eq!(status, 401, "{method} {path}");
    }
    let (status, deliveries) = call(
        &env,
        http,
        "get",
        &format!("/v1/jobs/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    check(&doc, "get", "/v1/jobs/{id}/deliveries", 200, &deliveries);

    let r = http
        .post(env.url("/v1/batches?model=credit-default"))
        .header("content-type", "text/csv")
        .body("student,balance,income\n0,1500,40000\n1,200,10000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.unwrap();
    check(&doc, "post", "/v1/batches", 202, &batch);
    let bid = batch["id"].as_str().unwrap();
    let (status, ended) = call(
        &env,
        http,
        "get",
        &format!("/v1/batches/{bid}?wait=30"),
        None,
    )
    .await;
    assert_eq!((status, ended["status"].as_str()), (200, Some("succeeded")));
    check(&doc, "get", "/v1/batches/{id}", 200, &ended);
    let r = http
        .post(env.url("/v1/batches?model=credit-default"))
        .header("content-type", "text/csv")
        .body("student,balance,income\n0,x,40000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    check(&doc, "post", "/v1/batches", 422, &r.json().await.unwrap());

    for (path, doc_path) in [
        ("/v1/models", "/v1/models"),
        ("/v1/models/txn-risk", "/v1/models/{name}"),
        ("/v1/models/txn-risk@1", "/v1/models/{name}"),
        ("/v1/admin/dead-letters", "/v1/admin/dead-letters"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
    ] {
        let (status, body) = call(&env, http, "get", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        check(&doc, "get", doc_path, status, &body);
    }
    // `name@version` answers one version, which the document allows too.
    let (status, replayed) = call(
        &env,
        http,
        "post",
        "/v1/admin/dead-letters/replay",
        Some(json!({"ids": ["nope"]})),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    check(
        &doc,
        "post",
        "/v1/admin/dead-letters/replay",
        200,
        &replayed,
    );
    env.stop().await.unwrap();
}

/// The deployment's webhook secret.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A fixed seed, so a failure here replays; the tool prints it too.
const SEED: &str = "20261204";

/// The bodies of the callbacks a receiver took.
type Received = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A receiver that takes every callback (`204`) and keeps its body.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let keep = keep.clone();
        async move {
            if let Ok(v) = serde_json::from_slice(&body) {
                keep.lock().unwrap().push(v);
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// How a callback's body departs from the document's schema for its type
/// (OpenAPI 3.1 `webhooks`).
fn event_mismatches(doc: &Value, body: &Value) -> Vec<String> {
    let kind = body["type"].as_str().unwrap_or_default();
    let schema =
        &doc["webhooks"][kind]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "the document lists no event `{kind}`");
    against(doc, schema, body)
}

/// Waits until `path` lists a built event (one with a `webhook-id`).
async fn built_event(env: &TestEnv, path: &str) {
    let start = Instant::now();
    loop {
        let log = env.get_json(path).await;
        if log["events"][0]["webhook_id"].is_string() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{path}: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each `METHOD /path` and the statuses it answered, from the tool's
/// NDJSON report (every phase, stateful steps included).
fn statuses(report: &str) -> BTreeMap<String, BTreeSet<u16>> {
    let mut out: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for line in report.lines() {
        let event: Value = serde_json::from_str(line).expect("an NDJSON event");
        let Some(recorder) = event["ScenarioFinished"]["recorder"].as_object() else {
            continue;
        };
        let Some(interactions) = recorder.get("interactions").and_then(Value::as_object) else {
            continue;
        };
        for (case, interaction) in interactions {
            let value = &recorder["cases"][case]["value"];
            let (Some(method), Some(path), Some(status)) = (
                value["method"].as_str(),
                value["path"].as_str(),
                interaction["response"]["status_code"].as_u64(),
            ) else {
                continue;
            };
            out.entry(format!("{} {path}", method.to_uppercase()))
                .or_default()
                .insert(status as u16);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_with_every_check_passes_and_reaches_every_operation() {
    let mut s = test_settings();
    s.webhooks.secrets = vec![SECRET.into()];
    s.webhooks.allow_http = true;
    s.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    let env = TestEnv::start_with(s, true).await.unwrap();
    let (hook, received) = receiver().await;

    // A job and a batch whose events were sent, for the redelivery
    // operations: the tool cannot wait for a callback by itself.
    let job = infq::submit_job(
        &env.http,
        &env.base,
        &json!({"model": "credit-default", "inputs": [0, 1000, 30000], "webhook_url": hook}),
    )
    .await;
    infq::wait_job(&env.http, &env.base, &job).await;
    built_event(&env, &format!("/v1/jobs/{job}/deliveries")).await;
    let r = infq::upload_batch(
        &env.http,
        &env.base,
        &format!("model=credit-default&webhook_url={hook}"),
        Some("text/csv"),
        "student,balance,income\nNo,1000,30000\nYes,2000,10000\n",
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;
    infq::wait_batch(&env.http, &env.base, &batch).await;
    built_event(&env, &format!("/v1/batches/{batch}/deliveries")).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
# Only the document's own links are followed.
[phases.stateful.inference]
algorithms = []

[[operations]]
include-operation-id = "retry_job_event"
parameters = {{ id = "{job}", event = "job.succeeded" }}

[[operations]]
include-operation-id = "retry_batch_event"
parameters = {{ id = "{batch}", event = "batch.completed" }}
"#
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let key = infq_common::tenants::DEV_API_KEY;
    let base = env.base.clone();
    let (config_arg, reports_arg) = (config.clone(), reports.clone());
    // The tool keeps its example database in its working folder.
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(root().join(".venv/bin/schemathesis"))
            .arg("--config-file")
            .arg(&config_arg)
            .args(["run", &format!("{base}/openapi.json"), "--checks", "all"])
            .args(["-H", &format!("Authorization: Bearer {key}")])
            .args(["--max-examples", "25", "--seed", SEED, "--no-color"])
            .args(["--report", "ndjson", "--report-dir"])
            .arg(&reports_arg)
            .current_dir(&cwd)
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", root().join("tests/openapi"))
            .env("INFQ_URL", &base)
            .env("INFQ_API_KEY", key)
            .output()
            .expect("schemathesis (run scripts/setup)")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    let doc: Value = env.get_json("/openapi.json").await;
    env.stop().await.unwrap();
    assert!(out.status.success(), "schemathesis found failures:\n{text}");

    let report = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    let answered = statuses(&report);
    let not_reached = [400, 401, 404, 405, 413, 422];
    let mut missed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let op = format!("{} {path}", method.to_uppercase());
            let got = answered.get(&op).cloned().unwrap_or_default();
            if !got.iter().any(|s| !not_reached.contains(s)) {
                missed.push(format!("{op}: {got:?}"));
            }
        }
    }
    eprintln!("answered: {answered:?}");
    assert!(missed.is_empty(), "operations never reached: {missed:#?}");

    // The callbacks sent (the seeded ones and their redeliveries by the
    // tool) match the document's `webhooks`.
    let bodies = received.lock().unwrap().clone();
    let kinds: BTreeSet<&str> = bodies.iter().filter_map(|b| b["type"].as_str()).collect();
    assert!(
        kinds.contains("job.succeeded") && kinds.contains("batch.completed"),
        "{kinds:?}"
    );
    for body in &bodies {
        let errors = event_mismatches(&doc, body);
        assert!(errors.is_empty(), "{errors:?}\n{body}");
    }
    assert_eq!(
        doc["webhooks"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [
            "batch.completed",
            "batch.progress",
            "job.failed",
            "job.succeeded"
        ]
    );
}

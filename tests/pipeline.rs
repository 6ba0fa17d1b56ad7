//! End-to-end tests of the single-job pipeline against the real RabbitMQ
//! and Redis: HTTP submit -> broker -> worker batches -> model -> Redis ->
//! HTTP poll.

use futures_util::stream::{self, StreamExt};
use infq::{load_default_csv, reference_outputs, root, test_settings, TestEnv};
use infq_common::job::Priority;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn submit(env: &TestEnv, body: &Value) -> reqwest::Response {
    env.http
        .post(env.url("/v1/jobs"))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn wait_job(env: &TestEnv, id: &str) -> Value {
    let r = env
        .http
        .get(env.url(&format!("/v1/jobs/{id}")))
        .query(&[("wait", "30")])
        .send()
        .await
        .expect("poll");
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_match_the_model_run_directly() {
    let env = TestEnv::start().await.unwrap();
    let borrowers = load_default_csv(&root().join("data/Default.csv")).unwrap();
    let rows: Vec<[f32; 3]> = borrowers.iter().take(2000).map(|b| b.features()).collect();
    assert_eq!(rows.len(), 2000);

    // Half named, half positional, 128 in flight, so batches form.
    let ids: Vec<String> = stream::iter(rows.iter().enumerate())
        .map(|(i, r)| {
            let env = &env;
            async move {
                let inputs = if i % 2 == 0 {
                    json!({"student": r[0], "balance": r[1], "income": r[2]})
                } else {
                    json!([r[0], r[1], r[2]])
                };
                let resp = submit(env, &json!({"model": "credit-default", "inputs": inputs})).await;
                assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["status"], "queued");
                v["id"].as_str().unwrap().to_string()
            }
        })
        .buffered(128)
        .collect()
        .await;

    let results: Vec<Value> = stream::iter(&ids)
        .map(|id| wait_job(&env, id))
        .buffered(64)
        .collect()
        .await;

    let registry = env.settings.registry().unwrap();
    let expected = reference_outputs(&registry, &rows).unwrap();
    let mut worst = 0f64;
    for (i, (res, want)) in results.iter().zip(&expected).enumerate() {
        assert_eq!(res["status"], "succeeded", "job {i}: {res}");
        assert_eq!(res["id"], ids[i].as_str());
        assert_eq!(res["attempts"], 1);
        let got = res["output"]["default_probability"].as_f64().unwrap();
        let diff = (got - f64::from(*want)).abs();
        worst = worst.max(diff);
        assert!(diff <= 1e-6, "job {i}: got {got}, model says {want}");
    }
    let stats = &env.worker.as_ref().unwrap().stats;
    let batches = stats.batches.load(Ordering::Relaxed);
    let max_batch = stats.max_batch_rows.load(Ordering::Relaxed);
    println!("2000 jobs in {batches} batches, largest {max_batch} rows, worst |diff| {worst:e}");
    assert_eq!(
        stats.rows.load(Ordering::Relaxed),
        2000,
        "each job ran once"
    );
    assert!(
        max_batch > 1,
        "no batch of more than one job formed under load"
    );
    assert!(batches < 2000);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_enqueue_nothing() {
    // No worker: whatever reaches the queue stays there to be counted.
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed body", "{\"model\": \"credit-default\", \"inputs\": [1, 2,".into(), 400, "malformed_request"),
        ("not json", "\u{0}\u{1}\u{2}binary".into(), 400, "malformed_request"),
        ("unknown model", json!({"model": "no-such-model", "inputs": [0, 1, 2]}).to_string(), 422, "unknown_model"),
        ("unknown version", json!({"model": "credit-default@99", "inputs": [0, 1, 2]}).to_string(), 422, "unknown_model"),
        ("too few features", json!({"model": "credit-default", "inputs": [0, 1]}).to_string(), 422, "invalid_request"),
        ("too many features", json!({"model": "credit-default", "inputs": [0, 1, 2, 3]}).to_string(), 422, "invalid_request"),
        ("missing feature", json!({"model": "credit-default", "inputs": {"student": 0, "balance": 1}}).to_string(), 422, "invalid_request"),
        ("non-finite as f32", "{\"model\":\"credit-default\",\"inputs\":[0, 1e39, 2]}".into(), 422, "invalid_request"),
        ("NaN literal", "{\"model\":\"credit-default\",\"inputs\":[0, NaN, 2]}".into(), 400, "malformed_request"),
        ("overflowing number", "{\"model\":\"credit-default\",\"inputs\":[0, 1e400, 2]}".into(), 400, "malformed_request"),
        ("string feature", json!({"model": "credit-default", "inputs": [0, "1", 2]}).to_string(), 422, "invalid_request"),
        ("out of range", json!({"model": "credit-default", "inputs": [5, 1, 2]}).to_string(), 422, "invalid_request"),
        ("unknown field", json!({"model": "credit-default", "inputs": [0, 1, 2], "x": 1}).to_string(), 400, "malformed_request"),
        ("oversized body", format!("{{\"model\":\"credit-default\",\"inputs\":[0,1,2],\"metadata\":{{\"pad\":\"{}\"}}}}", "x".repeat(2 << 20)), 413, "payload_too_large"),
    ];
    for (name, body, status, code) in cases {
        let r = env
            .http
            .post(env.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        if code == "invalid_request" {
            let details = v["error"]["details"].as_array().unwrap();
            assert!(!details.is_empty(), "{name}: details name the field");
            assert!(
                details.iter().all(|d| d["field"].is_string()),
                "{name}: {v}"
            );
        }
    }
    // One request with several problems lists them all.
    let r = submit(
        &env,
        &json!({"model": "credit-default", "inputs": {"student": 3, "balance": -1, "bogus": 1}}),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    let fields: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "inputs.student",
            "inputs.balance",
            "inputs.income",
            "inputs.bogus"
        ]
    );

    let topology = infq_common::topology::Topology::of(&env.settings);
    for lane in Priority::ALL {
        let depth = env
            .queue_depth(&topology.job_queue("credit-default", lane))
            .await
            .unwrap();
        assert_eq!(depth, 0, "nothing enqueued on {lane:?}");
    }
    assert!(
        env.redis_keys().await.unwrap().is_empty(),
        "no job recorded"
    );

    // Unknown job ids and routes are JSON 404s.
    for path in [
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/01a22810-2e4e-76be-8df3-aa9a15c6ca5f",
        "/nope",
    ] {
        let r = env.http.get(env.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_worker_goes_on() {
    let env = TestEnv::start().await.unwrap();
    let topology = infq_common::topology::Topology::of(&env.settings);
    let poisoned_id = uuid::Uuid::now_v7();
    let garbage: Vec<(Vec<u8>, Option<String>)> = vec![
        (b"not json at all".to_vec(), None),
        (vec![0xff, 0x00, 0xfe], None),
        (
            b"{\"id\":\"x\",\"inputs\":[]}".to_vec(),
            Some(poisoned_id.to_string()),
        ),
    ];
    let key = infq_common::topology::Topology::routing_key("credit-default", Priority::Interactive);
    for (body, message_id) in &garbage {
        env.publish(&topology.jobs_exchange(), &key, body, message_id.as_deref())
            .await;
    }
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut dead = 0;
    for _ in 0..100 {
        dead = env.queue_depth(&topology.dead_queue()).await.unwrap();
        if dead == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead, 3,
        "every undecodable message reaches the dead-letter queue"
    );
    let stats = &env.worker.as_ref().unwrap().stats;
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 3);

    // The poisoned message named a job id, but nothing in an undecodable
    // message can be trusted: no record is made up or changed for it, and
    // the dead letter says why it was refused.
    assert!(env.store().get(&poisoned_id).await.unwrap().is_none());
    let dead = ch
        .basic_get(
            topology.dead_queue().as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("a dead letter");
    let reason = infq_common::topology::death_reason(&dead.properties);
    assert!(reason.contains("malformed job message"), "{reason}");

    // And the worker still serves.
    let r = submit(
        &env,
        &json!({"model": "credit-default", "inputs": [0, 1500.0, 40000.0]}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = infq::id_of(r).await;
    let v = wait_job(&env, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    infq_common::amqp::close(&conn, "done").await;
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_list_with_dead_nodes_connects_to_the_live_one() {
    let mut settings = test_settings();
    // Two nodes that refuse connections and the live broker, in a shuffled
    // order on each connect: producer, worker and dispatcher all find it.
    settings.amqp.urls = vec![
        "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        settings.amqp.url.clone(),
        "amqp://guest:guest@127.0.0.1:2/%2f".into(),
    ];
    settings.amqp.url = "amqp://guest:guest@127.0.0.1:3/%2f".into();
    let env = TestEnv::start_with(settings, true).await.unwrap();
    for _ in 0..5 {
        let r = submit(
            &env,
            &json!({"model": "credit-default", "inputs": [0, 1000, 30000]}),
        )
        .await;
        assert_eq!(r.status(), 202);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let v = wait_job(&env, &id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_means_503_promptly_and_the_record_says_so() {
    let mut settings = test_settings();
    // Nothing listens on port 1: every connect fails at once.
    settings.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    // (and no other nodes, where the suite runs against a cluster)
    settings.amqp.urls.clear();
    let registry = settings.registry().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = std::sync::Arc::new(
        infq_producer::AppState::new(settings.clone(), registry, None).unwrap(),
    );
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let server = tokio::spawn(infq_producer::serve(state, listener, shutdown.clone()));
    let http = infq::http_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"model": "credit-default", "inputs": [0, 1, 2]}))
            .send()
            .await
            .expect("an answer, not a hang");
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
    }
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["broker"], "down");
    assert_eq!(v["checks"]["redis"], "ok");

    // Every refused job is recorded as failed with the reason.
    let mut c = infq::redis_of(&settings).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(infq_common::keys::Keys::new(&settings.namespace).everything())
        .query_async(&mut c)
        .await
        .unwrap();
    // Job records only: the tenant's quota state is there too.
    let schema = infq_common::keys::Keys::new(&settings.namespace);
    let keys: Vec<String> = keys
        .into_iter()
        .filter(|k| schema.is_job_record(k))
        .collect();
    assert_eq!(keys.len(), 3);
    for k in keys {
        let (status, error): (String, String) = redis::cmd("HMGET")
            .arg(&k)
            .arg("status")
            .arg("error")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(status, "failed");
        assert!(error.contains("not_enqueued"), "{error}");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_as_soon_as_the_job_finishes() {
    let env = TestEnv::start().await.unwrap();
    let r = submit(&env, &json!({"model": "credit-default", "inputs": {"student": 1, "balance": 2000.0, "income": 10000.0}, "metadata": {"ref": "loan-17"}})).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/v1/jobs/"));
    let id = infq::id_of(r).await;
    let started = std::time::Instant::now();
    let v = wait_job(&env, &id).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["metadata"]["ref"], "loan-17");
    assert!(v["finished_at"].is_string());
    let p = v["output"]["default_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wait ended on completion, not on timeout"
    );
    for bad in ["-1", "abc", "NaN"] {
        let r = env
            .http
            .get(env.url(&format!("/v1/jobs/{id}?wait={bad}")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "wait={bad}");
    }
    env.stop().await.unwrap();
}

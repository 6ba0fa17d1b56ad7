//! Tenants against the real RabbitMQ and Redis: API keys, isolation,
//! quotas and queue limits (429 with Retry-After, nothing enqueued), input
//! limits (413), erasure and retention.

use infq::{http_builder_with_key, TestEnv};
use infq_common::config::Limits;
use infq_common::job::Priority;
use infq_common::tenants::TenantStore;
use infq_common::topology::Topology;
use redis::AsyncCommands;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

const JOB: &str = r#"{"model":"credit-default","inputs":[0,1500,40000]}"#;

fn tenants(env: &TestEnv) -> TenantStore {
    TenantStore::new(env.store().connection(), &env.settings)
}

async fn redis(env: &TestEnv) -> redis::aio::MultiplexedConnection {
    env.settings
        .redis
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A client acting for a new tenant with `limits`.
async fn tenant(env: &TestEnv, name: &str, limits: Option<Limits>) -> reqwest::Client {
    let (_, _, key) = tenants(env)
        .create_tenant(name, limits, false)
        .await
        .unwrap();
    http_builder_with_key(&key)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `id` of an accepted job or batch.
async fn id_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().expect("an id").to_string()
}

/// `GET path` as JSON.
async fn get_json(http: &reqwest::Client, env: &TestEnv, path: &str) -> Value {
    http.get(env.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Uploads a CSV file as a batch.
async fn upload(http: &reqwest::Client, env: &TestEnv, csv: &str) -> reqwest::Response {
    http.post(env.url("/v1/batches?model=credit-default&format=csv"))
        .body(csv.to_string())
        .send()
        .await
        .unwrap()
}

/// Whether `http`'s key is refused within 4 s (the producer's key cache).
async fn refused_soon(http: &reqwest::Client, env: &TestEnv) -> bool {
    for _ in 0..40 {
        let r = http.get(env.url("/v1/models")).send().await.unwrap();
        if r.status() == 401 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn submit(http: &reqwest::Client, env: &TestEnv, body: &str) -> reqwest::Response {
    http.post(env.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_revocable() {
    let env = TestEnv::start_with(infq::test_settings(), false)
        .await
        .unwrap();
    let plain = reqwest::Client::new();
    let r = plain
        .post(env.url("/v1/jobs"))
        .body(JOB)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    for bad in ["Bearer nope", "Basic Zm9vOmJhcg==", "Bearer ", "bearer\tx"] {
        let r = plain
            .get(env.url("/v1/models"))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    // Health and metrics stay open.
    let r = plain.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A created key works until revoked; then 401 within the cache time.
    let store = tenants(&env);
    let (_, entry, key) = store.create_tenant("acme", None, false).await.unwrap();
    let acme = http_builder_with_key(&key).build().unwrap();
    let r = acme.get(env.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A non-admin tenant may not use /v1/admin.
    let r = acme
        .get(env.url("/v1/admin/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(store.revoke_key(&entry.id).await.unwrap());
    assert!(
        refused_soon(&acme, &env).await,
        "a revoked key is refused within the cache time"
    );
    // Revoking a tenant stops every key of it; the name stays taken.
    let (_, key2) = store.create_key("acme").await.unwrap();
    let acme2 = http_builder_with_key(&key2).build().unwrap();
    assert_eq!(
        acme2
            .get(env.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(store.revoke_tenant("acme").await.unwrap(), 1);
    assert!(
        refused_soon(&acme2, &env).await,
        "a revoked tenant's keys are refused"
    );
    assert!(store.create_tenant("acme", None, false).await.is_err());
    assert!(store.create_key("acme").await.is_err());
    for bad in ["", "a b", "x{y}", &"n".repeat(65)] {
        assert!(
            store.create_tenant(bad, None, false).await.is_err(),
            "{bad}"
        );
    }
    // Keys are stored only as hashes.
    let mut c = redis(&env).await;
    let stored: Vec<String> = c
        .hkeys(infq_common::keys::Keys::new(&env.settings.namespace).api_keys())
        .await
        .unwrap();
    let dump: Vec<String> = c
        .hvals(infq_common::keys::Keys::new(&env.settings.namespace).api_keys())
        .await
        .unwrap();
    assert!(!stored.iter().chain(&dump).any(|s| s.contains(&key2)));
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_each_other() {
    let env = TestEnv::start().await.unwrap();
    let a = tenant(&env, "alpha", None).await;
    let b = tenant(&env, "beta", None).await;

    let r = submit(&a, &env, JOB).await;
    assert_eq!(r.status(), 202);
    let job = id_of(r).await;
    let r = upload(
        &a,
        &env,
        "student,balance,income\n0,1500,40000\n1,200,10000\n",
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = id_of(r).await;
    let v = get_json(&a, &env, &format!("/v1/batches/{batch}?wait=20")).await;
    assert_eq!(v["status"], "succeeded", "{v}");

    // Everything of alpha's is a 404 for beta, like an unknown id.
    let unknown = "01a22848-1b5a-7259-ba90-2d787f609491";
    for (method, path) in [
        ("GET", format!("/v1/jobs/{job}")),
        ("GET", format!("/v1/jobs/{job}/deliveries")),
        ("POST", format!("/v1/jobs/{job}/cancel")),
        ("DELETE", format!("/v1/jobs/{job}")),
        ("GET", format!("/v1/batches/{batch}")),
        ("GET", format!("/v1/batches/{batch}/results")),
        ("GET", format!("/v1/batches/{batch}/deliveries")),
        ("POST", format!("/v1/batches/{batch}/cancel")),
        ("DELETE", format!("/v1/batches/{batch}")),
        ("GET", format!("/v1/jobs/{unknown}")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = b.request(m, env.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found");
    }
    // ... and alpha's data is untouched.
    let v = get_json(&a, &env, &format!("/v1/jobs/{job}?wait=20")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let r = a
        .get(env.url(&format!("/v1/batches/{batch}/results")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().lines().count(), 3);

    // Idempotency keys are per tenant: the same key makes two jobs.
    let with_key = |c: &reqwest::Client| {
        c.post(env.url("/v1/jobs"))
            .header("idempotency-key", "order-1")
            .header("content-type", "application/json")
            .body(JOB)
            .send()
    };
    let ia: Value = with_key(&a).await.unwrap().json().await.unwrap();
    let ib: Value = with_key(&b).await.unwrap().json().await.unwrap();
    assert_ne!(ia["id"], ib["id"]);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_full_queues_answer_429_and_enqueue_nothing() {
    // No worker: what is accepted stays queued.
    let mut settings = infq::test_settings();
    settings.amqp.max_queue_length = 3;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let queue = topology.job_queue("credit-default", Priority::Interactive);
    let bulk = topology.job_queue("credit-default", Priority::Bulk);
    let store = tenants(&env);

    // Rate: a burst of 2 at 0.2/s.
    let slow = tenant(
        &env,
        "slow",
        Some(Limits {
            rate_per_sec: 0.2,
            burst: 2,
            max_queued: 1000,
            retention_secs: 3600,
        }),
    )
    .await;
    assert_eq!(submit(&slow, &env, JOB).await.status(), 202);
    assert_eq!(submit(&slow, &env, JOB).await.status(), 202);
    let r = submit(&slow, &env, JOB).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_requests");
    // A bulk upload counts against the rate too.
    let r = upload(&slow, &env, "student,balance,income\n0,1,2\n").await;
    assert_eq!(r.status(), 429);
    assert_eq!(env.queue_depth(&queue).await.unwrap(), 2);
    assert_eq!(env.queue_depth(&bulk).await.unwrap(), 0);

    // Queued work: at most 4 jobs and rows open.
    let capped = tenant(
        &env,
        "capped",
        Some(Limits {
            rate_per_sec: 1000.0,
            burst: 1000,
            max_queued: 4,
            retention_secs: 3600,
        }),
    )
    .await;
    let r = upload(
        &capped,
        &env,
        "student,balance,income\n0,1,2\n0,1,2\n0,1,2\n0,1,2\n0,1,2\n",
    )
    .await;
    assert_eq!(r.status(), 429, "5 rows over a limit of 4");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(env.queue_depth(&bulk).await.unwrap(), 0);
    let r = upload(
        &capped,
        &env,
        "student,balance,income\n0,1,2\n0,1,2\n0,1,2\n",
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = id_of(r).await;
    assert_eq!(store.queued("capped").await.unwrap(), 3);
    // One job fits (4 open), then the queue (max length 3, holding the two
    // jobs of "slow") refuses the next publish: 429, nothing enqueued.
    let r = submit(&capped, &env, JOB).await;
    assert_eq!(r.status(), 202);
    assert_eq!(env.queue_depth(&queue).await.unwrap(), 3);
    let r = submit(&capped, &env, JOB).await;
    assert_eq!(r.status(), 429, "over max_queued");
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("limit of 4"), "{msg}");
    // Erasing the batch gives its rows back.
    let r = capped
        .delete(env.url(&format!("/v1/batches/{batch}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(store.queued("capped").await.unwrap(), 1);
    // The broker's quorum queue refuses publishes once it holds more than
    // its maximum (it may take one message past it first).
    let mut refused = None;
    for _ in 0..3 {
        let before = env.queue_depth(&queue).await.unwrap();
        let held = store.queued("capped").await.unwrap();
        let r = submit(&capped, &env, JOB).await;
        if r.status() == 429 {
            refused = Some((before, held, r));
            break;
        }
        assert_eq!(r.status(), 202);
        assert_eq!(store.queued("capped").await.unwrap(), held + 1);
    }
    let (before, held, r) = refused.expect("the full queue refuses a publish");
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
    let depth = env.queue_depth(&queue).await.unwrap();
    assert_eq!(depth, before, "the refused job is not enqueued");
    assert!(depth <= 4, "at most one past the maximum: {depth}");
    // The refused job does not hold quota.
    assert_eq!(store.queued("capped").await.unwrap(), held);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_inputs_get_413_naming_the_limit() {
    let mut settings = infq::test_settings();
    settings.producer.max_batch_rows = 5;
    settings.producer.max_upload_bytes = 3_000_000;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let http = &env.http;
    let cases: Vec<(String, &str)> = vec![
        (
            format!(
                r#"{{"model":"credit-default","inputs":[0,1,2],"metadata":{{"a":"{}"}}}}"#,
                "x".repeat(5000)
            ),
            "4096 bytes",
        ),
        (
            format!(
                r#"{{"model":"credit-default","inputs":[0,1,2],"metadata":{}1{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ),
            "16 levels",
        ),
        (
            format!(
                r#"{{"model":"credit-default","inputs":[{}0]}}"#,
                "0,".repeat(600_000)
            ),
            "1048576 bytes",
        ),
    ];
    for (body, named) in cases {
        let r = http
            .post(env.url("/v1/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(named), "{msg} names {named}");
    }
    let csv = |rows: usize| {
        let mut s = String::from("student,balance,income\n");
        for _ in 0..rows {
            s.push_str("0,1500,40000\n");
        }
        s
    };
    for (body, named) in [
        (csv(6), "5 rows"),
        (
            format!(
                "student,balance,income\n{}",
                format!("0,1500,{}40000\n", "0".repeat(900_000)).repeat(4)
            ),
            "3000000 bytes",
        ),
        (
            format!("student,balance,income\n0,1500,{}\n", "4".repeat(2 << 20)),
            "1048576 bytes",
        ),
    ] {
        let r = upload(http, &env, &body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 413, "{named}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(named), "{msg} names {named}");
    }
    let topology = Topology::of(&env.settings);
    let bulk = topology.job_queue("credit-default", Priority::Bulk);
    assert_eq!(env.queue_depth(&bulk).await.unwrap(), 0);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_data_is_gone_and_retention_is_per_tenant() {
    let env = TestEnv::start().await.unwrap();
    let short = tenant(
        &env,
        "short",
        Some(Limits {
            retention_secs: 120,
            ..Limits::default()
        }),
    )
    .await;
    let body = r#"{"model":"credit-default","inputs":[0,1500,40000],"metadata":{"portfolio":"secret-book"}}"#;
    let r = submit(&short, &env, body).await;
    assert_eq!(r.status(), 202);
    let job = id_of(r).await;
    let v = get_json(&short, &env, &format!("/v1/jobs/{job}?wait=20")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let ns = &env.settings.namespace;
    let key = infq_common::keys::Keys::new(ns).job(&job.parse().unwrap());
    let mut c = redis(&env).await;
    let ttl: i64 = c.pttl(&key).await.unwrap();
    assert!(
        (100_000..=120_000).contains(&ttl),
        "the tenant's 120 s retention, not the default: {ttl} ms"
    );

    let r = upload(
        &short,
        &env,
        "student,balance,income\n0,1500,40000\n1,200,10000\n",
    )
    .await;
    let batch = id_of(r).await;
    let v = get_json(&short, &env, &format!("/v1/batches/{batch}?wait=20")).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let chunk = infq_common::keys::Keys::new(ns).chunk_results(&batch.parse().unwrap());
    assert!(c.exists::<_, bool>(&chunk).await.unwrap());

    for (what, id) in [("jobs", &job), ("batches", &batch)] {
        let r = short
            .delete(env.url(&format!("/v1/{what}/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = short
            .get(env.url(&format!("/v1/{what}/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "an erased {what} is gone");
        let r = short
            .delete(env.url(&format!("/v1/{what}/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    // Nothing of the inputs, outputs or metadata is left in Redis: only a
    // tombstone naming the tenant, so a queued copy never runs.
    let left: std::collections::HashMap<String, String> = c.hgetall(&key).await.unwrap();
    let mut fields: Vec<&str> = left.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["erased", "rank", "status", "tenant"], "{left:?}");
    assert!(!c.exists::<_, bool>(&chunk).await.unwrap());
    let keys = env.redis_keys().await.unwrap();
    let dump = format!("{keys:?}");
    assert!(!dump.contains(&format!("{batch}}}:chunk")), "{dump}");
    for k in keys {
        let t: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        if t == "hash" {
            let all: std::collections::HashMap<String, String> = c.hgetall(&k).await.unwrap();
            assert!(!format!("{all:?}").contains("secret-book"), "{k}: {all:?}");
        }
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_queued_job_never_runs() {
    let env = TestEnv::start_with(infq::test_settings(), false)
        .await
        .unwrap();
    let r = submit(&env.http, &env, JOB).await;
    let job = id_of(r).await;
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // A worker now takes the message and drops it without running it.
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let worker = infq_worker::start(
        env.settings.clone(),
        env.settings.registry().unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let topology = Topology::of(&env.settings);
    let queue = topology.job_queue("credit-default", Priority::Interactive);
    let stats = worker.stats.clone();
    for _ in 0..100 {
        if stats.jobs_skipped.load(Ordering::Relaxed) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stats.jobs_skipped.load(Ordering::Relaxed),
        1,
        "the worker took the message and skipped it"
    );
    assert_eq!(stats.rows.load(Ordering::Relaxed), 0, "the model never ran");
    assert_eq!(env.queue_depth(&queue).await.unwrap(), 0);
    let mut c = redis(&env).await;
    let key = infq_common::keys::Keys::new(&env.settings.namespace).job(&job.parse().unwrap());
    let left: std::collections::HashMap<String, String> = c.hgetall(&key).await.unwrap();
    assert_eq!(left.get("status").map(String::as_str), Some("cancelled"));
    assert!(!left.contains_key("output"), "{left:?}");
    shutdown.cancel();
    let _ = worker.join().await;
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_feature_values_metadata_or_keys() {
    use infq::procs::Service;
    let ns = format!("logs{}", uuid::Uuid::new_v4().simple());
    let env = vec![
        ("INFQ_NAMESPACE", ns.clone()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "60000".to_string()),
        ("INFQ_LOG__JSON", "true".to_string()),
        ("INFQ_LOG__FILTER", "debug".to_string()),
        ("RUST_LOG", "debug".to_string()),
    ];
    let http = infq::http_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut worker = Service::spawn("debug", "infq-worker", &env).unwrap();
    worker.wait_ready(&http).await.unwrap();
    let mut producer = Service::spawn("debug", "infq-producer", &env).unwrap();
    producer.wait_ready(&http).await.unwrap();
    let base = format!("http://{}", producer.addr);

    // Distinctive values, accepted, refused and failing.
    let secret = "portfolio-7f3a9c";
    let r = http
        .post(format!("{base}/v1/jobs?wait=20"))
        .json(&serde_json::json!({
            "model": "credit-default",
            "inputs": {"student": 1, "balance": 1234.5678, "income": 98765.4321},
            "metadata": {"book": secret},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({
            "model": "credit-default",
            "inputs": {"student": 1, "balance": 1234.5678, "income": -98765.4321e30},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = http
        .post(format!("{base}/v1/batches?model=credit-default&format=csv"))
        .body("student,balance,income\n1,1234.5678,98765.4321\n1,1234.5678,oops\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/models"))
        .header("authorization", "Bearer infq_not_a_real_key_4b1d")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let _ = producer.terminate(Duration::from_secs(10));
    let _ = worker.terminate(Duration::from_secs(30));

    let logs = std::fs::read_to_string(&producer.log).unwrap()
        + &std::fs::read_to_string(&worker.log).unwrap();
    assert!(
        logs.contains("producer listening"),
        "the logs were captured"
    );
    assert!(logs.contains("DEBUG"), "at debug level");
    for needle in [
        "1234.5678",
        "98765.4",
        secret,
        infq_common::tenants::DEV_API_KEY,
        "infq_not_a_real_key_4b1d",
        "Bearer",
    ] {
        assert!(!logs.contains(needle), "the logs contain {needle}");
    }
    let settings = infq::test_settings();
    let _ = infq::delete_namespace(&infq_common::config::Settings {
        namespace: ns,
        ..settings
    })
    .await;
}

//! Erasure and per-tenant retention, and logs that carry no feature
//! values, metadata or keys.

use crate::support::*;
use infq::TestEnv;
use infq_common::config::Limits;
use infq_common::job::Priority;
use infq_common::topology::Topology;
use redis::AsyncCommands;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    let job = infq::id_of(r).await;
    let v = infq::get_json(&short, &env.url(&format!("/v1/jobs/{job}?wait=20"))).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let ns = &env.settings.namespace;
    let key = infq_common::keys::Keys::new(ns).job(&job.parse().unwrap());
    let mut c = env.redis().await;
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
    let batch = infq::id_of(r).await;
    let v = infq::get_json(&short, &env.url(&format!("/v1/batches/{batch}?wait=20"))).await;
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
    let dead = infq_common::keys::Keys::new(ns).chunk_dead(&batch.parse().unwrap());
    for part in [&chunk, &dead] {
        assert!(!dump.contains(part.as_str()), "{dump}");
    }
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
    let job = infq::id_of(r).await;
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
    let mut c = env.redis().await;
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

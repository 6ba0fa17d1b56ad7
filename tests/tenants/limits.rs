//! Quotas and queue limits (429 with Retry-After, nothing enqueued) and
//! input limits (413).

use crate::support::*;
use infq::TestEnv;
use infq_common::config::Limits;
use infq_common::job::Priority;
use infq_common::topology::Topology;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_full_queues_answer_429_and_enqueue_nothing() {
    // No worker: what is accepted stays queued.
    let mut settings = infq::test_settings();
    settings.amqp.max_queue_length = 3;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let queue = topology.job_queue("credit-default", Priority::Interactive);
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
    assert_eq!(env.bulk_queued("credit-default").await, 0);

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
    assert_eq!(env.bulk_queued("credit-default").await, 0);
    let r = upload(
        &capped,
        &env,
        "student,balance,income\n0,1,2\n0,1,2\n0,1,2\n",
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;
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
            "4096 characters",
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
    assert_eq!(env.bulk_queued("credit-default").await, 0);
    env.stop().await.unwrap();
}

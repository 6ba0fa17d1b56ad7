//! Delivery: retries with one `webhook-id`, `Retry-After`,
//! `batch.completed`, and one tenant's slow receiver beside another's.

use crate::receiver::*;
use crate::support::*;
use infq::TestEnv;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_one_verified_success_with_one_id() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("flaky", &[status(500), status(503)]);
    let id = submit(&env, &rx.url("flaky")).await;

    let hits = rx.wait_hits("flaky", 3, Duration::from_secs(20)).await;
    assert_eq!(hits.len(), 3, "two failures, then the success");
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 503, 200]
    );
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| h.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one webhook-id: {ids:?}");
    for h in &hits {
        // Both secrets of a rotation sign every request.
        for secret in [SECRET_A, SECRET_B] {
            verify(secret, &h.headers, &h.body, unix_now()).unwrap();
        }
        assert_eq!(h.body, hits[0].body, "the same body every time");
    }
    let event: Value = serde_json::from_slice(&hits[2].body).unwrap();
    assert_eq!(event["type"], "job.succeeded");
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
    let job = env.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["output"], job["output"]);
    assert_eq!(event["data"]["status"], "succeeded");

    let d = deliveries_until(&env, &format!("/v1/jobs/{id}/deliveries"), "delivered").await;
    let e = &d["events"][0];
    assert_eq!(e["webhook_id"], ids[0]);
    assert_eq!(e["type"], "job.succeeded");
    let attempts = e["attempts"].as_array().unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].as_u64()).collect();
    assert_eq!(codes, vec![Some(500), Some(503), Some(200)]);
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["retrying", "retrying", "delivered"]);
    assert!(attempts[0]["next_attempt_at"].is_string());
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    // Nothing more arrives after the success.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("flaky").len(), 3);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_respected() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    // The schedule's next wait is 200 ms; the receiver asks for 2 s.
    rx.script(
        "busy",
        &[Reply {
            status: 503,
            retry_after: Some("2"),
        }],
    );
    let id = submit(&env, &rx.url("busy")).await;
    let hits = rx.wait_hits("busy", 2, Duration::from_secs(15)).await;
    assert_eq!(hits.len(), 2);
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "second attempt after {gap:?}"
    );
    assert!(gap < Duration::from_secs(6), "second attempt after {gap:?}");
    assert_eq!(hits[1].answered, 200);
    deliveries_until(&env, &format!("/v1/jobs/{id}/deliveries"), "delivered").await;
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_one_completed_event_with_counts_and_results_link() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let mut csv = String::from("student,balance,income\n");
    for i in 0..600 {
        csv.push_str(&format!("{},{}.5,{}\n", i % 2, i * 3, 10_000 + i * 50));
    }
    let r = env
        .http
        .post(env.url("/v1/batches"))
        .query(&[
            ("model", "credit-default"),
            ("webhook_url", &rx.url("batch")),
        ])
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let id = infq::id_of(r).await;
    let hits = rx.wait_hits("batch", 1, Duration::from_secs(30)).await;
    assert_eq!(hits.len(), 1);
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    let event: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["total"], 600);
    assert_eq!(event["data"]["succeeded"], 600);
    assert_eq!(event["data"]["failed"], 0);
    assert_eq!(
        event["data"]["results"],
        format!("https://infq.example.com/v1/batches/{id}/results")
    );
    deliveries_until(&env, &format!("/v1/batches/{id}/deliveries"), "delivered").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("batch").len(), 1, "one event for the whole batch");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_s_slow_receiver_does_not_hold_up_another_s_webhooks() {
    let slow = Receiver::start_slow(Duration::from_secs(4)).await;
    let quick = Receiver::start().await;
    let mut s = settings();
    s.webhooks.timeout_ms = 10_000;
    let env = TestEnv::start_with(s, true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let client = |key: &str| {
        infq::http_builder_with_key(key)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let slowco = client(
        &tenants
            .create_tenant("slowco", None, false)
            .await
            .unwrap()
            .2,
    );
    let quickco = client(
        &tenants
            .create_tenant("quickco", None, false)
            .await
            .unwrap()
            .2,
    );
    let job = |http: &reqwest::Client, url: String| {
        let http = http.clone();
        let base = env.url("/v1/jobs?wait=10");
        async move {
            let r = http
                .post(base)
                .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": url}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "succeeded", "{v}");
        }
    };
    // The slow tenant's events, each in a message of its own (one job
    // ended at a time), more than the dispatcher takes at once.
    for _ in 0..80 {
        job(&slowco, slow.url("a")).await;
    }
    // The other tenant's events get through promptly meanwhile.
    for i in 0..3 {
        let path = format!("b{i}");
        job(&quickco, quick.url(&path)).await;
        let ended = Instant::now();
        let hits = quick.wait_hits(&path, 1, Duration::from_secs(30)).await;
        assert_eq!(hits.len(), 1, "{path} never arrived");
        let latency = hits[0].at.saturating_duration_since(ended);
        assert!(
            latency < Duration::from_secs(3),
            "{path} arrived {latency:?} after its job ended"
        );
    }
    // The slow tenant's do arrive, slowly.
    assert!(!slow
        .wait_hits("a", 1, Duration::from_secs(10))
        .await
        .is_empty());
    env.stop().await.unwrap();
}

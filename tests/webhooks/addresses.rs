//! The SSRF guard: at submit time, and again at send time in the
//! dispatcher, which also drops duplicates.

use crate::receiver::*;
use crate::support::*;
use infq::TestEnv;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_callback_urls_are_refused_at_submit_time() {
    let rx = Receiver::start().await;
    let mut s = settings();
    s.webhooks.allow_http = false;
    s.webhooks.allow_hosts.clear();
    let env = TestEnv::start_with(s, false).await.unwrap();
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    for (url, why) in [
        (format!("https://127.0.0.1:{port}/hook/x"), "loopback"),
        ("https://2130706433/".to_string(), "loopback"),
        ("https://0x7f.0.0.1/".to_string(), "loopback"),
        ("https://0177.0.0.1/".to_string(), "loopback"),
        ("https://10.0.0.8/".to_string(), "private"),
        ("https://192.168.0.1/".to_string(), "private"),
        ("https://172.20.1.1/".to_string(), "private"),
        (
            "https://169.254.169.254/latest/meta-data/".to_string(),
            "cloud metadata",
        ),
        ("https://0xa9fea9fe/".to_string(), "cloud metadata"),
        ("https://100.100.100.200/".to_string(), "CGNAT"),
        ("https://[::1]/".to_string(), "loopback"),
        ("https://[fe80::1]/".to_string(), "link-local"),
        ("https://[fd00:ec2::254]/".to_string(), "unique-local"),
        ("https://[::ffff:127.0.0.1]/".to_string(), "loopback"),
        ("https://[::ffff:a9fe:a9fe]/".to_string(), "cloud metadata"),
        (
            format!("https://localhost:{port}/hook/x"),
            "localhost resolves to",
        ),
        (rx.url("x"), "scheme `http`"),
        ("ftp://example.com/".to_string(), "scheme `ftp`"),
    ] {
        let r = env
            .http
            .post(env.url("/v1/jobs"))
            .json(&json!({
                "model": "credit-default",
                "inputs": [0, 100, 1000],
                "webhook_url": url,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let body: Value = r.json().await.unwrap();
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["field"], "webhook_url", "{url}: {body}");
        assert!(
            detail["message"].as_str().unwrap().contains(why),
            "{url}: {body}"
        );
        // Batches check the same way, before reading the upload.
        let r = env
            .http
            .post(env.url("/v1/batches"))
            .query(&[("model", "credit-default"), ("webhook_url", url.as_str())])
            .header("content-type", "text/csv")
            .body("student,balance,income\n0,1,2\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "batch {url}");
    }
    assert!(
        env.redis_keys().await.unwrap().is_empty(),
        "nothing recorded for refused submissions"
    );
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_checks_addresses_again_and_drops_duplicates() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let port = rx.base.rsplit(':').next().unwrap().to_string();

    // URLs that bypassed the submit-time check (a record written by an
    // older version, a DNS answer that changed) are checked at send time:
    // a name resolving to loopback and a mapped loopback literal.
    for url in [
        format!("http://localhost:{port}/hook/sneaky"),
        format!("http://[::ffff:127.0.0.2]:{port}/hook/sneaky"),
    ] {
        let subject = finished_job(&env, json!([0, 100, 1000])).await;
        set_webhook_url(&env, &subject, &url).await;
        publish_event(&env, &EventMessage::new(SubjectKind::Job, subject)).await;
        let d = deliveries_until(&env, &format!("/v1/jobs/{subject}/deliveries"), "failed").await;
        let a = &d["events"][0]["attempts"];
        assert_eq!(
            a.as_array().unwrap().len(),
            1,
            "refused without retries: {d}"
        );
        let err = a[0]["error"].as_str().unwrap();
        assert!(
            err.contains("refused") && err.contains("loopback"),
            "{url}: {err}"
        );
    }
    assert!(rx.hits("sneaky").is_empty(), "nothing reached the receiver");

    // The same event published again (a worker redelivered after
    // publishing it) reaches the receiver once.
    let id = submit(&env, &rx.url("twice")).await;
    let hits = rx.wait_hits("twice", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    let id: uuid::Uuid = id.parse().unwrap();
    for _ in 0..2 {
        publish_event(&env, &EventMessage::new(SubjectKind::Job, id)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("twice").len(), 1, "the duplicates were dropped");

    // A message that is not an event is dead-lettered, and the dispatcher
    // goes on.
    env.publish(
        &env.topology().webhooks_exchange(),
        "",
        b"{\"not\": \"an event\"}",
        None,
    )
    .await;
    let after = submit(&env, &rx.url("after")).await;
    rx.wait_hits("after", 1, Duration::from_secs(10)).await;
    deliveries_until(&env, &format!("/v1/jobs/{after}/deliveries"), "delivered").await;

    // Events in the dead-letter queue (after too many deliveries) are
    // listed as such and replayed to the dispatchers.
    let late = finished_job(&env, json!([1, 900, 20000])).await;
    set_webhook_url(&env, &late, &rx.url("replayed")).await;
    let bundle =
        infq_common::webhooks::event::encode_all(&[EventMessage::new(SubjectKind::Job, late)]);
    env.publish(
        &env.topology().dead_exchange(),
        "",
        &bundle,
        Some("bundle-1"),
    )
    .await;
    let listed = env.get_json("/v1/admin/dead-letters").await;
    let kinds: Vec<(&str, &str)> = listed["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["id"].as_str().unwrap_or("-")))
        .collect();
    assert!(
        kinds.contains(&("webhook", "webhook:bundle-1")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("undecodable", "-")), "{kinds:?}");
    let r = replay(&env, json!({"ids": ["webhook:bundle-1"]})).await;
    assert_eq!(r["count"], 1, "{r}");
    let hits = rx.wait_hits("replayed", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(SECRET_B, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    env.stop().await.unwrap();
}

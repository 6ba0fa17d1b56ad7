//! Settings, requests and broker and Redis access shared by the webhook
//! tests.

use infq::{test_settings, TestEnv};
use infq_common::config::Settings;
use infq_common::webhooks::event::EventMessage;
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) const SECRET_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub(crate) const SECRET_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) fn settings() -> Settings {
    let mut s = test_settings();
    s.webhooks.secrets = vec![SECRET_A.into(), SECRET_B.into()];
    s.webhooks.schedule_ms = vec![0, 200, 400, 3_000, 3_000];
    s.webhooks.timeout_ms = 2_000;
    s.webhooks.allow_http = true;
    s.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    s.webhooks.public_url = Some("https://infq.example.com".into());
    s
}

pub(crate) async fn submit(env: &TestEnv, webhook: &str) -> String {
    let r = env
        .http
        .post(env.url("/v1/jobs"))
        .json(&json!({
            "model": "credit-default",
            "inputs": {"student": 1, "balance": 1500.0, "income": 20000.0},
            "webhook_url": webhook,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    infq::id_of(r).await
}

pub(crate) async fn deliveries_until(env: &TestEnv, path: &str, state: &str) -> Value {
    for _ in 0..200 {
        let d = env.get_json(path).await;
        if d["events"][0]["state"] == state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached {state}: {}", env.get_json(path).await);
}

/// Publishes an event message directly, as a worker would.
pub(crate) async fn publish_event(env: &TestEnv, msg: &EventMessage) {
    env.publish(&env.topology().webhooks_exchange(), "", &msg.encode(), None)
        .await;
}

/// A job without a callback of its own, run to its end.
pub(crate) async fn finished_job(env: &TestEnv, inputs: Value) -> uuid::Uuid {
    let r = env
        .http
        .post(env.url("/v1/jobs?wait=10"))
        .json(&json!({"model": "credit-default", "inputs": inputs}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    v["id"].as_str().unwrap().parse().unwrap()
}

/// Points the record of job `id` at `url`, as a record written by an
/// older version, or one whose host's DNS answer changed since, may.
pub(crate) async fn set_webhook_url(env: &TestEnv, id: &uuid::Uuid, url: &str) {
    let mut c = env.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(env.store().keys().job(id))
        .arg("webhook_url")
        .arg(url)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// `POST /v1/admin/dead-letters/replay` with `body`; the answer.
pub(crate) async fn replay(env: &TestEnv, body: Value) -> Value {
    env.http
        .post(env.url("/v1/admin/dead-letters/replay"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

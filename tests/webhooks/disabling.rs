//! Endpoints disabled by `410 Gone`, paused when they keep failing, and
//! enabled again by a manual redelivery.

use crate::receiver::*;
use crate::support::*;
use infq::TestEnv;
use serde_json::Value;
use std::time::Duration;

/// The keys of the endpoints disabled by a 410, each with its PTTL (ms).
async fn disabled_endpoints(env: &TestEnv) -> Vec<(String, i64)> {
    let mut c = env.redis().await;
    let mut out = Vec::new();
    for key in env.redis_keys().await.unwrap() {
        if infq_common::keys::Keys::new(&env.settings.namespace).is_webhook_disabled(&key) {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            out.push((key, pttl));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_disabled_under_the_earlier_layout_stay_disabled_and_expire() {
    let rx = Receiver::start().await;
    let s = settings();
    let mut c = infq::redis_of(&s).await;
    // One hash of URL -> when it answered 410, as an earlier version kept
    // it: one endpoint gone an hour ago, one gone 31 days ago.
    let old = infq_common::keys::Keys::new(&s.namespace).webhooks_disabled_legacy();
    let now = infq_common::job::now_ms();
    let day = 24 * 3600 * 1000;
    let _: () = redis::cmd("HSET")
        .arg(&old)
        .arg(rx.url("gone"))
        .arg(now - 3_600_000)
        .arg(rx.url("long-gone"))
        .arg(now - 31 * day)
        .query_async(&mut c)
        .await
        .unwrap();
    let env = TestEnv::start_with(s, true).await.unwrap();
    let mut migrated = false;
    for _ in 0..100 {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&old)
            .query_async(&mut c)
            .await
            .unwrap();
        if exists == 0 {
            migrated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(migrated, "the earlier hash is still there");
    let disabled = disabled_endpoints(&env).await;
    assert_eq!(
        disabled.len(),
        1,
        "only the recent one is kept: {disabled:?}"
    );
    let (pttl, most) = (
        disabled[0].1,
        infq_common::webhooks::store::DISABLED_MS as i64,
    );
    assert!(
        pttl <= most - 3_600_000 && pttl > most - 3_700_000,
        "expires 30 days after its 410: PTTL {pttl}"
    );
    // The endpoint is still disabled; the one gone long ago gets its event.
    let first = submit(&env, &rx.url("gone")).await;
    deliveries_until(&env, &format!("/v1/jobs/{first}/deliveries"), "disabled").await;
    let second = submit(&env, &rx.url("long-gone")).await;
    deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "delivered").await;
    assert!(rx.hits("gone").is_empty());
    assert_eq!(rx.hits("long-gone").len(), 1);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_until_a_manual_redelivery() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("gone", &[status(410)]);
    let first = submit(&env, &rx.url("gone")).await;
    let d = deliveries_until(&env, &format!("/v1/jobs/{first}/deliveries"), "disabled").await;
    assert_eq!(d["events"][0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(rx.hits("gone").len(), 1, "a 410 is not retried");
    // The endpoint is disabled by a key of its own that expires, so URLs
    // answering 410 cannot pile up in Redis.
    let disabled = disabled_endpoints(&env).await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    let (pttl, most) = (
        disabled[0].1,
        infq_common::webhooks::store::DISABLED_MS as i64,
    );
    assert!(pttl > most - 60_000 && pttl <= most, "PTTL {pttl}");

    // The next event for that endpoint is not sent at all.
    let second = submit(&env, &rx.url("gone")).await;
    let d = deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "disabled").await;
    let a = &d["events"][0]["attempts"][0];
    assert_eq!(a["outcome"], "disabled");
    assert!(a["status_code"].is_null());
    assert!(a["error"].as_str().unwrap().contains("410"), "{a}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("gone").len(), 1);

    // An operator fixed the receiver and redelivers by hand: same id, same
    // body, and the endpoint is enabled again.
    let webhook_id = d["events"][0]["webhook_id"].as_str().unwrap().to_string();
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{second}/deliveries/{webhook_id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["endpoint_enabled_again"], true);
    let hits = rx.wait_hits("gone", 2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].headers["webhook-id"], webhook_id.as_str());
    assert_eq!(hits[1].answered, 200);
    deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "delivered").await;

    // Unknown events and ids are 404.
    for path in [
        format!("/v1/jobs/{second}/deliveries/msg_nope/retry"),
        format!(
            "/v1/jobs/{}/deliveries/job.succeeded/retry",
            uuid::Uuid::now_v7()
        ),
    ] {
        let r = env.http.post(env.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = env
        .http
        .get(env.url(&format!("/v1/jobs/{}/deliveries", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_paused_not_hammered() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("down", &[status(503); 100]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&env, &rx.url("down")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Five failures in a row open the host's circuit: the events wait,
    // unattempted, until the pause is over, instead of one request per
    // attempt (six events, five attempts each, within a second or so).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = ids.last().unwrap();
    let d = env.get_json(&format!("/v1/jobs/{id}/deliveries")).await;
    let e = &d["events"];
    assert!(
        e.as_array().is_none_or(|a| a.is_empty()) || e[0]["state"] == "pending",
        "{d}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = rx.hits("down").len();
    assert!(
        (5..=8).contains(&sent),
        "about five requests before the pause, not one per attempt: {sent}"
    );
    env.stop().await.unwrap();
}

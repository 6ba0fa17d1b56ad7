//! Signatures, checked by an implementation other than the one infq
//! signs with, and each tenant's own secrets.

use crate::receiver::*;
use crate::support::*;
use axum::http::HeaderMap;
use infq::TestEnv;
use serde_json::json;
use std::time::Duration;

#[test]
fn signatures_verify_independently_and_tampering_fails() {
    // The specification's example, through infq's signer, checked with the
    // independent HMAC.
    let signer = infq_common::webhooks::sign::Signer::new(&[SECRET_A.into()]).unwrap();
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    let (id, ts) = ("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553);
    let sig = signer.sign(id, ts, body);
    assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    assert_eq!(
        sig,
        format!(
            "v1,{}",
            expected_signature(SECRET_A, id, &ts.to_string(), body.as_bytes())
        )
    );

    let now = unix_now();
    let headers = |id: &str, ts: i64, sig: &str| {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    };
    let both =
        infq_common::webhooks::sign::Signer::new(&[SECRET_A.into(), SECRET_B.into()]).unwrap();
    let good = headers("msg_1", now, &both.sign("msg_1", now, body));
    for secret in [SECRET_A, SECRET_B] {
        verify(secret, &good, body.as_bytes(), now).unwrap();
        // The reference implementation agrees.
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body.as_bytes(), &good)
            .unwrap();
    }
    // Tampered body, wrong secret, stale or future timestamp, swapped id.
    let tampered = body.replace("test_user", "admin");
    assert!(verify(SECRET_A, &good, tampered.as_bytes(), now).is_err());
    let wrong = infq_common::webhooks::sign::generate_secret();
    assert!(verify(&wrong, &good, body.as_bytes(), now).is_err());
    let stale = now - 600;
    let old = headers("msg_1", stale, &both.sign("msg_1", stale, body));
    assert!(verify(SECRET_A, &old, body.as_bytes(), now).is_err());
    assert!(standardwebhooks::Webhook::new(SECRET_A)
        .unwrap()
        .verify(body.as_bytes(), &old)
        .is_err());
    let future = now + 600;
    let ahead = headers("msg_1", future, &both.sign("msg_1", future, body));
    assert!(verify(SECRET_A, &ahead, body.as_bytes(), now).is_err());
    let swapped = headers("msg_2", now, &both.sign("msg_1", now, body));
    assert!(verify(SECRET_A, &swapped, body.as_bytes(), now).is_err());
    assert!(standardwebhooks::Webhook::new(SECRET_A)
        .unwrap()
        .verify(tampered.as_bytes(), &good)
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_events_are_signed_with_its_own_secrets() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let (acme, _, key) = tenants.create_tenant("acme", None, false).await.unwrap();
    let own = acme.webhook_secrets[0].clone();
    let http = infq::http_builder_with_key(&key).build().unwrap();
    let job = |path: &'static str| {
        http.post(env.url("/v1/jobs"))
            .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": rx.url(path)}))
            .send()
    };
    assert_eq!(job("acme").await.unwrap().status(), 202);
    let hits = rx.wait_hits("acme", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(&own, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    for deployment in [SECRET_A, SECRET_B] {
        assert!(
            verify(deployment, &hits[0].headers, &hits[0].body, unix_now()).is_err(),
            "the deployment's secrets do not sign a tenant's events"
        );
    }

    // Rotation: with a second secret both sign; once the first is dropped,
    // only the new one does.
    let newer = infq_common::webhooks::sign::generate_secret();
    tenants
        .set_webhook_secrets("acme", vec![own.clone(), newer.clone()])
        .await
        .unwrap();
    assert!(tenants
        .set_webhook_secrets("acme", vec!["whsec_short".into()])
        .await
        .is_err());
    // Dispatchers trust what they read for tenants.cache_ms (1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(job("rotating").await.unwrap().status(), 202);
    let hits = rx.wait_hits("rotating", 1, Duration::from_secs(10)).await;
    for secret in [&own, &newer] {
        verify(secret, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    }
    tenants
        .set_webhook_secrets("acme", vec![newer.clone()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(job("rotated").await.unwrap().status(), 202);
    let hits = rx.wait_hits("rotated", 1, Duration::from_secs(10)).await;
    verify(&newer, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    assert!(verify(&own, &hits[0].headers, &hits[0].body, unix_now()).is_err());

    // The development tenant has none of its own: the deployment signs.
    submit(&env, &rx.url("dev")).await;
    let hits = rx.wait_hits("dev", 1, Duration::from_secs(10)).await;
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    env.stop().await.unwrap();
}

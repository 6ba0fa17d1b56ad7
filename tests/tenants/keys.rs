//! API keys: required and revocable; tenants cannot see each other.

use crate::support::*;
use infq::{http_builder_with_key, TestEnv};
use redis::AsyncCommands;
use serde_json::Value;

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
    let mut c = env.redis().await;
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
    let job = infq::id_of(r).await;
    let r = upload(
        &a,
        &env,
        "student,balance,income\n0,1500,40000\n1,200,10000\n",
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;
    let v = infq::get_json(&a, &env.url(&format!("/v1/batches/{batch}?wait=20"))).await;
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
    let v = infq::get_json(&a, &env.url(&format!("/v1/jobs/{job}?wait=20"))).await;
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

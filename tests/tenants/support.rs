//! Tenants, their clients and the requests the tenant tests share.

use infq::{http_builder_with_key, TestEnv};
use infq_common::config::Limits;
use infq_common::tenants::TenantStore;
use std::time::Duration;

pub(crate) const JOB: &str = r#"{"model":"credit-default","inputs":[0,1500,40000]}"#;

pub(crate) fn tenants(env: &TestEnv) -> TenantStore {
    TenantStore::new(env.store().connection(), &env.settings)
}

/// A client acting for a new tenant with `limits`.
pub(crate) async fn tenant(env: &TestEnv, name: &str, limits: Option<Limits>) -> reqwest::Client {
    let (_, _, key) = tenants(env)
        .create_tenant(name, limits, false)
        .await
        .unwrap();
    http_builder_with_key(&key)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Uploads a CSV file as a batch.
pub(crate) async fn upload(http: &reqwest::Client, env: &TestEnv, csv: &str) -> reqwest::Response {
    infq::upload_batch(
        http,
        &env.base,
        "model=credit-default&format=csv",
        None,
        csv.to_string(),
    )
    .await
}

/// Whether `http`'s key is refused within 4 s (the producer's key cache).
pub(crate) async fn refused_soon(http: &reqwest::Client, env: &TestEnv) -> bool {
    for _ in 0..40 {
        let r = http.get(env.url("/v1/models")).send().await.unwrap();
        if r.status() == 401 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub(crate) async fn submit(http: &reqwest::Client, env: &TestEnv, body: &str) -> reqwest::Response {
    http.post(env.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

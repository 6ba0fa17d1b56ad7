//! `amqps://` and `rediss://`: a producer and a worker whose broker and
//! Redis speak only TLS, certified by a private CA named in
//! `amqp.ca_file` and `redis.ca_file`, score a job end to end; the same
//! servers refuse clients that do not trust that CA.

use infq::tls::{Certs, TlsRabbit, TlsRedis};
use infq::TestEnv;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_over_tls_to_broker_and_redis() {
    let certs = Certs::make().unwrap();
    let redis = TlsRedis::start(&certs).unwrap();
    let rabbit = TlsRabbit::start(&certs).unwrap();
    let mut settings = infq::test_settings();
    settings.amqp.url = rabbit.url();
    settings.amqp.ca_file = Some(certs.path("ca.crt"));
    settings.redis.url = redis.url();
    settings.redis.ca_file = Some(certs.path("ca.crt"));
    settings.validate().unwrap();

    let env = TestEnv::start_with(settings.clone(), true).await.unwrap();
    let r = env
        .http
        .post(env.url("/v1/jobs?wait=20"))
        .json(&serde_json::json!({"model": "credit-default", "inputs": [0, 1500, 40000]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    let p = v["output"]["default_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{v}");
    env.stop().await.unwrap();

    // A client that trusts only the system's CAs is refused by both.
    let mut untrusting = settings.clone();
    untrusting.amqp.ca_file = None;
    untrusting.amqp.connect_timeout_ms = 3000;
    let err = infq_common::amqp::connect(&untrusting.amqp, "infq-test")
        .await
        .expect_err("the broker's certificate is not trusted");
    assert!(!err.to_string().is_empty());
    untrusting.redis.ca_file = None;
    let client = untrusting.redis.client().unwrap();
    assert!(client.get_multiplexed_async_connection().await.is_err());
    // Plain TCP to the TLS port gets nowhere either.
    let mut plain = settings.clone();
    plain.redis.url = format!("redis://localhost:{}/", redis.port);
    plain.redis.ca_file = None;
    let mut c = plain
        .redis
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    if let Ok(c) = c.as_mut() {
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(c).await;
        assert!(pong.is_err());
    }
    drop(rabbit);
    drop(redis);
}

//! Failure semantics against the real RabbitMQ and Redis: idempotency
//! keys, deadlines, cancellation, poison messages dead-lettered after the
//! delivery limit and replayed, and transient store outages retried
//! through the retry tiers.

use infq::redis_server::RedisServer;
use infq::wait::wait_until;
use infq::{test_settings, TestEnv};
use infq_common::job::Priority;
use infq_common::topology::Topology;
use lapin::options::BasicGetOptions;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn post_job(env: &TestEnv, body: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = env
        .http
        .post(env.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

fn worker_start(
    env: &TestEnv,
) -> (
    infq_common::shutdown::CancellationToken,
    impl std::future::Future<Output = anyhow::Result<infq_worker::WorkerHandle>>,
) {
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let settings = env.settings.clone();
    let registry = settings.registry().unwrap();
    let s = shutdown.clone();
    (shutdown, async move {
        infq_worker::start(settings, registry, s).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_and_refuse_other_bodies() {
    let mut settings = test_settings();
    settings.producer.idempotency_ttl_secs = 2;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let body = r#"{"model":"credit-default","inputs":[0,1500,40000]}"#;
    let r1 = post_job(&env, body, Some("order-17")).await;
    assert_eq!(r1.status(), 202);
    assert!(r1.headers().get("idempotent-replayed").is_none());
    let first: Value = r1.json().await.unwrap();
    // The same body, formatted differently: the original answer.
    let same = "{ \"inputs\": [0, 1500, 40000],\n  \"model\": \"credit-default\" }";
    let r2 = post_job(&env, same, Some("order-17")).await;
    assert_eq!(r2.status(), 202);
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(
        r2.headers()["location"],
        format!("/v1/jobs/{}", first["id"].as_str().unwrap())
    );
    assert_eq!(r2.json::<Value>().await.unwrap(), first);
    // Another body under the same key: a conflict.
    let r3 = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[1,1500,40000]}"#,
        Some("order-17"),
    )
    .await;
    assert_eq!(r3.status(), 409);
    assert_eq!(
        r3.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_conflict"
    );
    // A refused request leaves its key free.
    let bad = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[1]}"#,
        Some("order-18"),
    )
    .await;
    assert_eq!(bad.status(), 422);
    let good = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[1,2,3]}"#,
        Some("order-18"),
    )
    .await;
    assert_eq!(good.status(), 202);
    let bad_key = post_job(&env, body, Some("has space")).await;
    assert_eq!(bad_key.status(), 422);

    let queue = topology.job_queue("credit-default", Priority::Interactive);
    assert_eq!(env.queue_depth(&queue).await.unwrap(), 2, "one job per key");

    // Batches: the same file replays, another file or the same file with
    // other parameters conflicts.
    let csv = "student,balance,income\n0,100,20000\n1,900,5000\n";
    let upload_as = |query: &'static str, body: &'static str| {
        env.http
            .post(env.url(&format!("/v1/batches?{query}")))
            .header("idempotency-key", "portfolio-2026-11")
            .body(body)
            .send()
    };
    let upload = |body: &'static str| upload_as("model=credit-default", body);
    let b1 = upload(csv).await.unwrap();
    assert_eq!(b1.status(), 202);
    let b1: Value = b1.json().await.unwrap();
    let b2 = upload(csv).await.unwrap();
    assert_eq!(b2.status(), 202);
    assert_eq!(b2.headers()["idempotent-replayed"], "true");
    assert_eq!(b2.json::<Value>().await.unwrap()["id"], b1["id"]);
    let b3 = upload("student,balance,income\n0,1,2\n").await.unwrap();
    assert_eq!(b3.status(), 409);
    for other in [
        "model=credit-default&explain=true",
        "model=credit-default@2",
        "model=credit-default&format=jsonl",
        "model=credit-default&webhook_url=https://example.com/hook",
    ] {
        let r = upload_as(other, csv).await.unwrap();
        assert_eq!(r.status(), 409, "{other}");
    }
    // The same parameters in another order, the format the body's type
    // gave named, are the same request.
    let b4 = upload_as("format=csv&model=credit-default", csv)
        .await
        .unwrap();
    assert_eq!(b4.status(), 202);
    assert_eq!(b4.headers()["idempotent-replayed"], "true");
    assert_eq!(b4.json::<Value>().await.unwrap()["id"], b1["id"]);
    assert_eq!(
        env.bulk_queued("credit-default").await,
        1,
        "one batch per key"
    );

    // Keys expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r4 = post_job(&env, body, Some("order-17")).await;
    assert_eq!(r4.status(), 202);
    assert_ne!(r4.json::<Value>().await.unwrap()["id"], first["id"]);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_cancelled_jobs_never_run() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1500,40000],"deadline_ms":1}"#,
        None,
    )
    .await;
    let expiring = infq::id_of(r).await;
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1600,40000]}"#,
        None,
    )
    .await;
    let cancelled = infq::id_of(r).await;
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{cancelled}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{cancelled}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = env
        .http
        .post(env.url("/v1/jobs/01a22848-1b5a-7259-ba90-2d787f609491/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (shutdown, start) = worker_start(&env);
    let worker = start.await.unwrap();
    let v = env.get_json(&format!("/v1/jobs/{expiring}?wait=10")).await;
    assert_eq!(v["status"], "expired", "{v}");
    wait_until("the cancelled job to be taken", || async {
        worker.stats.jobs_skipped.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        env.get_json(&format!("/v1/jobs/{cancelled}")).await["status"],
        "cancelled"
    );
    assert_eq!(worker.stats.rows.load(Ordering::Relaxed), 0, "neither ran");
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

/// Takes the message at the head of `queue` and closes the channel without
/// acknowledging it: what the broker sees when a worker dies mid-batch.
async fn crash_consume(env: &TestEnv, queue: &str) -> bool {
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .is_some();
    infq_common::amqp::close(&conn, "crash").await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_after_the_delivery_limit_and_replayed() {
    let mut settings = test_settings();
    settings.amqp.delivery_limit = 2;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1500,40000]}"#,
        None,
    )
    .await;
    let id = infq::id_of(r).await;
    let csv = "student,balance,income\n".to_string() + &"0,100,20000\n".repeat(300);
    let r = env
        .http
        .post(env.url("/v1/batches?model=credit-default"))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;

    // Every delivery "crashes its worker" until the broker gives up.
    let interactive = topology.job_queue("credit-default", Priority::Interactive);
    let bulk = env.dev_bulk_queue("credit-default");
    let mut crashes = 0;
    while crash_consume(&env, &interactive).await {
        crashes += 1;
        assert!(crashes < 10, "the delivery limit never struck");
    }
    assert!(crash_consume(&env, &bulk).await, "the first chunk");
    while env.queue_depth(&topology.dead_queue()).await.unwrap() < 2 {
        assert!(crash_consume(&env, &bulk).await);
    }
    assert_eq!(
        crashes, 3,
        "delivered delivery_limit + 1 times, then dead-lettered"
    );

    let dead = env.get_json("/v1/admin/dead-letters").await;
    let ids: Vec<&str> = dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()), "{dead}");
    assert!(ids.contains(&format!("{batch}:0").as_str()), "{dead}");
    assert!(
        dead["dead_letters"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("delivered too many times"),
        "{dead}"
    );
    assert_eq!(
        env.queue_depth(&topology.dead_queue()).await.unwrap(),
        2,
        "listing keeps them"
    );

    // A worker records them: the job failed, the batch completes with its
    // first chunk's rows failed.
    let (shutdown, start) = worker_start(&env);
    let worker = start.await.unwrap();
    let job = env.get_json(&format!("/v1/jobs/{id}?wait=10")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "dead_lettered");
    let b = env.get_json(&format!("/v1/batches/{batch}?wait=10")).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(
        (b["succeeded"].as_u64(), b["failed"].as_u64()),
        (Some(44), Some(256))
    );

    // Replayed, both run to success.
    let r = env
        .http
        .post(env.url("/v1/admin/dead-letters/replay"))
        .json(&json!({"ids": [id, format!("{batch}:0")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["count"], 2);
    let job = env.get_json(&format!("/v1/jobs/{id}?wait=10")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    wait_until("the replayed chunk", || async {
        let b = env.get_json(&format!("/v1/batches/{batch}")).await;
        b["status"] == "succeeded" && b["failed"] == 0
    })
    .await;
    let b = env.get_json(&format!("/v1/batches/{batch}")).await;
    assert_eq!(b["succeeded"], 300);
    assert_eq!(env.queue_depth(&topology.dead_queue()).await.unwrap(), 0);
    let r = env
        .http
        .post(env.url("/v1/admin/dead-letters/replay"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "replay needs ids or all");
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_sends_jobs_through_the_retry_tiers() {
    let mut redis = RedisServer::start("always").unwrap();
    let mut settings = test_settings();
    settings.redis.url = redis.url();
    settings.redis.timeout_ms = 300;
    settings.worker.store_retry_secs = 1;
    settings.amqp.retry_delays_ms = vec![400, 800];
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1500,40000]}"#,
        None,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = infq::id_of(r).await;

    redis.stop();
    let (shutdown, start) = worker_start(&env);
    let worker = start.await.unwrap();
    wait_until("a retry", || async {
        worker.stats.jobs_retried.load(Ordering::Relaxed) >= 2
    })
    .await;
    redis.start_again().unwrap();
    // The first requests after the restart may get 503 while connections
    // are rebuilt; a client retries.
    wait_until("the job to succeed", || async {
        env.get_json(&format!("/v1/jobs/{id}?wait=1")).await["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        worker.stats.rows.load(Ordering::Relaxed),
        1,
        "the model ran once"
    );
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_the_broker_cancels_subscribes_again_or_rebuilds_its_session() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let (shutdown, start) = worker_start(&env);
    let worker = start.await.unwrap();
    let stats = worker.stats.clone();
    wait_until("the worker consumes", || async {
        stats.broker_connected.load(Ordering::Relaxed)
    })
    .await;
    let topology = env.topology();
    let queue = topology.job_queue("credit-default", Priority::Interactive);
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let run_one = || async {
        let body = r#"{"model":"credit-default","inputs":[0,1000,30000]}"#;
        let r = post_job(&env, body, None).await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let v = env.get_json(&format!("/v1/jobs/{id}?wait=20")).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    };
    let cancels = || stats.consumer_cancels.load(Ordering::Relaxed);
    let sessions = || stats.broker_sessions.load(Ordering::Relaxed);

    // The queue is deleted under the consumer: the broker cancels it, the
    // consumer cannot subscribe again (no queue), and its session is
    // rebuilt, which declares the queue again. Jobs run again, not a quiet
    // stop.
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    wait_until("the session to be rebuilt", || async { sessions() == 2 }).await;
    assert_eq!(cancels(), 1);
    run_one().await;

    // Deleted again and declared again while the consumer waits to
    // subscribe again: it subscribes on its own channel, with no new
    // session.
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    for _ in 0..3000 {
        if cancels() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        cancels(),
        2,
        "the broker's cancel did not reach the consumer"
    );
    topology.declare(&conn, &["credit-default"]).await.unwrap();
    run_one().await;
    assert_eq!(sessions(), 2, "the consumer's session was rebuilt");
    infq_common::amqp::close(&conn, "done").await;
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_recorder_and_the_webhook_dispatcher_subscribe_again_after_a_cancel() {
    let mut settings = test_settings();
    // Webhooks on, so the worker runs its dispatcher.
    settings.webhooks.secrets = vec!["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()];
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let (shutdown, start) = worker_start(&env);
    let worker = start.await.unwrap();
    let stats = worker.stats.clone();
    let topology = env.topology();
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let consumers = |queue: String| {
        let ch = ch.clone();
        async move {
            ch.queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .map(|q| q.consumer_count())
            .unwrap_or(0)
        }
    };
    let (record, hooks) = (topology.dead_record_queue(), topology.webhooks_exchange());
    wait_until("the recorder and the dispatcher consume", || async {
        consumers(record.clone()).await == 1 && consumers(hooks.clone()).await == 1
    })
    .await;
    let sessions = || {
        (
            stats.broker_sessions.load(Ordering::Relaxed),
            stats.webhook_sessions.load(Ordering::Relaxed),
        )
    };
    let before = sessions();

    // Each queue deleted under its consumer (the broker cancels it) and
    // declared again at once: the consumer subscribes again, not a quiet
    // stop.
    let cancels = || stats.consumer_cancels.load(Ordering::Relaxed);
    for (n, queue) in [(1, &record), (2, &hooks)] {
        ch.queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
        // Declared again while the consumer waits to subscribe again.
        for _ in 0..3000 {
            if cancels() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            cancels(),
            n,
            "{queue}: the broker's cancel did not reach the consumer"
        );
        topology.declare(&conn, &["credit-default"]).await.unwrap();
        wait_until("the consumer to subscribe again", || async {
            consumers(queue.clone()).await == 1
        })
        .await;
    }
    assert_eq!(
        sessions(),
        before,
        "both subscribed again on their own channels, with no new session"
    );
    infq_common::amqp::close(&conn, "done").await;
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_message_fails_its_own_publish_and_no_other() {
    // Many publishes waiting on their confirms at once, every other one
    // to a routing key no queue is bound to: each unroutable one must
    // fail (the broker returns it) and each routed one succeed. On one
    // shared channel, lapin hands a returned message to whichever confirm
    // completes next, so a dropped message could pass for a taken one.
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = format!("{}.returns", env.settings.namespace);
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        exchange.as_str().into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        exchange.as_str().into(),
        exchange.as_str().into(),
        "in".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let confirms = infq_common::confirms::ConfirmChannels::open(&conn, 8)
        .await
        .unwrap();
    let wait = Duration::from_secs(10);
    for _round in 0..5 {
        let sends = (0..200).map(|i| {
            let (confirms, exchange) = (confirms.clone(), exchange.clone());
            async move {
                let key = if i % 2 == 0 { "in" } else { "nowhere" };
                let lease = confirms.lease(wait).await.unwrap();
                let r = lease
                    .publish(&exchange, key, b"x", Default::default(), wait)
                    .await;
                (key, r)
            }
        });
        for (key, r) in futures_util::future::join_all(sends).await {
            match key {
                "in" => assert!(r.is_ok(), "a routed message failed: {r:?}"),
                _ => assert!(
                    matches!(r, Err(infq_common::amqp::PublishError::Unroutable(_))),
                    "an unroutable message passed: {r:?}"
                ),
            }
        }
    }
    assert!(confirms.usable(), "nacks and returns retire no channel");
    // A publish cut short (its caller gone before the confirm) leaves a
    // confirm owed: its channel is retired, not lent again, and once half
    // are retired the pool asks for a new connection.
    for _ in 0..4 {
        let lease = confirms.lease(wait).await.unwrap();
        // Polled once (sent), then dropped.
        let cut = futures_util::FutureExt::now_or_never(lease.publish(
            &exchange,
            "in",
            b"x",
            Default::default(),
            wait,
        ));
        assert!(cut.is_none(), "the publish was cut short");
    }
    assert!(!confirms.usable(), "4 of 8 channels retired");
    for _ in 0..4 {
        let lease = confirms.lease(wait).await.unwrap();
        lease
            .publish(&exchange, "in", b"x", Default::default(), wait)
            .await
            .unwrap();
    }
    ch.queue_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    infq_common::amqp::close(&conn, "done").await;
    env.stop().await.unwrap();
}

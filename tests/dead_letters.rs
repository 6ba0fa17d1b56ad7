//! Dead letters against the real RabbitMQ and Redis: a replay that comes
//! before the recorder keeps them, listings never use up their delivery
//! limit, and the dead-letter queues of an earlier version keep working.

use infq::wait::wait_until;
use infq::{test_settings, TestEnv};
use infq_common::job::Priority;
use infq_common::topology::Topology;
use lapin::options::BasicGetOptions;
use serde_json::{json, Value};

async fn post_job(env: &TestEnv, body: &str) -> reqwest::Response {
    env.http
        .post(env.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn replay(env: &TestEnv, ids: &[&str]) -> Value {
    let r = env
        .http
        .post(env.url("/v1/admin/dead-letters/replay"))
        .json(&json!({ "ids": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn listed_ids(dead: &Value) -> Vec<String> {
    dead["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_before_the_recorder_keeps_the_dead_letter_for_a_later_one() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1500,40000]}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = infq::id_of(r).await;
    let csv = "loan_id,student,balance,income\n".to_string()
        + &(0..300)
            .map(|i| format!("L-{i},0,100,20000\n"))
            .collect::<String>();
    let r = env
        .http
        .post(env.url("/v1/batches?model=credit-default&passthrough=loan_id"))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;
    let chunk = format!("{batch}:0");

    // Both dead-lettered with a reason of infq's, and no worker running to
    // record them from `<ns>.dead.record`.
    let reason = "made-up check: a field out of range";
    env.refuse_head(
        &topology.job_queue("credit-default", Priority::Interactive),
        reason,
    )
    .await;
    // The chunk's dead letter names another tenant's share: a replay
    // goes by the batch's record, and makes no share of that name.
    env.refuse_head_edited(&env.dev_bulk_queue("credit-default"), reason, |body| {
        let mut m = infq_common::message::JobMessage::decode(&body).unwrap();
        m.tenant = Some("intruder".into());
        m.encode()
    })
    .await;
    let dead = env.get_json("/v1/admin/dead-letters").await;
    let ids = listed_ids(&dead);
    assert!(ids.contains(&id) && ids.contains(&chunk), "{dead}");
    for d in dead["dead_letters"].as_array().unwrap() {
        assert!(
            d["reason"].as_str().unwrap().contains(reason),
            "the listing shows infq's reason: {dead}"
        );
    }
    assert_eq!(
        env.get_json(&format!("/v1/jobs/{id}")).await["status"],
        "queued"
    );

    // A replay now finds nothing recorded: both stay, and it says so.
    let r = replay(&env, &[&id, &chunk]).await;
    assert_eq!(r["count"], 0, "{r}");
    let problems = r["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{r}");
    for p in problems {
        let why = p["reason"].as_str().unwrap();
        assert!(why.contains("kept for a later replay"), "{r}");
    }
    assert_eq!(
        env.queue_depth(&topology.dead_queue()).await.unwrap(),
        2,
        "an early replay deletes no dead letter"
    );
    let ids = listed_ids(&env.get_json("/v1/admin/dead-letters").await);
    assert!(ids.contains(&id) && ids.contains(&chunk), "{ids:?}");
    assert_eq!(
        env.get_json(&format!("/v1/jobs/{id}")).await["status"],
        "queued"
    );

    // Once a worker has recorded them, the next replay runs both.
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let registry = env.settings.registry().unwrap();
    let worker = infq_worker::start(env.settings.clone(), registry, shutdown.clone())
        .await
        .unwrap();
    let job = env.get_json(&format!("/v1/jobs/{id}?wait=10")).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "dead_lettered");
    wait_until("the batch to complete with its dead chunk", || async {
        env.get_json(&format!("/v1/batches/{batch}")).await["status"] == "succeeded"
    })
    .await;
    // The dead chunk's rows failed, and still carry the client's ids.
    let text = infq::batch_results(&env.http, &env.base, &batch, "jsonl").await;
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 300);
    for (i, v) in rows.iter().enumerate() {
        assert_eq!(v["loan_id"], format!("L-{i}"), "{v}");
        if i < 256 {
            assert!(
                v["error"].as_str().unwrap().contains("dead_lettered"),
                "{v}"
            );
        }
    }
    let r = replay(&env, &[&id, &chunk]).await;
    assert_eq!(r["count"], 2, "{r}");
    let job = env.get_json(&format!("/v1/jobs/{id}?wait=10")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    wait_until("the replayed chunk", || async {
        let b = env.get_json(&format!("/v1/batches/{batch}")).await;
        b["status"] == "succeeded" && b["failed"] == 0 && b["succeeded"] == 300
    })
    .await;
    assert_eq!(env.queue_depth(&topology.dead_queue()).await.unwrap(), 0);
    let shares = infq_common::shares::Shares::new(env.redis().await, env.store().keys())
        .list()
        .await
        .unwrap();
    let tenants: Vec<&str> = shares.iter().map(|s| s.tenant.as_str()).collect();
    assert_eq!(
        tenants,
        [infq::broker::DEV_TENANT],
        "the record's tenant only"
    );
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

/// A quorum queue's arguments without `key`.
fn without(args: &lapin::types::FieldTable, key: &str) -> lapin::types::FieldTable {
    let mut out = lapin::types::FieldTable::default();
    for (k, v) in args.inner() {
        if k.as_str() != key {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn delivery_count(props: &lapin::BasicProperties) -> i64 {
    use lapin::types::AMQPValue;
    match props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
    {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_more_listings_than_a_default_delivery_limit() {
    use lapin::options::{BasicNackOptions, QueueDeclareOptions};
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let conn = env.amqp().await.unwrap();

    // Both dead-letter queues carry their limit explicitly: declaring them
    // again with it passes, and without it is refused as inequivalent.
    let ch = conn.create_channel().await.unwrap();
    for q in [topology.dead_queue(), topology.dead_record_queue()] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::durable(),
            topology.dead_letter_queue_args(),
        )
        .await
        .unwrap();
        let other = conn.create_channel().await.unwrap();
        let refused = other
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::durable(),
                without(&topology.dead_letter_queue_args(), "x-delivery-limit"),
            )
            .await;
        assert!(refused.is_err(), "{q} has no explicit x-delivery-limit");
    }

    // Three dead letters, listed more times than RabbitMQ 4.0 to 4.2 would
    // deliver them without a limit of their own.
    let lease = TestEnv::confirm_lease(&conn).await;
    for i in 0..3 {
        infq_common::dead::publish_dead(
            &lease,
            &topology,
            "a test",
            format!("not a job {i}").as_bytes(),
            &lapin::BasicProperties::default(),
            "undecodable",
            false,
        )
        .await
        .unwrap();
    }
    for n in 0..25 {
        let dead = env.get_json("/v1/admin/dead-letters").await;
        assert_eq!(dead["count"], 3, "listing {n}: {dead}");
    }
    // Each listing counted as a delivery: past 20, and none was dropped.
    // The last listing's returns reach the queue after its answer: a get
    // right then may find none ready yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let got = loop {
        let got = ch
            .basic_get(
                topology.dead_queue().as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap();
        match got {
            Some(got) => break got,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            None => panic!("no dead letter came back to its queue within 10 s"),
        }
    };
    let count = delivery_count(&got.delivery.properties);
    assert!(count >= 20, "x-delivery-count {count}");
    got.delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    infq_common::amqp::close(&conn, "done").await;
    assert_eq!(env.queue_depth(&topology.dead_queue()).await.unwrap(), 3);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_queues_of_an_earlier_version_are_kept_as_they_are() {
    use lapin::options::QueueDeclareOptions;
    // The dead-letter queues as an earlier version declared them: quorum,
    // no delivery limit.
    let settings = test_settings();
    let topology = Topology::of(&settings);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [topology.dead_queue(), topology.dead_record_queue()] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::durable(),
            without(&topology.dead_letter_queue_args(), "x-delivery-limit"),
        )
        .await
        .unwrap();
    }
    infq_common::amqp::close(&conn, "done").await;

    // The new version starts on them (a 406 would keep it from ever being
    // ready) and dead letters still reach them.
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let r = post_job(
        &env,
        r#"{"model":"credit-default","inputs":[0,1500,40000]}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    env.refuse_head(
        &topology.job_queue("credit-default", Priority::Interactive),
        "made-up check",
    )
    .await;
    assert_eq!(env.queue_depth(&topology.dead_queue()).await.unwrap(), 1);
    assert_eq!(env.get_json("/v1/admin/dead-letters").await["count"], 1);
    env.stop().await.unwrap();
}

//! Messages on the internal queues are untrusted input: against the real
//! RabbitMQ and Redis, hostile messages published straight to the job
//! queues cost only themselves (they are dead-lettered with their reason),
//! and the stored records, not the messages, say what a job is. Also the
//! store's rules that keep every accepted job and batch alive until it
//! ends: records that outlive a short retention while queued, completion
//! derived from stored state, and errors that belong to one state.

use infq::{test_settings, TestEnv};
use infq_common::job::{new_job_id, JobError, JobStatus, Priority};
use infq_common::message::ChunkRef;
use infq_common::store::{Applied, ChunkResult, JobStore, NewBatch, Transition, Write};
use infq_common::topology::Topology;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Publishes `body` to the jobs exchange under `model`'s key for `lane`,
/// as anyone with access to the broker could, and waits for the confirm.
async fn publish_raw(env: &TestEnv, model: &str, lane: Priority, id: &str, body: &[u8]) {
    let topology = Topology::of(&env.settings);
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.basic_publish(
        topology.jobs_exchange().as_str().into(),
        Topology::routing_key(model, lane).as_str().into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    infq_common::amqp::close(&conn, "done").await;
}

/// Every dead letter in `<ns>.dead` (taken off it): message id -> reason.
async fn dead_letters(env: &TestEnv) -> Vec<(String, String)> {
    let topology = Topology::of(&env.settings);
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            topology.dead_queue().as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        let id = m
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.push((id, infq_common::topology::death_reason(&m.properties)));
        m.ack(BasicAckOptions::default()).await.unwrap();
    }
    infq_common::amqp::close(&conn, "done").await;
    out
}

/// Waits until `<ns>.dead` has at least `n` messages.
async fn wait_dead(env: &TestEnv, n: u32) {
    let queue = Topology::of(&env.settings).dead_queue();
    for _ in 0..300 {
        if env.queue_depth(&queue).await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} dead letters");
}

async fn start_worker(env: &mut TestEnv) {
    let registry = env.settings.registry().unwrap();
    let shutdown = env.shutdown_token();
    env.worker = Some(
        infq_worker::start(env.settings.clone(), registry, shutdown)
            .await
            .unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_job_messages_cost_only_themselves() {
    let mut env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let version = env
        .settings
        .registry()
        .unwrap()
        .resolve("credit-default")
        .unwrap()
        .version
        .clone();
    // A job accepted while no worker runs, then messages naming it that
    // the producer never published: another tenant, other inputs.
    let row = [0.0f32, 1500.0, 40000.0];
    let victim = infq::submit_job(
        &env.http,
        &env.base,
        &json!({"model": "credit-default", "inputs": row}),
    )
    .await;
    let victim_id = infq_common::job::JobId::parse_str(&victim).unwrap();
    let mut forged_tenant = infq::made_up_message("credit-default", &version, row.to_vec());
    forged_tenant.id = victim_id;
    forged_tenant.tenant = Some("intruder".into());
    forged_tenant.webhook_url = Some("http://127.0.0.1:9/steal".into());
    let mut forged_inputs =
        infq::made_up_message("credit-default", &version, vec![1.0, 2500.0, 10.0]);
    forged_inputs.id = victim_id;
    for m in [&forged_tenant, &forged_inputs] {
        publish_raw(
            &env,
            "credit-default",
            Priority::Interactive,
            &victim,
            &m.encode(),
        )
        .await;
    }
    // The job's own work, copied onto another model's queue and lane.
    for (model, lane) in [
        ("txn-risk", Priority::Interactive),
        ("credit-default", Priority::Bulk),
    ] {
        publish_raw(&env, model, lane, &victim, &forged_tenant.encode()).await;
    }
    // Out-of-range numbers (one made the claim script fail and stalled
    // every job of its batch), a job nobody accepted, and garbage.
    let mut hostile = Vec::new();
    for _ in 0..5 {
        let mut m = infq::made_up_message("credit-default", &version, row.to_vec());
        m.retention_ms = Some(u64::MAX);
        hostile.push(m.encode());
    }
    let mut m = infq::made_up_message("credit-default", &version, row.to_vec());
    m.retries = u32::MAX;
    hostile.push(m.encode());
    let unknown = infq::made_up_message("credit-default", &version, row.to_vec());
    hostile.push(unknown.encode());
    hostile.push(b"\xff\xfe not json".to_vec());
    hostile.push(b"{\"id\":\"x\"}".to_vec());
    for (i, body) in hostile.iter().enumerate() {
        publish_raw(
            &env,
            "credit-default",
            Priority::Interactive,
            &format!("h{i}"),
            body,
        )
        .await;
    }
    // Real work around them.
    let mut ids = Vec::new();
    for i in 0..300 {
        let body = json!({"model": "credit-default", "inputs": [0, 1000 + i, 30000]});
        ids.push(infq::submit_job(&env.http, &env.base, &body).await);
    }
    start_worker(&mut env).await;
    let started = std::time::Instant::now();
    for id in &ids {
        let v = infq::wait_job(&env.http, &env.base, id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "300 jobs took {took:?}: hostile messages held them up"
    );
    // The victim ran on its own inputs and still belongs to its tenant.
    let v = infq::wait_job(&env.http, &env.base, &victim).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let want = infq::reference_outputs(&env.settings.registry().unwrap(), &[row]).unwrap()[0];
    let got = v["output"]["default_probability"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    let rec = env.store().get(&victim_id).await.unwrap().unwrap();
    assert_eq!(rec.tenant.as_deref(), Some("dev"));
    assert_eq!(rec.webhook_url, None);
    // Nothing was made up for the job nobody accepted.
    assert!(env.store().get(&unknown.id).await.unwrap().is_none());
    // Every forgery is a dead letter with its reason.
    // The copy naming another tenant has the job's own work: it runs like
    // a redelivery, changing nothing; the one with other inputs does not.
    let n = 3 + hostile.len() as u32;
    wait_dead(&env, n).await;
    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), n as usize, "{dead:?}");
    let reasons = |needle: &str| dead.iter().filter(|(_, r)| r.contains(needle)).count();
    assert_eq!(reasons("retention_ms out of range"), 5, "{dead:?}");
    assert_eq!(reasons("retries out of range"), 1, "{dead:?}");
    assert_eq!(reasons("does not match the job"), 1, "{dead:?}");
    assert_eq!(reasons("no record"), 1, "{dead:?}");
    assert_eq!(reasons("but came from"), 2, "{dead:?}");
    assert_eq!(reasons("malformed job message"), 2, "{dead:?}");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_chunks_neither_finish_a_batch_nor_count_twice() {
    let mut env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let version = env
        .settings
        .registry()
        .unwrap()
        .resolve("credit-default")
        .unwrap()
        .version
        .clone();
    let rows: u64 = 600;
    let csv: String = std::iter::once("student,balance,income\n".to_string())
        .chain((0..rows).map(|i| format!("0,{},{}\n", 100 + i, 20000 + i)))
        .collect();
    let r = env
        .http
        .post(env.url("/v1/batches?model=credit-default&format=csv"))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.unwrap();
    let id = infq_common::job::JobId::parse_str(batch["id"].as_str().unwrap()).unwrap();
    let rec = env.store().get_batch(&id).await.unwrap().unwrap();
    let (chunks, per) = (rec.chunks, rec.chunk_rows);
    assert!(chunks >= 2);
    let forge = |index: u32, first_row: u64, n: usize| {
        let mut m = infq::made_up_message("credit-default", &version, vec![0.5; 3 * n]);
        m.id = id;
        m.priority = Priority::Bulk;
        m.chunk = Some(ChunkRef { index, first_row });
        m
    };
    let forged = [
        // Past the last chunk: would finish the batch early.
        forge(chunks, u64::from(chunks * per) + 1, per as usize),
        forge(chunks + 500, 1, 1),
        // A real index with a made-up place or size.
        forge(0, 7, per as usize),
        // A real place with other inputs.
        forge(1, u64::from(per) + 1, per as usize),
        forge(1, u64::from(per) + 1, per as usize + 40),
    ];
    for m in &forged {
        let mid = m.message_id().to_string();
        publish_raw(&env, "credit-default", Priority::Bulk, &mid, &m.encode()).await;
    }
    start_worker(&mut env).await;
    let v: Value = env
        .http
        .get(env.url(&format!("/v1/batches/{id}?wait=60")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["total"], rows);
    assert_eq!(v["succeeded"], rows, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    wait_dead(&env, forged.len() as u32).await;
    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), forged.len(), "{dead:?}");
    for (_, reason) in &dead {
        assert!(
            reason.contains("match its batch") || reason.contains("out of range"),
            "{reason}"
        );
    }
    // Every forgery handled: the counts are still the batch's own.
    let rec = env.store().get_batch(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.succeeded, rec.failed, rec.done_chunks),
        (rows, 0, chunks)
    );
    env.stop().await.unwrap();
}

/// A record of a store with no producer or worker around it.
fn store() -> (JobStore, infq_common::config::Settings) {
    let settings = test_settings();
    (
        JobStore::new(&settings.redis, &settings.namespace).unwrap(),
        settings,
    )
}

async fn pttl(store: &JobStore, key: &str) -> i64 {
    let mut c = store.connection();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

fn new_batch(total: u64, chunk_rows: u32, retention_ms: u64) -> NewBatch {
    NewBatch {
        id: new_job_id(),
        model: "credit-default".into(),
        version: "1".into(),
        total,
        chunks: total.div_ceil(u64::from(chunk_rows)) as u32,
        chunk_rows,
        created_at_ms: infq_common::job::now_ms(),
        webhook_url: None,
        tenant: None,
        retention_ms: Some(retention_ms),
        outputs: vec!["p".into()],
    }
}

fn chunk(batch: &NewBatch, index: u32, rows: u32) -> ChunkResult {
    ChunkResult {
        batch: batch.id,
        index,
        rows_json: format!("[{}]", vec!["[0.5]"; rows as usize].join(",")),
        succeeded: rows,
        failed: 0,
    }
}

#[tokio::test]
async fn an_open_batch_outlives_its_retention_and_ends_with_it() {
    let (store, settings) = store();
    let b = new_batch(5, 2, 1_000);
    assert!(store.create_batch(&b).await.unwrap());
    let open = infq_common::store::OPEN_TTL_MS as i64;
    let key = store.keys().batch(&b.id);
    assert!(
        pttl(&store, &key).await > open - 60_000,
        "a queued batch outlives its retention"
    );
    // Chunks stored while it runs are kept as long as it is open...
    let w = [
        Write::Chunk(&chunk(&b, 0, 2)),
        Write::Chunk(&chunk(&b, 1, 2)),
    ];
    assert_eq!(
        store.write_many(&w).await.unwrap(),
        vec![Applied::Yes, Applied::Yes]
    );
    assert!(pttl(&store, &store.keys().chunk_results(&b.id)).await > open - 60_000);
    assert!(pttl(&store, &key).await > open - 60_000);
    // ...and the last one completes it.
    assert_eq!(
        store
            .write_many(&[Write::Chunk(&chunk(&b, 2, 1))])
            .await
            .unwrap(),
        vec![Applied::Completed]
    );
    for k in [
        key.clone(),
        store.keys().chunk_results(&b.id),
        store.keys().chunk_results(&b.id),
    ] {
        let t = pttl(&store, &k).await;
        assert!((1..=1_000).contains(&t), "{k}: {t} ms once ended");
    }
    let rec = store.get_batch(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.succeeded, rec.done_chunks),
        (JobStatus::Succeeded, 5, 3)
    );
    infq::delete_namespace_named(&settings.namespace).await;
}

#[tokio::test]
async fn a_completion_whose_reply_was_lost_is_announced_on_the_retry() {
    let (store, settings) = store();
    let b = new_batch(3, 2, 60_000);
    assert!(store.create_batch(&b).await.unwrap());
    let first = chunk(&b, 0, 2);
    assert_eq!(
        store.write_many(&[Write::Chunk(&first)]).await.unwrap(),
        vec![Applied::Yes]
    );
    // The last chunk's write completes the batch in Redis, but its reply
    // is lost: the writer stores it again, and must still learn that the
    // batch completed, so that `batch.completed` is published.
    let last = chunk(&b, 1, 1);
    for _ in 0..3 {
        assert_eq!(
            store.write_many(&[Write::Chunk(&last)]).await.unwrap(),
            vec![Applied::Completed]
        );
    }
    // A chunk stored before completion, stored again, says so too.
    assert_eq!(
        store.write_many(&[Write::Chunk(&first)]).await.unwrap(),
        vec![Applied::Completed]
    );
    let rec = store.get_batch(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.succeeded, rec.done_chunks),
        (JobStatus::Succeeded, 3, 2)
    );
    infq::delete_namespace_named(&settings.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_carries_its_own_error() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let store = env.store();
    let body = |deadline: Option<u64>| {
        let mut body = json!({"model": "credit-default", "inputs": [0, 1500, 40000]});
        if let Some(d) = deadline {
            body["deadline_ms"] = d.into();
        }
        body
    };
    let retry = Transition {
        status: JobStatus::Retrying,
        output: None,
        error: Some(JobError::new("model_error", "CUDA out of memory")),
    };
    // Retried, then succeeded: no error left.
    let id = infq_common::job::JobId::parse_str(
        &infq::submit_job(&env.http, &env.base, &body(None)).await,
    )
    .unwrap();
    assert_eq!(store.transition(&id, &retry).await.unwrap(), Applied::Yes);
    assert!(store.get(&id).await.unwrap().unwrap().error.is_some());
    let done = Transition::succeeded("{\"default_probability\":0.5}".into());
    assert_eq!(store.transition(&id, &done).await.unwrap(), Applied::Yes);
    let v: Value = env
        .http
        .get(env.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "succeeded");
    assert!(v.get("error").is_none_or(Value::is_null), "{v}");
    // Retried, then expired: its error says it expired.
    let id = infq_common::job::JobId::parse_str(
        &infq::submit_job(&env.http, &env.base, &body(Some(1))).await,
    )
    .unwrap();
    assert_eq!(store.transition(&id, &retry).await.unwrap(), Applied::Yes);
    assert_eq!(
        store
            .transition(&id, &Transition::to(JobStatus::Expired))
            .await
            .unwrap(),
        Applied::Yes
    );
    let v: Value = env
        .http
        .get(env.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "expired");
    assert!(
        !v.to_string().contains("out of memory"),
        "an expired job does not report an old error: {v}"
    );
    // Retried, then cancelled: no error either.
    let id = infq_common::job::JobId::parse_str(
        &infq::submit_job(&env.http, &env.base, &body(None)).await,
    )
    .unwrap();
    assert_eq!(store.transition(&id, &retry).await.unwrap(), Applied::Yes);
    let cancelled = store
        .cancel(infq_common::keys::Subject::Job(id), &[JobStatus::Retrying])
        .await
        .unwrap();
    assert_eq!(cancelled, infq_common::store::Cancelled::Yes);
    assert!(store.get(&id).await.unwrap().unwrap().error.is_none());
    // No record is made up for a job nobody submitted.
    let stranger = new_job_id();
    assert_eq!(
        store.transition(&stranger, &done).await.unwrap(),
        Applied::Ignored
    );
    assert!(store.get(&stranger).await.unwrap().is_none());
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_no_queue_takes_is_not_taken_for_sent() {
    let settings = test_settings();
    let topology = Topology::of(&settings);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology.declare(&ch, &["credit-default"]).await.unwrap();
    // The retry tier's exchange is there, its queue is gone: a publish
    // to it is confirmed by the broker, but returned as unroutable.
    let tier = topology.retry_exchange(0);
    ch.queue_delete(tier.as_str().into(), Default::default())
        .await
        .unwrap();
    let confirm = conn.create_channel().await.unwrap();
    confirm
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let stats = Arc::new(infq_worker::WorkerStats::default());
    let requeuer = infq_worker::requeue::Requeuer::new(topology.clone(), 5, stats);
    requeuer.set_channel(Some(confirm));
    let job = infq_worker::pending::Pending::made_up(
        "credit-default",
        "1",
        Priority::Interactive,
        vec![0.0, 1500.0, 40000.0],
        1,
    );
    let out = requeuer.requeue_all(vec![job], "test").await;
    assert_eq!(
        out,
        infq_worker::requeue::Requeued {
            sent: 0,
            dead_lettered: 0,
            left: 1
        },
        "a retry that no queue took goes back to its queue, not acknowledged"
    );
    infq_common::amqp::close(&conn, "done").await;
    infq::delete_namespace_named(&settings.namespace).await;
}

#[tokio::test]
async fn a_batch_that_ends_otherwise_gives_its_chunks_its_retention() {
    let (store, settings) = store();
    let open = infq_common::store::OPEN_TTL_MS as i64;
    // Cancelled after one chunk was stored.
    let b = new_batch(4, 2, 1_000);
    assert!(store.create_batch(&b).await.unwrap());
    store
        .write_many(&[Write::Chunk(&chunk(&b, 0, 2))])
        .await
        .unwrap();
    assert!(pttl(&store, &store.keys().chunk_results(&b.id)).await > open - 60_000);
    let c = store
        .cancel(
            infq_common::keys::Subject::Batch(b.id),
            &[JobStatus::Queued, JobStatus::Running],
        )
        .await
        .unwrap();
    assert_eq!(c, infq_common::store::Cancelled::Yes);
    let t = pttl(&store, &store.keys().chunk_results(&b.id)).await;
    assert!(
        (1..=1_000).contains(&t),
        "a cancelled batch's chunk: {t} ms"
    );
    // Failed after one chunk was stored.
    let b = new_batch(4, 2, 1_000);
    assert!(store.create_batch(&b).await.unwrap());
    store
        .write_many(&[Write::Chunk(&chunk(&b, 0, 2))])
        .await
        .unwrap();
    store
        .fail_batch(&b.id, &JobError::new("not_enqueued", "test"))
        .await
        .unwrap();
    let t = pttl(&store, &store.keys().chunk_results(&b.id)).await;
    assert!((1..=1_000).contains(&t), "a failed batch's chunk: {t} ms");
    infq::delete_namespace_named(&settings.namespace).await;
}

#[tokio::test]
async fn a_replay_reopens_only_what_its_dead_letter_really_names() {
    let (store, settings) = store();
    let open = infq_common::store::OPEN_TTL_MS as i64;
    // A completed batch whose last chunk was dead-lettered.
    let b = new_batch(4, 2, 1_000);
    assert!(store.create_batch(&b).await.unwrap());
    store
        .write_many(&[Write::Chunk(&chunk(&b, 0, 2))])
        .await
        .unwrap();
    let mut dead = infq::made_up_message("credit-default", "1", vec![0.5; 6]);
    dead.id = b.id;
    dead.priority = Priority::Bulk;
    dead.chunk = Some(ChunkRef {
        index: 1,
        first_row: 3,
    });
    assert_eq!(
        store
            .dead_chunk(&dead, "dead_lettered: test")
            .await
            .unwrap(),
        Applied::Completed
    );
    // A made-up place is not reopened...
    let mut forged = dead.clone();
    forged.chunk = Some(ChunkRef {
        index: 1,
        first_row: 1,
    });
    assert!(matches!(
        store.reopen(&forged).await.unwrap(),
        infq_common::store::Reopened::Forged(_)
    ));
    assert_eq!(
        store.get_batch(&b.id).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    // ...the real one is, and the batch's other results are kept while it
    // is open again.
    assert_eq!(
        store.reopen(&dead).await.unwrap(),
        infq_common::store::Reopened::Yes
    );
    assert!(pttl(&store, &store.keys().chunk_results(&b.id)).await > open - 60_000);
    infq::delete_namespace_named(&settings.namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_forged_job_dead_letter_reopens_nothing() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let store = env.store();
    let version = env
        .settings
        .registry()
        .unwrap()
        .resolve("credit-default")
        .unwrap()
        .version
        .clone();
    let row = vec![0.0f32, 1500.0, 40000.0];
    let id = infq::submit_job(
        &env.http,
        &env.base,
        &json!({"model": "credit-default", "inputs": row}),
    )
    .await;
    let mut genuine = infq::made_up_message("credit-default", &version, row.clone());
    genuine.id = infq_common::job::JobId::parse_str(&id).unwrap();
    let error = JobError::new("dead_lettered", "test");
    assert_eq!(
        store.fail_matching(&genuine, &error).await.unwrap(),
        Applied::Yes
    );
    let mut forged = genuine.clone();
    forged.inputs[1] = 9_999.0;
    assert!(matches!(
        store.reopen(&forged).await.unwrap(),
        infq_common::store::Reopened::Forged(_)
    ));
    assert_eq!(
        store.get(&genuine.id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(
        store.reopen(&genuine).await.unwrap(),
        infq_common::store::Reopened::Yes
    );
    assert_eq!(
        store.get(&genuine.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    env.stop().await.unwrap();
}

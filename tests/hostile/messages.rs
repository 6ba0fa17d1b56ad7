//! Hostile messages published straight to the internal queues cost only
//! themselves: forged jobs, chunks, retries and dead letters.

use crate::support::*;
use infq::{test_settings, TestEnv};
use infq_common::job::{JobError, JobStatus, Priority};
use infq_common::message::Work;
use infq_common::store::Applied;
use infq_common::topology::Topology;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

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
    forged_tenant.work = Work::Job { id: victim_id };
    forged_tenant.tenant = Some("intruder".into());
    forged_tenant.webhook_url = Some("http://127.0.0.1:9/steal".into());
    let mut forged_inputs =
        infq::made_up_message("credit-default", &version, vec![1.0, 2500.0, 10.0]);
    forged_inputs.work = Work::Job { id: victim_id };
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
    // First a worker that serves txn-risk alone: it finds the job's copy
    // on its queue and dead-letters it as misplaced, and the job waits for
    // its own message: the copy must not fail it (nothing else runs yet).
    let mut txn_only = env.settings.clone();
    txn_only.worker.models = vec!["txn-risk".into()];
    let registry = txn_only.registry().unwrap();
    let _txn_worker = infq_worker::start(txn_only, registry, env.shutdown_token())
        .await
        .unwrap();
    env.wait_dead(1).await;
    let record_queue = Topology::of(&env.settings).dead_record_queue();
    for _ in 0..100 {
        if env.queue_depth(&record_queue).await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = env.store().get(&victim_id).await.unwrap().unwrap();
    assert_eq!(
        rec.status,
        JobStatus::Queued,
        "a copy on another model's queue left the job alone"
    );
    // Real work around them.
    let mut ids = Vec::new();
    for i in 0..300 {
        let body = json!({"model": "credit-default", "inputs": [0, 1000 + i, 30000]});
        ids.push(infq::submit_job(&env.http, &env.base, &body).await);
    }
    env.start_worker().await;
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
    assert!(env.store().get(&unknown.record()).await.unwrap().is_none());
    // Every forgery is a dead letter with its reason.
    // The copy naming another tenant has the job's own work: it runs like
    // a redelivery, changing nothing; the one with other inputs does not.
    let n = 3 + hostile.len() as u32;
    env.wait_dead(n).await;
    let dead = env.dead_letters().await;
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
        m.work = Work::Chunk {
            batch: id,
            index,
            first_row,
        };
        m.priority = Priority::Bulk;
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
    env.start_worker().await;
    let v: Value = infq::get_json(&env.http, &env.url(&format!("/v1/batches/{id}?wait=60"))).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["total"], rows);
    assert_eq!(v["succeeded"], rows, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    env.wait_dead(forged.len() as u32).await;
    let dead = env.dead_letters().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_no_queue_takes_is_not_taken_for_sent() {
    let settings = test_settings();
    let topology = Topology::of(&settings);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-test")
        .await
        .unwrap();
    topology.declare(&conn, &["credit-default"]).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    // The retry tier's exchange is there, its queue is gone: a publish
    // to it is confirmed by the broker, but returned as unroutable.
    let tier = topology.retry_exchange(0);
    ch.queue_delete(tier.as_str().into(), Default::default())
        .await
        .unwrap();
    let confirms = infq_common::confirms::ConfirmChannels::open(&conn, 2)
        .await
        .unwrap();
    let stats = Arc::new(infq_worker::WorkerStats::default());
    let session = Arc::new(infq_worker::session::Session {
        requeuer: infq_worker::requeue::Requeuer::new(
            topology.clone(),
            confirms.clone(),
            stats.clone(),
        ),
        events: infq_worker::webhooks::events::Events::new(topology.clone(), confirms.clone()),
        channels: confirms,
    });
    let mut job = infq_worker::pending::Pending::made_up(
        "credit-default",
        "1",
        Priority::Interactive,
        vec![0.0, 1500.0, 40000.0],
        1,
    );
    job.delivery = infq_worker::pending::Settle::detached_on(1, session);
    let out = infq_worker::completion::retry(vec![job], "test", 5, &stats).await;
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
    genuine.work = Work::Job {
        id: infq_common::job::JobId::parse_str(&id).unwrap(),
    };
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
        store.get(&genuine.record()).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(
        store.reopen(&genuine).await.unwrap(),
        infq_common::store::Reopened::Yes
    );
    assert_eq!(
        store.get(&genuine.record()).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    env.stop().await.unwrap();
}

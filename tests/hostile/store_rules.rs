//! The store's rules that keep every accepted job and batch alive until
//! it ends: records that outlive a short retention while queued,
//! completion derived from stored state, errors that belong to one state,
//! and replays that reopen only what their dead letter names.

use crate::support::*;
use infq::{test_settings, TestEnv};
use infq_common::job::{new_job_id, JobError, JobStatus, Priority};
use infq_common::message::Work;
use infq_common::store::{Applied, Transition, Write};
use serde_json::{json, Value};

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
        error: Some(JobError::new("model_error", "CUDA out of memory")),
        ..Transition::to(JobStatus::Retrying)
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
    let v: Value = infq::get_json(&env.http, &env.url(&format!("/v1/jobs/{id}"))).await;
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
    let v: Value = infq::get_json(&env.http, &env.url(&format!("/v1/jobs/{id}"))).await;
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
    dead.work = Work::Chunk {
        batch: b.id,
        index: 1,
        first_row: 3,
    };
    dead.priority = Priority::Bulk;
    assert_eq!(
        store
            .dead_chunk(&dead, "dead_lettered: test")
            .await
            .unwrap(),
        Applied::Completed
    );
    // A made-up place is not reopened...
    let mut forged = dead.clone();
    forged.work = Work::Chunk {
        batch: forged.record(),
        index: 1,
        first_row: 1,
    };
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

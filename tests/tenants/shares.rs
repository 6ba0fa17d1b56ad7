//! Fair shares of the bulk lane (infq_common::shares): a tenant's backlog
//! does not hold another tenant's batch behind it. Asserted by order, not
//! by time: which batch started and finished before which, on the worker's
//! own record.

use super::support::tenant;
use infq::TestEnv;
use serde_json::Value;
use std::sync::atomic::Ordering;

/// A CSV of `rows` borrowers.
fn csv(rows: usize) -> String {
    infq::portfolio(rows).1
}

/// Uploads `rows` rows as `http`'s tenant; the batch's id.
async fn upload(http: &reqwest::Client, env: &TestEnv, rows: usize) -> String {
    let r = super::support::upload(http, env, &csv(rows)).await;
    assert_eq!(r.status(), 202);
    infq::id_of(r).await
}

/// A time of a batch's view (`2026-12-04T07:30:05.123Z`: in that form,
/// text order is time order).
fn at(v: &Value, field: &str) -> String {
    let t = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {v}"));
    assert_eq!(t.len(), 24, "{field} of {v}");
    t.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_uploaded_after_a_big_backlog_finishes_first() {
    // No worker yet: the big tenant's whole batch is on the queue before
    // the small tenant uploads.
    let mut env = TestEnv::start_with(infq::test_settings(), false)
        .await
        .unwrap();
    let big = tenant(&env, "big", None).await;
    let small = tenant(&env, "small", None).await;
    let backlog = upload(&big, &env, 40_000).await;
    let queued = env
        .queue_depth(&env.share_queue("credit-default", "big"))
        .await
        .unwrap();
    assert_eq!(queued, 157, "every chunk of the backlog is queued");
    let late = upload(&small, &env, 1_000).await;

    env.start_worker().await;
    let late = infq::wait_batch(&small, &env.base, &late).await;
    assert_eq!(late["status"], "succeeded", "{late}");
    let backlog_now = infq::get_json(&big, &env.url(&format!("/v1/batches/{backlog}"))).await;
    let backlog = infq::wait_batch(&big, &env.base, &backlog).await;
    assert_eq!(backlog["status"], "succeeded", "{backlog}");
    assert!(
        at(&late, "finished_at") < at(&backlog, "finished_at"),
        "the small batch finished before the backlog uploaded before it\n{late}\n{backlog}"
    );
    assert_ne!(
        backlog_now["status"], "succeeded",
        "the backlog was still running when the small batch had finished: {backlog_now}"
    );
    // A tenant's first upload while the worker runs: its share is found
    // and consumed (infq_common::shares::POLL).
    let newcomer = tenant(&env, "newcomer", None).await;
    let first = upload(&newcomer, &env, 500).await;
    let first = infq::wait_batch(&newcomer, &env.base, &first).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_uploading_at_once_each_start_before_any_of_them_finishes() {
    let mut env = TestEnv::start_with(infq::test_settings(), false)
        .await
        .unwrap();
    let mut batches = Vec::new();
    for name in ["north", "south", "west"] {
        let http = tenant(&env, name, None).await;
        let id = upload(&http, &env, 30_000).await;
        batches.push((name, http, id));
    }
    env.start_worker().await;
    let mut ended = Vec::new();
    for (name, http, id) in &batches {
        let v = infq::wait_batch(http, &env.base, id).await;
        assert_eq!(v["status"], "succeeded", "{name}: {v}");
        ended.push((name, at(&v, "started_at"), at(&v, "finished_at")));
    }
    // No tenant's rows waited behind all of another's: each batch had
    // started before any other had finished.
    for (a, a_started, _) in &ended {
        for (b, _, b_finished) in &ended {
            if a != b {
                assert!(
                    a_started < b_finished,
                    "{a} started only after {b} had finished: {ended:?}"
                );
            }
        }
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_jobs_during_a_batch_narrow_its_share_and_every_row_and_job_ends() {
    // A worker whose shares take one chunk at a time (the fewest rows,
    // floored at one model batch) while single jobs arrive
    // (worker/src/share_prefetch.rs), started with a whole batch queued
    // and no single job yet: its share is consumed with the full
    // prefetch, then, once single jobs come, by a narrower consumer in
    // place of the first, mid-batch. No delivery of either is lost.
    let mut settings = infq::test_settings();
    settings.worker.share_rows_with_jobs = 1;
    let mut env = TestEnv::start_with(settings, false).await.unwrap();
    let acme = tenant(&env, "acme", None).await;
    let rows = 200_000;
    let batch = upload(&acme, &env, rows).await;
    env.start_worker().await;
    let stats = env.worker.as_ref().unwrap().stats.clone();
    // The shares known at the session's start are consumed before it
    // counts as connected.
    while !stats.broker_connected.load(Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let job = serde_json::json!({"model": "credit-default", "inputs": [0, 1500, 40000]});
    let mut jobs = Vec::new();
    let url = env.url(&format!("/v1/batches/{batch}"));
    loop {
        jobs.push(infq::submit_job(&acme, &env.base, &job).await);
        let v = infq::get_json(&acme, &url).await;
        if v["status"] != "queued" && v["status"] != "running" {
            break;
        }
        assert!(jobs.len() < 100_000, "the batch did not end: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let v = infq::wait_batch(&acme, &env.base, &batch).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let csv = infq::batch_results(&acme, &env.base, &batch, "csv").await;
    assert_eq!(csv.lines().count(), rows + 1, "a header and every row");
    for id in &jobs {
        let j = infq::wait_job(&acme, &env.base, id).await;
        assert_eq!(j["status"], "succeeded", "{j}");
    }
    let changes = stats.share_prefetch_changes.load(Ordering::Relaxed);
    assert!(
        changes > 0,
        "the share's prefetch never changed while {} single jobs came",
        jobs.len()
    );
    env.stop().await.unwrap();
}

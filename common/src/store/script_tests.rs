//! The store's scripts against a real Redis (127.0.0.1:6379, or
//! `INFQ_TEST_REDIS_URL`; or a Redis Cluster with `REDIS_CLUSTER_TEST_NODES`,
//! a JSON list of its nodes, as `scripts/test` runs them a second time),
//! each test in a namespace of its own: how each script is handed the keys
//! it touches, the quota keys above all.

use super::quota::{self, QuotaCheck};
use super::*;
use crate::config::{Limits, RedisConfig};
use crate::job::{new_job_id, now_ms, JobId, JobStatus, Priority};
use crate::keys::{Keys, Subject};
use crate::message::JobMessage;

fn store() -> JobStore {
    let cfg = RedisConfig {
        url: std::env::var("INFQ_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        timeout_ms: 5_000,
        result_ttl_secs: 3_600,
        ..RedisConfig::default()
    };
    let cfg = match std::env::var("REDIS_CLUSTER_TEST_NODES") {
        Ok(nodes) => RedisConfig {
            mode: crate::config::RedisMode::Cluster,
            nodes: serde_json::from_str(&nodes).expect("REDIS_CLUSTER_TEST_NODES: a JSON list"),
            ..cfg
        },
        Err(_) => cfg,
    };
    JobStore::new(&cfg, &format!("infq-test-store-{}", new_job_id())).unwrap()
}

/// A second store on the same namespace: a process that has seen nothing.
fn fresh(s: &JobStore) -> JobStore {
    let mut other = s.clone();
    other.tenants = moka::sync::Cache::new(16);
    other
}

async fn cleanup(s: &JobStore) {
    let mut c = s.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(s.keys().everything())
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

fn limits() -> Limits {
    Limits {
        rate_per_sec: 1_000.0,
        burst: 1_000,
        max_queued: 100,
        retention_secs: 3_600,
    }
}

fn message(id: JobId, tenant: &str, deadline_at_ms: Option<u64>) -> JobMessage {
    JobMessage {
        work: crate::message::Work::Job { id },
        model: "m".into(),
        version: "1".into(),
        priority: Priority::Interactive,
        inputs: vec![0.5],
        created_at_ms: now_ms(),
        deadline_at_ms,
        retries: 0,
        webhook_url: None,
        tenant: Some(tenant.into()),
        retention_ms: None,
        passthrough: Vec::new(),
    }
}

/// Records job `msg` for `tenant` as its quota admits it.
async fn admitted(s: &JobStore, msg: &JobMessage, tenant: &str) {
    let (job, check) = new_job(s, msg, tenant);
    assert_eq!(
        s.create_admitted(&job, &check).await.unwrap(),
        Admission::Admitted
    );
}

/// The record and quota check of job `msg` for `tenant`.
fn new_job(s: &JobStore, msg: &JobMessage, tenant: &str) -> (NewJob, QuotaCheck) {
    let check = QuotaCheck::new(s.keys(), tenant, &limits(), &msg.record(), 1, false);
    let job = NewJob {
        id: msg.record(),
        model: msg.model.clone(),
        version: msg.version.clone(),
        priority: msg.priority,
        created_at_ms: msg.created_at_ms,
        metadata: None,
        webhook_url: None,
        tenant: Some(tenant.into()),
        retention_ms: None,
        digest: msg.digest(),
        explain: false,
    };
    (job, check)
}

#[tokio::test]
async fn a_job_recorded_twice_is_refused_and_counted_once() {
    let s = store();
    let msg = message(new_job_id(), "acme", None);
    admitted(&s, &msg, "acme").await;
    let (job, check) = new_job(&s, &msg, "acme");
    assert!(s.create_admitted(&job, &check).await.is_err());
    assert_eq!(
        open(&s, "acme").await,
        1,
        "the second attempt holds nothing"
    );
    cleanup(&s).await;
}

async fn open(s: &JobStore, tenant: &str) -> u64 {
    quota::queued(&s.connection(), s.keys(), tenant)
        .await
        .unwrap()
}

#[tokio::test]
async fn ends_give_quota_back_whoever_learnt_the_tenant() {
    let s = store();
    // Claimed and written by one worker: the claim told it the tenant.
    let a = message(new_job_id(), "acme", None);
    admitted(&s, &a, "acme").await;
    let w = fresh(&s);
    assert!(matches!(
        w.claim_many(&[ClaimOf::Job(&a)]).await.unwrap()[..],
        [Claim::Run { attempt: 1, .. }]
    ));
    // Written by a process that never saw it: it looks the tenant up.
    let b = message(new_job_id(), "acme", None);
    admitted(&s, &b, "acme").await;
    assert_eq!(open(&s, "acme").await, 2);
    let done = Transition::succeeded("{}".into());
    assert_eq!(
        w.transition(&a.record(), &done).await.unwrap(),
        Applied::Yes
    );
    assert_eq!(open(&s, "acme").await, 1);
    let other = fresh(&s);
    assert_eq!(
        other.transition(&b.record(), &done).await.unwrap(),
        Applied::Yes
    );
    assert_eq!(open(&s, "acme").await, 0);
    // A cancel by yet another process, too.
    let c = message(new_job_id(), "acme", None);
    admitted(&s, &c, "acme").await;
    assert_eq!(
        fresh(&s)
            .cancel(Subject::Job(c.record()), &[JobStatus::Queued])
            .await
            .unwrap(),
        Cancelled::Yes
    );
    assert_eq!(open(&s, "acme").await, 0);
    cleanup(&s).await;
}

#[tokio::test]
async fn a_claim_that_expires_a_job_of_an_unknown_tenant_gives_its_quota_back() {
    let s = store();
    let msg = message(new_job_id(), "acme", Some(now_ms() - 1));
    admitted(&s, &msg, "acme").await;
    assert_eq!(open(&s, "acme").await, 1);
    let w = fresh(&s);
    assert_eq!(
        w.claim_many(&[ClaimOf::Job(&msg)]).await.unwrap(),
        vec![Claim::Expired { webhook: false }]
    );
    assert_eq!(open(&s, "acme").await, 0, "its quota is given back");
    assert_eq!(
        s.get(&msg.record()).await.unwrap().unwrap().status,
        JobStatus::Expired
    );
    cleanup(&s).await;
}

#[tokio::test]
async fn erasure_deletes_every_key_it_is_given_and_nothing_else() {
    let s = store();
    let k: Keys = s.keys().clone();
    let msg = message(new_job_id(), "acme", None);
    admitted(&s, &msg, "acme").await;
    let id = msg.record();
    let mut c = s.connection();
    // Two reopenings: three event records; and a delivery log.
    let _: () = redis::pipe()
        .hset(k.job(&id), "reopened", 2)
        .ignore()
        .hset(k.webhook(&id, 0), "state", "delivered")
        .ignore()
        .hset(k.webhook(&id, 1), "state", "delivered")
        .ignore()
        .hset(k.webhook(&id, 2), "state", "pending")
        .ignore()
        .rpush(k.deliveries(&id), "{}")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(fresh(&s).erase(Subject::Job(id)).await.unwrap());
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(k.everything())
        .query_async(&mut c)
        .await
        .unwrap();
    let quota = k.quota("acme");
    assert!(
        left.iter()
            .all(|key| key == &k.job(&id) || quota.contains(key)),
        "{left:?}"
    );
    let rec = s.get(&id).await.unwrap().unwrap();
    assert!(rec.erased);
    assert_eq!(rec.tenant.as_deref(), Some("acme"));
    assert_eq!(open(&s, "acme").await, 0);
    assert!(!s.erase(Subject::Job(new_job_id())).await.unwrap());
    cleanup(&s).await;
}

#[tokio::test]
async fn chunk_results_of_the_earlier_layout_are_read_and_erased() {
    let s = store();
    let k = s.keys().clone();
    let b = NewBatch {
        id: new_job_id(),
        model: "m".into(),
        version: "1".into(),
        total: 4,
        chunks: 2,
        chunk_rows: 2,
        created_at_ms: now_ms(),
        webhook_url: None,
        progress_ms: None,
        tenant: None,
        retention_ms: None,
        outputs: vec!["p".into()],
        explain: None,
        passthrough: Vec::new(),
        lineage: Default::default(),
    };
    assert!(s.create_batch(&b).await.unwrap());
    let mut c = s.connection();
    // Chunk 0 as an earlier release stored it, chunk 1 as this one does.
    let _: () = redis::cmd("SET")
        .arg(k.legacy_chunk(&b.id, 0))
        .arg("[[0.1],[0.2]]")
        .query_async(&mut c)
        .await
        .unwrap();
    let r = ChunkResult {
        batch: b.id,
        index: 1,
        rows_json: "[[0.3],[0.4]]".into(),
        succeeded: 2,
        failed: 0,
    };
    assert_eq!(
        s.write_many(&[Write::Chunk(&r)]).await.unwrap(),
        vec![Applied::Yes]
    );
    assert_eq!(
        s.get_chunks(&b.id, 0, 3).await.unwrap(),
        vec![
            Some("[[0.1],[0.2]]".to_string()),
            Some("[[0.3],[0.4]]".to_string()),
            None
        ]
    );
    assert!(s.erase(Subject::Batch(b.id)).await.unwrap());
    assert_eq!(s.get_chunks(&b.id, 0, 2).await.unwrap(), vec![None, None]);
    cleanup(&s).await;
}

#[tokio::test]
async fn progress_events_come_due_at_most_once_per_interval() {
    let s = store();
    let b = NewBatch {
        id: new_job_id(),
        model: "m".into(),
        version: "1".into(),
        total: 6,
        chunks: 6,
        chunk_rows: 1,
        created_at_ms: now_ms(),
        webhook_url: Some("https://hooks.example.com/p".into()),
        progress_ms: Some(1_000),
        tenant: None,
        retention_ms: None,
        outputs: vec!["p".into()],
        explain: None,
        passthrough: Vec::new(),
        lineage: Default::default(),
    };
    assert!(s.create_batch(&b).await.unwrap());
    let chunk = |index: u32| ChunkResult {
        batch: b.id,
        index,
        rows_json: "[[0.5]]".into(),
        succeeded: 1,
        failed: 0,
    };
    let store_at = |index: u32, now: u64| {
        let s = s.clone();
        let c = chunk(index);
        async move {
            let v = s.run_one(&s.store_chunk(&c, now, &None)).await.unwrap();
            super::outcome::applied_of(&v).unwrap()
        }
    };
    // Queued (never claimed): no progress, whatever the time.
    assert_eq!(store_at(0, 50_000).await, Applied::Yes);
    let mut c = s.connection();
    let _: () = redis::cmd("HSET")
        .arg(s.keys().batch(&b.id))
        .arg("status")
        .arg("running")
        .arg("started_at")
        .arg(100_000)
        .query_async(&mut c)
        .await
        .unwrap();
    // Within the first interval after it started: none due.
    assert_eq!(store_at(1, 100_999).await, Applied::Yes);
    assert_eq!(store_at(2, 101_000).await, Applied::Progress(1));
    // A stored chunk stored again is a duplicate, never an event.
    assert_eq!(store_at(2, 200_000).await, Applied::Ignored);
    assert_eq!(store_at(3, 101_500).await, Applied::Yes);
    assert_eq!(store_at(4, 102_000).await, Applied::Progress(2));
    let rec = s.get_batch(&b.id).await.unwrap().unwrap();
    assert_eq!((rec.progress_ms, rec.progress_seq), (Some(1_000), 2));
    // The chunk that completes the batch announces its completion only.
    assert_eq!(store_at(5, 900_000).await, Applied::Completed);
    assert_eq!(s.get_batch(&b.id).await.unwrap().unwrap().progress_seq, 2);
    cleanup(&s).await;
}

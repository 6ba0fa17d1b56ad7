//! Publishing as anyone with access to the broker could, and a store with
//! no producer or worker around it.

use infq::{test_settings, TestEnv};
use infq_common::job::{new_job_id, Priority};
use infq_common::store::{ChunkResult, JobStore, NewBatch};
use infq_common::topology::Topology;

/// Publishes `body` to the jobs exchange under `model`'s key for `lane`,
/// as anyone with access to the broker could, and waits for the confirm.
pub(crate) async fn publish_raw(env: &TestEnv, model: &str, lane: Priority, id: &str, body: &[u8]) {
    let exchange = env.topology().jobs_exchange();
    let key = Topology::routing_key(model, lane);
    env.publish(&exchange, &key, body, Some(id)).await;
}

/// A record of a store with no producer or worker around it.
pub(crate) fn store() -> (JobStore, infq_common::config::Settings) {
    let settings = test_settings();
    (
        JobStore::new(&settings.redis, &settings.namespace).unwrap(),
        settings,
    )
}

pub(crate) async fn pttl(store: &JobStore, key: &str) -> i64 {
    let mut c = store.connection();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

pub(crate) fn new_batch(total: u64, chunk_rows: u32, retention_ms: u64) -> NewBatch {
    NewBatch {
        id: new_job_id(),
        model: "credit-default".into(),
        version: "1".into(),
        total,
        chunks: total.div_ceil(u64::from(chunk_rows)) as u32,
        chunk_rows,
        created_at_ms: infq_common::job::now_ms(),
        webhook_url: None,
        progress_ms: None,
        tenant: None,
        retention_ms: Some(retention_ms),
        outputs: vec!["p".into()],
        explain: None,
        passthrough: Vec::new(),
        lineage: Default::default(),
    }
}

pub(crate) fn chunk(batch: &NewBatch, index: u32, rows: u32) -> ChunkResult {
    ChunkResult {
        batch: batch.id,
        index,
        rows_json: format!("[{}]", vec!["[0.5]"; rows as usize].join(",")),
        succeeded: rows,
        failed: 0,
    }
}

use super::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Explained rows of the recurrent model run at about a thousand a second
/// here: a batch of this many runs for seconds, long enough for several
/// progress events one second apart.
const ROWS: usize = 6000;

async fn upload(env: &TestEnv, query: &[(&str, &str)], body: String) -> reqwest::Response {
    env.http
        .post(env.url("/v1/batches"))
        .query(query)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_batch_sends_signed_progress_events_at_most_one_per_interval() {
    let rx = Receiver::start().await;
    let mut s = settings();
    s.producer.chunk_rows = 200;
    // No worker yet: the refusals below must enqueue nothing.
    let mut env = TestEnv::start_with(s, false).await.unwrap();
    let body: String = infq::txn_rows(ROWS, 41)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let url = rx.url("batch");

    // Hostile parameters are refused before the file is read.
    for (query, status) in [
        (vec![("progress_interval_secs", "0")], 422),
        (vec![("progress_interval_secs", "86401")], 422),
        (
            vec![("progress_interval_secs", "18446744073709551615")],
            422,
        ),
        (vec![("progress_interval_secs", "-1")], 400),
        (vec![("progress_interval_secs", "1e3")], 400),
        (vec![("progress", "sometimes")], 400),
    ] {
        let mut q = vec![("model", "txn-risk"), ("webhook_url", url.as_str())];
        q.extend(query.iter().copied());
        let r = upload(&env, &q, body.clone()).await;
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(code, status, "{query:?}: {text}");
        if status == 422 {
            assert!(text.contains("progress_interval_secs"), "{text}");
            assert!(text.contains("1 to 86400 seconds"), "{text}");
        }
    }
    for query in [
        vec![("progress", "true")],
        vec![("progress_interval_secs", "5")],
    ] {
        let mut q = vec![("model", "txn-risk")];
        q.extend(query.iter().copied());
        let r = upload(&env, &q, body.clone()).await;
        assert_eq!(r.status(), 422, "{query:?}");
        let text = r.text().await.unwrap();
        assert!(text.contains("webhook_url"), "{text}");
    }
    assert_eq!(env.bulk_queued("txn-risk").await, 0, "nothing enqueued");

    let r = upload(
        &env,
        &[
            ("model", "txn-risk"),
            ("explain", "true"),
            ("webhook_url", url.as_str()),
            ("progress_interval_secs", "1"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["progress_interval_secs"], 1, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    let chunks = accepted["chunks"].as_u64().unwrap();
    assert!(chunks >= 20, "{accepted}");

    let started = Instant::now();
    env.start_worker().await;
    let completed = loop {
        let hits = rx.hits("batch");
        if let Some(h) = hits.iter().find(|h| {
            serde_json::from_slice::<Value>(&h.body).unwrap()["type"] == "batch.completed"
        }) {
            break h.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the batch never completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ran = completed.at - started;
    // A progress event being sent as the batch ends may still arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let progress: Vec<(Hit, Value)> = rx
        .hits("batch")
        .into_iter()
        .map(|h| {
            let v: Value = serde_json::from_slice(&h.body).unwrap();
            (h, v)
        })
        .filter(|(_, v)| v["type"] == "batch.progress")
        .collect();
    eprintln!(
        "{} progress events in a run of {ran:?}: sequences {:?}",
        progress.len(),
        progress
            .iter()
            .map(|(_, v)| v["data"]["sequence"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    assert!(
        !progress.is_empty(),
        "a run of {ran:?} sent no progress event"
    );
    // At most one per second of the run, and one more for the first
    // interval's boundary.
    assert!(
        progress.len() as u64 <= ran.as_secs() + 1,
        "{} progress events in {ran:?}",
        progress.len()
    );
    let simple = uuid::Uuid::parse_str(&id).unwrap().simple().to_string();
    let mut last_seq = 0;
    let mut last_done = 0;
    for (hit, event) in &progress {
        verify(SECRET_A, &hit.headers, &hit.body, unix_now()).unwrap();
        let data = &event["data"];
        let seq = data["sequence"].as_u64().unwrap();
        assert!(seq > last_seq, "sequences rise: {seq} after {last_seq}");
        last_seq = seq;
        assert_eq!(
            hit.headers["webhook-id"].to_str().unwrap(),
            format!("msg_{simple}_p{seq}"),
            "each progress event has an id of its own"
        );
        assert_eq!(data["id"], id.as_str());
        assert_eq!(data["status"], "running");
        assert_eq!(data["total"], ROWS);
        let done = data["succeeded"].as_u64().unwrap() + data["failed"].as_u64().unwrap();
        assert!(done >= last_done && done < ROWS as u64, "{data}");
        last_done = done;
        assert!(data["chunks_done"].as_u64().unwrap() < chunks, "{data}");
        assert!(data["rows_per_second"].as_f64().unwrap() > 0.0, "{data}");
        assert!(data["eta_seconds"].as_f64().unwrap() > 0.0, "{data}");
    }
    verify(SECRET_A, &completed.headers, &completed.body, unix_now()).unwrap();
    let done: Value = serde_json::from_slice(&completed.body).unwrap();
    assert_eq!(done["data"]["succeeded"], ROWS);
    // Only `batch.completed` is a delivery with a log and retries.
    let d = deliveries_until(&env, &format!("/v1/batches/{id}/deliveries"), "delivered").await;
    assert_eq!(d["events"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["events"][0]["type"], "batch.completed", "{d}");

    // Messages naming progress the record does not back: one beyond the
    // record's count and one of a job are dead-lettered; an old one of
    // the batch, now ended, is dropped. Nothing is sent for any.
    let batch = uuid::Uuid::parse_str(&id).unwrap();
    let hooks = env.topology().webhooks_exchange();
    let before = rx.hits("batch").len();
    publish_event(&env, &EventMessage::progress(batch, last_seq as u32 + 50)).await;
    publish_event(&env, &EventMessage::progress(batch, 1)).await;
    let of_a_job = json!({
        "kind": "job", "subject": batch, "chain": uuid::Uuid::new_v4(), "progress": 1,
    });
    env.publish(&hooks, "", of_a_job.to_string().as_bytes(), None)
        .await;
    env.wait_dead(2).await;
    let mut reasons: Vec<String> = env
        .dead_letters()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(
        reasons.iter().any(|r| r.contains("only a batch has them")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("beyond its record's")),
        "{reasons:#?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("batch").len(), before, "nothing more was sent");
    env.stop().await.unwrap();
}

//! The limits that keep one bulk upload from costing the producer or the
//! worker more than its share, against the real RabbitMQ and Redis: a
//! record's size whatever its quoting (the producer's memory stays flat),
//! the disk of spool files across concurrent uploads, and chunks that fit
//! in a message whatever the model's width.

use infq::procs::Service;
use infq::{delete_namespace_named, test_settings, TestEnv};
use infq_common::tenants::DEV_API_KEY;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The head of a `POST` of `length` bytes of CSV to `path`, sent raw.
fn post_head(addr: &str, path: &str, length: u64) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {DEV_API_KEY}\r\n\
         Content-Type: text/csv\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Sends `prefix`, then `unit` again and again up to `total` body bytes,
/// over a raw connection, while reading the answer; stops writing once
/// the answer is in or the server closes. Returns the answer as read and
/// the body bytes written.
async fn stream_upload(
    addr: &str,
    path: &str,
    prefix: &[u8],
    unit: &[u8],
    total: u64,
) -> (String, u64) {
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        // What was read before an error (a reset) is kept.
        let _ = rd.read_to_end(&mut answer).await;
        answer
    });
    wr.write_all(post_head(addr, path, total).as_bytes())
        .await
        .unwrap();
    wr.write_all(prefix).await.unwrap();
    let mut written = prefix.len() as u64;
    let block: Vec<u8> = unit.iter().copied().cycle().take(64 * unit.len()).collect();
    while written < total && !reader.is_finished() {
        let n = block.len().min((total - written) as usize);
        if wr.write_all(&block[..n]).await.is_err() {
            break;
        }
        written += n as u64;
    }
    drop(wr);
    let answer = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("an answer")
        .unwrap();
    (String::from_utf8_lossy(&answer).into_owned(), written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_quoted_field_is_refused_early_and_the_producer_stays_small() {
    let ns = format!("limits{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("INFQ_NAMESPACE", ns.clone()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "60000".to_string()),
        ("INFQ_LOG__FILTER", "warn".to_string()),
    ];
    let http = infq::http_builder().build().unwrap();
    let mut producer = Service::spawn("debug", "infq-producer", &env).unwrap();
    producer.wait_ready(&http).await.unwrap();
    // One quoted field, in lines of 1 KiB: under the old line limit, and
    // the whole upload is one record.
    let prefix = b"student,balance,income\n0,1,2\n0,\"";
    let unit = [vec![b'x'; 1023], vec![b'\n']].concat();
    // A first upload of 4 MiB brings the producer to its working size
    // (threads, buffers, a record at the limit).
    let path = "/v1/batches?model=credit-default";
    let (answer, _) = stream_upload(&producer.addr, path, prefix, &unit, 4 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (_, before) = producer.rss().expect("the producer's memory");

    // Then 96 MiB.
    const TOTAL: u64 = 96 << 20;
    let (answer, written) = stream_upload(&producer.addr, path, prefix, &unit, TOTAL).await;
    let (_, peak) = producer.rss().expect("the producer's memory");
    println!(
        "wrote {} MiB of {}; peak RSS {} MiB, {} MiB more than before",
        written >> 20,
        TOTAL >> 20,
        peak >> 20,
        (peak - before) >> 20
    );
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(600)]
    );
    assert!(answer.contains("limit_exceeded"), "{answer}");
    assert!(
        answer.contains("line 3: a record is longer than 1048576 bytes"),
        "{answer}"
    );
    assert!(
        written < TOTAL / 2,
        "the producer read on: {written} bytes were taken"
    );
    assert!(
        peak - before < 32 << 20,
        "peak RSS grew by {} MiB",
        (peak - before) >> 20
    );
    drop(producer);
    delete_namespace_named(&ns).await;
}

/// A CSV of `n` rows of credit-default: 12 bytes of spool each.
fn rows(n: usize) -> String {
    let mut s = String::from("student,balance,income\n");
    for _ in 0..n {
        s.push_str("0,1,2\n");
    }
    s
}

async fn upload(env: &TestEnv, body: String) -> reqwest::Response {
    infq::upload_batch(
        &env.http,
        &env.base,
        "model=credit-default",
        Some("text/csv"),
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_space_is_shared_by_uploads_in_flight_and_given_back() {
    let mut settings = test_settings();
    settings.producer.spool_budget_bytes = 1 << 20;
    settings.producer.tenant_spool_bytes = 1 << 20;
    let env = TestEnv::start_with(settings, false).await.unwrap();

    // One upload whose rows alone need more than the budget: 413.
    let r = upload(&env, rows(100_000)).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("producer.tenant_spool_bytes"),
        "{v}"
    );

    // Upload A spools 720 KB and stays in flight.
    let addr = env.base.trim_start_matches("http://").to_string();
    let mut a = TcpStream::connect(&addr).await.unwrap();
    let path = "/v1/batches?model=credit-default";
    a.write_all(post_head(&addr, path, 10 << 20).as_bytes())
        .await
        .unwrap();
    a.write_all(rows(60_000).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // B would fit alone, but A holds the space: 429, for now.
    let r = upload(&env, rows(60_000)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_requests", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spool space is taken by other uploads"),
        "{v}"
    );

    // A's client goes away: its share comes back, and B passes.
    drop(a);
    let mut status = 0;
    for _ in 0..50 {
        status = upload(&env, rows(60_000)).await.status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 202, "the space of an upload whose client left");
    // And a finished upload gave back its share too.
    assert_eq!(upload(&env, rows(60_000)).await.status(), 202);
    env.stop().await.unwrap();
}

/// Writes a TorchScript module that maps `[N, width]` to the mean of
/// each row, `[N, 1]`.
fn mean_model(path: &std::path::Path, width: i64) {
    let probe = tch::Tensor::zeros([2, width], (tch::Kind::Float, tch::Device::Cpu));
    let module = tch::CModule::create_by_tracing("Mean", "forward", &[probe], &mut |xs| {
        vec![xs[0].mean_dim([1i64].as_slice(), true, tch::Kind::Float)]
    })
    .unwrap();
    module.save(path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_models_batch_is_chunked_to_fit_messages_and_completes() {
    const WIDTH: usize = 8192;
    const ROWS: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    mean_model(&dir.path().join("wide.pt"), WIDTH as i64);
    let registry = dir.path().join("models.toml");
    std::fs::write(
        &registry,
        format!(
            "[[model]]\nname = \"wide\"\nversion = \"1\"\npath = \"wide.pt\"\n\
             inputs = [{{ name = \"x\", shape = [{WIDTH}] }}]\n\
             outputs = [{{ name = \"mean\" }}]\n"
        ),
    )
    .unwrap();
    let mut settings = test_settings();
    settings.models_file = registry;
    let env = TestEnv::start_with(settings.clone(), true).await.unwrap();

    // Values of 9 or 10 characters: 256 rows (the configured chunk_rows)
    // would make a message of about 20 MB, and even these 120 rows one of
    // about 10 MB.
    let mut body = String::new();
    let mut means = Vec::new();
    for i in 0..ROWS {
        let row: Vec<f32> = (0..WIDTH)
            .map(|j| (((i * WIDTH + j) as f64 * 0.618_033_988_7).fract() as f32) * 0.999)
            .collect();
        means.push(row.iter().map(|&v| f64::from(v)).sum::<f64>() / WIDTH as f64);
        body.push_str(&serde_json::to_string(&row).unwrap());
        body.push('\n');
    }
    let r = env
        .http
        .post(env.url("/v1/batches?model=wide&format=jsonl"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let accepted: Value = r.json().await.unwrap();
    let per_chunk = infq_common::registry::rows_per_message(WIDTH).min(256);
    assert!(per_chunk < ROWS);
    assert_eq!(accepted["chunks"], ROWS.div_ceil(per_chunk), "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();

    let done: Value =
        infq::get_json(&env.http, &env.url(&format!("/v1/batches/{id}?wait=50"))).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["succeeded"], ROWS, "{done}");
    let text = infq::batch_results(&env.http, &env.base, &id, "jsonl").await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ROWS);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["row"], i + 1);
        let got = line["output"]["mean"].as_f64().unwrap_or(f64::NAN);
        assert!((got - means[i]).abs() < 1e-4, "row {}: {line}", i + 1);
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_before_it_is_read_still_gets_its_reason() {
    // Refused on its query (an unknown model, a forbidden callback), an
    // upload of a few MB is read and dropped, so a client that sends the
    // whole body before reading (reqwest, curl, the CLI) gets the refusal
    // rather than a broken pipe.
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let body = rows(1_000_000); // 6 MB
    for (query, status, reason) in [
        ("model=no-such-model", 422, "no-such-model"),
        (
            "model=credit-default&webhook_url=http://10.0.0.1/hook",
            422,
            "webhook_url",
        ),
    ] {
        for _ in 0..5 {
            let r = env
                .http
                .post(env.url(&format!("/v1/batches?{query}")))
                .header("content-type", "text/csv")
                .body(body.clone())
                .send()
                .await
                .expect("an answer, not a broken pipe");
            assert_eq!(r.status(), status, "{query}");
            assert!(r.text().await.unwrap().contains(reason), "{query}");
        }
    }
    env.stop().await.unwrap();
}

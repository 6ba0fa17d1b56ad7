//! End-to-end tests of bulk batches against the real RabbitMQ and Redis:
//! streamed upload, validation with line numbers, chunked publishing,
//! results in input order, cancellation, and the interactive lane's
//! priority over bulk work.

use infq::{load_default_csv, portfolio, reference_outputs, root, test_settings, TestEnv};
use infq_common::job::Priority;
use infq_common::topology::Topology;
use serde_json::{json, Value};
use std::time::Duration;

async fn upload(env: &TestEnv, query: &str, content_type: &str, body: String) -> reqwest::Response {
    infq::upload_batch(&env.http, &env.base, query, Some(content_type), body).await
}

async fn wait_batch(env: &TestEnv, id: &str) -> Value {
    infq::wait_batch(&env.http, &env.base, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_portfolio_matches_the_model_in_input_order() {
    let env = TestEnv::start().await.unwrap();
    let (rows, csv) = portfolio(100_000);
    let r = upload(&env, "model=credit-default", "text/csv", csv).await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["total"], 100_000);
    assert_eq!(accepted["chunks"], 391, "256 rows per chunk");
    let id = accepted["id"].as_str().unwrap().to_string();

    let done = wait_batch(&env, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["succeeded"], 100_000);
    assert_eq!(done["failed"], 0);
    assert!(done["rows_per_second"].as_f64().unwrap() > 0.0);

    let registry = env.settings.registry().unwrap();
    let expected = reference_outputs(&registry, &rows).unwrap();

    let text = infq::get_text(&env.http, &env.url(&format!("/v1/batches/{id}/results"))).await;
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        rdr.headers().unwrap(),
        vec![
            "row",
            "default_probability",
            "model",
            "version",
            "model_sha256",
            "error"
        ]
    );
    let mut count = 0usize;
    let mut worst = 0f64;
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        assert_eq!(rec[0].parse::<usize>().unwrap(), i + 1, "input order");
        assert_eq!(&rec[5], "", "row {} failed", i + 1);
        let got: f64 = rec[1].parse().unwrap();
        let diff = (got - f64::from(expected[i])).abs();
        worst = worst.max(diff);
        assert!(diff <= 1e-6, "row {}: {got} vs {}", i + 1, expected[i]);
        count += 1;
    }
    assert_eq!(count, 100_000, "row count exact");
    println!(
        "100000 rows, worst |diff| {worst:e}, {} rows/s",
        done["rows_per_second"]
    );

    // The same results as JSONL, chosen by Accept.
    let jsonl = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results")))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = jsonl.lines().collect();
    assert_eq!(lines.len(), 100_000);
    for i in [0usize, 255, 256, 99_999] {
        let v: Value = serde_json::from_str(lines[i]).unwrap();
        assert_eq!(v["row"], i + 1);
        let p = v["output"]["default_probability"].as_f64().unwrap();
        assert!((p - f64::from(expected[i])).abs() <= 1e-6);
    }
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_with_line_numbers_and_enqueue_nothing() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let (_, good) = portfolio(1000);
    // Lines 1 (header) .. 1001; break lines 5, 400 and 1001.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[4] = "loan-3,40000,0,lots".into();
    lines[399] = "loan-398,40000,7,100".into();
    lines[1000] = "loan-999,1e39,0,100".into();
    let bad = lines.join("\n") + "\n";
    let r = upload(&env, "model=credit-default", "text/csv", bad).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_file");
    let found: Vec<(u64, String)> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![5, 400, 1001],
        "{v}"
    );
    assert!(found[0].1.contains("`lots` is not a number"));
    assert!(
        found[1].1.contains("must be one of No (0), Yes (1)"),
        "{}",
        found[1].1
    );
    assert!(found[2].1.contains("finite"));

    let jsonl = "{\"student\":0,\"balance\":1,\"income\":2}\n[0,1]\nnot json\n";
    let r = upload(
        &env,
        "model=credit-default",
        "application/x-ndjson",
        jsonl.into(),
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    let lines: Vec<u64> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3]);

    let cases = [
        (
            "model=credit-default",
            "student,balance\n0,1\n",
            422,
            "invalid_file",
        ),
        ("model=credit-default", "", 422, "invalid_file"),
        (
            "model=credit-default",
            "student,balance,income\n",
            422,
            "invalid_file",
        ),
        (
            "model=nope",
            "student,balance,income\n0,1,2\n",
            422,
            "unknown_model",
        ),
        (
            "",
            "student,balance,income\n0,1,2\n",
            422,
            "invalid_request",
        ),
        (
            "model=credit-default&format=xml",
            "student,balance,income\n0,1,2\n",
            422,
            "invalid_request",
        ),
    ];
    for (query, body, status, code) in cases {
        let r = upload(&env, query, "text/csv", body.into()).await;
        assert_eq!(r.status().as_u16(), status, "{query} {body:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{query} {body:?}: {v}");
    }
    // Binary garbage.
    let r = env
        .http
        .post(env.url("/v1/batches?model=credit-default"))
        .body(vec![0xffu8, 0xfe, 0x00, 0x01, b'\n', 0x80])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    let topology = Topology::of(&env.settings);
    for lane in Priority::ALL {
        let depth = env
            .queue_depth(&topology.job_queue("credit-default", lane))
            .await
            .unwrap();
        assert_eq!(depth, 0, "nothing enqueued on {lane:?}");
    }
    assert!(
        env.records().await.is_empty(),
        "nothing recorded (the tenant's rate state aside)"
    );
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_413() {
    let mut settings = test_settings();
    settings.producer.max_upload_bytes = 10_000;
    let env = TestEnv::start_with(settings, false).await.unwrap();
    let (_, csv) = portfolio(2000);
    let r = upload(&env, "model=credit-default", "text/csv", csv).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    assert!(env.records().await.is_empty());
    env.stop().await.unwrap();
}

/// Redis keys of the test's namespace other than the tenants' quota state
/// (a refused upload still counts against the rate).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_does_not_run() {
    let settings = test_settings();
    // No worker yet: the chunks wait in the queue.
    let env = TestEnv::start_with(settings.clone(), false).await.unwrap();
    let (_, csv) = portfolio(1000);
    let r = upload(&env, "model=credit-default", "text/csv", csv).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bulk = env.dev_bulk_queue("credit-default");
    assert_eq!(
        env.queue_depth(&bulk).await.unwrap(),
        4,
        "1000 rows in 4 chunks"
    );

    let r = env
        .http
        .post(env.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let r = env
        .http
        .post(env.url(&format!("/v1/batches/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "already cancelled");

    // A worker now takes the chunks and acknowledges them without running.
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let worker = infq_worker::start(
        settings.clone(),
        settings.registry().unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        if env.queue_depth(&bulk).await.unwrap() == 0
            && worker
                .stats
                .jobs_skipped
                .load(std::sync::atomic::Ordering::Relaxed)
                == 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        worker
            .stats
            .jobs_skipped
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(
        worker.stats.rows.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing ran"
    );
    let text = infq::get_text(&env.http, &env.url(&format!("/v1/batches/{id}/results"))).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[1], "1,,credit-default,1,,not run: batch cancelled");
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_jobs_overtake_a_running_bulk_batch() {
    let settings = test_settings();
    let env = TestEnv::start_with(settings.clone(), false).await.unwrap();
    let (_, csv) = portfolio(50_000);
    let r = upload(&env, "model=credit-default", "text/csv", csv).await;
    assert_eq!(r.status(), 202);
    let batch = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut jobs = Vec::new();
    for i in 0..20 {
        let r = env
            .http
            .post(env.url("/v1/jobs"))
            .json(&json!({"model": "credit-default", "inputs": [0, 1000.0 + i as f64, 30000.0]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        jobs.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Both lanes are full when the worker starts.
    let shutdown = infq_common::shutdown::CancellationToken::new();
    let worker = infq_worker::start(
        settings.clone(),
        settings.registry().unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let done = wait_batch(&env, &batch).await;
    assert_eq!(done["status"], "succeeded");
    let batch_finished = done["finished_at"].as_str().unwrap().to_string();
    for id in &jobs {
        let v: Value = infq::get_json(&env.http, &env.url(&format!("/v1/jobs/{id}?wait=10"))).await;
        assert_eq!(v["status"], "succeeded");
        let finished = v["finished_at"].as_str().unwrap();
        assert!(
            finished < batch_finished.as_str(),
            "job finished {finished}, after the batch ({batch_finished})"
        );
    }
    shutdown.cancel();
    worker.join().await.unwrap();
    env.stop().await.unwrap();
}

/// The files risk teams have: `Default.csv` exactly as the `islp` package
/// ships it (`student` is `Yes`/`No`, and a `default` column the model does
/// not take), the same rows as a European spreadsheet exports them (`;`
/// between fields, decimal commas), and a job naming its category.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_csv_as_shipped_and_a_semicolon_export_are_scored() {
    let env = TestEnv::start().await.unwrap();
    let path = root().join("data/Default.csv");
    let shipped = std::fs::read_to_string(&path).unwrap();
    assert!(shipped.starts_with("default,student,balance,income\nNo,No,"));
    let borrowers = load_default_csv(&path).unwrap();
    let rows: Vec<[f32; 3]> = borrowers.iter().map(|b| b.features()).collect();
    let expected = reference_outputs(&env.settings.registry().unwrap(), &rows).unwrap();

    let european: String = shipped
        .lines()
        .take(2001)
        .map(|l| l.replace(',', ";").replace('.', ","))
        .collect::<Vec<_>>()
        .join("\r\n");
    for (body, n) in [(shipped.clone(), rows.len()), (european, 2000)] {
        let r = upload(&env, "model=credit-default", "text/csv", body).await;
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = wait_batch(&env, &id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["succeeded"], n);
        let text = infq::get_text(&env.http, &env.url(&format!("/v1/batches/{id}/results"))).await;
        let mut rdr = csv::Reader::from_reader(text.as_bytes());
        let mut count = 0;
        for (i, rec) in rdr.records().enumerate() {
            let got: f32 = rec.unwrap()[1].parse().unwrap();
            assert!((got - expected[i]).abs() <= 1e-6, "row {}", i + 1);
            count += 1;
        }
        assert_eq!(count, n);
    }

    // A single job may name the category; another name is refused with
    // the allowed ones.
    let job = |student: Value| json!({"model": "credit-default", "inputs": {"student": student, "balance": 1500.0, "income": 20000.0}});
    let mut outputs = Vec::new();
    for student in [json!("Yes"), json!(1)] {
        let id = infq::submit_job(&env.http, &env.url(""), &job(student)).await;
        let v = infq::wait_job(&env.http, &env.url(""), &id).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        outputs.push(v["output"]["default_probability"].as_f64().unwrap());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "a name and its code are the same input"
    );
    let r = env
        .http
        .post(env.url("/v1/jobs"))
        .json(&job(json!("Maybe")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["details"][0]["field"], "inputs.student", "{v}");
    assert_eq!(
        v["error"]["details"][0]["message"], "`Maybe` is not one of No (0), Yes (1)",
        "{v}"
    );
    // The categories are shown with the model.
    let m: Value = infq::get_json(&env.http, &env.url("/v1/models/credit-default@1")).await;
    assert_eq!(
        m["inputs"][0]["categories"],
        json!({"No": 0.0, "Yes": 1.0}),
        "{m}"
    );
    // A delimiter that is not offered is refused before the body is read.
    let r = upload(
        &env,
        "model=credit-default&delimiter=%3A",
        "text/csv",
        shipped,
    )
    .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["details"][0]["field"], "delimiter", "{v}");
    env.stop().await.unwrap();
}

/// The client's own ids: columns named by `passthrough` come back next to
/// `row` in CSV and JSONL, repeated ids included; JSONL lines carry them
/// beside their features; an unknown or reserved column, or an overlong
/// value, is refused with what is wrong and enqueues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_columns_come_back_next_to_their_rows() {
    let env = TestEnv::start().await.unwrap();
    let (rows, _) = portfolio(600);
    let mut csv = String::from("branch,student,balance,income,loan_id\n");
    for (i, r) in rows.iter().enumerate() {
        // Every id twice (rows 2k and 2k+1), and a branch with a comma.
        csv.push_str(&format!(
            "\"North, {}\",{},{},{},L-{}\n",
            i % 3,
            r[0],
            r[1],
            r[2],
            i / 2
        ));
    }
    let r = upload(
        &env,
        "model=credit-default&passthrough=loan_id,branch",
        "text/csv",
        csv.clone(),
    )
    .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(
        accepted["passthrough"],
        json!(["loan_id", "branch"]),
        "{accepted}"
    );
    let id = accepted["id"].as_str().unwrap().to_string();
    let done = wait_batch(&env, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let expected = reference_outputs(&env.settings.registry().unwrap(), &rows).unwrap();
    let table = infq::batch_results(&env.http, &env.base, &id, "csv").await;
    let mut rdr = csv::Reader::from_reader(table.as_bytes());
    assert_eq!(
        rdr.headers().unwrap(),
        vec![
            "row",
            "loan_id",
            "branch",
            "default_probability",
            "model",
            "version",
            "model_sha256",
            "error"
        ]
    );
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        assert_eq!(rec[0].parse::<usize>().unwrap(), i + 1);
        assert_eq!(&rec[1], format!("L-{}", i / 2), "row {}", i + 1);
        assert_eq!(&rec[2], format!("North, {}", i % 3), "row {}", i + 1);
        let p: f32 = rec[3].parse().unwrap();
        assert!((p - expected[i]).abs() <= 1e-6);
    }
    for (i, line) in infq::batch_results(&env.http, &env.base, &id, "jsonl")
        .await
        .lines()
        .enumerate()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["row"], i + 1);
        assert_eq!(v["loan_id"], format!("L-{}", i / 2), "{v}");
        assert_eq!(v["branch"], format!("North, {}", i % 3), "{v}");
    }

    // JSONL lines carry them beside their features, or beside `inputs`.
    let jsonl = "{\"loan_id\": \"A\", \"student\": \"No\", \"balance\": 100, \"income\": 2}\n{\"loan_id\": 7, \"inputs\": [0, 200, 3]}\n{\"student\": 1, \"balance\": 300, \"income\": 4}\n";
    let r = upload(
        &env,
        "model=credit-default&passthrough=loan_id",
        "application/x-ndjson",
        jsonl.into(),
    )
    .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(wait_batch(&env, &id).await["status"], "succeeded");
    let text = infq::batch_results(&env.http, &env.base, &id, "csv").await;
    let ids: Vec<String> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap()[1].to_string())
        .collect();
    assert_eq!(ids, ["A", "7", ""]);

    // Refused, with what is wrong.
    let long = format!(
        "student,balance,income,loan_id\n0,1,2,{}\n",
        "x".repeat(300)
    );
    for (query, body, field) in [
        (
            "model=credit-default&passthrough=loan_id,nope",
            csv.clone(),
            "nope",
        ),
        (
            "model=credit-default&passthrough=row",
            csv.clone(),
            "passthrough",
        ),
        (
            "model=credit-default&passthrough=default_probability",
            csv.clone(),
            "passthrough",
        ),
        (
            "model=credit-default&passthrough=reason_1",
            csv.clone(),
            "passthrough",
        ),
        (
            "model=credit-default&passthrough=loan_id,loan_id",
            csv.clone(),
            "passthrough",
        ),
        ("model=credit-default&passthrough=loan_id", long, "loan_id"),
    ] {
        let r = upload(&env, query, "text/csv", body).await;
        assert_eq!(r.status(), 422, "{query}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["details"][0]["field"], field, "{query}: {v}");
    }
    let depth = env.bulk_queued("credit-default").await;
    assert_eq!(depth, 0, "nothing enqueued by the refused uploads");
    env.stop().await.unwrap();
}

/// `GET /v1/batches/{id}/results?partial=true`: its status, the
/// missing-rows header, and the body's lines after the header line.
async fn partial_results(env: &TestEnv, id: &str) -> (u16, u64, Vec<String>) {
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results?partial=true")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let missing = r
        .headers()
        .get("x-infq-rows-missing")
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .unwrap_or(u64::MAX);
    let text = r.text().await.unwrap();
    (
        status,
        missing,
        text.lines().skip(1).map(String::from).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_results_of_a_running_batch_are_a_consistent_subset_of_the_final_ones() {
    const ROWS: usize = 3000;
    // No worker yet, so the batch is seen before any of it runs. Explained
    // rows of the recurrent model are slow enough (about a thousand a
    // second here) for the run to be watched.
    let mut env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let body: String = infq::txn_rows(ROWS, 23)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let r = upload(
        &env,
        "model=txn-risk&explain=true",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Without `partial`, a batch that has not ended is a conflict that
    // says where the partial results are.
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("partial=true"));
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results?partial=maybe")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "partial is true or false");
    let (status, missing, lines) = partial_results(&env, &id).await;
    assert_eq!((status, missing, lines.len()), (200, ROWS as u64, 0));

    env.start_worker().await;
    let mut snapshots = Vec::new();
    loop {
        let ended = !matches!(
            env.get_json(&format!("/v1/batches/{id}")).await["status"]
                .as_str()
                .unwrap(),
            "queued" | "running"
        );
        let (status, missing, lines) = partial_results(&env, &id).await;
        assert_eq!(status, 200);
        snapshots.push((missing, lines));
        if ended {
            break;
        }
        assert!(snapshots.len() < 6000, "batch {id} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-infq-rows-missing"], "0");
    let text = r.text().await.unwrap();
    let last: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(last.len(), ROWS);
    assert!(last.iter().all(|l| l.ends_with(',')), "no row failed");

    let row_of = |line: &str| -> usize { line.split(',').next().unwrap().parse().unwrap() };
    let mut midway = 0;
    let mut before: Vec<usize> = Vec::new();
    for (missing, lines) in &snapshots {
        assert_eq!(
            lines.len() as u64 + missing,
            ROWS as u64,
            "the header counts what is left out"
        );
        let rows: Vec<usize> = lines.iter().map(|l| row_of(l)).collect();
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "rows in order, each once"
        );
        for (row, line) in rows.iter().zip(lines) {
            assert_eq!(
                line,
                last[row - 1],
                "row {row} as the final results have it"
            );
        }
        assert!(
            before.iter().all(|r| rows.binary_search(r).is_ok()),
            "a finished row stays"
        );
        if !lines.is_empty() && lines.len() < ROWS {
            midway += 1;
        }
        before = rows;
    }
    println!(
        "{} partial reads of {ROWS} explained rows, {midway} while part of the batch had run",
        snapshots.len()
    );
    assert!(midway > 0, "a read saw the batch part-way");
    env.stop().await.unwrap();
}

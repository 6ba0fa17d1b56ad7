//! The audit trail against the real RabbitMQ and Redis: a mixed run of
//! submissions, a cancellation, a dead letter and its replay, a batch and
//! two erasures is exported by `infq audit export` with one record per
//! event, digests that match what was scored, and no feature value.

use infq::procs::bin_dir;
use infq::wait::wait_until;
use infq::{test_settings, TestEnv};
use infq_common::audit::{inputs_sha256, Event, Record};
use infq_common::job::{format_ms, now_ms, Priority};
use infq_common::sha256::hex as sha256_hex;
use infq_common::topology::Topology;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Output;

/// Runs `infq audit ...` against the environment's namespace.
async fn audit_cli(env: &TestEnv, args: &[&str]) -> Output {
    tokio::process::Command::new(bin_dir("debug").join("infq"))
        .args(["audit"])
        .args(args)
        .args(["--config", "config/default.toml"])
        .env("INFQ_NAMESPACE", &env.settings.namespace)
        .env_remove("INFQ_CONFIG")
        .current_dir(infq::root())
        .output()
        .await
        .expect("the infq binary (cargo build --workspace first)")
}

async fn post(env: &TestEnv, path: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Distinctive feature values: none of them may appear in the trail.
const SECRET_INPUTS: [[f32; 3]; 3] = [
    [0.0, 1234.5625, 87654.25],
    [1.0, 2345.75, 76543.5],
    [0.0, 345.125, 65432.375],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_export_after_a_mixed_run_has_one_record_per_event_and_no_feature_value() {
    let mut env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let topology = Topology::of(&env.settings);
    let since = format_ms(now_ms().saturating_sub(1_000));
    let job = |inputs: [f32; 3]| json!({"model": "credit-default", "inputs": inputs});

    // A job dead-lettered before any worker runs, one that runs, one
    // cancelled while queued.
    let dead = infq::id_of(post(&env, "/v1/jobs", job(SECRET_INPUTS[2])).await).await;
    env.refuse_head(
        &topology.job_queue("credit-default", Priority::Interactive),
        "made-up check",
    )
    .await;
    let ran = infq::id_of(post(&env, "/v1/jobs", job(SECRET_INPUTS[0])).await).await;
    let cancelled = infq::id_of(post(&env, "/v1/jobs", job(SECRET_INPUTS[1])).await).await;
    let r = post(&env, &format!("/v1/jobs/{cancelled}/cancel"), json!({})).await;
    assert_eq!(r.status(), 200);
    // A batch with the client's ids.
    let csv = "loan_id,student,balance,income\n".to_string()
        + &(0..600)
            .map(|i| format!("L-{i},{},{}.25,{}.75\n", i % 2, 500 + i, 30_000 + i))
            .collect::<String>();
    let r = infq::upload_batch(
        &env.http,
        &env.base,
        "model=credit-default&passthrough=loan_id",
        None,
        csv.clone(),
    )
    .await;
    assert_eq!(r.status(), 202);
    let batch = infq::id_of(r).await;

    env.start_worker().await;
    let done = infq::wait_job(&env.http, &env.base, &ran).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let b = infq::wait_batch(&env.http, &env.base, &batch).await;
    assert_eq!(b["status"], "succeeded", "{b}");
    wait_until("the dead letter recorded", || async {
        env.get_json(&format!("/v1/jobs/{dead}")).await["status"] == "failed"
    })
    .await;
    let r = post(
        &env,
        "/v1/admin/dead-letters/replay",
        json!({"ids": [dead.clone()]}),
    )
    .await;
    let replayed: Value = r.json().await.unwrap();
    assert_eq!(replayed["count"], 1, "{replayed}");
    let again = infq::wait_job(&env.http, &env.base, &dead).await;
    assert_eq!(again["status"], "succeeded", "{again}");

    // What the digests must be, read before the erasures.
    let store = env.store();
    let ran_id = ran.parse().unwrap();
    let output = store.get(&ran_id).await.unwrap().unwrap().output.unwrap();
    let batch_id = batch.parse().unwrap();
    let chunks = store.get_batch(&batch_id).await.unwrap().unwrap().chunks;
    let stored: String = store
        .get_chunks(&batch_id, 0, chunks)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let models = env.get_json("/v1/models").await;
    let model_sha256 = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "credit-default" && m["default"] == true)
        .map(|m| m["sha256"].clone())
        .unwrap_or_else(|| panic!("{models}"));
    for path in [format!("/v1/jobs/{ran}"), format!("/v1/batches/{batch}")] {
        let r = env.http.delete(env.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 204, "{path}");
    }

    // Every record is out before each answer and acknowledgement; the
    // export stops once nothing more comes.
    let out = audit_cli(&env, &["export", "--since", &since, "--idle-ms", "5000"]).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Record> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut per_event: BTreeMap<(String, String, String), Vec<&Record>> = BTreeMap::new();
    for r in &records {
        let subject = r.job.clone().or(r.batch.clone()).unwrap_or_default();
        let status = r.status.clone().unwrap_or_default();
        per_event
            .entry((r.event.as_str().to_string(), subject, status))
            .or_default()
            .push(r);
    }
    let expected = [
        (Event::JobSubmitted, &dead, ""),
        (Event::JobSubmitted, &ran, ""),
        (Event::JobSubmitted, &cancelled, ""),
        (Event::JobCancelled, &cancelled, ""),
        (Event::BatchSubmitted, &batch, ""),
        (Event::JobCompleted, &dead, "failed"),
        (Event::DeadLetterReplayed, &dead, ""),
        (Event::JobCompleted, &dead, "succeeded"),
        (Event::JobCompleted, &ran, "succeeded"),
        (Event::BatchCompleted, &batch, "succeeded"),
        (Event::JobErased, &ran, ""),
        (Event::BatchErased, &batch, ""),
    ];
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(e, s, st)| (e.as_str().to_string(), s.to_string(), st.to_string()))
        .collect();
    let got: Vec<(String, String, String)> = per_event.keys().cloned().collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "{stdout}");
    for (k, rs) in &per_event {
        assert_eq!(rs.len(), 1, "one record per event: {k:?}\n{stdout}");
    }
    let one = |e: Event, s: &str, st: &str| {
        per_event[&(e.as_str().to_string(), s.to_string(), st.to_string())][0]
    };

    // Who: the tenant on every record; the key on those a request made.
    let key_id = infq_common::tenants::key_id(&infq_common::tenants::key_hash(
        infq_common::tenants::DEV_API_KEY,
    ));
    for r in &records {
        assert_eq!(r.tenant.as_deref(), Some("dev"), "{r:?}");
        let by_request = !matches!(r.event, Event::JobCompleted | Event::BatchCompleted);
        assert_eq!(r.key_id.is_some(), by_request, "{r:?}");
        if by_request {
            assert_eq!(r.key_id.as_deref(), Some(key_id.as_str()));
        }
    }
    // What: the digests of what was scored, by whom and with what.
    let submitted = one(Event::JobSubmitted, &ran, "");
    let completed = one(Event::JobCompleted, &ran, "succeeded");
    let want_inputs = inputs_sha256(&SECRET_INPUTS[0]);
    assert_eq!(
        submitted.inputs_sha256.as_deref(),
        Some(want_inputs.as_str())
    );
    assert_eq!(
        completed.inputs_sha256.as_deref(),
        Some(want_inputs.as_str())
    );
    assert_eq!(
        completed.outputs_sha256.as_deref(),
        Some(sha256_hex(output.as_bytes()).as_str())
    );
    for r in [submitted, completed] {
        assert_eq!(
            r.model_sha256.as_ref(),
            model_sha256.as_str().map(String::from).as_ref()
        );
        assert_eq!(r.model.as_deref(), Some("credit-default"));
    }
    let up = one(Event::BatchSubmitted, &batch, "");
    assert_eq!(
        up.inputs_sha256.as_deref(),
        Some(sha256_hex(csv.as_bytes()).as_str())
    );
    assert_eq!(up.rows, Some(600));
    let end = one(Event::BatchCompleted, &batch, "succeeded");
    assert_eq!(
        end.outputs_sha256.as_deref(),
        Some(sha256_hex(stored.as_bytes()).as_str())
    );
    assert_eq!(end.rows, Some(600));
    // Never a feature value, an output or a client id.
    for inputs in SECRET_INPUTS {
        for v in inputs.iter().filter(|v| **v > 1.0) {
            let text = format!("{v}");
            assert!(!stdout.contains(&text), "{text} in\n{stdout}");
        }
    }
    assert!(!stdout.contains("L-1"), "{stdout}");

    // A message on the stream that is not records costs only itself: the
    // export names its offset and fails after writing every record.
    let conn = env.amqp().await.unwrap();
    let lease = TestEnv::confirm_lease(&conn).await;
    lease
        .publish(
            "",
            &topology.audit_stream(),
            b"{\"id\":\"forged\",\"inputs\":[1,2,3]}\nnot json",
            lapin::BasicProperties::default(),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    drop(lease);
    infq_common::amqp::close(&conn, "forged").await;
    let out = audit_cli(&env, &["export", "--since", "first", "--idle-ms", "5000"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("offset") && err.contains("not audit records"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        records.len()
    );
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_start_points_are_refused_before_the_broker_is_asked() {
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    for (since, why) in [
        ("yesterday", "expected first, now"),
        ("offset:-3", "not a whole number"),
        ("99999999999999d", "before 1970"),
        ("now", "exports nothing"),
    ] {
        let out = audit_cli(&env, &["export", "--since", since]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{since}: {err}");
        assert!(
            err.contains(why) && err.trim_end().lines().count() == 1,
            "{since}: {err}"
        );
    }
    let out = audit_cli(&env, &["export"]).await;
    assert_eq!(out.status.code(), Some(2), "--since is required");
    let out = audit_cli(&env, &["export", "--since", "first", "--idle-ms", "5"]).await;
    assert_eq!(out.status.code(), Some(2), "--idle-ms out of range");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_share_audit_messages_and_each_is_recorded_once() {
    // Without a worker: only the submissions are recorded.
    let env = TestEnv::start_with(test_settings(), false).await.unwrap();
    let n = 300;
    let submits = (0..n).map(|i| {
        let env = &env;
        async move {
            let body = json!({"model": "credit-default", "inputs": [0, i, 30000]});
            infq::id_of(post(env, "/v1/jobs", body).await).await
        }
    });
    let ids: std::collections::BTreeSet<String> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), n);
    let conn = env.amqp().await.unwrap();
    let stream = Topology::of(&env.settings).audit_stream();
    let since = infq_common::audit::Since::First;
    let mut reader = infq_common::audit::Reader::open(&conn, &stream, since)
        .await
        .unwrap();
    let (mut messages, mut seen) = (0, Vec::new());
    while seen.len() < n {
        let entry = reader
            .next(Some(std::time::Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("every submission's record");
        let records = entry.records.unwrap();
        messages += 1;
        seen.extend(
            records
                .into_iter()
                .filter(|r| r.event == Event::JobSubmitted)
                .filter_map(|r| r.job),
        );
    }
    // Each job once, none missing; and the records of concurrent
    // requests went together.
    let once: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), n, "a record twice");
    assert_eq!(once, ids);
    assert!(
        messages < n,
        "{messages} messages for {n} records: none grouped"
    );
    eprintln!("{n} submissions recorded in {messages} messages");
    env.stop().await.unwrap();
}

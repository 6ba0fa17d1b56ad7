//! The `infq` command-line client against a running producer and worker:
//! bulk submit with results, status, single jobs, and one-line errors with
//! a non-zero exit for bad input.

use infq::procs::bin_dir;
use infq::TestEnv;
use std::process::Output;

async fn infq(env: Option<&TestEnv>, args: &[&str]) -> Output {
    let bin = bin_dir("debug").join("infq");
    let mut cmd = tokio::process::Command::new(&bin);
    if let Some(env) = env {
        cmd.arg("--url").arg(&env.base);
    }
    cmd.env("INFQ_API_KEY", infq_common::tenants::DEV_API_KEY)
        .env_remove("INFQ_CONFIG")
        .current_dir(infq::root());
    cmd.args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --workspace first)", bin.display()))
}

fn one_line_error(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("infq: ") || err.starts_with("error: "),
        "{err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_and_download_results() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("portfolio.csv");
    let mut csv = String::from("student,balance,income\n");
    for i in 0..600 {
        csv.push_str(&format!(
            "{},{},{}\n",
            i % 2,
            100.0 + i as f64 * 3.0,
            20000.0 + i as f64
        ));
    }
    std::fs::write(&input, csv).unwrap();
    let results = dir.path().join("results.jsonl");
    let out = infq(
        Some(&env),
        &[
            "submit",
            input.to_str().unwrap(),
            "--model",
            "credit-default",
            "--out",
            results.to_str().unwrap(),
            "--quiet",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&results).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 600);
    let last: serde_json::Value = serde_json::from_str(lines[599]).unwrap();
    assert_eq!(last["row"], 600);
    assert!(last["output"]["default_probability"].is_number());

    let out = infq(
        Some(&env),
        &[
            "jobs",
            "submit",
            "--model",
            "credit-default",
            "--inputs",
            "[0, 1500, 40000]",
            "--wait",
            "10",
        ],
    )
    .await;
    assert!(out.status.success());
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "succeeded");
    let id = job["id"].as_str().unwrap();
    let out = infq(Some(&env), &["jobs", "get", id]).await;
    assert!(out.status.success());
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let env = TestEnv::start_with(infq::test_settings(), false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "student,balance,income\n0,1,2\n0,oops,2\n").unwrap();
    let err = one_line_error(
        &infq(
            Some(&env),
            &[
                "submit",
                bad.to_str().unwrap(),
                "--model",
                "credit-default",
                "-q",
            ],
        )
        .await,
    );
    assert!(err.contains("line 3") && err.contains("oops"), "{err}");

    let missing = dir.path().join("missing.csv");
    one_line_error(
        &infq(
            Some(&env),
            &[
                "submit",
                missing.to_str().unwrap(),
                "--model",
                "credit-default",
            ],
        )
        .await,
    );
    one_line_error(
        &infq(
            Some(&env),
            &[
                "submit",
                bad.to_str().unwrap(),
                "--model",
                "no-such-model",
                "-q",
            ],
        )
        .await,
    );
    one_line_error(
        &infq(
            Some(&env),
            &[
                "submit",
                bad.to_str().unwrap(),
                "--model",
                "credit-default",
                "--format",
                "xml",
            ],
        )
        .await,
    );
    one_line_error(
        &infq(
            Some(&env),
            &[
                "jobs",
                "submit",
                "--model",
                "credit-default",
                "--inputs",
                "{not json",
            ],
        )
        .await,
    );
    one_line_error(
        &infq(
            Some(&env),
            &[
                "jobs",
                "submit",
                "--model",
                "credit-default",
                "--inputs",
                "[1, 2]",
            ],
        )
        .await,
    );
    one_line_error(&infq(Some(&env), &["status", "../../etc/passwd"]).await);
    one_line_error(
        &infq(
            Some(&env),
            &["results", "01a22848-1b5a-7259-ba90-2d787f609491"],
        )
        .await,
    );
    one_line_error(&infq(None, &["--url", "http://127.0.0.1:1", "jobs", "get", "x"]).await);
    // Forbidden callback URLs are refused with the reason.
    let err = one_line_error(
        &infq(
            Some(&env),
            &[
                "jobs",
                "submit",
                "--model",
                "credit-default",
                "--inputs",
                "[0, 1, 2]",
                "--webhook-url",
                "https://169.254.169.254/latest/meta-data/",
            ],
        )
        .await,
    );
    assert!(
        err.contains("webhook_url") && err.contains("metadata"),
        "{err}"
    );
    let err = one_line_error(
        &infq(
            Some(&env),
            &[
                "submit",
                bad.to_str().unwrap(),
                "--model",
                "credit-default",
                "--webhook-url",
                "http://10.0.0.1/hook",
                "-q",
            ],
        )
        .await,
    );
    assert!(err.contains("webhook_url"), "{err}");
    one_line_error(
        &infq(
            Some(&env),
            &[
                "webhooks",
                "deliveries",
                "01a22848-1b5a-7259-ba90-2d787f609491",
            ],
        )
        .await,
    );
    one_line_error(
        &infq(
            Some(&env),
            &["webhooks", "retry", "not-an-id", "job.succeeded"],
        )
        .await,
    );
    // A new secret is one line in the form the configuration takes.
    let out = infq(None, &["webhooks", "secret"]).await;
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap();
    infq_common::webhooks::sign::check_secret(secret.trim()).unwrap();
    // Argument errors come from clap, before anything is sent.
    for args in [
        vec!["demo", "--rows", "0"],
        vec!["submit"],
        vec!["frobnicate"],
        vec!["jobs", "get"],
        vec!["webhooks", "retry", "only-an-id"],
        vec!["webhooks", "secret", "extra"],
    ] {
        let out = infq(None, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    env.stop().await.unwrap();
}

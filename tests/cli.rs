//! The `infq` command-line client against a running producer and worker:
//! bulk submit with results, status, single jobs, and one-line errors with
//! a non-zero exit for bad input.

use infq::procs::bin_dir;
use infq::TestEnv;
use std::ffi::OsString;
use std::process::Output;

async fn infq(env: Option<&TestEnv>, args: &[&str]) -> Output {
    let bin = bin_dir("debug").join("infq");
    let mut cmd = tokio::process::Command::new(&bin);
    if let Some(env) = env {
        cmd.arg("--url").arg(&env.base);
    }
    cmd.env("INFQ_CLIENT_API_KEY", infq_common::tenants::DEV_API_KEY)
        .env_remove("INFQ_CLIENT_URL")
        .env_remove("INFQ_URL")
        .env_remove("INFQ_API_KEY")
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
    let (missing, bad_file) = (missing.to_str().unwrap(), bad.to_str().unwrap());
    let model = ["--model", "credit-default"];
    for args in [
        vec!["submit", missing, model[0], model[1]],
        vec!["submit", bad_file, "--model", "no-such-model", "-q"],
        vec!["submit", bad_file, model[0], model[1], "--format", "xml"],
        vec![
            "jobs",
            "submit",
            model[0],
            model[1],
            "--inputs",
            "{not json",
        ],
        vec!["jobs", "submit", model[0], model[1], "--inputs", "[1, 2]"],
        vec!["status", "../../etc/passwd"],
        vec!["results", "01a22848-1b5a-7259-ba90-2d787f609491"],
    ] {
        one_line_error(&infq(Some(&env), &args).await);
    }
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

/// Runs `bin` (from the debug build) with exactly the infq variables in
/// `vars` (others from this process are removed) and `args`.
async fn run_with(bin: &str, vars: &[(&str, OsString)], args: &[&str]) -> Output {
    let path = bin_dir("debug").join(bin);
    let mut cmd = tokio::process::Command::new(&path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("INFQ_")
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.current_dir(infq::root())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --workspace first)", path.display()))
}

fn text(s: &str) -> OsString {
    OsString::from(s)
}

#[cfg(unix)]
fn not_utf8(prefix: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe");
    OsString::from_vec(bytes)
}

#[cfg(not(unix))]
fn not_utf8(prefix: &str) -> OsString {
    OsString::from(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_variables_leave_the_servers_alone_and_typos_are_still_refused() {
    let ns = format!("t{}", uuid::Uuid::new_v4().simple());
    let key = infq_common::tenants::DEV_API_KEY;
    // A shell set up for the client, by today's instructions and by the
    // older ones, with values no server could use.
    let client = [
        ("INFQ_CLIENT_URL", "http://127.0.0.1:1".to_string()),
        ("INFQ_CLIENT_API_KEY", "not-a-key".to_string()),
        ("INFQ_URL", "http://127.0.0.1:1".to_string()),
        ("INFQ_API_KEY", "not-a-key".to_string()),
    ];
    let mut server: Vec<(&str, String)> = vec![
        ("INFQ_NAMESPACE", ns.clone()),
        ("INFQ_AMQP__QUEUE_EXPIRES_MS", "60000".to_string()),
    ];
    server.extend(client.iter().cloned());
    let http = reqwest::Client::new();
    let (_worker, _producer, base) = infq::procs::start_pair(&server, &http)
        .await
        .expect("infq-worker and infq-producer start with the client's variables set");

    // The client reads its own variables; the new name wins over the old.
    let mut vars: Vec<(&str, OsString)> = vec![
        ("INFQ_CLIENT_URL", text(&base)),
        ("INFQ_CLIENT_API_KEY", text(key)),
        ("INFQ_URL", text("http://127.0.0.1:1")),
        ("INFQ_API_KEY", text("not-a-key")),
    ];
    let submit = [
        "jobs",
        "submit",
        "--model",
        "credit-default",
        "--inputs",
        "[0, 1500, 40000]",
        "--wait",
        "10",
    ];
    let out = run_with("infq", &vars, &submit).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "succeeded");

    // The older names still work, with a warning; an empty new one is unset.
    let old = [
        ("INFQ_CLIENT_URL", text("")),
        ("INFQ_URL", text(&base)),
        ("INFQ_API_KEY", text(key)),
    ];
    let out = run_with("infq", &old, &submit).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFQ_URL is deprecated") && err.contains("INFQ_CLIENT_URL"),
        "{err}"
    );
    assert!(err.contains("INFQ_API_KEY is deprecated"), "{err}");

    // A client variable that is not UTF-8 is one line naming it.
    let bad = [
        ("INFQ_CLIENT_URL", text(&base)),
        ("INFQ_CLIENT_API_KEY", not_utf8("k")),
    ];
    if cfg!(unix) {
        let out = run_with("infq", &bad, &["jobs", "get", "x"]).await;
        let err = one_line_error(&out);
        assert!(
            err.contains("INFQ_CLIENT_API_KEY is not valid UTF-8"),
            "{err}"
        );
    }

    // `infq admin` reads the deployment's configuration with the client's
    // variables set.
    vars.push(("INFQ_NAMESPACE", text(&ns)));
    let out = run_with("infq", &vars, &["admin", "tenants", "list"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A misspelt server setting is still refused, by name, everywhere.
    let mut typo = vars.clone();
    typo.push(("INFQ_PRODUCR__PORT", text("8080")));
    let err = one_line_error(&run_with("infq", &typo, &["admin", "tenants", "list"]).await);
    assert!(
        err.contains("INFQ_PRODUCR__PORT: `producr` is not a setting"),
        "{err}"
    );
    let out = run_with(
        "infq-producer",
        &typo,
        &["--config", "config/default.toml", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFQ_PRODUCR__PORT"), "{err}");
    let out = run_with("infq-worker", &typo, &["--config", "config/default.toml"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFQ_PRODUCR__PORT"), "{err}");
    let mut nested = vars.clone();
    nested.push(("INFQ_PRODUCER__PORT", text("8080")));
    let err = one_line_error(&run_with("infq", &nested, &["admin", "tenants", "list"]).await);
    assert!(
        err.contains("INFQ_PRODUCER__PORT: `producer.port` is not a setting"),
        "{err}"
    );
    // Hostile values: not UTF-8, empty.
    if cfg!(unix) {
        let mut hostile = vars.clone();
        hostile.push(("INFQ_REDIS__URL", not_utf8("redis://127.0.0.1/")));
        let err = one_line_error(&run_with("infq", &hostile, &["admin", "tenants", "list"]).await);
        assert!(
            err.contains("INFQ_REDIS__URL: the value is not valid UTF-8"),
            "{err}"
        );
    }
    let mut empty = vars.clone();
    empty.push(("INFQ_REDIS__URL", text("")));
    let err = one_line_error(&run_with("infq", &empty, &["admin", "tenants", "list"]).await);
    assert!(err.contains("redis.url"), "{err}");
    // The broker's node list: not a list, a node of another scheme, the
    // same node twice, an empty entry; each named by its key.
    for (value, names) in [
        ("amqp://one-node-not-a-list", "amqp.urls"),
        ("[\"http://127.0.0.1:5672/\"]", "amqp.urls[0]"),
        (
            "[\"amqp://127.0.0.1:5672/\",\"amqp://127.0.0.1:5672/\"]",
            "amqp.urls[1]: lists the same node twice",
        ),
        ("[\"amqp://127.0.0.1:5672/\",\"\"]", "amqp.urls[1]"),
        ("[1, 2]", "amqp.urls"),
    ] {
        let mut bad = vars.clone();
        bad.push(("INFQ_AMQP__URLS", text(value)));
        let err = one_line_error(&run_with("infq", &bad, &["admin", "tenants", "list"]).await);
        // The loader names a key as the variable spells it (upper case).
        assert!(err.to_lowercase().contains(names), "{value}: {err}");
    }
    let mut bad = vars.clone();
    bad.push(("INFQ_AMQP__QUORUM_INITIAL_GROUP_SIZE", text("0")));
    let err = one_line_error(&run_with("infq", &bad, &["admin", "tenants", "list"]).await);
    assert!(err.contains("amqp.quorum_initial_group_size"), "{err}");
    // Redis's mode and nodes: an unknown mode, nodes where none are read,
    // a mode without nodes or with bad ones, a sentinel mode without the
    // primary's name, a hostile name, too many replicas to wait for.
    for (pairs, names) in [
        (vec![("INFQ_REDIS__MODE", "replicated")], "redis.mode"),
        (
            vec![("INFQ_REDIS__NODES", "[\"redis://127.0.0.1:7001/\"]")],
            "redis.nodes: only read in sentinel or cluster mode",
        ),
        (
            vec![("INFQ_REDIS__MODE", "cluster")],
            "redis.nodes: cluster mode needs at least one node",
        ),
        (
            vec![
                ("INFQ_REDIS__MODE", "cluster"),
                (
                    "INFQ_REDIS__NODES",
                    "[\"redis://127.0.0.1:7001/\",\"amqp://x/\",\"redis://127.0.0.1:7001/\"]",
                ),
            ],
            "redis.nodes[1]",
        ),
        (
            vec![
                ("INFQ_REDIS__MODE", "cluster"),
                (
                    "INFQ_REDIS__NODES",
                    "[\"redis://127.0.0.1:7001/\",\"redis://127.0.0.1:7001/\"]",
                ),
            ],
            "redis.nodes[1]: lists the same node twice",
        ),
        (
            vec![
                ("INFQ_REDIS__MODE", "sentinel"),
                ("INFQ_REDIS__NODES", "[\"redis://127.0.0.1:26701/\"]"),
            ],
            "redis.service",
        ),
        (
            vec![
                ("INFQ_REDIS__MODE", "sentinel"),
                ("INFQ_REDIS__NODES", "[\"redis://127.0.0.1:26701/\"]"),
                ("INFQ_REDIS__SERVICE", "a\"b c"),
            ],
            "redis.service",
        ),
        (
            vec![("INFQ_REDIS__SERVICE", "infq")],
            "redis.service: only read in sentinel mode",
        ),
        (
            vec![("INFQ_REDIS__MIN_REPLICAS_ACK", "17")],
            "redis.min_replicas_ack",
        ),
        (
            vec![("INFQ_REDIS__MIN_REPLICAS_ACK", "-1")],
            "redis.min_replicas_ack",
        ),
    ] {
        let mut bad = vars.clone();
        for (k, v) in &pairs {
            bad.push((k, text(v)));
        }
        let err = one_line_error(&run_with("infq", &bad, &["admin", "tenants", "list"]).await);
        assert!(err.to_lowercase().contains(names), "{pairs:?}: {err}");
    }
    infq::delete_namespace_named(&ns).await;
}

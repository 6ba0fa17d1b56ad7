//! The Python client (`clients/python`) against a real producer and worker:
//! its lints (`ruff`, `mypy --strict`) and its pytest suite, run with the
//! `.venv` that `scripts/setup` installs it into, against a producer and a
//! worker started here on this test's own namespace.

use infq::{root, test_settings, TestEnv};
use infq_common::config::Limits;
use std::process::Command;

/// The deployment's webhook secret the suite verifies callbacks with.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn python() -> std::path::PathBuf {
    root().join(".venv/bin/python")
}

fn run(what: &str, args: &[&str], env: &[(&str, String)]) {
    let out = Command::new(python())
        .args(args)
        .current_dir(root().join("clients/python"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (run scripts/setup)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- {what}\n{text}");
    assert!(out.status.success(), "{what} failed:\n{text}");
}

#[test]
fn the_package_passes_ruff_and_mypy_strict() {
    run("ruff check", &["-m", "ruff", "check", "."], &[]);
    run(
        "ruff format",
        &["-m", "ruff", "format", "--check", "."],
        &[],
    );
    run("mypy --strict", &["-m", "mypy"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pytest_suite_passes_against_a_live_producer_and_worker() {
    let mut s = test_settings();
    s.webhooks.secrets = vec![SECRET.into()];
    s.webhooks.allow_http = true;
    s.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    let env = TestEnv::start_with(s, true).await.unwrap();
    // A tenant with a tiny rate, for the client's retries of `429`.
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let slow = Limits {
        rate_per_sec: 2.0,
        burst: 1,
        max_queued: 1_000,
        retention_secs: 3_600,
    };
    let (_, _, slow_key) = tenants
        .create_tenant("slow", Some(slow), false)
        .await
        .unwrap();
    let vars = vec![
        ("INFQ_URL", env.base.clone()),
        (
            "INFQ_API_KEY",
            infq_common::tenants::DEV_API_KEY.to_string(),
        ),
        ("INFQ_TEST_SLOW_KEY", slow_key),
        ("INFQ_TEST_WEBHOOK_SECRET", SECRET.to_string()),
        (
            "INFQ_TEST_MODEL_FILE",
            root()
                .join("models/credit-default.pt")
                .display()
                .to_string(),
        ),
        (
            "INFQ_TEST_DEFAULT_CSV",
            root().join("data/Default.csv").display().to_string(),
        ),
    ];
    let suite = tokio::task::spawn_blocking(move || {
        run(
            "pytest",
            &["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            &vars,
        )
    });
    let r = suite.await;
    env.stop().await.unwrap();
    if let Err(e) = r {
        std::panic::resume_unwind(e.into_panic());
    }
}

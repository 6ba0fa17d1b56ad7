//! The Python client (`clients/python`) against a real producer and worker:
//! its lints (`ruff`, `mypy --strict`) and its pytest suite, run with the
//! `.venv` that `scripts/setup` installs it into, against a producer and a
//! worker started here on this test's own namespace.

use infq::{root, test_settings, TestEnv};
use infq_common::config::Limits;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A TCP relay between infq and the broker that a test can cut for a while
/// (every connection through it dropped, new ones refused): a broker
/// outage as the producer sees it, without touching the system's broker.
#[derive(Clone, Default)]
struct Relay {
    inner: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    cut_until: Option<Instant>,
    open: Vec<AbortHandle>,
}

impl Relay {
    /// Listens on a port of its own, relaying to `target`; its address.
    async fn start(&self, target: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = me.inner.lock().unwrap();
                if state.cut_until.is_some_and(|t| Instant::now() < t) {
                    continue; // dropped: refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.open.retain(|h| !h.is_finished());
                state.open.push(task.abort_handle());
            }
        });
        addr
    }

    /// Drops every connection and refuses new ones for `ms`.
    fn cut(&self, ms: u64) {
        let mut state = self.inner.lock().unwrap();
        state.cut_until = Some(Instant::now() + Duration::from_millis(ms));
        for h in state.open.drain(..) {
            h.abort();
        }
    }

    /// `POST /cut?ms=N` on a port of its own: how the suite cuts it.
    async fn control(&self) -> String {
        type Cut = axum::extract::Query<std::collections::HashMap<String, u64>>;
        let me = self.clone();
        let app = axum::Router::new().route(
            "/cut",
            axum::routing::post(move |q: Cut| async move {
                me.cut(q.get("ms").copied().unwrap_or(1_000).min(30_000));
                "cut"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
}

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
    // The producer and worker reach the broker through a relay the suite
    // can cut (for the client's retries of `503`).
    let relay = Relay::default();
    let through = relay.start("127.0.0.1:5672").await;
    s.amqp.url = format!("amqp://guest:guest@{through}/%2f?heartbeat=10");
    s.amqp.urls = Vec::new();
    s.amqp.publish_timeout_ms = 2_000;
    let control = relay.control().await;
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
        ("INFQ_TEST_BROKER_RELAY", control),
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

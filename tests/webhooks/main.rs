//! Webhook callbacks end to end, with a real HTTP receiver, RabbitMQ and
//! Redis: retries with one `webhook-id`, `410 Gone` disabling an endpoint,
//! `Retry-After`, `batch.completed`, `batch.progress`, manual redelivery, the SSRF guard at
//! submit and at send time, and signatures checked by an implementation
//! other than the one infq signs with.

mod addresses;
mod delivery;
mod disabling;
mod events;
mod progress;
mod receiver;
mod signing;
mod support;

use infq::TestEnv;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use receiver::*;
use support::*;

/// The secret a receiver's URL carries in the log test.
const URL_SECRET: &str = "tok_5f0e2c2b9d1a";

/// The scenario of `webhook_urls_are_logged_by_their_host_only`, run in a
/// child process with logs on; does nothing in a plain test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_probe() {
    if std::env::var_os("WEBHOOK_LOG_PROBE").is_none() {
        return;
    }
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let path = format!("gone-{URL_SECRET}");
    rx.script(&path, &[status(500), status(410)]);
    let id = submit(&env, &rx.url(&path)).await;
    deliveries_until(&env, &format!("/v1/jobs/{id}/deliveries"), "disabled").await;
    // An event message naming no record: refused.
    let queued = infq_common::job::new_job_id();
    publish_event(&env, &EventMessage::new(SubjectKind::Job, queued)).await;
    env.wait_dead(1).await;
    println!("PROBE host={}", rx.base.trim_start_matches("http://"));
    env.stop().await.unwrap();
}

#[test]
fn webhook_urls_are_logged_by_their_host_only() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["log_probe", "--exact", "--nocapture", "--test-threads", "1"])
        .env("WEBHOOK_LOG_PROBE", "1")
        .env(
            "RUST_LOG",
            "info,infq_worker=debug,infq_common=debug,infq_producer=debug",
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let host = text
        .lines()
        .find_map(|l| l.strip_prefix("PROBE host="))
        .unwrap_or_else(|| panic!("the probe did not run: {text}"))
        .trim()
        .to_string();
    let gone = text
        .lines()
        .find(|l| l.contains("410 Gone"))
        .unwrap_or_else(|| panic!("no log line about the 410: {text}"));
    assert!(gone.contains(&host), "{gone}");
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains(URL_SECRET)).collect();
    assert!(leaks.is_empty(), "the URL's secret was logged: {leaks:#?}");
}

//! Webhook callbacks end to end, with a real HTTP receiver, RabbitMQ and
//! Redis: retries with one `webhook-id`, `410 Gone` disabling an endpoint,
//! `Retry-After`, `batch.completed`, manual redelivery, the SSRF guard at
//! submit and at send time, and signatures checked by an implementation
//! other than the one infq signs with.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use hmac::{Hmac, Mac};
use infq::{test_settings, TestEnv};
use infq_common::config::Settings;
use infq_common::webhooks::event::{EventMessage, SubjectKind};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SECRET_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------------
// An independent verifier: RustCrypto's HMAC-SHA256, not the
// `standardwebhooks` crate infq signs with.

fn expected_signature(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies like a receiver: the timestamp within 5 minutes of `now`, and
/// one of the `v1,` signatures matching.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {n}"))
    };
    let (id, ts, sigs) = (
        h("webhook-id")?,
        h("webhook-timestamp")?,
        h("webhook-signature")?,
    );
    let t: i64 = ts.parse().map_err(|_| "bad timestamp")?;
    if (now - t).abs() > 300 {
        return Err("timestamp outside the tolerance".into());
    }
    let want = expected_signature(secret, id, ts, body);
    sigs.split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == want)
        .then_some(())
        .ok_or_else(|| "no signature matches".into())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------
// A scripted receiver.

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
    answered: u16,
}

#[derive(Clone, Copy)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
}

#[derive(Default)]
struct Script {
    hits: Vec<Hit>,
    replies: HashMap<String, VecDeque<Reply>>,
    /// How long every answer takes.
    delay: Duration,
}

#[derive(Clone)]
struct Receiver {
    base: String,
    script: Arc<Mutex<Script>>,
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let delay = script.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut s = script.lock().unwrap();
    let reply = s
        .replies
        .get_mut(&path)
        .and_then(|q| q.pop_front())
        .unwrap_or(Reply {
            status: 200,
            retry_after: None,
        });
    s.hits.push(Hit {
        path,
        headers,
        body,
        at: Instant::now(),
        answered: reply.status,
    });
    let mut h = HeaderMap::new();
    if let Some(ra) = reply.retry_after {
        h.insert("retry-after", ra.parse().unwrap());
    }
    (StatusCode::from_u16(reply.status).unwrap(), h, "thanks")
}

impl Receiver {
    async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer every request.
    async fn start_slow(delay: Duration) -> Self {
        let script = Arc::new(Mutex::new(Script {
            delay,
            ..Script::default()
        }));
        let app = axum::Router::new()
            .route("/hook/{path}", axum::routing::post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, script }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/hook/{path}", self.base)
    }

    fn script(&self, path: &str, replies: &[Reply]) {
        self.script
            .lock()
            .unwrap()
            .replies
            .insert(path.into(), replies.iter().copied().collect());
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        let s = self.script.lock().unwrap();
        s.hits.iter().filter(|h| h.path == path).cloned().collect()
    }

    async fn wait_hits(&self, path: &str, n: usize, within: Duration) -> Vec<Hit> {
        let until = Instant::now() + within;
        loop {
            let hits = self.hits(path);
            if hits.len() >= n || Instant::now() > until {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

const fn status(s: u16) -> Reply {
    Reply {
        status: s,
        retry_after: None,
    }
}

// ---------------------------------------------------------------------

fn settings() -> Settings {
    let mut s = test_settings();
    s.webhooks.secrets = vec![SECRET_A.into(), SECRET_B.into()];
    s.webhooks.schedule_ms = vec![0, 200, 400, 3_000, 3_000];
    s.webhooks.timeout_ms = 2_000;
    s.webhooks.allow_http = true;
    s.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    s.webhooks.public_url = Some("https://infq.example.com".into());
    s
}

async fn submit(env: &TestEnv, webhook: &str) -> String {
    let r = env
        .http
        .post(env.url("/v1/jobs"))
        .json(&json!({
            "model": "credit-default",
            "inputs": {"student": 1, "balance": 1500.0, "income": 20000.0},
            "webhook_url": webhook,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(env: &TestEnv, path: &str) -> Value {
    env.http
        .get(env.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn deliveries_until(env: &TestEnv, path: &str, state: &str) -> Value {
    for _ in 0..200 {
        let d = get(env, path).await;
        if d["events"][0]["state"] == state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never reached {state}: {}", get(env, path).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_one_verified_success_with_one_id() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("flaky", &[status(500), status(503)]);
    let id = submit(&env, &rx.url("flaky")).await;

    let hits = rx.wait_hits("flaky", 3, Duration::from_secs(20)).await;
    assert_eq!(hits.len(), 3, "two failures, then the success");
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 503, 200]
    );
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| h.headers["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one webhook-id: {ids:?}");
    for h in &hits {
        // Both secrets of a rotation sign every request.
        for secret in [SECRET_A, SECRET_B] {
            verify(secret, &h.headers, &h.body, unix_now()).unwrap();
        }
        assert_eq!(h.body, hits[0].body, "the same body every time");
    }
    let event: Value = serde_json::from_slice(&hits[2].body).unwrap();
    assert_eq!(event["type"], "job.succeeded");
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'));
    let job = get(&env, &format!("/v1/jobs/{id}")).await;
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["output"], job["output"]);
    assert_eq!(event["data"]["status"], "succeeded");

    let d = deliveries_until(&env, &format!("/v1/jobs/{id}/deliveries"), "delivered").await;
    let e = &d["events"][0];
    assert_eq!(e["webhook_id"], ids[0]);
    assert_eq!(e["type"], "job.succeeded");
    let attempts = e["attempts"].as_array().unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].as_u64()).collect();
    assert_eq!(codes, vec![Some(500), Some(503), Some(200)]);
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["retrying", "retrying", "delivered"]);
    assert!(attempts[0]["next_attempt_at"].is_string());
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    // Nothing more arrives after the success.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("flaky").len(), 3);
    env.stop().await.unwrap();
}

/// A connection to the test's Redis.
async fn redis_of(s: &Settings) -> redis::aio::MultiplexedConnection {
    let client = s.redis.client().unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The keys of the endpoints disabled by a 410, each with its PTTL (ms).
async fn disabled_endpoints(env: &TestEnv) -> Vec<(String, i64)> {
    let mut c = redis_of(&env.settings).await;
    let mut out = Vec::new();
    for key in env.redis_keys().await.unwrap() {
        if infq_common::keys::Keys::new(&env.settings.namespace).is_webhook_disabled(&key) {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            out.push((key, pttl));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_disabled_under_the_earlier_layout_stay_disabled_and_expire() {
    let rx = Receiver::start().await;
    let s = settings();
    let mut c = redis_of(&s).await;
    // One hash of URL -> when it answered 410, as an earlier version kept
    // it: one endpoint gone an hour ago, one gone 31 days ago.
    let old = infq_common::keys::Keys::new(&s.namespace).webhooks_disabled_legacy();
    let now = infq_common::job::now_ms();
    let day = 24 * 3600 * 1000;
    let _: () = redis::cmd("HSET")
        .arg(&old)
        .arg(rx.url("gone"))
        .arg(now - 3_600_000)
        .arg(rx.url("long-gone"))
        .arg(now - 31 * day)
        .query_async(&mut c)
        .await
        .unwrap();
    let env = TestEnv::start_with(s, true).await.unwrap();
    let mut migrated = false;
    for _ in 0..100 {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&old)
            .query_async(&mut c)
            .await
            .unwrap();
        if exists == 0 {
            migrated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(migrated, "the earlier hash is still there");
    let disabled = disabled_endpoints(&env).await;
    assert_eq!(
        disabled.len(),
        1,
        "only the recent one is kept: {disabled:?}"
    );
    let (pttl, most) = (
        disabled[0].1,
        infq_common::webhooks::store::DISABLED_MS as i64,
    );
    assert!(
        pttl <= most - 3_600_000 && pttl > most - 3_700_000,
        "expires 30 days after its 410: PTTL {pttl}"
    );
    // The endpoint is still disabled; the one gone long ago gets its event.
    let first = submit(&env, &rx.url("gone")).await;
    deliveries_until(&env, &format!("/v1/jobs/{first}/deliveries"), "disabled").await;
    let second = submit(&env, &rx.url("long-gone")).await;
    deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "delivered").await;
    assert!(rx.hits("gone").is_empty());
    assert_eq!(rx.hits("long-gone").len(), 1);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_until_a_manual_redelivery() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("gone", &[status(410)]);
    let first = submit(&env, &rx.url("gone")).await;
    let d = deliveries_until(&env, &format!("/v1/jobs/{first}/deliveries"), "disabled").await;
    assert_eq!(d["events"][0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(rx.hits("gone").len(), 1, "a 410 is not retried");
    // The endpoint is disabled by a key of its own that expires, so URLs
    // answering 410 cannot pile up in Redis.
    let disabled = disabled_endpoints(&env).await;
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    let (pttl, most) = (
        disabled[0].1,
        infq_common::webhooks::store::DISABLED_MS as i64,
    );
    assert!(pttl > most - 60_000 && pttl <= most, "PTTL {pttl}");

    // The next event for that endpoint is not sent at all.
    let second = submit(&env, &rx.url("gone")).await;
    let d = deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "disabled").await;
    let a = &d["events"][0]["attempts"][0];
    assert_eq!(a["outcome"], "disabled");
    assert!(a["status_code"].is_null());
    assert!(a["error"].as_str().unwrap().contains("410"), "{a}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("gone").len(), 1);

    // An operator fixed the receiver and redelivers by hand: same id, same
    // body, and the endpoint is enabled again.
    let webhook_id = d["events"][0]["webhook_id"].as_str().unwrap().to_string();
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{second}/deliveries/{webhook_id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["endpoint_enabled_again"], true);
    let hits = rx.wait_hits("gone", 2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].headers["webhook-id"], webhook_id.as_str());
    assert_eq!(hits[1].answered, 200);
    deliveries_until(&env, &format!("/v1/jobs/{second}/deliveries"), "delivered").await;

    // Unknown events and ids are 404.
    for path in [
        format!("/v1/jobs/{second}/deliveries/msg_nope/retry"),
        format!(
            "/v1/jobs/{}/deliveries/job.succeeded/retry",
            uuid::Uuid::now_v7()
        ),
    ] {
        let r = env.http.post(env.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = env
        .http
        .get(env.url(&format!("/v1/jobs/{}/deliveries", uuid::Uuid::now_v7())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_respected() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    // The schedule's next wait is 200 ms; the receiver asks for 2 s.
    rx.script(
        "busy",
        &[Reply {
            status: 503,
            retry_after: Some("2"),
        }],
    );
    let id = submit(&env, &rx.url("busy")).await;
    let hits = rx.wait_hits("busy", 2, Duration::from_secs(15)).await;
    assert_eq!(hits.len(), 2);
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "second attempt after {gap:?}"
    );
    assert!(gap < Duration::from_secs(6), "second attempt after {gap:?}");
    assert_eq!(hits[1].answered, 200);
    deliveries_until(&env, &format!("/v1/jobs/{id}/deliveries"), "delivered").await;
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_one_completed_event_with_counts_and_results_link() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let mut csv = String::from("student,balance,income\n");
    for i in 0..600 {
        csv.push_str(&format!("{},{}.5,{}\n", i % 2, i * 3, 10_000 + i * 50));
    }
    let r = env
        .http
        .post(env.url("/v1/batches"))
        .query(&[
            ("model", "credit-default"),
            ("webhook_url", &rx.url("batch")),
        ])
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hits = rx.wait_hits("batch", 1, Duration::from_secs(30)).await;
    assert_eq!(hits.len(), 1);
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    let event: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["total"], 600);
    assert_eq!(event["data"]["succeeded"], 600);
    assert_eq!(event["data"]["failed"], 0);
    assert_eq!(
        event["data"]["results"],
        format!("https://infq.example.com/v1/batches/{id}/results")
    );
    deliveries_until(&env, &format!("/v1/batches/{id}/deliveries"), "delivered").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.hits("batch").len(), 1, "one event for the whole batch");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_callback_urls_are_refused_at_submit_time() {
    let rx = Receiver::start().await;
    let mut s = settings();
    s.webhooks.allow_http = false;
    s.webhooks.allow_hosts.clear();
    let env = TestEnv::start_with(s, false).await.unwrap();
    let port = rx.base.rsplit(':').next().unwrap().to_string();
    for (url, why) in [
        (format!("https://127.0.0.1:{port}/hook/x"), "loopback"),
        ("https://2130706433/".to_string(), "loopback"),
        ("https://0x7f.0.0.1/".to_string(), "loopback"),
        ("https://0177.0.0.1/".to_string(), "loopback"),
        ("https://10.0.0.8/".to_string(), "private"),
        ("https://192.168.0.1/".to_string(), "private"),
        ("https://172.20.1.1/".to_string(), "private"),
        (
            "https://169.254.169.254/latest/meta-data/".to_string(),
            "cloud metadata",
        ),
        ("https://0xa9fea9fe/".to_string(), "cloud metadata"),
        ("https://100.100.100.200/".to_string(), "CGNAT"),
        ("https://[::1]/".to_string(), "loopback"),
        ("https://[fe80::1]/".to_string(), "link-local"),
        ("https://[fd00:ec2::254]/".to_string(), "unique-local"),
        ("https://[::ffff:127.0.0.1]/".to_string(), "loopback"),
        ("https://[::ffff:a9fe:a9fe]/".to_string(), "cloud metadata"),
        (
            format!("https://localhost:{port}/hook/x"),
            "localhost resolves to",
        ),
        (rx.url("x"), "scheme `http`"),
        ("ftp://example.com/".to_string(), "scheme `ftp`"),
    ] {
        let r = env
            .http
            .post(env.url("/v1/jobs"))
            .json(&json!({
                "model": "credit-default",
                "inputs": [0, 100, 1000],
                "webhook_url": url,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let body: Value = r.json().await.unwrap();
        let detail = &body["error"]["details"][0];
        assert_eq!(detail["field"], "webhook_url", "{url}: {body}");
        assert!(
            detail["message"].as_str().unwrap().contains(why),
            "{url}: {body}"
        );
        // Batches check the same way, before reading the upload.
        let r = env
            .http
            .post(env.url("/v1/batches"))
            .query(&[("model", "credit-default"), ("webhook_url", url.as_str())])
            .header("content-type", "text/csv")
            .body("student,balance,income\n0,1,2\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "batch {url}");
    }
    assert!(
        env.redis_keys().await.unwrap().is_empty(),
        "nothing recorded for refused submissions"
    );
    env.stop().await.unwrap();
}

/// Publishes `body` to `exchange` of the test's namespace, persistent,
/// with `message_id` if given, and waits for the broker's confirm.
async fn publish(env: &TestEnv, exchange: String, body: &[u8], message_id: Option<&str>) {
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut props = lapin::BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    ch.basic_publish(
        exchange.as_str().into(),
        "".into(),
        Default::default(),
        body,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    infq_common::amqp::close(&conn, "done").await;
}

fn topology(env: &TestEnv) -> infq_common::topology::Topology {
    infq_common::topology::Topology::of(&env.settings)
}

/// Publishes an event message directly, as a worker would.
async fn publish_event(env: &TestEnv, msg: &EventMessage) {
    publish(env, topology(env).webhooks_exchange(), &msg.encode(), None).await;
}

/// A job without a callback of its own, run to its end.
async fn finished_job(env: &TestEnv, inputs: Value) -> uuid::Uuid {
    let r = env
        .http
        .post(env.url("/v1/jobs?wait=10"))
        .json(&json!({"model": "credit-default", "inputs": inputs}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "succeeded", "{v}");
    v["id"].as_str().unwrap().parse().unwrap()
}

/// Points the record of job `id` at `url`, as a record written by an
/// older version, or one whose host's DNS answer changed since, may.
async fn set_webhook_url(env: &TestEnv, id: &uuid::Uuid, url: &str) {
    let mut c = redis_of(&env.settings).await;
    let _: () = redis::cmd("HSET")
        .arg(env.store().keys().job(id))
        .arg("webhook_url")
        .arg(url)
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_checks_addresses_again_and_drops_duplicates() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let port = rx.base.rsplit(':').next().unwrap().to_string();

    // URLs that bypassed the submit-time check (a record written by an
    // older version, a DNS answer that changed) are checked at send time:
    // a name resolving to loopback and a mapped loopback literal.
    for url in [
        format!("http://localhost:{port}/hook/sneaky"),
        format!("http://[::ffff:127.0.0.2]:{port}/hook/sneaky"),
    ] {
        let subject = finished_job(&env, json!([0, 100, 1000])).await;
        set_webhook_url(&env, &subject, &url).await;
        publish_event(&env, &EventMessage::new(SubjectKind::Job, subject)).await;
        let d = deliveries_until(&env, &format!("/v1/jobs/{subject}/deliveries"), "failed").await;
        let a = &d["events"][0]["attempts"];
        assert_eq!(
            a.as_array().unwrap().len(),
            1,
            "refused without retries: {d}"
        );
        let err = a[0]["error"].as_str().unwrap();
        assert!(
            err.contains("refused") && err.contains("loopback"),
            "{url}: {err}"
        );
    }
    assert!(rx.hits("sneaky").is_empty(), "nothing reached the receiver");

    // The same event published again (a worker redelivered after
    // publishing it) reaches the receiver once.
    let id = submit(&env, &rx.url("twice")).await;
    let hits = rx.wait_hits("twice", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    let id: uuid::Uuid = id.parse().unwrap();
    for _ in 0..2 {
        publish_event(&env, &EventMessage::new(SubjectKind::Job, id)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits("twice").len(), 1, "the duplicates were dropped");

    // A message that is not an event is dead-lettered, and the dispatcher
    // goes on.
    publish(
        &env,
        topology(&env).webhooks_exchange(),
        b"{\"not\": \"an event\"}",
        None,
    )
    .await;
    let after = submit(&env, &rx.url("after")).await;
    rx.wait_hits("after", 1, Duration::from_secs(10)).await;
    deliveries_until(&env, &format!("/v1/jobs/{after}/deliveries"), "delivered").await;

    // Events in the dead-letter queue (after too many deliveries) are
    // listed as such and replayed to the dispatchers.
    let late = finished_job(&env, json!([1, 900, 20000])).await;
    set_webhook_url(&env, &late, &rx.url("replayed")).await;
    let bundle =
        infq_common::webhooks::event::encode_all(&[EventMessage::new(SubjectKind::Job, late)]);
    publish(
        &env,
        topology(&env).dead_exchange(),
        &bundle,
        Some("bundle-1"),
    )
    .await;
    let listed = get(&env, "/v1/admin/dead-letters").await;
    let kinds: Vec<(&str, &str)> = listed["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["id"].as_str().unwrap_or("-")))
        .collect();
    assert!(
        kinds.contains(&("webhook", "webhook:bundle-1")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("undecodable", "-")), "{kinds:?}");
    let r = replay(&env, json!({"ids": ["webhook:bundle-1"]})).await;
    assert_eq!(r["count"], 1, "{r}");
    let hits = rx.wait_hits("replayed", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(SECRET_B, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    env.stop().await.unwrap();
}

#[test]
fn signatures_verify_independently_and_tampering_fails() {
    // The specification's example, through infq's signer, checked with the
    // independent HMAC.
    let signer = infq_common::webhooks::sign::Signer::new(&[SECRET_A.into()]).unwrap();
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    let (id, ts) = ("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553);
    let sig = signer.sign(id, ts, body);
    assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    assert_eq!(
        sig,
        format!(
            "v1,{}",
            expected_signature(SECRET_A, id, &ts.to_string(), body.as_bytes())
        )
    );

    let now = unix_now();
    let headers = |id: &str, ts: i64, sig: &str| {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    };
    let both =
        infq_common::webhooks::sign::Signer::new(&[SECRET_A.into(), SECRET_B.into()]).unwrap();
    let good = headers("msg_1", now, &both.sign("msg_1", now, body));
    for secret in [SECRET_A, SECRET_B] {
        verify(secret, &good, body.as_bytes(), now).unwrap();
        // The reference implementation agrees.
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body.as_bytes(), &good)
            .unwrap();
    }
    // Tampered body, wrong secret, stale or future timestamp, swapped id.
    let tampered = body.replace("test_user", "admin");
    assert!(verify(SECRET_A, &good, tampered.as_bytes(), now).is_err());
    let wrong = infq_common::webhooks::sign::generate_secret();
    assert!(verify(&wrong, &good, body.as_bytes(), now).is_err());
    let stale = now - 600;
    let old = headers("msg_1", stale, &both.sign("msg_1", stale, body));
    assert!(verify(SECRET_A, &old, body.as_bytes(), now).is_err());
    assert!(standardwebhooks::Webhook::new(SECRET_A)
        .unwrap()
        .verify(body.as_bytes(), &old)
        .is_err());
    let future = now + 600;
    let ahead = headers("msg_1", future, &both.sign("msg_1", future, body));
    assert!(verify(SECRET_A, &ahead, body.as_bytes(), now).is_err());
    let swapped = headers("msg_2", now, &both.sign("msg_1", now, body));
    assert!(verify(SECRET_A, &swapped, body.as_bytes(), now).is_err());
    assert!(standardwebhooks::Webhook::new(SECRET_A)
        .unwrap()
        .verify(tampered.as_bytes(), &good)
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_announces_its_new_end_under_a_new_id() {
    let rx = Receiver::start().await;
    let mut env = TestEnv::start_with(settings(), false).await.unwrap();
    // An accepted job the broker dead-lettered (as after too many
    // deliveries): its message, taken off its queue, in `<ns>.dead`.
    let id: uuid::Uuid = submit(&env, &rx.url("replay")).await.parse().unwrap();
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = topology(&env).job_queue("credit-default", infq_common::job::Priority::Interactive);
    let taken = ch
        .basic_get(queue.as_str().into(), Default::default())
        .await
        .unwrap()
        .expect("the job's message");
    let message_id = taken
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string());
    publish(
        &env,
        topology(&env).dead_exchange(),
        &taken.data,
        message_id.as_deref(),
    )
    .await;
    taken.ack(Default::default()).await.unwrap();
    infq_common::amqp::close(&conn, "done").await;
    let registry = env.settings.registry().unwrap();
    env.worker = Some(
        infq_worker::start(env.settings.clone(), registry, env.shutdown_token())
            .await
            .unwrap(),
    );

    // Its failure is announced...
    let hits = rx.wait_hits("replay", 1, Duration::from_secs(10)).await;
    let failed: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(failed["type"], "job.failed");
    assert_eq!(failed["data"]["error"]["code"], "dead_lettered");
    let first_id = hits[0].headers["webhook-id"].to_str().unwrap().to_string();

    // ...and after a replay, its success, as a new event.
    let r = replay(&env, json!({"ids": [id.to_string()]})).await;
    assert_eq!(r["count"], 1, "{r}");
    let hits = rx.wait_hits("replay", 2, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 2);
    let ok: Value = serde_json::from_slice(&hits[1].body).unwrap();
    assert_eq!(ok["type"], "job.succeeded");
    let second_id = hits[1].headers["webhook-id"].to_str().unwrap();
    assert_ne!(second_id, first_id, "a new end is a new event");
    assert_eq!(second_id, format!("{first_id}_1"));
    verify(SECRET_A, &hits[1].headers, &hits[1].body, unix_now()).unwrap();

    let d = get(&env, &format!("/v1/jobs/{id}/deliveries")).await;
    let events = d["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{d}");
    assert_eq!(events[0]["type"], "job.failed");
    assert_eq!(events[1]["type"], "job.succeeded");
    // Redelivering by type picks the latest event of that type.
    let r = env
        .http
        .post(env.url(&format!("/v1/jobs/{id}/deliveries/job.failed/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hits = rx.wait_hits("replay", 3, Duration::from_secs(10)).await;
    assert_eq!(hits[2].headers["webhook-id"], first_id.as_str());
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_paused_not_hammered() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    rx.script("down", &[status(503); 100]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(submit(&env, &rx.url("down")).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Five failures in a row open the host's circuit: the events wait,
    // unattempted, until the pause is over, instead of one request per
    // attempt (six events, five attempts each, within a second or so).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = ids.last().unwrap();
    let d = get(&env, &format!("/v1/jobs/{id}/deliveries")).await;
    let e = &d["events"];
    assert!(
        e.as_array().is_none_or(|a| a.is_empty()) || e[0]["state"] == "pending",
        "{d}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = rx.hits("down").len();
    assert!(
        (5..=8).contains(&sent),
        "about five requests before the pause, not one per attempt: {sent}"
    );
    env.stop().await.unwrap();
}

/// `POST /v1/admin/dead-letters/replay` with `body`; the answer.
async fn replay(env: &TestEnv, body: Value) -> Value {
    env.http
        .post(env.url("/v1/admin/dead-letters/replay"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_events_are_signed_with_its_own_secrets() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let (acme, _, key) = tenants.create_tenant("acme", None, false).await.unwrap();
    let own = acme.webhook_secrets[0].clone();
    let http = infq::http_builder_with_key(&key).build().unwrap();
    let job = |path: &'static str| {
        http.post(env.url("/v1/jobs"))
            .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": rx.url(path)}))
            .send()
    };
    assert_eq!(job("acme").await.unwrap().status(), 202);
    let hits = rx.wait_hits("acme", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(&own, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    for deployment in [SECRET_A, SECRET_B] {
        assert!(
            verify(deployment, &hits[0].headers, &hits[0].body, unix_now()).is_err(),
            "the deployment's secrets do not sign a tenant's events"
        );
    }

    // Rotation: with a second secret both sign; once the first is dropped,
    // only the new one does.
    let newer = infq_common::webhooks::sign::generate_secret();
    tenants
        .set_webhook_secrets("acme", vec![own.clone(), newer.clone()])
        .await
        .unwrap();
    assert!(tenants
        .set_webhook_secrets("acme", vec!["whsec_short".into()])
        .await
        .is_err());
    // Dispatchers trust what they read for tenants.cache_ms (1 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(job("rotating").await.unwrap().status(), 202);
    let hits = rx.wait_hits("rotating", 1, Duration::from_secs(10)).await;
    for secret in [&own, &newer] {
        verify(secret, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    }
    tenants
        .set_webhook_secrets("acme", vec![newer.clone()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(job("rotated").await.unwrap().status(), 202);
    let hits = rx.wait_hits("rotated", 1, Duration::from_secs(10)).await;
    verify(&newer, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    assert!(verify(&own, &hits[0].headers, &hits[0].body, unix_now()).is_err());

    // The development tenant has none of its own: the deployment signs.
    submit(&env, &rx.url("dev")).await;
    let hits = rx.wait_hits("dev", 1, Duration::from_secs(10)).await;
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_job_s_pending_webhook_is_dropped_and_not_kept() {
    let rx = Receiver::start().await;
    let mut s = settings();
    s.webhooks.schedule_ms = vec![0, 1_500, 1_500];
    let env = TestEnv::start_with(s, true).await.unwrap();
    rx.script("erased", &[status(500)]);
    let id = submit(&env, &rx.url("erased")).await;
    let hits = rx.wait_hits("erased", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    // The retry waits 1.5 s in a delay queue; the job is erased meanwhile.
    let r = env
        .http
        .delete(env.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rx.hits("erased").len(),
        1,
        "nothing is sent after the erasure"
    );
    let ns = &env.settings.namespace;
    let keys = env.redis_keys().await.unwrap();
    for k in [
        infq_common::keys::Keys::new(ns).webhook(&id.parse().unwrap(), 0),
        infq_common::keys::Keys::new(ns).deliveries(&id.parse().unwrap()),
    ] {
        assert!(!keys.contains(&k), "{k} was written again: {keys:?}");
    }
    env.stop().await.unwrap();
}

/// Every dead letter in `<ns>.dead` (taken off it): its reason.
async fn dead_reasons(env: &TestEnv) -> Vec<String> {
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            topology(env).dead_queue().as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        out.push(infq_common::topology::death_reason(&m.properties));
        m.ack(Default::default()).await.unwrap();
    }
    infq_common::amqp::close(&conn, "done").await;
    out
}

/// Waits until `<ns>.dead` holds at least `n` messages.
async fn wait_dead(env: &TestEnv, n: u32) {
    let queue = topology(env).dead_queue();
    for _ in 0..200 {
        if env.queue_depth(&queue).await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_event_messages_get_nothing_sent_or_signed_and_are_dead_lettered() {
    let rx = Receiver::start().await;
    let env = TestEnv::start_with(settings(), true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let (acme, _, key) = tenants.create_tenant("acme", None, false).await.unwrap();
    let acme_secret = acme.webhook_secrets[0].clone();
    let http = infq::http_builder_with_key(&key).build().unwrap();
    let r = http
        .post(env.url("/v1/jobs"))
        .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": rx.url("acme")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let acme_job = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hits = rx.wait_hits("acme", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1);
    verify(&acme_secret, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    // A job of another tenant that asked for no callback.
    let plain = finished_job(&env, json!([0, 100, 1000])).await;

    // What an attacker with access to the broker publishes: event
    // messages naming real and made-up subjects...
    let forge = |subject: &str, extra: Value| {
        let mut v = json!({
            "kind": "job",
            "subject": subject,
            "chain": uuid::Uuid::new_v4(),
            "attempt": 0,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::to_vec(&v).unwrap()
    };
    // ...and the URL, the tenant and the body of their choice, in the
    // format of earlier releases that carried them.
    let forged_body = r#"{"type":"job.succeeded","data":{"id":"x","output":{"default":0.0}}}"#;
    let own = json!({
        "url": rx.url("evil"),
        "tenant": "acme",
        "event": {"id": "msg_forged", "type": "job.succeeded", "body": forged_body},
    });
    let hooks = topology(&env).webhooks_exchange();
    // ...one without a callback (the attack the issue reproduced),
    publish(
        &env,
        hooks.clone(),
        &forge(&plain.to_string(), json!({})),
        None,
    )
    .await;
    // the tenant's own, whose event was sent (a duplicate, dropped),
    publish(&env, hooks.clone(), &forge(&acme_job, json!({})), None).await;
    // the tenant's own, naming where to send it, for whom and what,
    publish(&env, hooks.clone(), &forge(&acme_job, own), None).await;
    // one that names no record, a batch that is a job, an end the job
    // has not reached, and an attempt past any schedule.
    let nobody = uuid::Uuid::now_v7().to_string();
    publish(&env, hooks.clone(), &forge(&nobody, json!({})), None).await;
    publish(
        &env,
        hooks.clone(),
        &forge(&acme_job, json!({"kind": "batch"})),
        None,
    )
    .await;
    publish(
        &env,
        hooks.clone(),
        &forge(&acme_job, json!({"gen": 7})),
        None,
    )
    .await;
    publish(
        &env,
        hooks.clone(),
        &forge(&acme_job, json!({"attempt": 99})),
        None,
    )
    .await;
    // A later attempt of a chain never begun: it must not begin one that
    // has a single attempt left.
    let late = finished_job(&env, json!([1, 900, 1000])).await;
    set_webhook_url(&env, &late, &rx.url("late")).await;
    publish(
        &env,
        hooks.clone(),
        &forge(&late.to_string(), json!({"attempt": 3})),
        None,
    )
    .await;
    // A bundle mixing a forgery with a genuine event: the forgery alone
    // is dead-lettered, the genuine one is sent.
    let mixed = finished_job(&env, json!([1, 2000, 1000])).await;
    set_webhook_url(&env, &mixed, &rx.url("mixed")).await;
    let bundle = infq_common::webhooks::event::encode_all(&[
        EventMessage::new(SubjectKind::Job, mixed),
        EventMessage::new(SubjectKind::Job, uuid::Uuid::now_v7()),
    ]);
    publish(&env, hooks, &bundle, None).await;

    wait_dead(&env, 8).await;
    let hits = rx.wait_hits("mixed", 1, Duration::from_secs(10)).await;
    assert_eq!(hits.len(), 1, "the genuine event of the bundle is sent");
    verify(SECRET_A, &hits[0].headers, &hits[0].body, unix_now()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rx.hits("evil").is_empty(),
        "a forged message got a request signed for acme: {:?}",
        rx.hits("evil")
    );
    assert!(
        rx.hits("late").is_empty(),
        "a made-up attempt began a chain"
    );
    assert_eq!(rx.hits("acme").len(), 1, "acme's event was not sent again");
    let mut reasons = dead_reasons(&env).await;
    reasons.sort();
    let expect = [
        "asked for no webhook",
        "beyond its record's 0",
        "names no batch record",
        "names no job record",
        "names no job record",
        "never begun",
        "only the record may say",
        "out of range",
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:#?}");
    for want in expect {
        let i = reasons
            .iter()
            .position(|r| r.contains(want))
            .unwrap_or_else(|| panic!("no dead letter says `{want}`: {reasons:#?}"));
        reasons.remove(i);
    }
    // The tenant's record and event are untouched.
    let d: Value = http
        .get(env.url(&format!("/v1/jobs/{acme_job}/deliveries")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["events"][0]["state"], "delivered", "{d}");
    assert_eq!(d["events"][0]["url"], rx.url("acme").as_str());
    assert_eq!(d["events"][0]["attempts"].as_array().unwrap().len(), 1);
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_s_slow_receiver_does_not_hold_up_another_s_webhooks() {
    let slow = Receiver::start_slow(Duration::from_secs(4)).await;
    let quick = Receiver::start().await;
    let mut s = settings();
    s.webhooks.timeout_ms = 10_000;
    let env = TestEnv::start_with(s, true).await.unwrap();
    let tenants = infq_common::tenants::TenantStore::new(env.store().connection(), &env.settings);
    let client = |key: &str| {
        infq::http_builder_with_key(key)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let slowco = client(
        &tenants
            .create_tenant("slowco", None, false)
            .await
            .unwrap()
            .2,
    );
    let quickco = client(
        &tenants
            .create_tenant("quickco", None, false)
            .await
            .unwrap()
            .2,
    );
    let job = |http: &reqwest::Client, url: String| {
        let http = http.clone();
        let base = env.url("/v1/jobs?wait=10");
        async move {
            let r = http
                .post(base)
                .json(&json!({"model": "credit-default", "inputs": [0, 1500, 40000], "webhook_url": url}))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "succeeded", "{v}");
        }
    };
    // The slow tenant's events, each in a message of its own (one job
    // ended at a time), more than the dispatcher takes at once.
    for _ in 0..80 {
        job(&slowco, slow.url("a")).await;
    }
    // The other tenant's events get through promptly meanwhile.
    for i in 0..3 {
        let path = format!("b{i}");
        job(&quickco, quick.url(&path)).await;
        let ended = Instant::now();
        let hits = quick.wait_hits(&path, 1, Duration::from_secs(30)).await;
        assert_eq!(hits.len(), 1, "{path} never arrived");
        let latency = hits[0].at.saturating_duration_since(ended);
        assert!(
            latency < Duration::from_secs(3),
            "{path} arrived {latency:?} after its job ended"
        );
    }
    // The slow tenant's do arrive, slowly.
    assert!(!slow
        .wait_hits("a", 1, Duration::from_secs(10))
        .await
        .is_empty());
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_queue_takes_is_not_published() {
    let env = TestEnv::start_with(settings(), false).await.unwrap();
    let conn = env.amqp().await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    topology(&env).declare(&ch, &[]).await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let msgs = [EventMessage::new(SubjectKind::Job, uuid::Uuid::now_v7())];
    // The dispatchers' queue and a delay tier deleted behind their live
    // exchanges: a confirmed publish would vanish; a mandatory one comes
    // back, and that is a failure.
    let main = topology(&env).webhooks_exchange();
    let tier = topology(&env).webhook_retry_exchange(1).unwrap();
    for q in [&main, &tier] {
        use infq_worker::webhooks::events::publish_on;
        publish_on(&ch, q, &msgs, None).await.unwrap();
        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .unwrap();
        let r = publish_on(&ch, q, &msgs, Some(200)).await;
        assert!(r.is_err(), "published to {q} with no queue: {r:?}");
    }
    // The worker's event publisher says so to the writer, which then
    // does not acknowledge the job.
    let events = infq_worker::webhooks::events::Events::new(topology(&env));
    let publisher = conn.create_channel().await.unwrap();
    publisher.confirm_select(Default::default()).await.unwrap();
    events.set_channel(Some(publisher));
    assert!(events.publish(msgs.to_vec()).await.is_err());
    infq_common::amqp::close(&conn, "done").await;
    env.stop().await.unwrap();
}

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
    wait_dead(&env, 1).await;
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

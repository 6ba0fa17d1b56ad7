//! Test support for infq's end-to-end tests and benchmarks.
//!
//! [`TestEnv`] starts a producer and (optionally) a worker in-process,
//! against the real RabbitMQ and Redis, under a namespace of its own, so
//! tests run side by side without seeing each other's queues or keys.
#![forbid(unsafe_code)]

pub mod broker;
pub mod cluster;
pub mod procs;
pub mod redis_server;
pub mod tls;
pub mod wait;

use anyhow::Context;
use infq_common::config::Settings;
use infq_common::message::JobMessage;
use infq_common::registry::Registry;
use infq_common::shutdown::CancellationToken;
use infq_worker::WorkerHandle;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The workspace root (where `config/` and `data/` live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The process's Prometheus recorder, installed by the first environment
/// started, so that `/metrics` answers as it does in a real producer.
fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| infq_common::metrics::install(infq_common::metrics::Source::Both).ok())
        .clone()
}

/// Settings from `config/default.toml` under a fresh namespace, with queues
/// that expire after a minute unused, no worker listener, the producer on
/// an ephemeral port, and 256-row chunks: the tests state the chunks they
/// expect in those (the default's chunks are the benchmark's to measure).
pub fn test_settings() -> Settings {
    let ns = format!("t{}", uuid::Uuid::new_v4().simple());
    let file = root().join("config/default.toml");
    Settings::load(
        Some(&file),
        &[
            ("namespace", ns.into()),
            ("amqp.queue_expires_ms", 60_000.into()),
            ("producer.listen", "127.0.0.1:0".into()),
            ("producer.chunk_rows", 256.into()),
        ],
    )
    .expect("test settings")
}

/// An HTTP client builder that sends the development tenant's API key
/// (`config/default.toml`) with every request.
pub fn http_builder() -> reqwest::ClientBuilder {
    http_builder_with_key(infq_common::tenants::DEV_API_KEY)
}

/// An HTTP client builder that sends `key` with every request.
pub fn http_builder_with_key(key: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).expect("a header value"),
    );
    reqwest::Client::builder().default_headers(headers)
}

/// A producer and optionally a worker, running in this process.
pub struct TestEnv {
    /// The settings both run with.
    pub settings: Settings,
    /// Base URL of the producer, e.g. `http://127.0.0.1:40123`.
    pub base: String,
    /// A client for the API.
    pub http: reqwest::Client,
    /// The worker, if started.
    pub worker: Option<WorkerHandle>,
    shutdown: CancellationToken,
    producer: JoinHandle<anyhow::Result<()>>,
}

impl TestEnv {
    /// Starts a producer and a worker.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(test_settings(), true).await
    }

    /// Starts a producer, and a worker if `with_worker`.
    pub async fn start_with(settings: Settings, with_worker: bool) -> anyhow::Result<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            infq_common::telemetry::init(&settings.log);
        }
        let registry = settings.registry()?;
        let shutdown = CancellationToken::new();
        let worker = if with_worker {
            Some(infq_worker::start(settings.clone(), registry.clone(), shutdown.clone()).await?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(settings.producer.listen).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(infq_producer::AppState::new(
            settings.clone(),
            registry,
            prometheus(),
        )?);
        let producer = tokio::spawn(infq_producer::serve(state, listener, shutdown.clone()));
        let env = Self {
            settings,
            base,
            http: http_builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
            worker,
            shutdown,
            producer,
        };
        env.wait_ready().await?;
        Ok(env)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..100 {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                let worker_ready = self.worker.as_ref().is_none_or(|w| {
                    w.stats
                        .broker_connected
                        .load(std::sync::atomic::Ordering::Relaxed)
                });
                if r.status().is_success() && worker_ready {
                    return Ok(());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("test environment did not become ready")
    }

    /// The keys of the environment's namespace, less its tenants' quota
    /// counters: the records, results and marks its work left.
    pub async fn records(&self) -> Vec<String> {
        let quota = infq_common::keys::Keys::new(&self.settings.namespace).quota_prefix();
        let mut keys = self.redis_keys().await.unwrap();
        keys.retain(|k| !k.starts_with(&quota));
        keys
    }

    /// Starts a worker in an environment started without one; [`Self::stop`]
    /// drains it like the first.
    pub async fn start_worker(&mut self) {
        let registry = self.settings.registry().unwrap();
        self.worker = Some(
            infq_worker::start(self.settings.clone(), registry, self.shutdown_token())
                .await
                .unwrap(),
        );
    }

    /// Takes the message at the head of `queue` and dead-letters it with
    /// `reason`, as a worker refusing it does: straight to the dead-letter
    /// exchange, so it reaches `<ns>.dead` and `<ns>.dead.record` at once.
    pub async fn refuse_head(&self, queue: &str, reason: &str) {
        self.refuse_head_edited(queue, reason, |body| body).await
    }

    /// [`Self::refuse_head`], dead-lettering what `edit` makes of the
    /// message's body, as anyone who can publish to the broker could.
    pub async fn refuse_head_edited(
        &self,
        queue: &str,
        reason: &str,
        edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) {
        let conn = self.amqp().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let got = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
            .expect("a message to refuse");
        let topology = infq_common::topology::Topology::of(&self.settings);
        let d = got.delivery;
        let lease = Self::confirm_lease(&conn).await;
        infq_common::dead::publish_dead(
            &lease,
            &topology,
            queue,
            &edit(d.data.clone()),
            &d.properties,
            reason,
            false,
        )
        .await
        .unwrap();
        d.acker.ack(Default::default()).await.unwrap();
        infq_common::amqp::close(&conn, "refused").await;
    }

    /// The token that stops this environment: a worker started later with
    /// it is drained by [`Self::stop`] like the first.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The job store of the test's namespace, for reading records directly.
    pub fn store(&self) -> infq_common::store::JobStore {
        infq_common::store::JobStore::new(&self.settings.redis, &self.settings.namespace)
            .expect("a job store")
    }

    /// A broker connection for inspecting or feeding queues directly.
    pub async fn amqp(&self) -> anyhow::Result<lapin::Connection> {
        Ok(infq_common::amqp::connect(&self.settings.amqp, "infq-test").await?)
    }

    /// Messages ready in `queue` (passive declare).
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        let conn = self.amqp().await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .with_context(|| format!("queue {queue}"))?;
        infq_common::amqp::close(&conn, "done").await;
        Ok(q.message_count())
    }

    /// `GET path` with the environment's client, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        get_json(&self.http, &self.url(path)).await
    }

    /// A connection to the environment's Redis.
    pub async fn redis(&self) -> infq_common::redis_link::RedisLink {
        redis_of(&self.settings).await
    }

    /// Redis keys under this environment's namespace (from every primary
    /// of a cluster).
    pub async fn redis_keys(&self) -> anyhow::Result<Vec<String>> {
        let mut c = redis_of(&self.settings).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(infq_common::keys::Keys::new(&self.settings.namespace).everything())
            .query_async(&mut c)
            .await?;
        Ok(keys)
    }

    /// Stops the producer and drains the worker.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let limit = std::time::Duration::from_secs(40);
        if let Some(w) = self.worker {
            tokio::time::timeout(limit, w.join())
                .await
                .context("the worker did not stop")??;
        }
        tokio::time::timeout(limit, self.producer)
            .await
            .context("the producer did not stop")???;
        delete_namespace(&self.settings).await
    }
}

/// A connection to the Redis of `settings`, in its mode.
pub async fn redis_of(settings: &Settings) -> infq_common::redis_link::RedisLink {
    infq_common::redis_link::RedisLink::new(&settings.redis).expect("a Redis connection")
}

/// Deletes a test or benchmark namespace: its exchanges and queues, and
/// its keys in Redis.
pub async fn delete_namespace(settings: &Settings) -> anyhow::Result<()> {
    let registry = settings.registry()?;
    let topology = infq_common::topology::Topology::of(settings);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-test-cleanup").await?;
    let ch = conn.create_channel().await?;
    let mut c = redis_of(settings).await;
    let keys = infq_common::keys::Keys::new(&settings.namespace);
    let shares = infq_common::shares::Shares::new(c.clone(), &keys)
        .list()
        .await?;
    topology.delete(&ch, &registry.names(), &shares).await?;
    infq_common::amqp::close(&conn, "done").await;
    let pattern = infq_common::keys::Keys::new(&settings.namespace).everything();
    let keys: Vec<String> = if c.is_cluster() {
        // KEYS goes to every primary; test namespaces are small.
        redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await?
    } else {
        let mut iter: redis::AsyncIter<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter_async(&mut c)
            .await?;
        let mut keys = Vec::new();
        while let Some(k) = iter.next_item().await {
            keys.push(k?);
        }
        keys
    };
    for part in keys.chunks(1000) {
        redis::cmd("UNLINK")
            .arg(part)
            .query_async::<()>(&mut c)
            .await?;
    }
    Ok(())
}

impl TestEnv {
    /// Stops without deleting the namespace (for tests that restart
    /// services on the same queues).
    pub async fn stop_keeping_queues(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(w) = self.worker {
            w.join().await?;
        }
        self.producer.await??;
        Ok(())
    }
}

/// One borrower of the Default data set.
#[derive(Debug, Clone, Copy)]
pub struct Borrower {
    /// 1.0 if a student.
    pub student: f32,
    /// Average card balance.
    pub balance: f32,
    /// Yearly income.
    pub income: f32,
    /// Whether the borrower defaulted.
    pub defaulted: bool,
}

impl Borrower {
    /// Features in schema order.
    pub fn features(&self) -> [f32; 3] {
        [self.student, self.balance, self.income]
    }
}

/// Reads `data/Default.csv` (written by `scripts/setup`).
pub fn load_default_csv(path: &Path) -> anyhow::Result<Vec<Borrower>> {
    let mut rdr = csv::Reader::from_path(path)
        .with_context(|| format!("{} (run scripts/setup)", path.display()))?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        out.push(Borrower {
            defaulted: &rec[0] == "Yes",
            student: if &rec[1] == "Yes" { 1.0 } else { 0.0 },
            balance: rec[2].parse()?,
            income: rec[3].parse()?,
        });
    }
    Ok(out)
}

/// Runs the reference model directly through `tch` on the CPU, one forward
/// pass over all `rows` (3 features each); returns one probability per row.
pub fn reference_outputs(registry: &Registry, rows: &[[f32; 3]]) -> anyhow::Result<Vec<f32>> {
    let spec = registry
        .resolve("credit-default")
        .context("credit-default in the registry")?;
    let module = infq_worker::model::load(spec, tch::Device::Cpu)?;
    let _g = tch::no_grad_guard();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    infq_worker::model::forward(&module, tch::Device::Cpu, &flat, rows.len(), 3)
        .map_err(anyhow::Error::msg)
}

/// Runs rows through the model at `address` (`name` or `name@version`)
/// directly on the CPU, as the worker would: one output vector per row.
pub fn model_outputs(
    registry: &Registry,
    address: &str,
    rows: &[Vec<f32>],
) -> anyhow::Result<Vec<Vec<f32>>> {
    let spec = registry
        .resolve(address)
        .with_context(|| format!("{address} in the registry"))?;
    let module = infq_worker::model::load(spec, tch::Device::Cpu)?;
    let _g = tch::no_grad_guard();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let out =
        infq_worker::model::forward(&module, tch::Device::Cpu, &flat, rows.len(), spec.width())
            .map_err(anyhow::Error::msg)?;
    Ok(out
        .chunks(spec.outputs.len())
        .map(<[f32]>::to_vec)
        .collect())
}

/// Synthetic rows for `txn-risk`: 12 months of (spend, payment_ratio,
/// utilization, cash_advances), then tenure in months; deterministic per
/// `seed`.
pub fn txn_rows(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32
    };
    (0..n)
        .map(|_| {
            let mut row = Vec::with_capacity(49);
            for _ in 0..12 {
                row.push(5.0 * next());
                row.push(1.5 * next());
                row.push(1.5 * next());
                row.push((4.0 * next()).floor());
            }
            row.push((3.0 + 237.0 * next()).floor());
            row
        })
        .collect()
}

/// A job message for `model@version` with `inputs`, made up as anyone with
/// access to the broker could (an interactive job with a new id): the
/// tests of what a worker does with messages it did not get from a
/// producer start from it.
pub fn made_up_message(model: &str, version: &str, inputs: Vec<f32>) -> JobMessage {
    JobMessage {
        work: infq_common::message::Work::Job {
            id: infq_common::job::new_job_id(),
        },
        model: model.into(),
        version: version.into(),
        priority: infq_common::job::Priority::Interactive,
        inputs,
        created_at_ms: infq_common::job::now_ms(),
        deadline_at_ms: None,
        retries: 0,
        webhook_url: None,
        tenant: None,
        retention_ms: None,
        passthrough: Vec::new(),
    }
}

/// `n` rows built from Default.csv (cycled, with the balance shifted on
/// each pass so rows differ), as f32 features and as CSV text with an
/// extra `id` column and the features in another order.
pub fn portfolio(n: usize) -> (Vec<[f32; 3]>, String) {
    let base = load_default_csv(&root().join("data/Default.csv")).unwrap();
    let mut rows = Vec::with_capacity(n);
    let mut csv = String::from("id,income,student,balance\n");
    for i in 0..n {
        let b = base[i % base.len()];
        let row = [b.student, b.balance + (i / base.len()) as f32, b.income];
        csv.push_str(&format!("loan-{i},{},{},{}\n", row[2], row[0], row[1]));
        rows.push(row);
    }
    (rows, csv)
}

/// `GET url` with `http`, as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The `id` of an accepted job or batch.
pub async fn id_of(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().expect("an id").to_string()
}

/// Submits a job body to `POST /v1/jobs`, asserts `202`, returns its id.
pub async fn submit_job(http: &reqwest::Client, base: &str, body: &serde_json::Value) -> String {
    let r = http
        .post(format!("{base}/v1/jobs"))
        .json(body)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("an id")
        .to_string()
}

/// Long-polls a job until it is terminal and returns its view.
pub async fn wait_job(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    wait_ended(http, &format!("{base}/v1/jobs/{id}")).await
}

/// Long-polls a batch until it has ended and returns its view.
pub async fn wait_batch(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    wait_ended(http, &format!("{base}/v1/batches/{id}")).await
}

/// Long-polls the job or batch at `url` (up to ten minutes) until it is
/// neither queued nor running.
async fn wait_ended(http: &reqwest::Client, url: &str) -> serde_json::Value {
    for _ in 0..20 {
        let v = get_json(http, &format!("{url}?wait=30")).await;
        if v["status"] != "queued" && v["status"] != "running" {
            return v;
        }
    }
    panic!("{url} did not end");
}

/// `GET url` with `http`, as text.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Uploads a bulk file, `POST {base}/v1/batches?{query}`, with its
/// `Content-Type` if given.
pub async fn upload_batch(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut r = http.post(format!("{base}/v1/batches?{query}"));
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    r.body(body).send().await.expect("upload")
}

/// A batch's results in `format` (`csv` or `jsonl`), as text.
pub async fn batch_results(http: &reqwest::Client, base: &str, id: &str, format: &str) -> String {
    get_text(
        http,
        &format!("{base}/v1/batches/{id}/results?format={format}"),
    )
    .await
}

/// Deletes the queues and Redis keys of namespace `ns` (after a test that
/// ran processes under it).
pub async fn delete_namespace_named(ns: &str) {
    let mut s = test_settings();
    s.namespace = ns.to_string();
    let _ = delete_namespace(&s).await;
}

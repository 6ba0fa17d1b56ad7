//! A producer and a worker started as processes under a namespace of
//! their own, and what is measured of them: batch sizes and CPU time.

use anyhow::Context;
use hdrhistogram::Histogram;
use infq::procs::Service;
use infq::root;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Submits a job and waits for its result in the same request
/// (`POST /v1/jobs?wait=10`): the time until the result is readable.
pub(crate) async fn submit_and_wait(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}/v1/jobs?wait=10"))
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "submit: {}", r.status());
    Ok(r.json().await?)
}

/// Settings from `config/default.toml`.
pub(crate) fn settings() -> anyhow::Result<infq_common::config::Settings> {
    Ok(infq_common::config::Settings::load(
        Some(&root().join("config/default.toml")),
        &[],
    )?)
}

/// A producer and a worker under a namespace of their own.
pub(crate) struct Stack {
    pub(crate) producer: Service,
    pub(crate) worker: Service,
    pub(crate) http: reqwest::Client,
    pub(crate) ns: String,
}

impl Stack {
    pub(crate) async fn start(profile: &str) -> anyhow::Result<Self> {
        Self::start_with(profile, &[]).await
    }

    pub(crate) async fn start_with(
        profile: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let ns = format!("bench{}", uuid::Uuid::new_v4().simple());
        let mut env = vec![
            ("INFQ_NAMESPACE", ns.clone()),
            ("INFQ_AMQP__QUEUE_EXPIRES_MS", "60000".to_string()),
            ("INFQ_LOG__FILTER", "warn".to_string()),
        ];
        env.extend(extra.iter().cloned());
        let http = infq::http_builder()
            .pool_max_idle_per_host(512)
            .timeout(Duration::from_secs(3600))
            .build()?;
        let mut worker = Service::spawn(profile, "infq-worker", &env)?;
        worker.wait_ready(&http).await.context("worker")?;
        let mut producer = Service::spawn(profile, "infq-producer", &env)?;
        producer.wait_ready(&http).await.context("producer")?;
        Ok(Self {
            producer,
            worker,
            http,
            ns,
        })
    }

    /// Stops both processes and deletes the namespace's queues and keys.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let mut settings = settings()?;
        settings.namespace = self.ns.clone();
        drop(self);
        infq::delete_namespace(&settings).await
    }

    /// A client of a new tenant `name` of this stack's namespace, with
    /// room for `max_queued` rows.
    pub(crate) async fn tenant(
        &self,
        name: &str,
        max_queued: u64,
    ) -> anyhow::Result<reqwest::Client> {
        let mut settings = settings()?;
        settings.namespace = self.ns.clone();
        let link = infq::redis_of(&settings).await;
        let limits = infq_common::config::Limits {
            rate_per_sec: 1000.0,
            burst: 1000,
            max_queued,
            retention_secs: 3600,
        };
        let (_, _, key) = infq_common::tenants::TenantStore::new(link, &settings)
            .create_tenant(name, Some(limits), false)
            .await?;
        Ok(infq::http_builder_with_key(&key)
            .timeout(Duration::from_secs(3600))
            .build()?)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.producer.addr)
    }

    pub(crate) async fn batch_sizes(&self) -> anyhow::Result<BatchSizes> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.worker.addr))
            .send()
            .await?
            .text()
            .await?;
        Ok(BatchSizes::parse(&text))
    }

    /// Sum and count of every histogram of the producer's and the
    /// worker's `/metrics` (all label sets of a name together), by name.
    pub(crate) async fn histograms(&self) -> anyhow::Result<Histograms> {
        let mut out = Histograms::default();
        for addr in [&self.producer.addr, &self.worker.addr] {
            let text = self
                .http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            out.add(&text);
        }
        Ok(out)
    }

    /// `clients` loops of submit-then-wait for `seconds`; returns completed
    /// jobs per second and the latency histogram (microseconds).
    pub(crate) async fn closed_loop(
        &self,
        clients: usize,
        seconds: u64,
    ) -> anyhow::Result<(f64, Histogram<u64>)> {
        self.closed_loop_with(clients, seconds, None).await
    }

    /// [`Stack::closed_loop`], each job asking for a callback to `webhook`.
    pub(crate) async fn closed_loop_with(
        &self,
        clients: usize,
        seconds: u64,
        webhook: Option<&str>,
    ) -> anyhow::Result<(f64, Histogram<u64>)> {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let http = self.http.clone();
            let base = self.url("");
            let webhook = webhook.map(str::to_string);
            tasks.spawn(async move {
                let mut hist = Histogram::<u64>::new(3)?;
                let mut i = c;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let mut body = json!({"model": "credit-default", "inputs": [0, 500.0 + (i % 2000) as f64, 40000.0]});
                    if let Some(w) = &webhook {
                        body["webhook_url"] = json!(w);
                    }
                    let v = submit_and_wait(&http, &base, &body).await?;
                    anyhow::ensure!(v["status"] == "succeeded", "job ended {v}");
                    hist.record(t0.elapsed().as_micros() as u64)?;
                    i += clients;
                }
                Ok::<_, anyhow::Error>(hist)
            });
        }
        let mut all = Histogram::<u64>::new(3)?;
        while let Some(h) = tasks.join_next().await {
            all.add(h??)?;
        }
        Ok((all.len() as f64 / start.elapsed().as_secs_f64(), all))
    }

    /// Uploads a CSV file, streamed; returns the accepted batch.
    pub(crate) async fn upload(&self, file: &Path) -> anyhow::Result<Value> {
        self.upload_as(&self.http, file).await
    }

    /// [`Self::upload`] as `http`'s tenant.
    pub(crate) async fn upload_as(
        &self,
        http: &reqwest::Client,
        file: &Path,
    ) -> anyhow::Result<Value> {
        self.upload_query(http, file, "model=credit-default").await
    }

    /// Streams `file` as CSV to `/v1/batches?{query}` as `http`'s tenant;
    /// the `202`'s body.
    pub(crate) async fn upload_query(
        &self,
        http: &reqwest::Client,
        file: &Path,
        query: &str,
    ) -> anyhow::Result<Value> {
        let f = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 16);
        let r = http
            .post(self.url(&format!("/v1/batches?{query}")))
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == 202,
            "upload: {} {}",
            r.status(),
            r.text().await?
        );
        Ok(r.json().await?)
    }

    /// Downloads a batch's results in `format`, streamed and counted, not
    /// kept: the seconds from the request to the last byte, and the bytes.
    pub(crate) async fn download(&self, id: &str, format: &str) -> anyhow::Result<(f64, u64)> {
        use futures_util::StreamExt;
        let t0 = Instant::now();
        let r = self
            .http
            .get(self.url(&format!("/v1/batches/{id}/results?format={format}")))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "results: {}", r.status());
        let mut body = r.bytes_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = body.next().await {
            bytes += chunk?.len() as u64;
        }
        Ok((t0.elapsed().as_secs_f64(), bytes))
    }

    /// Cancels a batch; its chunks not yet taken are then skipped.
    pub(crate) async fn cancel_batch(&self, id: &str) -> anyhow::Result<()> {
        let r = self
            .http
            .post(self.url(&format!("/v1/batches/{id}/cancel")))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "cancel: {}", r.status());
        Ok(())
    }

    pub(crate) async fn wait_batch(&self, id: &str) -> anyhow::Result<Value> {
        self.wait_batch_as(&self.http, id).await
    }

    /// [`Self::wait_batch`] as `http`'s tenant.
    pub(crate) async fn wait_batch_as(
        &self,
        http: &reqwest::Client,
        id: &str,
    ) -> anyhow::Result<Value> {
        loop {
            let v: Value = http
                .get(self.url(&format!("/v1/batches/{id}?wait=30")))
                .send()
                .await?
                .json()
                .await?;
            if v["status"] != "queued" && v["status"] != "running" {
                anyhow::ensure!(v["status"] == "succeeded", "batch ended {v}");
                return Ok(v);
            }
        }
    }

    /// Offers `rate` single jobs per second for `seconds`; returns the
    /// submit-to-readable-result latencies (microseconds) of all of them.
    pub(crate) async fn interactive(
        &self,
        rate: u32,
        seconds: u64,
    ) -> anyhow::Result<Histogram<u64>> {
        let mut hist = Histogram::<u64>::new(3)?;
        self.interactive_until(
            rate,
            tokio::time::sleep(Duration::from_secs(seconds)),
            &mut hist,
        )
        .await?;
        Ok(hist)
    }

    /// Offers `rate` single jobs per second until `stop` resolves, recording
    /// each submit-to-readable-result latency (microseconds) into `hist`.
    pub(crate) async fn interactive_until(
        &self,
        rate: u32,
        stop: impl std::future::Future<Output = ()>,
        hist: &mut Histogram<u64>,
    ) -> anyhow::Result<()> {
        let shared = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        for i in 0u64.. {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let hist = shared.clone();
            let http = self.http.clone();
            let base = self.url("");
            tasks.spawn(async move {
                let t0 = Instant::now();
                let body = json!({"model": "credit-default", "inputs": [0, 500.0 + (i % 2000) as f64, 40000.0]});
                let v = submit_and_wait(&http, &base, &body).await?;
                anyhow::ensure!(v["status"] == "succeeded", "job ended {v}");
                hist.lock().expect("histogram").record(t0.elapsed().as_micros() as u64)?;
                Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        hist.add(&*shared.lock().expect("histogram"))?;
        Ok(())
    }
}

/// Histogram sums, counts and counts within [`SLOW_S`] by metric name,
/// from Prometheus text; also by name and label (`name/interactive`,
/// `name/job`) for those with a `priority` or a `message`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histograms(std::collections::HashMap<String, [f64; 3]>);

/// The bucket bound that [`Histograms::slow_share`] counts past: 10 ms.
pub(crate) const SLOW_S: &str = "0.01";

impl Histograms {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let Some((name, _)) = line.split_once([' ', '{']) else {
                continue;
            };
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            let label = |name: &str| {
                line.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(str::to_string)
            };
            let (base, field) = if let Some(base) = name.strip_suffix("_sum") {
                (base, 0)
            } else if let Some(base) = name.strip_suffix("_count") {
                (base, 1)
            } else if let Some(base) = name.strip_suffix("_bucket") {
                if label("le").as_deref() != Some(SLOW_S) {
                    continue;
                }
                (base, 2)
            } else {
                continue;
            };
            let lanes = [label("priority"), label("message")];
            let keys = std::iter::once(base.to_string())
                .chain(lanes.iter().flatten().map(|l| format!("{base}/{l}")));
            for key in keys {
                self.0.entry(key).or_default()[field] += value;
            }
        }
    }

    /// What was recorded between `before` and `self`.
    pub(crate) fn since(&self, before: &Histograms) -> Histograms {
        let mut out = self.clone();
        for (k, v) in &mut out.0 {
            let v0 = before.0.get(k).copied().unwrap_or_default();
            for (x, x0) in v.iter_mut().zip(v0) {
                *x -= x0;
            }
        }
        out
    }

    /// Adds what `other` recorded.
    pub(crate) fn merge(&mut self, other: &Histograms) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_default();
            for (x, y) in e.iter_mut().zip(v) {
                *x += y;
            }
        }
    }

    /// Mean of `name`, in milliseconds (the histograms are in seconds);
    /// `NaN` when nothing was recorded.
    pub(crate) fn mean_ms(&self, name: &str) -> f64 {
        let [s, c, _] = self.0.get(name).copied().unwrap_or_default();
        if c > 0.0 {
            1e3 * s / c
        } else {
            f64::NAN
        }
    }

    /// The share of `name`'s observations that took more than [`SLOW_S`];
    /// `NaN` when nothing was recorded.
    pub(crate) fn slow_share(&self, name: &str) -> f64 {
        let [_, c, within] = self.0.get(name).copied().unwrap_or_default();
        if c > 0.0 {
            (c - within) / c
        } else {
            f64::NAN
        }
    }

    /// Mean of `name` between `before` and `self`, in milliseconds.
    pub(crate) fn mean_ms_since(&self, before: &Histograms, name: &str) -> f64 {
        self.since(before).mean_ms(name)
    }
}

/// The worker's batch-size histogram, scraped from its `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchSizes {
    /// (upper bound, cumulative count) per bucket.
    pub(crate) buckets: Vec<(f64, f64)>,
    pub(crate) sum: f64,
    pub(crate) count: f64,
}

impl BatchSizes {
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = BatchSizes::default();
        for line in text.lines() {
            let value = || {
                line.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("infq_batch_size_bucket") {
                let le = line
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .map(|v| {
                        if v == "+Inf" {
                            f64::INFINITY
                        } else {
                            v.parse().unwrap_or(0.0)
                        }
                    })
                    .unwrap_or(0.0);
                out.buckets.push((le, value()));
            } else if line.starts_with("infq_batch_size_sum") {
                out.sum = value();
            } else if line.starts_with("infq_batch_size_count") {
                out.count = value();
            }
        }
        out
    }

    /// What happened between `before` and `self`.
    pub(crate) fn since(&self, before: &BatchSizes) -> BatchSizes {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |b| b.1);
                (*le, n - was)
            })
            .collect();
        BatchSizes {
            buckets,
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            f64::NAN
        }
    }

    /// Share of batches per size bucket, e.g. `1: 62%, <=2: 20%, ...`.
    pub(crate) fn histogram(&self) -> String {
        let mut prev = 0.0;
        let mut parts = Vec::new();
        for (le, n) in &self.buckets {
            let share = if self.count > 0.0 {
                (n - prev) / self.count
            } else {
                0.0
            };
            prev = *n;
            if share >= 0.005 && le.is_finite() {
                parts.push(format!("<={le}: {:.0}%", 100.0 * share));
            }
        }
        parts.join(", ")
    }
}

/// CPU seconds used so far by the processes named `comm` (or with pid
/// `pid`), from /proc.
pub(crate) fn cpu_seconds(select: impl Fn(u32, &str) -> bool) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !select(pid, &stat[open + 1..close]) {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (t(11) + t(12)) / tick;
    }
    total
}

/// CPU seconds of each part of the system, for attributing a cost.
pub(crate) fn cpu_by_part(stack: &Stack) -> [f64; 5] {
    let (p, w) = (stack.producer.child.id(), stack.worker.child.id());
    let me = std::process::id();
    [
        cpu_seconds(|pid, _| pid == p),
        cpu_seconds(|pid, _| pid == w),
        cpu_seconds(|_, c| c == "beam.smp"),
        cpu_seconds(|_, c| c == "redis-server"),
        cpu_seconds(|pid, _| pid == me),
    ]
}

//! The load generator: drives a running producer and worker (release
//! builds, started as child processes) and prints each figure next to the
//! machine's limit measured in the same run.
//!
//!   scripts/bench                       # every scenario, 3 runs each
//!   cargo bench --bench load -- bulk --rows 1000000 --runs 3
//!
//! Under `cargo test` (no `--bench` flag) it runs a short smoke load of
//! every scenario against the debug binaries, so CI checks that the harness
//! works. Figures are medians over the runs; nothing here asserts a number.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use infq::procs::Service;
use infq::{load_default_csv, root};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "infq load generator")]
struct Args {
    /// Passed by `cargo bench`; without it (under `cargo test`) a smoke
    /// load runs against the debug binaries.
    #[arg(long, hide = true, global = true)]
    bench: bool,
    /// Runs per scenario; medians are reported.
    #[arg(long, default_value_t = 3, global = true)]
    runs: usize,
    /// Cargo profile whose binaries are started.
    #[arg(long, default_value = "release", global = true)]
    profile: String,
    /// A short load of every scenario, for CI: checks the harness runs.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    scenario: Option<Scenario>,
}

#[path = "load/ceiling.rs"]
mod ceiling;

#[derive(Subcommand, Debug, Clone)]
enum Scenario {
    /// Raw model throughput through tch at several batch sizes.
    Model,
    /// The bare durable path (no HTTP, no model): the ceiling.
    Ceiling,
    /// Interactive jobs at saturation, then latency at 10% and 50% of it,
    /// each next to the ceiling measured in the same run.
    Saturation {
        /// Clients in flight at saturation.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
    /// A bulk upload end to end, with the producer's peak memory.
    Bulk {
        /// Rows in the uploaded file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
    /// Interactive latency at a fixed rate, idle and while a bulk batch runs.
    Interactive {
        /// Jobs per second offered.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rows of the bulk batch running alongside.
        #[arg(long, default_value_t = 1_000_000)]
        bulk_rows: usize,
    },
    /// Interactive jobs at saturation with every job's callback going to
    /// a receiver that never answers, next to the same load without
    /// callbacks.
    Webhooks {
        /// Clients in flight.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
    /// Every scenario.
    All,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Submits a job and waits for its result in the same request
/// (`POST /v1/jobs?wait=10`): the time until the result is readable.
async fn submit_and_wait(
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

/// A producer and a worker under a namespace of their own.
struct Stack {
    producer: Service,
    worker: Service,
    http: reqwest::Client,
    ns: String,
}

impl Stack {
    async fn start(profile: &str) -> anyhow::Result<Self> {
        Self::start_with(profile, &[]).await
    }

    async fn start_with(profile: &str, extra: &[(&str, String)]) -> anyhow::Result<Self> {
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
    async fn stop(self) -> anyhow::Result<()> {
        let mut settings = settings()?;
        settings.namespace = self.ns.clone();
        drop(self);
        infq::delete_namespace(&settings).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.producer.addr)
    }

    async fn batch_sizes(&self) -> anyhow::Result<BatchSizes> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.worker.addr))
            .send()
            .await?
            .text()
            .await?;
        Ok(BatchSizes::parse(&text))
    }

    /// `clients` loops of submit-then-wait for `seconds`; returns completed
    /// jobs per second and the latency histogram (microseconds).
    async fn closed_loop(
        &self,
        clients: usize,
        seconds: u64,
    ) -> anyhow::Result<(f64, Histogram<u64>)> {
        self.closed_loop_with(clients, seconds, None).await
    }

    /// [`Stack::closed_loop`], each job asking for a callback to `webhook`.
    async fn closed_loop_with(
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
    async fn upload(&self, file: &Path) -> anyhow::Result<Value> {
        let f = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 16);
        let r = self
            .http
            .post(self.url("/v1/batches?model=credit-default"))
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

    async fn wait_batch(&self, id: &str) -> anyhow::Result<Value> {
        loop {
            let v: Value = self
                .http
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
    async fn interactive(&self, rate: u32, seconds: u64) -> anyhow::Result<Histogram<u64>> {
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
    async fn interactive_until(
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

/// The worker's batch-size histogram, scraped from its `/metrics`.
#[derive(Debug, Clone, Default)]
struct BatchSizes {
    /// (upper bound, cumulative count) per bucket.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl BatchSizes {
    fn parse(text: &str) -> Self {
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
    fn since(&self, before: &BatchSizes) -> BatchSizes {
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

    fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            f64::NAN
        }
    }

    /// Share of batches per size bucket, e.g. `1: 62%, <=2: 20%, ...`.
    fn histogram(&self) -> String {
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

/// A CSV of `rows` borrowers (Default.csv, cycled), cached under target/.
fn portfolio(rows: usize) -> anyhow::Result<PathBuf> {
    let dir = infq::procs::bin_dir("bench-data");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("portfolio-{rows}.csv"));
    if path.exists() {
        return Ok(path);
    }
    let base = load_default_csv(&root().join("data/Default.csv"))?;
    let tmp = path.with_extension("tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    writeln!(w, "student,balance,income")?;
    for i in 0..rows {
        let b = base[i % base.len()];
        writeln!(
            w,
            "{},{},{}",
            b.student,
            b.balance + (i / base.len()) as f32,
            b.income
        )?;
    }
    w.flush()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Rows per second of the model run directly, at `batch` rows per forward
/// pass, on `threads` threads, for about `secs` seconds.
fn raw_model(batch: usize, threads: usize, secs: f64) -> anyhow::Result<f64> {
    let registry =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?
            .registry()?;
    let spec = registry.resolve("credit-default").context("model")?;
    tch::set_num_threads(threads as i32);
    let module = infq_worker::model::load(spec, tch::Device::Cpu)?;
    let _g = tch::no_grad_guard();
    let base = load_default_csv(&root().join("data/Default.csv"))?;
    let inputs: Vec<f32> = base
        .iter()
        .cycle()
        .take(batch)
        .flat_map(|b| b.features())
        .collect();
    for _ in 0..20 {
        infq_worker::model::forward(&module, tch::Device::Cpu, &inputs, batch, 3)
            .map_err(anyhow::Error::msg)?;
    }
    let start = Instant::now();
    let mut rows = 0usize;
    while start.elapsed().as_secs_f64() < secs {
        infq_worker::model::forward(&module, tch::Device::Cpu, &inputs, batch, 3)
            .map_err(anyhow::Error::msg)?;
        rows += batch;
    }
    Ok(rows as f64 / start.elapsed().as_secs_f64())
}

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, figure: String, limit: String, ratio: String) {
        let line = format!("| {what} | {figure} | {limit} | {ratio} |");
        println!("{line}");
        self.lines.push(line);
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / 1e6)
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn settings() -> anyhow::Result<infq_common::config::Settings> {
    Ok(infq_common::config::Settings::load(
        Some(&root().join("config/default.toml")),
        &[],
    )?)
}

async fn ceiling_rate(args: &Args) -> anyhow::Result<f64> {
    let secs = if args.smoke { 1.0 } else { 4.0 };
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(ceiling::ceiling(&settings()?, secs).await?);
    }
    Ok(median(runs))
}

/// Figures of one fixed-rate load level, one entry per run.
#[derive(Default)]
struct Level {
    share: f64,
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    mean_batch: Vec<f64>,
    histogram: String,
}

async fn saturation(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let delay = settings()?
        .registry()?
        .resolve("credit-default")
        .map_or(0, |m| m.max_batch_delay_ms);
    let ceiling = ceiling_rate(args).await?;
    report.row(
        "ceiling: bare durable path (confirmed publish to a quorum queue, prefetch 512, pipelined Redis SET, ack 64 at once)",
        format!("{} jobs/s", thousands(ceiling)),
        "-".into(),
        "-".into(),
    );
    let (mut sat, mut sat_p50, mut sat_p99, mut sat_mean) = (vec![], vec![], vec![], vec![]);
    let mut sat_hist = String::new();
    let mut levels: Vec<Level> = Vec::new();
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        let before = stack.batch_sizes().await?;
        let (rate, h) = stack.closed_loop(clients, seconds).await?;
        let sizes = stack.batch_sizes().await?.since(&before);
        eprintln!(
            "saturation run {}: {rate:.0} jobs/s, mean batch {:.1}",
            run + 1,
            sizes.mean()
        );
        sat.push(rate);
        sat_p50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        sat_p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        sat_mean.push(sizes.mean());
        sat_hist = sizes.histogram();
        for (i, share) in [0.1, 0.5].into_iter().enumerate() {
            let rate = (share * rate).max(1.0) as u32;
            let before = stack.batch_sizes().await?;
            let h = stack.interactive(rate, seconds).await?;
            let sizes = stack.batch_sizes().await?.since(&before);
            if levels.len() <= i {
                levels.push(Level {
                    share,
                    ..Level::default()
                });
            }
            let l = &mut levels[i];
            l.rates.push(f64::from(rate));
            l.p50.push(h.value_at_quantile(0.5) as f64 / 1e3);
            l.p99.push(h.value_at_quantile(0.99) as f64 / 1e3);
            l.mean_batch.push(sizes.mean());
            l.histogram = sizes.histogram();
        }
        stack.stop().await?;
    }
    let s = median(sat);
    report.row(
        &format!("interactive jobs at saturation ({clients} clients, submit then wait, HTTP, reference model)"),
        format!("{} jobs/s; p50 {:.1} ms, p99 {:.1} ms", thousands(s), median(sat_p50), median(sat_p99)),
        format!("ceiling: {} jobs/s", thousands(ceiling)),
        format!("{:.0}% (target: 25%)", 100.0 * s / ceiling),
    );
    for l in &levels {
        report.row(
            &format!(
                "interactive latency at {:.0}% of saturation ({} jobs/s)",
                l.share * 100.0,
                thousands(median(l.rates.clone()))
            ),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                median(l.p50.clone()),
                median(l.p99.clone())
            ),
            format!(
                "target: p50 <= {} ms (batch delay + 5), p99 <= 25 ms",
                delay + 5
            ),
            "-".into(),
        );
    }
    for l in &levels {
        report.row(
            &format!("batch sizes at {:.0}% of saturation", l.share * 100.0),
            format!("mean {:.1} rows", median(l.mean_batch.clone())),
            l.histogram.clone(),
            "-".into(),
        );
    }
    report.row(
        "batch sizes at saturation",
        format!("mean {:.1} rows", median(sat_mean)),
        sat_hist,
        "-".into(),
    );
    Ok(())
}

/// A receiver that accepts connections and never answers: every attempt
/// runs into the dispatcher's timeout.
async fn dead_receiver() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    Ok((url, task))
}

/// CPU seconds used so far by the processes named `comm` (or with pid
/// `pid`), from /proc.
fn cpu_seconds(select: impl Fn(u32, &str) -> bool) -> f64 {
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
fn cpu_by_part(stack: &Stack) -> [f64; 5] {
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

async fn webhooks(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (url, receiver) = dead_receiver().await?;
    let env = [
        ("INFQ_WEBHOOKS__ALLOW_HTTP", "true".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HOSTS", "[\"127.0.0.1\"]".to_string()),
    ];
    let (mut plain, mut hooked) = (vec![], vec![]);
    let warm = if args.smoke { 1 } else { 15 };
    let (mut cpu_plain, mut cpu_hooked) = (vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start_with(&args.profile, &env).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        // Alternate the order between runs, so drift favours neither.
        let order: [Option<&str>; 2] = if run % 2 == 0 {
            [None, Some(url.as_str())]
        } else {
            [Some(url.as_str()), None]
        };
        for hook in order {
            // Long enough unmeasured that a dead receiver's attempts have
            // timed out, its circuit is open and its events cycle through
            // the delay tiers: the steady state is what is measured.
            stack.closed_loop_with(clients, warm, hook).await?;
            let before = cpu_by_part(&stack);
            let (rate, h) = stack.closed_loop_with(clients, seconds, hook).await?;
            let after = cpu_by_part(&stack);
            let per_job: Vec<String> = before
                .iter()
                .zip(after)
                .zip(["producer", "worker", "rabbitmq", "redis", "load generator"])
                .map(|((b, a), name)| format!("{name} {:.0}", (a - b) * 1e6 / h.len() as f64))
                .collect();
            eprintln!(
                "  {}: {rate:.0} jobs/s; CPU us per job: {}",
                if hook.is_some() { "callbacks" } else { "plain" },
                per_job.join(", ")
            );
            // The service's CPU per job: producer, worker, broker, Redis.
            let service: f64 =
                (0..4).map(|i| after[i] - before[i]).sum::<f64>() * 1e6 / h.len().max(1) as f64;
            match hook {
                None => cpu_plain.push(service),
                Some(_) => cpu_hooked.push(service),
            }
            match hook {
                None => plain.push(rate),
                Some(_) => hooked.push(rate),
            }
        }
        eprintln!(
            "webhooks run {}: {:.0} jobs/s without callbacks, {:.0} with a dead receiver",
            run + 1,
            plain.last().unwrap_or(&0.0),
            hooked.last().unwrap_or(&0.0)
        );
        stack.stop().await?;
    }
    receiver.abort();
    // Runs differ more than the two loads of one run: the ratio is taken
    // within each run, and its median reported.
    let ratios: Vec<f64> = plain.iter().zip(&hooked).map(|(p, h)| h / p).collect();
    let per_run = ratios
        .iter()
        .map(|r| format!("{:.0}%", 100.0 * r))
        .collect::<Vec<_>>()
        .join(", ");
    let ratio = median(ratios);
    let (p, h) = (median(plain), median(hooked));
    report.row(
        &format!(
            "interactive jobs at saturation, every callback to a receiver that never answers ({clients} clients)"
        ),
        format!(
            "{} jobs/s; {:.0} us CPU per job",
            thousands(h),
            median(cpu_hooked)
        ),
        format!(
            "same load without callbacks: {} jobs/s; {:.0} us CPU per job",
            thousands(p),
            median(cpu_plain)
        ),
        format!("{:.0}% (runs: {per_run}; target: at least 90%)", 100.0 * ratio),
    );
    Ok(())
}

async fn model(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let secs = if args.smoke { 0.2 } else { 1.0 };
    for batch in [1usize, 8, 64, 256] {
        let runs: anyhow::Result<Vec<f64>> =
            (0..args.runs).map(|_| raw_model(batch, 1, secs)).collect();
        let r = median(runs?);
        report.row(
            &format!("raw model through tch, batch {batch}, 1 thread"),
            format!("{} rows/s", thousands(r)),
            "-".into(),
            format!("{:.2} us/row", 1e6 / r),
        );
    }
    Ok(())
}

async fn bulk(args: &Args, rows: usize, report: &mut Report) -> anyhow::Result<()> {
    let file = portfolio(rows)?;
    let size = std::fs::metadata(&file)?.len() as f64;
    let (mut e2e, mut processing, mut upload_s, mut peak) = (vec![], vec![], vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        let (_, base_peak) = stack.producer.rss().unwrap_or((0, 0));
        let t0 = Instant::now();
        let accepted = stack.upload(&file).await?;
        let up = t0.elapsed().as_secs_f64();
        let (_, hwm) = stack.producer.rss().unwrap_or((0, 0));
        let done = stack
            .wait_batch(accepted["id"].as_str().unwrap_or_default())
            .await?;
        let total = t0.elapsed().as_secs_f64();
        anyhow::ensure!(
            done["succeeded"].as_u64() == Some(rows as u64),
            "rows lost: {done}"
        );
        e2e.push(rows as f64 / total);
        processing.push(done["rows_per_second"].as_f64().unwrap_or(f64::NAN));
        upload_s.push(up);
        peak.push(hwm as f64);
        eprintln!(
            "bulk run {}: upload {up:.2} s, total {total:.2} s, {:.0} rows/s end to end, producer peak {} (idle {})",
            run + 1,
            rows as f64 / total,
            mb(hwm as f64),
            mb(base_peak as f64)
        );
        stack.stop().await?;
    }
    let raw = median(
        (0..args.runs)
            .map(|_| raw_model(256, 1, 1.0))
            .collect::<anyhow::Result<_>>()?,
    );
    let e2e = median(e2e);
    let n = thousands(rows as f64);
    report.row(
        &format!("bulk, {n} rows, upload to last result"),
        format!("{} rows/s", thousands(e2e)),
        format!("raw model, batch 256, 1 thread: {} rows/s", thousands(raw)),
        format!("{:.0}%", 100.0 * e2e / raw),
    );
    let proc_rate = median(processing);
    report.row(
        &format!("bulk, {n} rows, first chunk taken to last stored"),
        format!("{} rows/s", thousands(proc_rate)),
        format!("raw model: {} rows/s", thousands(raw)),
        format!("{:.0}%", 100.0 * proc_rate / raw),
    );
    let up = median(upload_s);
    report.row(
        &format!(
            "bulk upload of {n} rows ({}): streamed, validated, published",
            mb(size)
        ),
        format!("{up:.2} s ({:.0} MB/s)", size / up / 1e6),
        "-".into(),
        "-".into(),
    );
    let p = median(peak);
    report.row(
        &format!("producer peak RSS while uploading {n} rows"),
        mb(p),
        "target: under 200 MB".into(),
        format!("{:.0}%", 100.0 * p / 200e6),
    );
    Ok(())
}

async fn interactive(
    args: &Args,
    rate: u32,
    seconds: u64,
    bulk_rows: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let file = portfolio(bulk_rows)?;
    let (mut idle50, mut idle99, mut busy50, mut busy99) = (vec![], vec![], vec![], vec![]);
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        // Warm-up, then the idle measurement.
        stack.interactive(rate, 1).await?;
        let h = stack.interactive(rate, seconds).await?;
        idle50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        idle99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        // The same load while bulk batches run: each batch is uploaded
        // first (not measured), then jobs are offered until it has ended.
        let mut busy = Histogram::<u64>::new(3)?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let accepted = stack.upload(&file).await?;
            let id = accepted["id"].as_str().unwrap_or_default().to_string();
            let done = async {
                let _ = stack.wait_batch(&id).await;
            };
            stack.interactive_until(rate, done, &mut busy).await?;
        }
        samples.push(busy.len() as f64);
        busy50.push(busy.value_at_quantile(0.5) as f64 / 1e3);
        busy99.push(busy.value_at_quantile(0.99) as f64 / 1e3);
        stack.stop().await?;
    }
    let (i50, i99) = (median(idle50), median(idle99));
    report.row(
        &format!("interactive latency, {rate} jobs/s, no bulk load"),
        format!("p50 {i50:.1} ms, p99 {i99:.1} ms"),
        "-".into(),
        "-".into(),
    );
    let (b50, b99) = (median(busy50), median(busy99));
    report.row(
        &format!(
            "interactive latency, {rate} jobs/s, while a {}-row batch runs ({} jobs)",
            thousands(bulk_rows as f64),
            median(samples)
        ),
        format!("p50 {b50:.1} ms, p99 {b99:.1} ms"),
        format!("no bulk: p50 {i50:.1} ms, p99 {i99:.1} ms"),
        format!("p99 x{:.2}", b99 / i99),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if !args.bench {
        args.smoke = true;
        args.profile = "debug".into();
    }
    if args.smoke {
        args.runs = 1;
    }
    let scenario = match (&args.scenario, args.smoke) {
        (_, true) => Scenario::All,
        (Some(s), false) => s.clone(),
        (None, false) => Scenario::All,
    };
    let (bulk_rows, rate, seconds) = if args.smoke {
        (20_000, 20, 1)
    } else {
        (1_000_000, 100, 10)
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let title = format!(
        "Machine: {} cores ({cpu}), no GPU; {} build; medians of {} run(s); measured {}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.profile,
        args.runs,
        &infq_common::job::format_ms(infq_common::job::now_ms())[..10]
    );
    println!("{title}\n");
    let head = "| measurement | figure | limit in the same run | ratio |\n|---|---|---|---|";
    println!("{head}");
    let mut report = Report {
        lines: vec![title, String::new(), head.to_string()],
    };
    match scenario {
        Scenario::Model => model(&args, &mut report).await?,
        Scenario::Ceiling => {
            let c = ceiling_rate(&args).await?;
            report.row(
                "ceiling: bare durable path",
                format!("{} jobs/s", thousands(c)),
                "-".into(),
                "-".into(),
            );
        }
        Scenario::Saturation { clients, seconds } => {
            saturation(&args, clients, seconds, &mut report).await?
        }
        Scenario::Bulk { rows } => bulk(&args, rows, &mut report).await?,
        Scenario::Interactive {
            rate,
            seconds,
            bulk_rows,
        } => interactive(&args, rate, seconds, bulk_rows, &mut report).await?,
        Scenario::Webhooks { clients, seconds } => {
            webhooks(&args, clients, seconds, &mut report).await?
        }
        Scenario::All => {
            let (clients, secs) = if args.smoke { (16, 1) } else { (256, 8) };
            saturation(&args, clients, secs, &mut report).await?;
            webhooks(&args, clients, secs, &mut report).await?;
            model(&args, &mut report).await?;
            bulk(&args, bulk_rows, &mut report).await?;
            interactive(&args, rate, seconds, bulk_rows, &mut report).await?;
        }
    }
    let dir = infq::procs::bin_dir("bench-data");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("results.md");
    std::fs::write(&out, report.lines.join("\n") + "\n")?;
    eprintln!("\ntable written to {}", out.display());
    Ok(())
}

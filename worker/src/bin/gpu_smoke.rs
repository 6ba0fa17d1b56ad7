//! `infq-gpu-smoke`: checks that the registry's models run on a GPU as they
//! do on the CPU, and how fast batches run there.
//!
//! For each model (or those named): loads it on `cuda:N` and on the CPU,
//! runs the same rows through both in batches of the model's
//! `max_batch_size` and compares every output (f32: within 1e-4), then
//! reports rows per second at several batch sizes on each device. The
//! rows are the reference data set (`data/Default.csv`, 10,000 rows) for
//! `credit-default` and seeded pseudo-random rows within each feature's
//! range for any other model.
//!
//! Then it runs the worker's own model threads (`model::spawn`) with two
//! instances on the device, every batch of the rows in flight at once,
//! and checks each batch's outputs against the CPU's the same way: the
//! path a worker takes, with its staging buffers shared by no one.
//!
//! Without a CUDA device it says so and exits 0: the check is skipped, not
//! failed. Exit status 1 when an output differs or a model fails.

use anyhow::Context;
use clap::Parser;
use infq_common::config::Settings;
use infq_common::registry::{DeviceChoice, ModelSpec};
use infq_worker::model::{load_as, Runner};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "GPU smoke test: GPU and CPU outputs agree; batched rows/s"
)]
struct Args {
    /// Configuration file (its registry is used).
    #[arg(long, env = "INFQ_CONFIG", default_value = "config/default.toml")]
    config: PathBuf,
    /// Device checked against the CPU: `cuda:N`, or `cpu` to check the
    /// check itself on a machine without a GPU.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// Rows compared per model.
    #[arg(long, default_value_t = 10_000)]
    rows: usize,
    /// Largest absolute difference allowed between GPU and CPU outputs.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// Only these models (comma-separated `name` or `name@version`).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// The reference data set, for credit-default.
    #[arg(long, default_value = "data/Default.csv")]
    data: PathBuf,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("infq-gpu-smoke: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let gpu = match infq_common::registry::parse_device(&args.device) {
        Some(DeviceChoice::Cpu) => Device::Cpu,
        Some(DeviceChoice::Cuda(n)) => {
            if !tch::Cuda::is_available() {
                println!("no CUDA device: GPU smoke test skipped");
                return Ok(true);
            }
            let count = tch::Cuda::device_count() as usize;
            anyhow::ensure!(n < count, "cuda:{n} requested, {count} device(s) present");
            Device::Cuda(n)
        }
        _ => anyhow::bail!("--device {}: use cuda:N or cpu", args.device),
    };
    let settings = Settings::load(Some(&args.config), &[])?;
    let registry = settings.registry()?;
    let specs: Vec<ModelSpec> = if args.models.is_empty() {
        registry.models().to_vec()
    } else {
        args.models
            .iter()
            .map(|a| {
                registry
                    .resolve(a)
                    .cloned()
                    .with_context(|| format!("no model {a}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    println!(
        "checking {} against cpu; libtorch threads {}",
        infq_worker::model::device_label(gpu),
        tch::get_num_threads()
    );
    let _g = tch::no_grad_guard();
    let mut ok = true;
    for spec in &specs {
        let rows = rows_for(spec, args.rows, &args.data)?;
        let width = spec.width();
        // Staging for the largest batch measured below.
        let most = spec.max_batch_size.max(4096);
        let cpu = Runner::new(
            load_as(spec, Device::Cpu, Kind::Float)?,
            Device::Cpu,
            Kind::Float,
            most,
            width,
        )?;
        let on_gpu = Runner::new(
            load_as(spec, gpu, Kind::Float)?,
            gpu,
            Kind::Float,
            most,
            width,
        )?;
        let n = rows.len() / width;
        let (a, b) = (
            run_all(&cpu, &rows, n, width, spec.max_batch_size)?,
            run_all(&on_gpu, &rows, n, width, spec.max_batch_size)?,
        );
        let worst = largest_difference(&a, &b);
        let pass =
            worst <= args.tolerance && a.len() == b.len() && a.len() == n * spec.outputs.len();
        ok &= pass;
        println!(
            "{}: {n} rows, largest |{} - cpu| = {worst:.2e} (f32, limit {:.0e}): {}",
            spec.id(),
            infq_worker::model::device_label(gpu),
            args.tolerance,
            if pass { "ok" } else { "DIFFERENT" }
        );
        let halves: &[Kind] = if gpu.is_cuda() {
            &[Kind::Half, Kind::BFloat16]
        } else {
            &[]
        };
        for &half in halves {
            if let Ok(r) =
                load_as(spec, gpu, half).and_then(|m| Runner::new(m, gpu, half, most, width))
            {
                let c = run_all(&r, &rows, n, width, spec.max_batch_size)?;
                let worst = largest_difference(&a, &c);
                let bad = c.iter().filter(|x| !x.is_finite()).count();
                println!(
                    "  {half:?}: largest |gpu - cpu| = {worst:.2e}, {bad} non-finite outputs (reported, not checked)"
                );
            }
        }
        let (worst, per_s) = instances_check(spec, &args.device, &rows, n, &a)?;
        let pass = worst <= args.tolerance;
        ok &= pass;
        println!(
            "  2 instances on {} (worker model threads): largest |{0} - cpu| = {worst:.2e}, {per_s:.0} rows/s: {}",
            infq_worker::model::device_label(gpu),
            if pass { "ok" } else { "DIFFERENT" }
        );
        let name = format!("{} rows/s", infq_worker::model::device_label(gpu));
        println!("  {:>6} {:>14} {:>16}", "batch", "cpu rows/s", name);
        for batch in [1, 16, 64, 256, 1024, 4096] {
            let c = rate(&cpu, &rows, n, width, batch)?;
            let g = rate(&on_gpu, &rows, n, width, batch)?;
            println!("  {batch:>6} {c:>14.0} {g:>16.0}");
        }
    }
    Ok(ok)
}

/// The largest absolute difference between two outputs, infinite where
/// either is not finite (a NaN must not pass as a small difference).
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_finite() {
                d
            } else {
                f32::INFINITY
            }
        })
        .fold(0f32, f32::max)
}

/// Runs `rows` through the worker's model threads with two instances of
/// `spec` on `device`, in batches of `max_batch_size` all sent at once,
/// and compares each batch's outputs with `cpu` (the CPU's, row-major).
/// Returns the largest difference and the rows per second.
fn instances_check(
    spec: &ModelSpec,
    device: &str,
    rows: &[f32],
    n: usize,
    cpu: &[f32],
) -> anyhow::Result<(f32, f64)> {
    use infq_worker::model::{Batch, ModelCommand, ModelOutcome};
    use infq_worker::outcome::CompletionCommand;
    let mut spec = spec.clone();
    spec.instances = 2;
    spec.device = device.to_string();
    spec.precision = infq_common::registry::Precision::F32;
    let spec = std::sync::Arc::new(spec);
    let (width, outputs, size) = (spec.width(), spec.outputs.len(), spec.max_batch_size);
    let batches: Vec<(usize, usize)> = (0..n).step_by(size).map(|s| (s, size.min(n - s))).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (writer, mut results) = tokio::sync::mpsc::channel(batches.len().max(1));
        let stats = std::sync::Arc::new(infq_worker::WorkerStats::default());
        let threads = tch::get_num_threads().max(1) as usize;
        let handle = infq_worker::model::spawn(spec.clone(), None, threads, writer, stats).await?;
        let started = Instant::now();
        let feed = {
            let (spec, batches, rows) = (spec.clone(), batches.clone(), rows.to_vec());
            tokio::spawn(async move {
                for (i, &(first, k)) in batches.iter().enumerate() {
                    let batch = Batch {
                        // The delivery tag marks the batch, so outputs from
                        // either instance are matched to it.
                        jobs: vec![infq_worker::pending::Pending::made_up(
                            &spec.name,
                            &spec.version,
                            infq_common::job::Priority::Bulk,
                            Vec::new(),
                            i as u64,
                        )],
                        inputs: rows[first * width..(first + k) * width].to_vec(),
                        rows: k,
                        span: tracing::Span::none(),
                        formed: Instant::now(),
                    };
                    if handle.tx.send(ModelCommand::Infer(batch)).await.is_err() {
                        break;
                    }
                }
                // Dropping the handle here ends the threads once the
                // batches sent are done.
            })
        };
        let mut worst = 0f32;
        for _ in 0..batches.len() {
            let Some(CompletionCommand::Store { jobs, outcome, .. }) = results.recv().await else {
                anyhow::bail!("the model threads stopped before every batch ran");
            };
            let i = jobs.first().map_or(0, |j| j.delivery.tag) as usize;
            let (first, k) = batches[i];
            let ModelOutcome::Batch(out) = outcome else {
                anyhow::bail!("batch {i} failed on {device}");
            };
            anyhow::ensure!(out.len() == k * outputs, "batch {i}: {} outputs", out.len());
            worst = worst.max(largest_difference(
                &cpu[first * outputs..(first + k) * outputs],
                &out,
            ));
        }
        let elapsed = started.elapsed().as_secs_f64();
        feed.await?;
        Ok((worst, n as f64 / elapsed))
    })
}

/// `n` rows of inputs for a model, row-major.
fn rows_for(spec: &ModelSpec, n: usize, data: &std::path::Path) -> anyhow::Result<Vec<f32>> {
    if spec.name == "credit-default" && data.is_file() {
        let mut out = Vec::with_capacity(n * 3);
        let mut rdr = csv::Reader::from_path(data)?;
        for rec in rdr.records().take(n) {
            let rec = rec?;
            let student = if &rec[1] == "Yes" { 1.0 } else { 0.0 };
            out.extend([student, rec[2].parse()?, rec[3].parse()?]);
        }
        return Ok(out);
    }
    // Seeded values within each feature's range (0 to 10 where unbounded).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut out = Vec::with_capacity(n * spec.width());
    for _ in 0..n {
        for f in &spec.inputs {
            let lo = f.min.unwrap_or(0.0) as f32;
            let hi = f.max.map_or(lo + 10.0, |h| h as f32);
            out.extend((0..f.size()).map(|_| lo + (hi - lo) * next()));
        }
    }
    Ok(out)
}

fn run_all(
    r: &Runner,
    rows: &[f32],
    n: usize,
    width: usize,
    batch: usize,
) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let k = batch.min(n - start);
        out.extend(
            r.run(&rows[start * width..(start + k) * width], k, width)
                .map_err(anyhow::Error::msg)?,
        );
    }
    Ok(out)
}

/// Rows per second over every row in batches of `batch`, after one warm-up
/// pass.
fn rate(r: &Runner, rows: &[f32], n: usize, width: usize, batch: usize) -> anyhow::Result<f64> {
    run_all(r, rows, n.min(batch * 4), width, batch)?;
    let t = Instant::now();
    run_all(r, rows, n, width, batch)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

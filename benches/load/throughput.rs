//! Throughput: the model run directly, a bulk upload end to end, and
//! interactive latency idle and beside a bulk batch.

use crate::report::{mb, median, thousands, Report};
use crate::stack::{Histograms, Stack, SLOW_S};
use crate::Args;
use anyhow::Context;
use hdrhistogram::Histogram;
use infq::{load_default_csv, root};
use infq_common::metrics as m;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A CSV of `rows` borrowers (Default.csv, cycled), cached under target/.
pub(crate) fn portfolio(rows: usize) -> anyhow::Result<PathBuf> {
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
pub(crate) fn raw_model(batch: usize, threads: usize, secs: f64) -> anyhow::Result<f64> {
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

pub(crate) async fn model(args: &Args, report: &mut Report) -> anyhow::Result<()> {
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
    // What reason codes cost: the worker's integrated gradients (the
    // registry's steps) against the plain forward pass, each model at its
    // max_batch_size, both on 1 thread.
    for model in ["credit-default", "txn-risk"] {
        let runs: anyhow::Result<Vec<(f64, f64)>> = (0..args.runs)
            .map(|_| explained_rates(model, secs))
            .collect();
        let runs = runs?;
        let plain = median(runs.iter().map(|r| r.0).collect());
        let explained = median(runs.iter().map(|r| r.1).collect());
        report.row(
            &format!("{model}: explained rows (integrated gradients), 1 thread"),
            format!("{} rows/s", thousands(explained)),
            format!("unexplained: {} rows/s", thousands(plain)),
            format!("{:.1}%", 100.0 * explained / plain),
        );
    }
    Ok(())
}

/// Rows per second of `model` through tch at its max_batch_size on one
/// thread: forward passes alone, then with their attributions.
fn explained_rates(model: &str, secs: f64) -> anyhow::Result<(f64, f64)> {
    let registry =
        infq_common::config::Settings::load(Some(&root().join("config/default.toml")), &[])?
            .registry()?;
    let spec = registry.resolve(model).context("model")?;
    let explainer = infq_worker::explain::Explainer::of(spec).context("an explain section")?;
    tch::set_num_threads(1);
    let module = infq_worker::model::load(spec, tch::Device::Cpu)?;
    let (batch, width) = (spec.max_batch_size, spec.width());
    let inputs: Vec<f32> = if model == "txn-risk" {
        infq::txn_rows(batch, 3).into_iter().flatten().collect()
    } else {
        load_default_csv(&root().join("data/Default.csv"))?
            .iter()
            .cycle()
            .take(batch)
            .flat_map(|b| b.features())
            .collect()
    };
    let rate = |explain: bool| -> anyhow::Result<f64> {
        let run = || -> anyhow::Result<()> {
            if explain {
                explainer
                    .attribute(
                        &module,
                        tch::Device::Cpu,
                        tch::Kind::Float,
                        &inputs,
                        batch,
                        width,
                    )
                    .map_err(anyhow::Error::msg)?;
            }
            let _g = tch::no_grad_guard();
            infq_worker::model::forward(&module, tch::Device::Cpu, &inputs, batch, width)
                .map_err(anyhow::Error::msg)?;
            Ok(())
        };
        for _ in 0..3 {
            run()?;
        }
        let start = Instant::now();
        let mut rows = 0usize;
        while start.elapsed().as_secs_f64() < secs {
            run()?;
            rows += batch;
        }
        Ok(rows as f64 / start.elapsed().as_secs_f64())
    };
    Ok((rate(false)?, rate(true)?))
}

/// Waits for the batch `accepted` to end; its view, once every one of its
/// `rows` rows succeeded.
async fn all_succeeded(stack: &Stack, accepted: &Value, rows: usize) -> anyhow::Result<Value> {
    let done = stack
        .wait_batch(accepted["id"].as_str().unwrap_or_default())
        .await?;
    anyhow::ensure!(
        done["succeeded"].as_u64() == Some(rows as u64),
        "rows lost: {done}"
    );
    Ok(done)
}

/// The larger chunk the bulk scenario also measures.
const LARGE_CHUNK_ROWS: u32 = 1024;

pub(crate) async fn bulk(args: &Args, rows: usize, report: &mut Report) -> anyhow::Result<()> {
    let file = portfolio(rows)?;
    let size = std::fs::metadata(&file)?.len() as f64;
    let (mut e2e, mut processing, mut upload_s, mut peak) = (vec![], vec![], vec![], vec![]);
    let (mut csv_dl, mut parquet_dl) = (vec![], vec![]);
    let mut large = vec![];
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        let (_, base_peak) = stack.producer.rss().unwrap_or((0, 0));
        let t0 = Instant::now();
        let accepted = stack.upload(&file).await?;
        let up = t0.elapsed().as_secs_f64();
        let (_, hwm) = stack.producer.rss().unwrap_or((0, 0));
        let done = all_succeeded(&stack, &accepted, rows).await?;
        let total = t0.elapsed().as_secs_f64();
        e2e.push(rows as f64 / total);
        processing.push(done["rows_per_second"].as_f64().unwrap_or(f64::NAN));
        let id = accepted["id"].as_str().unwrap_or_default();
        for (format, into) in [("csv", &mut csv_dl), ("parquet", &mut parquet_dl)] {
            let (secs, bytes) = stack.download(id, format).await?;
            into.push((rows as f64 / secs, bytes));
        }
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
        // The same file in chunks of LARGE_CHUNK_ROWS rows: what the
        // per-message cost is (README, Tuning the chunk size).
        let stack = Stack::start_with(
            &args.profile,
            &[("INFQ_PRODUCER__CHUNK_ROWS", LARGE_CHUNK_ROWS.to_string())],
        )
        .await?;
        let t0 = Instant::now();
        let accepted = stack.upload(&file).await?;
        all_succeeded(&stack, &accepted, rows).await?;
        let total = t0.elapsed().as_secs_f64();
        large.push(rows as f64 / total);
        eprintln!(
            "bulk run {}, chunks of {LARGE_CHUNK_ROWS} rows: total {total:.2} s, {:.0} rows/s end to end",
            run + 1,
            rows as f64 / total
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
    let chunk_rows = crate::stack::settings()?.producer.chunk_rows;
    report.row(
        &format!("bulk, {n} rows, upload to last result ({chunk_rows} rows a chunk)"),
        format!("{} rows/s", thousands(e2e)),
        format!(
            "target: 1,000,000 rows/s; raw model, batch 256, 1 thread: {} rows/s",
            thousands(raw)
        ),
        format!("{:.0}%", 100.0 * e2e / raw),
    );
    let large = median(large);
    report.row(
        &format!("bulk, {n} rows, upload to last result, {LARGE_CHUNK_ROWS} rows a chunk"),
        format!("{} rows/s", thousands(large)),
        format!("{chunk_rows} rows a chunk: {} rows/s", thousands(e2e)),
        format!("x{:.2}", large / e2e),
    );
    let proc_rate = median(processing);
    report.row(
        &format!("bulk, {n} rows, first chunk taken to last stored"),
        format!("{} rows/s", thousands(proc_rate)),
        format!("raw model: {} rows/s", thousands(raw)),
        format!("{:.0}%", 100.0 * proc_rate / raw),
    );
    for (format, runs) in [("CSV", csv_dl), ("Parquet", parquet_dl)] {
        let bytes = runs.first().map(|r| r.1).unwrap_or(0);
        let rate = median(runs.into_iter().map(|r| r.0).collect());
        report.row(
            &format!(
                "bulk results of {n} rows downloaded as {format} ({})",
                mb(bytes as f64)
            ),
            format!("{} rows/s", thousands(rate)),
            "target: 2,000,000 rows/s".into(),
            format!("{:.0}%", 100.0 * rate / 2e6),
        );
    }
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
        format!(
            "target: at most 100 MB (for a 1 GB upload; this file is {})",
            mb(size)
        ),
        format!("{:.0}%", 100.0 * p / 100e6),
    );
    Ok(())
}

pub(crate) async fn interactive(
    args: &Args,
    rate: u32,
    seconds: u64,
    bulk_rows: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let file = portfolio(bulk_rows)?;
    let (mut idle50, mut idle99, mut busy50, mut busy99) = (vec![], vec![], vec![], vec![]);
    let mut samples = Vec::new();
    // Rows/s of each batch while single jobs came, upload to last result.
    let mut batch_rates = Vec::new();
    // The services' own histograms over the measured windows only.
    let (mut idle_stages, mut busy_stages) = (Histograms::default(), Histograms::default());
    for _ in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        // Warm-up, then the idle measurement.
        stack.interactive(rate, 1).await?;
        let before = stack.histograms().await?;
        let h = stack.interactive(rate, seconds).await?;
        idle_stages.merge(&stack.histograms().await?.since(&before));
        idle50.push(h.value_at_quantile(0.5) as f64 / 1e3);
        idle99.push(h.value_at_quantile(0.99) as f64 / 1e3);
        // The same load while bulk batches run: jobs are offered from the
        // start of each batch's upload until its last result is stored,
        // since a batch's chunks are processed while it is still being
        // published.
        let mut busy = Histogram::<u64>::new(3)?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let mut uploaded = Ok(());
            let started = Instant::now();
            let done = async {
                match stack.upload(&file).await {
                    Ok(accepted) => {
                        let id = accepted["id"].as_str().unwrap_or_default();
                        let _ = stack.wait_batch(id).await;
                        batch_rates.push(bulk_rows as f64 / started.elapsed().as_secs_f64());
                    }
                    Err(e) => uploaded = Err(e),
                }
            };
            let before = stack.histograms().await?;
            stack.interactive_until(rate, done, &mut busy).await?;
            uploaded?;
            busy_stages.merge(&stack.histograms().await?.since(&before));
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
        format!(
            "p50 {b50:.1} ms, p99 {b99:.1} ms; the batch meanwhile {} rows/s",
            thousands(median(batch_rates))
        ),
        format!("no bulk: p50 {i50:.1} ms, p99 {i99:.1} ms; target: p99 at most x1.5"),
        format!("p99 x{:.2}", b99 / i99),
    );
    // Single jobs' stages, apart from the chunks' (their publishes are
    // recorded as `message="chunk"`, their rows in the bulk lane).
    let stages = [
        ("publish and confirm", format!("{}/job", m::PUBLISH_SECONDS)),
        (
            "accepted to taken",
            format!("{}/interactive", m::QUEUE_WAIT_SECONDS),
        ),
        (
            "batch filling",
            format!("{}/interactive", m::BATCH_WAIT_SECONDS),
        ),
        ("store", format!("{}/interactive", m::STORE_SECONDS)),
    ];
    let split = |h: &Histograms| {
        stages
            .iter()
            .map(|(label, name)| {
                format!(
                    "{label} {:.2} ({:.1}%)",
                    h.mean_ms(name),
                    100.0 * h.slow_share(name)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.row(
        &format!(
            "where a single job's time goes at {rate} jobs/s, while batches run (means, ms; in brackets the share over {} ms)",
            SLOW_S.parse::<f64>().unwrap_or(0.0) * 1e3
        ),
        split(&busy_stages),
        format!("no bulk: {}", split(&idle_stages)),
        "-".into(),
    );
    Ok(())
}

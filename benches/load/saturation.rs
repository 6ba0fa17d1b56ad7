//! Interactive jobs at saturation, then latency at fixed shares of it,
//! each next to the ceiling measured in the same run.

use crate::ceiling;
use crate::report::{median, thousands, Report};
use crate::stack::{cpu_by_part, settings, Stack};
use crate::Args;
use infq_common::metrics as m;

/// The bare path's rate and CPU per job, medians over the runs.
pub(crate) async fn ceiling_rate(args: &Args) -> anyhow::Result<(f64, f64)> {
    let secs = if args.smoke { 1.0 } else { 4.0 };
    let (mut rates, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let c = ceiling::ceiling(&settings()?, secs).await?;
        rates.push(c.rate);
        cpus.push(c.cpu_us_per_job);
    }
    Ok((median(rates), median(cpus)))
}

/// Figures of one fixed-rate load level, one entry per run.
#[derive(Default)]
pub(crate) struct Level {
    pub(crate) share: f64,
    pub(crate) rates: Vec<f64>,
    pub(crate) p50: Vec<f64>,
    pub(crate) p99: Vec<f64>,
    pub(crate) mean_batch: Vec<f64>,
    pub(crate) histogram: String,
    /// Mean milliseconds per stage, one entry per run.
    pub(crate) stages: Vec<[f64; STAGES.len()]>,
}

/// The stages a single job's time is split into, as the services' own
/// histograms measure them: (label, metric).
const STAGES: [(&str, &str); 6] = [
    ("publish and confirm", m::PUBLISH_SECONDS),
    ("audit confirm", m::AUDIT_PUBLISH_SECONDS),
    ("accepted to taken", m::QUEUE_WAIT_SECONDS),
    ("batch filling", m::BATCH_WAIT_SECONDS),
    ("forward pass", m::INFERENCE_SECONDS),
    ("store", m::STORE_SECONDS),
];

pub(crate) async fn saturation(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let delay = settings()?
        .registry()?
        .resolve("credit-default")
        .map_or(0, |m| m.max_batch_delay_ms);
    let (ceiling, ceiling_cpu) = ceiling_rate(args).await?;
    report.row(
        "ceiling: bare durable path (confirmed publish to a quorum queue, prefetch 512, pipelined Redis SET, ack 64 at once)",
        format!("{} jobs/s; {ceiling_cpu:.0} us CPU per job (RabbitMQ, Redis, client)", thousands(ceiling)),
        "-".into(),
        "-".into(),
    );
    // CPU per job at saturation: producer, worker, RabbitMQ, Redis.
    let mut split: Vec<[f64; 4]> = Vec::new();
    let (mut sat, mut sat_p50, mut sat_p99, mut sat_mean) = (vec![], vec![], vec![], vec![]);
    let mut sat_hist = String::new();
    let mut levels: Vec<Level> = Vec::new();
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        let before = stack.batch_sizes().await?;
        let cpu0 = cpu_by_part(&stack);
        let (rate, h) = stack.closed_loop(clients, seconds).await?;
        let cpu1 = cpu_by_part(&stack);
        let jobs = (rate * seconds as f64).max(1.0);
        split.push(std::array::from_fn(|i| (cpu1[i] - cpu0[i]) * 1e6 / jobs));
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
            let hist_before = stack.histograms().await?;
            let h = stack.interactive(rate, seconds).await?;
            let sizes = stack.batch_sizes().await?.since(&before);
            let hist_after = stack.histograms().await?;
            let stages = STAGES.map(|(_, name)| hist_after.mean_ms_since(&hist_before, name));
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
            l.stages.push(stages);
        }
        stack.stop().await?;
    }
    let s = median(sat);
    report.row(
        &format!("interactive jobs at saturation ({clients} clients, submit then wait, HTTP, reference model)"),
        format!("{} jobs/s; p50 {:.1} ms, p99 {:.1} ms", thousands(s), median(sat_p50), median(sat_p99)),
        format!("ceiling: {} jobs/s", thousands(ceiling)),
        format!("{:.0}% (target: 40%)", 100.0 * s / ceiling),
    );
    let part = |i: usize| median(split.iter().map(|p| p[i]).collect());
    let parts = [part(0), part(1), part(2), part(3)];
    let total: f64 = parts.iter().sum();
    report.row(
        "CPU per interactive job at saturation, four processes summed",
        format!(
            "{total:.0} us: producer {:.0}, worker {:.0}, RabbitMQ {:.0}, Redis {:.0}",
            parts[0], parts[1], parts[2], parts[3]
        ),
        format!("ceiling: {ceiling_cpu:.0} us (target: at most 2x)"),
        format!("x{:.1}", total / ceiling_cpu),
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
            if (l.share - 0.1).abs() < 1e-9 {
                format!(
                    "target: p50 <= {} ms (batch delay + 2), p99 <= 10 ms",
                    delay + 2
                )
            } else {
                "-".into()
            },
            "-".into(),
        );
    }
    for l in &levels {
        let stage = |i: usize| median(l.stages.iter().map(|s| s[i]).collect());
        let parts: Vec<String> = STAGES
            .iter()
            .enumerate()
            .map(|(i, (label, _))| format!("{label} {:.2}", stage(i)))
            .collect();
        report.row(
            &format!(
                "where a job's time goes at {:.0}% of saturation (means, ms; the stages overlap: accepted to taken includes the publish)",
                l.share * 100.0
            ),
            parts.join(", "),
            "-".into(),
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

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

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "infq load generator")]
struct Args {
    /// Passed by `cargo bench`; without it (under `cargo test`) a smoke
    /// load runs against the debug binaries.
    #[arg(long, hide = true, global = true)]
    pub(crate) bench: bool,
    /// Runs per scenario; medians are reported.
    #[arg(long, default_value_t = 3, global = true)]
    pub(crate) runs: usize,
    /// Cargo profile whose binaries are started.
    #[arg(long, default_value = "release", global = true)]
    pub(crate) profile: String,
    /// A short load of every scenario, for CI: checks the harness runs.
    #[arg(long, global = true)]
    pub(crate) smoke: bool,
    #[command(subcommand)]
    pub(crate) scenario: Option<Scenario>,
}

#[path = "load/ceiling.rs"]
mod ceiling;
#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/fairness.rs"]
mod fairness;
#[path = "load/python.rs"]
mod python;
#[path = "load/report.rs"]
mod report;
#[path = "load/saturation.rs"]
mod saturation;
#[path = "load/stack.rs"]
mod stack;
#[path = "load/throughput.rs"]
mod throughput;
#[path = "load/upload.rs"]
mod upload;
#[path = "load/webhooks.rs"]
mod webhooks;

use cluster::cluster;
use fairness::fairness;
use python::python;
use report::{thousands, Report};
use saturation::{ceiling_rate, saturation};
use throughput::{bulk, interactive, model};
use upload::big_upload;
use webhooks::webhooks;

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
    /// A large CSV upload (accepted, then cancelled) with the producer's
    /// peak memory.
    Upload {
        /// Bytes of the uploaded file, about.
        #[arg(long, default_value_t = 1_000_000_000)]
        bytes: u64,
    },
    /// The Python client's `infq.score` on a portfolio frame, next to the
    /// same file through `infq submit --wait --out`.
    Python {
        /// Rows in the frame and the file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
    /// Fair shares between tenants: a small batch uploaded behind another
    /// tenant's accepted backlog, and three tenants uploading at once.
    Fairness {
        /// Rows of the big tenant's backlog.
        #[arg(long, default_value_t = 5_000_000)]
        big_rows: usize,
        /// Rows of each of the three tenants' batches.
        #[arg(long, default_value_t = 300_000)]
        each_rows: usize,
    },
    /// Interactive latency at a fixed rate, idle and while a bulk batch runs.
    Interactive {
        /// Jobs per second offered.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds of load, idle and then while batches run (30: the p99
        /// under bulk rests on about 1,800 jobs, where 10 gave about 650).
        #[arg(long, default_value_t = 30)]
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
    /// Interactive saturation on one RabbitMQ node and on the local 3-node
    /// cluster (`scripts/cluster up rabbitmq`, removed after), side by
    /// side; then on one Redis, the local Redis Cluster and Sentinel
    /// deployment, with and without `redis.min_replicas_ack`. Not part of
    /// the smoke load.
    Cluster {
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
    // 30 seconds of single jobs, idle and under bulk: the p99 under bulk
    // then rests on about 1,800 jobs (10 seconds gave about 650).
    let (bulk_rows, rate, seconds) = if args.smoke {
        (20_000, 20, 1)
    } else {
        (1_000_000, 100, 30)
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
            let (c, cpu) = ceiling_rate(&args).await?;
            report.row(
                "ceiling: bare durable path",
                format!("{} jobs/s; {cpu:.0} us CPU per job", thousands(c)),
                "-".into(),
                "-".into(),
            );
        }
        Scenario::Saturation { clients, seconds } => {
            saturation(&args, clients, seconds, &mut report).await?
        }
        Scenario::Bulk { rows } => bulk(&args, rows, &mut report).await?,
        Scenario::Upload { bytes } => big_upload(&args, bytes, &mut report).await?,
        Scenario::Python { rows } => python(&args, rows, &mut report).await?,
        Scenario::Fairness {
            big_rows,
            each_rows,
        } => fairness(&args, big_rows, each_rows, &mut report).await?,
        Scenario::Interactive {
            rate,
            seconds,
            bulk_rows,
        } => interactive(&args, rate, seconds, bulk_rows, &mut report).await?,
        Scenario::Webhooks { clients, seconds } => {
            webhooks(&args, clients, seconds, &mut report).await?
        }
        Scenario::Cluster { clients, seconds } => {
            cluster(&args, clients, seconds, &mut report).await?
        }
        Scenario::All => {
            let (clients, secs) = if args.smoke { (16, 1) } else { (256, 8) };
            saturation(&args, clients, secs, &mut report).await?;
            webhooks(&args, clients, secs, &mut report).await?;
            model(&args, &mut report).await?;
            bulk(&args, bulk_rows, &mut report).await?;
            let upload_bytes = if args.smoke { 2_000_000 } else { 1_000_000_000 };
            big_upload(&args, upload_bytes, &mut report).await?;
            python(&args, bulk_rows, &mut report).await?;
            interactive(&args, rate, seconds, bulk_rows, &mut report).await?;
            let (big, each) = if args.smoke {
                (20_000, 5_000)
            } else {
                (5_000_000, 300_000)
            };
            fairness(&args, big, each, &mut report).await?;
            if !args.smoke {
                cluster(&args, clients, secs, &mut report).await?;
            }
        }
    }
    let dir = infq::procs::bin_dir("bench-data");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("results.md");
    std::fs::write(&out, report.lines.join("\n") + "\n")?;
    eprintln!("\ntable written to {}", out.display());
    Ok(())
}

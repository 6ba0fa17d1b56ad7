//! `infq`: the command-line client.

use clap::{Parser, Subcommand};
use infq_cli::client::Client;
use infq_cli::{admin, audit, bulk, demo, env};
use infq_common::config::{CLIENT_API_KEY_ENV, CLIENT_URL_ENV};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Command-line client of an infq deployment.
#[derive(Parser, Debug)]
#[command(name = "infq", version, about)]
struct Cli {
    /// Base URL of the producer [env: INFQ_CLIENT_URL] [default:
    /// http://127.0.0.1:8080].
    #[arg(long, global = true)]
    url: Option<String>,
    /// API key of the tenant to act for (`Authorization: Bearer`) [env:
    /// INFQ_CLIENT_API_KEY].
    #[arg(long, global = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Uploads a CSV or JSONL file as a bulk batch; with --wait, follows it
    /// to the end, and with --out, downloads its results.
    Submit {
        /// The file: CSV with a header row naming the features, JSONL or
        /// Parquet.
        file: PathBuf,
        /// Model name or name@version.
        #[arg(long)]
        model: String,
        /// csv, jsonl or parquet; by default from the file's extension.
        #[arg(long)]
        format: Option<String>,
        /// Follows the batch until it ends, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Writes the results here once the batch ends (implies --wait).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Format of the results file: csv, jsonl or parquet; by default from --out's extension.
        #[arg(long)]
        results_format: Option<String>,
        /// Where to POST the signed `batch.completed` event.
        #[arg(long)]
        webhook_url: Option<String>,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Prints a batch's state and counts.
    Status {
        /// The batch id.
        id: String,
        /// Waits up to this many seconds for the batch to end.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
    },
    /// Writes a finished batch's results, in input order.
    Results {
        /// The batch id.
        id: String,
        /// csv, jsonl or parquet.
        #[arg(long, default_value = "csv")]
        format: String,
        /// File to write; standard output by default.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Cancels what has not run of a batch.
    Cancel {
        /// The batch id.
        id: String,
    },
    /// Erases a batch (or, with --job, a job) at once: its results and
    /// everything stored with it; what has not run never will.
    Delete {
        /// The batch or job id.
        id: String,
        /// The id is a single job's.
        #[arg(long)]
        job: bool,
    },
    /// Single inference jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The dead-letter queue: list and replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Webhook events: delivery logs, manual redelivery, new secrets.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Operator commands: tenants and API keys, straight in Redis (they
    /// read the deployment's configuration, as the servers do).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The audit trail: every submission, completion, cancellation,
    /// erasure and dead-letter replay, read from the broker's audit stream
    /// as JSON lines.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Scores borrowers of the Default data set through the running system
    /// and prints throughput and the predicted default rate.
    Demo {
        /// Borrowers to score, spread over the file.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rows: u32,
        /// The data set (written by scripts/setup).
        #[arg(long, default_value = "data/Default.csv")]
        data: PathBuf,
        /// Requests in flight.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        concurrency: u32,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Lists dead letters: id, kind, model and why they were dead-lettered.
    List {
        /// Most messages listed.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Reopens dead-lettered jobs and puts them back on their queues.
    Replay {
        /// Ids as `infq dlq list` shows them.
        ids: Vec<String>,
        /// Replays every dead letter that can be decoded.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WebhooksCommand {
    /// Lists a job's (or batch's) event with every delivery attempt.
    Deliveries {
        /// The job or batch id.
        id: String,
        /// The id is a batch's.
        #[arg(long)]
        batch: bool,
    },
    /// Sends an event again by hand (same webhook-id and body).
    Retry {
        /// The job or batch id.
        id: String,
        /// The event: its webhook-id or type (e.g. job.succeeded).
        event: String,
        /// The id is a batch's.
        #[arg(long)]
        batch: bool,
    },
    /// Prints a new random signing secret (`whsec_...`) for
    /// `webhooks.secrets`.
    Secret,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// Submits one job and prints the accepted job (or, with --wait, its result).
    Submit {
        /// Model name or name@version.
        #[arg(long)]
        model: String,
        /// Inputs as JSON: an object of named features or an array in schema order.
        #[arg(long)]
        inputs: String,
        /// Waits up to this many seconds for the result.
        #[arg(long)]
        wait: Option<f64>,
        /// Where to POST the signed `job.succeeded` / `job.failed` event.
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Prints a job.
    Get {
        /// The job id.
        id: String,
        /// Waits up to this many seconds for a terminal state.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("infq: {e:#}");
        std::process::exit(1);
    }
}

/// Where the client talks to when neither `--url` nor `INFQ_CLIENT_URL`
/// says.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Flags first, then the client's own variables (never the servers').
    let url = match cli.url {
        Some(u) => u,
        None => env::from_process(CLIENT_URL_ENV)?.unwrap_or_else(|| DEFAULT_URL.into()),
    };
    let api_key = match cli.api_key {
        Some(k) => Some(k),
        None => env::from_process(CLIENT_API_KEY_ENV)?,
    };
    let client = Client::new(&url, api_key.as_deref())?;
    match cli.command {
        Command::Admin(cmd) => admin::run(cmd).await?,
        Command::Audit(cmd) => audit::run(cmd).await?,
        Command::Jobs(JobsCommand::Submit {
            model,
            inputs,
            wait,
            webhook_url,
        }) => {
            let inputs: Value = serde_json::from_str(&inputs)
                .map_err(|e| anyhow::anyhow!("--inputs is not JSON: {e}"))?;
            let mut body = json!({"model": model, "inputs": inputs});
            if let Some(w) = webhook_url {
                body["webhook_url"] = json!(w);
            }
            let accepted = client.submit_job(&body).await?;
            let out = match wait {
                Some(w) => {
                    let id = accepted["id"].as_str().unwrap_or_default();
                    client.get_job(id, w).await?
                }
                None => accepted,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Dlq(DlqCommand::List { limit }) => {
            let v = client.dead_letters(limit as usize).await?;
            let items = v["dead_letters"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("the dead-letter queue is empty");
            }
            for d in items {
                println!(
                    "{}\t{}\t{}\t{}",
                    d["id"].as_str().unwrap_or("-"),
                    d["kind"].as_str().unwrap_or("-"),
                    d["model"].as_str().unwrap_or("-"),
                    d["reason"].as_str().unwrap_or("")
                );
            }
        }
        Command::Dlq(DlqCommand::Replay { ids, all }) => {
            if ids.is_empty() && !all {
                anyhow::bail!("name the dead letters to replay, or pass --all");
            }
            let v = client.replay_dead_letters(&ids, all).await?;
            println!("replayed {}", v["count"]);
            for p in v["problems"].as_array().cloned().unwrap_or_default() {
                eprintln!(
                    "  {}: {}",
                    p["id"].as_str().unwrap_or("-"),
                    p["reason"].as_str().unwrap_or("")
                );
            }
        }
        Command::Webhooks(WebhooksCommand::Deliveries { id, batch }) => {
            let what = if batch { "batches" } else { "jobs" };
            let v = client.deliveries(what, &id).await?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                println!("no webhook event for {id}");
            }
            for e in events {
                println!(
                    "{}\t{}\t{}\t{}",
                    e["webhook_id"].as_str().unwrap_or("-"),
                    e["type"].as_str().unwrap_or("-"),
                    e["state"].as_str().unwrap_or("-"),
                    e["url"].as_str().unwrap_or("-")
                );
                for a in e["attempts"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  #{}\t{}\t{}\t{}\t{} ms\t{}",
                        a["attempt"],
                        a["at"].as_str().unwrap_or("-"),
                        a["outcome"].as_str().unwrap_or("-"),
                        a["status_code"]
                            .as_u64()
                            .map_or("-".to_string(), |c| c.to_string()),
                        a["duration_ms"],
                        a["error"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Webhooks(WebhooksCommand::Retry { id, event, batch }) => {
            let what = if batch { "batches" } else { "jobs" };
            let v = client.redeliver(what, &id, &event).await?;
            println!(
                "{} ({}) queued again for {}",
                v["webhook_id"].as_str().unwrap_or("-"),
                v["type"].as_str().unwrap_or("-"),
                v["url"].as_str().unwrap_or("-")
            );
        }
        Command::Webhooks(WebhooksCommand::Secret) => {
            use base64::Engine;
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
            println!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
        }
        Command::Jobs(JobsCommand::Get { id, wait }) => {
            let job = client.get_job(&id, wait).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Submit {
            file,
            model,
            format,
            wait,
            out,
            results_format,
            webhook_url,
            quiet,
        } => {
            let format = bulk::format_of(&file, format.as_deref())?;
            let accepted = bulk::upload(
                &client,
                &file,
                &model,
                &format,
                webhook_url.as_deref(),
                quiet,
            )
            .await?;
            let id = accepted["id"].as_str().unwrap_or_default().to_string();
            if !(wait || out.is_some()) {
                println!("{}", serde_json::to_string_pretty(&accepted)?);
                return Ok(());
            }
            let done = bulk::follow(&client, &id, quiet).await?;
            if done["status"] != "succeeded" {
                anyhow::bail!("batch {id} ended {}: {}", done["status"], done["error"]);
            }
            if let Some(path) = out {
                let rf = match results_format {
                    Some(f) => bulk::format_of(&path, Some(&f))?,
                    None => bulk::format_of(&path, None)?,
                };
                let bytes = bulk::results(&client, &id, &rf, Some(&path)).await?;
                eprintln!("results of batch {id}: {} ({bytes} bytes)", path.display());
            } else {
                println!("{}", serde_json::to_string_pretty(&done)?);
            }
        }
        Command::Status { id, wait } => {
            let batch = client.get_batch(&id, wait).await?;
            println!("{}", serde_json::to_string_pretty(&batch)?);
        }
        Command::Results { id, format, out } => {
            let format = bulk::format_of(Path::new(""), Some(&format))?;
            bulk::results(&client, &id, &format, out.as_deref()).await?;
        }
        Command::Delete { id, job } => {
            let what = if job { "jobs" } else { "batches" };
            client.erase(what, &id).await?;
            println!("{} {id} erased", if job { "job" } else { "batch" });
        }
        Command::Cancel { id } => {
            let batch = client.cancel_batch(&id).await?;
            println!("{}", serde_json::to_string_pretty(&batch)?);
        }
        Command::Demo {
            rows,
            data,
            concurrency,
        } => {
            let all = demo::read_default_csv(&data)?;
            let sample = demo::spread(&all, rows as usize);
            println!(
                "infq demo: scoring {} borrowers from {} through {}",
                sample.len(),
                data.display(),
                url
            );
            let s = demo::run(&client, &sample, concurrency as usize).await?;
            let pct = |n: usize| 100.0 * n as f64 / s.jobs.max(1) as f64;
            println!(
                "  {} jobs succeeded in {:.2} s: {:.0} jobs/s end to end ({} in flight)",
                s.succeeded,
                s.seconds,
                s.jobs as f64 / s.seconds,
                concurrency
            );
            println!(
                "  latency submit -> result: p50 {:.1} ms, p99 {:.1} ms",
                s.p50 * 1e3,
                s.p99 * 1e3
            );
            println!(
                "  predicted default rate (p > 0.5): {:.1}% ({} of {}); actual: {:.1}% ({})",
                pct(s.predicted_defaults),
                s.predicted_defaults,
                s.jobs,
                pct(s.actual_defaults),
                s.actual_defaults
            );
            println!(
                "  mean predicted probability of default: {:.1}%; accuracy at 0.5: {:.1}%",
                100.0 * s.mean_probability,
                pct(s.correct)
            );
        }
    }
    Ok(())
}

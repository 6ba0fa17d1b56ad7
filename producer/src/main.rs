//! `infq-producer`: parse config, set up logging and metrics, serve the API
//! until a signal.

use anyhow::Context;

// The system allocator, not mimalloc (which the worker uses): a 1 GB
// upload peaked at 107 MB of RSS with mimalloc and at 55 MB with it, while
// the CPU per interactive job at saturation was the same within the
// benchmark's noise (producer 102-124 against 98-108 us, 3 runs each).
use clap::Parser;
use infq_common::config::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The infq HTTP API: accepts inference jobs, publishes them to RabbitMQ,
/// and serves their results from Redis.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, env = "INFQ_CONFIG", default_value = "config/default.toml")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("infq-producer: {e:#}");
        std::process::exit(2);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut overrides: Vec<(&str, figment::value::Value)> = Vec::new();
    if let Some(l) = args.listen {
        overrides.push(("producer.listen", l.to_string().into()));
    }
    if args.json_logs {
        overrides.push(("log.json", true.into()));
    }
    let settings = Settings::load(Some(&args.config), &overrides)?;
    infq_common::telemetry::init(&settings.log);
    let prometheus = infq_common::metrics::install(infq_common::metrics::Source::Producer)
        .map_err(anyhow::Error::msg)?;
    let registry = settings.registry()?;
    let addr = settings.producer.listen;
    let state = Arc::new(infq_producer::AppState::new(
        settings,
        registry,
        Some(prometheus),
    )?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "producer listening");
    let shutdown = infq_common::shutdown::on_signal();
    infq_producer::serve(state, listener, shutdown).await?;
    tracing::info!("producer stopped");
    Ok(())
}

//! `infq-worker`: parse config, set up logging and metrics, run until a
//! signal, drain.

use anyhow::Context;

/// The many small allocations of request handling and message encoding
/// cost markedly less with mimalloc than with the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use infq_common::config::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Consumes inference jobs from RabbitMQ, runs them through TorchScript
/// models in dynamic batches, and stores results in Redis.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, env = "INFQ_CONFIG", default_value = "config/default.toml")]
    config: PathBuf,
    /// Serve only these models (comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Device for every model: auto, cpu or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// libtorch intra-op threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Log JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("infq-worker: {e:#}");
        std::process::exit(2);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut overrides: Vec<(&str, figment::value::Value)> = Vec::new();
    if !args.models.is_empty() {
        overrides.push(("worker.models", args.models.clone().into()));
    }
    if let Some(d) = &args.device {
        overrides.push(("worker.device", d.clone().into()));
    }
    if let Some(t) = args.threads {
        overrides.push(("worker.intra_op_threads", t.into()));
    }
    if let Some(l) = args.listen {
        overrides.push(("worker.listen", l.to_string().into()));
    }
    if args.json_logs {
        overrides.push(("log.json", true.into()));
    }
    let settings = Settings::load(Some(&args.config), &overrides)?;
    infq_common::telemetry::init(&settings.log);
    let prometheus = infq_common::metrics::install(infq_common::metrics::Source::Worker)
        .map_err(anyhow::Error::msg)?;
    let registry = settings.registry()?;
    let shutdown = infq_common::shutdown::on_signal();
    // Probes answer while the models load: alive, not ready yet.
    let stats = std::sync::Arc::new(infq_worker::WorkerStats::default());
    if let Some(addr) = settings.worker.listen {
        let store = infq_common::store::JobStore::new(&settings.redis, &settings.namespace)?;
        let app = infq_worker::health::router(stats.clone(), store, Some(prometheus));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "worker health and metrics listening");
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
    }
    let handle =
        infq_worker::start_with(settings.clone(), registry, shutdown.clone(), stats).await?;
    handle.join().await?;
    tracing::info!("worker stopped");
    Ok(())
}

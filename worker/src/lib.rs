//! The infq worker: consumer -> batcher -> model thread -> completion
//! stage, plus the dead-letter recorder and the webhook dispatcher.
//!
//! The stages, in the order a job meets them, and their files:
//!
//! - **Consumer** ([`consumer`], `consumer.rs`): a supervisor keeps one
//!   broker connection with a consumer per job queue; each decodes
//!   deliveries and routes them by model version ([`route`], `route.rs`)
//!   to a batcher's lanes. What cannot run goes to the completion stage.
//!   Each connection's publishers (retry tiers, dead letters, webhook
//!   events) are its [`session`] (`session.rs`); each channel's deliveries
//!   are settled, many at a time, by its [`settle::Settler`] (`settle.rs`).
//!   While single jobs arrive, the tenants' shares are consumed with a
//!   smaller prefetch ([`share_prefetch`], `share_prefetch.rs`).
//! - **Batcher** ([`batcher`], `batcher.rs`): one per model version; forms
//!   batches (interactive jobs first), claims their jobs in Redis in one
//!   round trip, and hands the batch to its model thread.
//! - **Model thread** ([`model`], `model.rs`): `instances` OS threads per
//!   version own the TorchScript module and run forward passes; outcomes
//!   ([`outcome`], `outcome.rs`) go to the completion stage.
//! - **Completion stage** ([`completion`], `completion/`): the only code
//!   that writes a terminal state and settles a delivery: it stores a
//!   batch's results in one pipelined round trip (`completion/write.rs`,
//!   what to store being worked out by [`writer`], `writer.rs`), then
//!   publishes the webhook events due, then acknowledges
//!   (`completion/finish.rs`: store, then ack, written once). It also
//!   ends what does not run (`completion/refused.rs`) and records dead
//!   letters (`completion/dead.rs`).
//! - **Requeuer** ([`requeue`], `requeue.rs`): publishes a job to its next
//!   retry tier, or a refused message to the dead-letter queue, for the
//!   completion stage.
//! - **Dead-letter recorder** ([`deadletter`], `deadletter.rs`): consumes
//!   `<ns>.dead.record` and sends each dead letter to the completion stage.
//! - **Reloader** ([`reload`], `reload.rs`): loads versions added to the
//!   registry and adds them to the routes.
//! - **Webhook dispatcher** ([`webhooks`], `webhooks/`): consumes
//!   `<ns>.webhooks` on a connection of its own and sends signed events
//!   (`webhooks/dispatch.rs`; event publishing in `webhooks/events.rs`).
//! - **Health** ([`health`], `health.rs`) and counters ([`stats`],
//!   `stats.rs`).
//!
//! The handles the stages share are one [`context::WorkerCtx`]
//! (`context.rs`), built once at start.
#![forbid(unsafe_code)]

pub mod batcher;
pub mod completion;
pub mod consumer;
pub mod context;
pub mod deadletter;
pub mod explain;
pub mod health;
pub mod model;
pub mod outcome;
pub mod pending;
pub mod reload;
pub mod requeue;
pub mod route;
pub mod session;
pub mod settle;
pub mod share_prefetch;
pub mod stats;
pub mod subscription;
pub mod webhooks;
pub mod writer;

use anyhow::Context;
use infq_common::config::Settings;
use infq_common::job::Priority;
use infq_common::queue_stats::{self, HeadTimes};
use infq_common::registry::{ModelSpec, Registry};
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use infq_common::topology::Topology;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use stats::WorkerStats;

/// A started worker.
pub struct WorkerHandle {
    /// Counters of what the worker did, for readiness, tests and benches.
    pub stats: Arc<WorkerStats>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl WorkerHandle {
    /// Waits until the worker has drained and stopped.
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.context("worker task panicked")?
    }
}

/// The models a worker serves: every version of the configured names (or of
/// every model when none are configured).
pub fn served_models(settings: &Settings, registry: &Registry) -> anyhow::Result<Vec<ModelSpec>> {
    let wanted = &settings.worker.models;
    for name in wanted {
        if !registry.names().contains(&name.as_str()) {
            anyhow::bail!(
                "worker.models: `{name}` is not in {}",
                settings.models_file.display()
            );
        }
    }
    Ok(registry
        .models()
        .iter()
        .filter(|m| wanted.is_empty() || wanted.contains(&m.name))
        .cloned()
        .collect())
}

/// Loads every served model, then starts consuming. Returns once the models
/// are loaded (a model that fails to load is an error here); the worker
/// then runs until `shutdown` is cancelled and it has drained.
pub async fn start(
    settings: Settings,
    registry: Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<WorkerHandle> {
    start_with(settings, registry, shutdown, Arc::default()).await
}

/// [`start`], counting into `stats`, which a health server may already
/// be reporting while the models load.
pub async fn start_with(
    settings: Settings,
    registry: Registry,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) -> anyhow::Result<WorkerHandle> {
    let specs = served_models(&settings, &registry)?;
    stats
        .models_total
        .store(specs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let store = JobStore::new(&settings.redis, &settings.namespace)?;
    let topology = Topology::of(&settings);
    let dispatching = settings.webhooks.dispatch && settings.webhooks.enabled();
    let breakers = dispatching.then(|| {
        Arc::new(webhooks::breaker::Breakers::new(
            usize::from(settings.webhooks.concurrency).div_ceil(4),
        ))
    });
    let dispatcher = if let Some(breakers) = breakers {
        Some(Arc::new(
            webhooks::dispatch::Dispatcher::new(
                settings.clone(),
                store.clone(),
                breakers,
                stats.clone(),
            )
            .context("starting the webhook dispatcher")?,
        ))
    } else {
        if settings.webhooks.dispatch {
            tracing::info!("no webhooks.secrets: this worker sends no webhook events");
        }
        None
    };
    let names: std::collections::BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let model_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let job_queues: Vec<String> = names
        .iter()
        .flat_map(|name| Priority::ALL.map(|lane| topology.job_queue(name, lane)))
        .collect();
    let heads = Arc::new(HeadTimes::new(job_queues.iter().map(String::as_str)));
    let ctx = Arc::new(context::WorkerCtx {
        settings: settings.clone(),
        topology: topology.clone(),
        store,
        stats: stats.clone(),
        heads: heads.clone(),
        consuming: CancellationToken::new(),
        share_prefetch: share_prefetch::SharePrefetch::new(
            settings.worker.share_rows_with_jobs,
            Duration::from_millis(settings.worker.single_jobs_recent_ms),
        ),
    });

    // Short, so that backpressure reaches the batchers (which favour
    // interactive jobs) instead of results queueing behind bulk chunks.
    let (completion_tx, completion_rx) = mpsc::channel(4);
    let batchers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let versions = reload::Versions {
        ctx: ctx.clone(),
        completion: completion_tx.clone(),
        batchers: batchers.clone(),
    };
    let (reload_handle, reload_requests) = route::ReloadHandle::channel();
    let mut routes: HashMap<String, Arc<route::ModelRoute>> = HashMap::new();
    for spec in specs {
        let spec = Arc::new(spec);
        let senders = versions.start(spec.clone()).await?;
        routes
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(route::ModelRoute::new(spec.clone(), reload_handle.clone()))
            })
            .add_version(spec.clone(), senders);
    }
    drop(reload_handle);
    stats
        .models_loaded
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The reloader holds a completion sender besides the batchers' and the
    // consumers'; it stops at shutdown, so the completion stage ends once
    // they all have.
    let (trigger_tx, trigger_rx) = mpsc::channel(1);
    tokio::spawn(infq_common::reload::triggers(
        settings.redis.clone(),
        settings.namespace.clone(),
        settings.models_file.clone(),
        Duration::from_millis(settings.models_poll_ms),
        trigger_tx,
        shutdown.clone(),
    ));
    let reloader = reload::Reloader::new(versions, routes.clone()).spawn(
        trigger_rx,
        reload_requests,
        shutdown.clone(),
    );

    let completion = tokio::spawn(completion::completion_task(completion_rx, ctx.clone()));
    tokio::spawn(queue_stats::watch(
        settings.amqp.clone(),
        queue_stats::Watched {
            queues: job_queues,
            dead: topology.dead_queue(),
            shares: Some(queue_stats::ShareQueues {
                store: infq_common::shares::Shares::new(ctx.store.connection(), ctx.store.keys()),
                topology: topology.clone(),
                models: model_names,
            }),
        },
        Some(heads),
        shutdown.clone(),
    ));
    tokio::spawn(gauges_task(stats.clone(), shutdown.clone()));
    let supervisor = tokio::spawn(consumer::supervisor_task(
        ctx.clone(),
        routes.into_values().collect(),
        completion_tx,
    ));
    let drain = Duration::from_secs(settings.worker.drain_timeout_secs);
    let dispatcher = dispatcher.map(|d| tokio::spawn(d.run(shutdown.clone(), drain)));
    let task_stats = stats.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("draining: consuming stopped, finishing batches in flight");
        ctx.consuming.cancel();
        // The supervisor returns once its consumers are cancelled; it drops
        // its channel senders, so the batchers flush and stop, the model
        // threads stop, and the completion stage stores, acknowledges and
        // stops.
        let finished = tokio::time::timeout(drain, async {
            let conn = supervisor.await.ok().flatten();
            // No version is added from here on; every lane sender is gone
            // once the reloader and the consumers are.
            let _ = reloader.await;
            let started: Vec<_> = batchers
                .lock()
                .map(|mut b| b.drain(..).collect())
                .unwrap_or_default();
            for b in started {
                let _ = b.await;
            }
            let _ = completion.await;
            conn
        })
        .await;
        match finished {
            Ok(Some(conn)) => infq_common::amqp::close(&conn, "worker shut down").await,
            Ok(None) => {}
            Err(_) => tracing::warn!(
                ?drain,
                "drain timeout passed; unacknowledged deliveries return to the queue"
            ),
        }
        // The dispatcher drains on its own connection, after the jobs are
        // settled: a webhook attempt in flight never holds up their acks.
        if let Some(d) = dispatcher {
            let grace = drain + Duration::from_secs(6);
            if tokio::time::timeout(grace, d).await.is_err() {
                tracing::warn!(
                    "webhook dispatcher still busy at shutdown; its messages return to the queue"
                );
            }
        }
        task_stats
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    Ok(WorkerHandle { stats, task })
}

/// Seconds over which `infq_rows_per_second` is averaged.
const RATE_WINDOW: usize = 10;

/// Once a second until shutdown: rows per second over the last
/// [`RATE_WINDOW`] seconds, and the deliveries this worker holds.
async fn gauges_task(stats: Arc<WorkerStats>, shutdown: CancellationToken) {
    let mut rows = std::collections::VecDeque::with_capacity(RATE_WINDOW + 1);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        rows.push_back(WorkerStats::get(&stats.rows));
        if rows.len() > RATE_WINDOW + 1 {
            rows.pop_front();
        }
        if let (Some(first), Some(last)) = (rows.front(), rows.back()) {
            let secs = (rows.len() - 1).max(1) as f64;
            metrics::gauge!(infq_common::metrics::ROWS_PER_SECOND)
                .set((last - first) as f64 / secs);
        }
        let held = stats.held.load(std::sync::atomic::Ordering::Relaxed).max(0);
        metrics::gauge!(infq_common::metrics::WORKER_BACKLOG).set(held as f64);
    }
}

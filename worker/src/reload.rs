//! Hot reload of the model registry in a worker: versions added to the
//! registry file of the models this worker serves are loaded and start
//! serving while everything else goes on; versions already loaded stay,
//! so jobs pinned to them still finish there.
//!
//! A reload runs when the file changes or `infq admin models reload` is
//! published (see `infq_common::reload`), and when a consumer meets a job
//! for a version it does not serve yet (a producer that reloaded first):
//! the consumer waits for the reload instead of failing the job. A new
//! model name needs its own queues and consumers, so a restart; a reload
//! says so in the log.

use crate::batcher;
use crate::consumer::ModelRoute;
use crate::model;
use crate::requeue::Requeuer;
use crate::stats::WorkerStats;
use crate::writer::WriterCommand;
use anyhow::Context;
use infq_common::config::Settings;
use infq_common::registry::{ModelSpec, Registry};
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Brings up model versions: model threads and a batcher each.
pub struct Versions {
    /// The configuration (device override, libtorch threads).
    pub settings: Settings,
    /// Where batches' results go.
    pub writer: mpsc::Sender<WriterCommand>,
    /// Claims before a batch runs.
    pub store: JobStore,
    /// Sends jobs through a retry tier.
    pub requeuer: Arc<Requeuer>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Every batcher started, for the drain at shutdown.
    pub batchers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Versions {
    /// Loads `spec` and starts its batcher; returns its lanes' senders.
    pub async fn start(&self, spec: Arc<ModelSpec>) -> anyhow::Result<batcher::LaneSenders> {
        let handle = model::spawn(
            spec.clone(),
            self.settings.worker.device.as_deref(),
            self.settings.worker.intra_op_threads,
            self.writer.clone(),
            self.stats.clone(),
        )
        .await
        .with_context(|| format!("loading model {} from {}", spec.id(), spec.path.display()))?;
        let (senders, lanes) = batcher::Lanes::new(2 * spec.max_batch_size);
        let task = tokio::spawn(batcher::batcher_task(
            spec,
            lanes,
            handle,
            batcher::Claims {
                store: self.store.clone(),
                requeuer: self.requeuer.clone(),
                patience: Duration::from_secs(self.settings.worker.store_retry_secs),
            },
            self.writer.clone(),
        ));
        if let Ok(mut b) = self.batchers.lock() {
            b.push(task);
        }
        self.stats.models_ready.fetch_add(1, Ordering::Relaxed);
        Ok(senders)
    }
}

/// A consumer's way to ask for a reload and wait for it.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<oneshot::Sender<()>>,
}

impl ReloadHandle {
    /// Asks for a reload (skipped if one ran in the last second) and waits
    /// until it is done; `false` if the reloader is gone.
    pub async fn reload(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.is_ok() && rx.await.is_ok()
    }
}

/// The reloader: what it serves and how to add to it.
pub struct Reloader {
    versions: Versions,
    routes: HashMap<String, Arc<ModelRoute>>,
    loaded: HashSet<String>,
    last: Option<Instant>,
}

impl Reloader {
    /// A reloader for `routes` (whose versions are loaded already).
    pub fn new(versions: Versions, routes: HashMap<String, Arc<ModelRoute>>) -> Self {
        let loaded = routes.values().flat_map(|r| r.version_ids()).collect();
        Self {
            versions,
            routes,
            loaded,
            last: None,
        }
    }

    /// Reads the registry and starts every new version of a served model.
    /// A bad file or a model that does not load is logged and changes
    /// nothing else.
    pub async fn reload(&mut self) {
        self.last = Some(Instant::now());
        let path = self.versions.settings.models_file.clone();
        let registry = match Registry::load(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "registry reload failed; serving what is loaded");
                metrics::counter!(infq_common::metrics::REGISTRY_RELOADS, "outcome" => "failed")
                    .increment(1);
                return;
            }
        };
        let mut added = 0;
        let mut failed = false;
        for spec in registry.models() {
            let Some(route) = self.routes.get(&spec.name) else {
                if self.versions.settings.worker.models.is_empty() {
                    tracing::warn!(model = %spec.id(), "a new model name needs a worker restart to be served");
                }
                continue;
            };
            if self.loaded.contains(&spec.id()) {
                continue;
            }
            let spec = Arc::new(spec.clone());
            self.versions
                .stats
                .models_total
                .fetch_add(1, Ordering::Relaxed);
            match self.versions.start(spec.clone()).await {
                Ok(senders) => {
                    route.add_version(spec.clone(), senders);
                    self.loaded.insert(spec.id());
                    added += 1;
                    tracing::info!(model = %spec.id(), "model version added by a registry reload");
                }
                Err(e) => {
                    failed = true;
                    self.versions
                        .stats
                        .models_total
                        .fetch_sub(1, Ordering::Relaxed);
                    tracing::error!(
                        error = format!("{e:#}"),
                        "a new model version did not load; not served"
                    );
                }
            }
        }
        let outcome = if failed { "failed" } else { "ok" };
        metrics::counter!(infq_common::metrics::REGISTRY_RELOADS, "outcome" => outcome)
            .increment(1);
        tracing::info!(added, "registry reloaded");
    }

    /// Runs until `shutdown`, reloading on each trigger and request; then
    /// drops its senders, so the drain can finish.
    pub fn spawn(
        mut self,
        mut triggers: mpsc::Receiver<()>,
        shutdown: CancellationToken,
    ) -> (ReloadHandle, JoinHandle<()>) {
        let (tx, mut requests) = mpsc::channel::<oneshot::Sender<()>>(64);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(()) = triggers.recv() => self.reload().await,
                    Some(reply) = requests.recv() => {
                        // Messages for a version no registry lists would
                        // otherwise re-read the file each.
                        if self.last.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                            self.reload().await;
                        }
                        let _ = reply.send(());
                    }
                }
            }
        });
        (ReloadHandle { tx }, task)
    }
}

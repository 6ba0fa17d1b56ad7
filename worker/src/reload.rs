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
use crate::context::WorkerCtx;
use crate::model;
use crate::outcome::CompletionCommand;
use crate::route::{Answer, ModelRoute, ReloadRequest};
use anyhow::Context;
use infq_common::registry::{ModelSpec, Registry};
use infq_common::shutdown::CancellationToken;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Brings up model versions: model threads and a batcher each.
pub struct Versions {
    /// The worker's shared handles (configuration, store, counters).
    pub ctx: Arc<WorkerCtx>,
    /// Where batches' results go.
    pub completion: mpsc::Sender<CompletionCommand>,
    /// Every batcher started, for the drain at shutdown.
    pub batchers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Versions {
    /// Loads `spec` and starts its batcher; returns its lanes' senders.
    pub async fn start(&self, spec: Arc<ModelSpec>) -> anyhow::Result<batcher::LaneSenders> {
        let settings = &self.ctx.settings;
        let handle = model::spawn(
            spec.clone(),
            settings.worker.device.as_deref(),
            settings.worker.intra_op_threads,
            self.completion.clone(),
            self.ctx.stats.clone(),
        )
        .await
        .with_context(|| format!("loading model {} from {}", spec.id(), spec.path.display()))?;
        let (senders, lanes) = batcher::Lanes::new(usize::from(crate::route::prefetch_for(&spec)));
        let task = tokio::spawn(batcher::batcher_task(
            spec,
            lanes,
            handle,
            self.ctx.clone(),
            self.completion.clone(),
        ));
        if let Ok(mut b) = self.batchers.lock() {
            b.push(task);
        }
        self.ctx.stats.models_ready.fetch_add(1, Ordering::Relaxed);
        Ok(senders)
    }
}

/// The reloader: what it serves and how to add to it.
pub struct Reloader {
    versions: Versions,
    routes: HashMap<String, Arc<ModelRoute>>,
    loaded: HashSet<String>,
    /// Versions the last registry read whole lists.
    listed: HashSet<String>,
    /// The file content last read (whether it parsed or not), so a
    /// request never re-reads an unchanged file; `None` forces a read.
    seen: Option<Vec<u8>>,
    /// Whether `seen` parsed.
    seen_ok: bool,
}

impl Reloader {
    /// A reloader for `routes` (whose versions are loaded already).
    pub fn new(versions: Versions, routes: HashMap<String, Arc<ModelRoute>>) -> Self {
        let loaded: HashSet<String> = routes.values().flat_map(|r| r.version_ids()).collect();
        Self {
            versions,
            routes,
            listed: loaded.clone(),
            loaded,
            seen: None,
            seen_ok: false,
        }
    }

    /// Answers a consumer about version `id`: reloads first when the
    /// file's content differs from the last read, never more.
    async fn answer(&mut self, id: &str) -> Answer {
        if !self.loaded.contains(id) {
            let now = tokio::fs::read(&self.versions.ctx.settings.models_file)
                .await
                .ok();
            if now.is_none() || now != self.seen {
                self.reload().await;
            }
        }
        if self.loaded.contains(id) {
            Answer::Served
        } else if self.listed.contains(id) || !self.seen_ok {
            Answer::NotReady
        } else {
            Answer::Unlisted
        }
    }

    /// Reads the registry and starts every new version of a served model.
    /// A bad file or a model that does not load is logged and changes
    /// nothing else.
    pub async fn reload(&mut self) {
        let path = self.versions.ctx.settings.models_file.clone();
        let text = tokio::fs::read(&path).await.ok();
        self.seen_ok = false;
        self.seen = text.clone();
        let parsed = match text {
            Some(bytes) => {
                let base = path.parent().unwrap_or(std::path::Path::new("."));
                Registry::parse(&String::from_utf8_lossy(&bytes), &path, base)
            }
            None => Registry::load(&path),
        };
        let registry = match parsed {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "registry reload failed; serving what is loaded");
                metrics::counter!(infq_common::metrics::REGISTRY_RELOADS, "outcome" => "failed")
                    .increment(1);
                return;
            }
        };
        self.seen_ok = true;
        self.listed = registry.models().iter().map(|m| m.id()).collect();
        let mut added = 0;
        let mut failed = false;
        for spec in registry.models() {
            let Some(route) = self.routes.get(&spec.name) else {
                if self.versions.ctx.settings.worker.models.is_empty() {
                    tracing::warn!(model = %spec.id(), "a new model name needs a worker restart to be served");
                }
                continue;
            };
            if self.loaded.contains(&spec.id()) {
                continue;
            }
            let spec = Arc::new(spec.clone());
            self.versions
                .ctx
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
                        .ctx
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

    /// Runs until `shutdown`, reloading on each trigger and answering
    /// each request (from the [`crate::route::ReloadHandle`] the routes
    /// hold); then drops its senders, so the drain can finish.
    pub fn spawn(
        mut self,
        mut triggers: mpsc::Receiver<()>,
        mut requests: mpsc::Receiver<ReloadRequest>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    // A change or the admin command: a full reload, which
                    // also retries versions that did not load before.
                    Some(()) = triggers.recv() => self.reload().await,
                    Some((id, reply)) = requests.recv() => {
                        let answer = self.answer(&id).await;
                        let _ = reply.send(answer);
                    }
                }
            }
        })
    }
}

//! Where the deliveries of each model name go: a pair of lanes per
//! version, and the way to ask the reloader for a version not served yet.
//!
//! The consumers read routes; the reloader adds versions to them. Both
//! sides import this module, never each other.

use crate::batcher::LaneSenders;
use arc_swap::ArcSwap;
use infq_common::registry::ModelSpec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The versions of one model a worker runs: version -> spec and lanes.
type VersionMap = HashMap<String, (Arc<ModelSpec>, LaneSenders)>;

/// Where the deliveries of one model name go: a pair of lanes per version.
/// Versions are added while consumers run (hot reload).
pub struct ModelRoute {
    name: String,
    versions: ArcSwap<VersionMap>,
    prefetch: AtomicU16,
    reload: ReloadHandle,
}

impl ModelRoute {
    /// A route for the model `spec` names, with no versions yet; a
    /// consumer that meets a version not served asks `reload`.
    pub fn new(spec: Arc<ModelSpec>, reload: ReloadHandle) -> Self {
        Self {
            name: spec.name.clone(),
            versions: ArcSwap::from_pointee(HashMap::new()),
            prefetch: AtomicU16::new(0),
            reload,
        }
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer prefetch the versions served need.
    pub fn prefetch(&self) -> u16 {
        self.prefetch.load(Ordering::Relaxed)
    }

    /// Adds a version's lanes; the consumer prefetch grows to twice the
    /// rows that version's instances run at once (from the next broker
    /// session on), so each instance finds a full batch waiting.
    pub fn add_version(&self, spec: Arc<ModelSpec>, lanes: LaneSenders) {
        let want = prefetch_for(&spec);
        self.prefetch.fetch_max(want, Ordering::Relaxed);
        self.versions.rcu(|map| {
            let mut map = VersionMap::clone(map);
            map.insert(spec.version.clone(), (spec.clone(), lanes.clone()));
            map
        });
    }

    /// `name@version` of every version served.
    pub fn version_ids(&self) -> Vec<String> {
        self.versions
            .load()
            .values()
            .map(|(spec, _)| spec.id())
            .collect()
    }

    /// The lanes of `version`, after a reload if it is not served yet:
    /// `Ok(None)` if the registry does not list it, `Err` if it cannot be
    /// served now (listed but not loaded, registry unreadable, shutting
    /// down).
    pub async fn lanes_of(
        &self,
        version: &str,
    ) -> Result<Option<(Arc<ModelSpec>, LaneSenders)>, NotReady> {
        if let Some(v) = self.versions.load().get(version) {
            return Ok(Some(v.clone()));
        }
        match self.reload.ask(format!("{}@{version}", self.name)).await {
            Some(Answer::Served) => Ok(self.versions.load().get(version).cloned()),
            Some(Answer::Unlisted) => Ok(None),
            Some(Answer::NotReady) | None => Err(NotReady),
        }
    }
}

/// The prefetch a version needs: twice `max_batch_size` for each instance,
/// within AMQP's 16-bit limit.
pub fn prefetch_for(spec: &ModelSpec) -> u16 {
    (2 * spec.max_batch_size * spec.instances).min(usize::from(u16::MAX)) as u16
}

/// A version listed but not loadable now (its file did not load, the
/// registry is unreadable, or the worker is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model version not loaded")]
pub struct NotReady;

/// What a reload says of a version a consumer asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Loaded: route the job.
    Served,
    /// The registry, read whole, does not list it: the job cannot run.
    Unlisted,
    /// Listed but not loaded (its file did not load), or the registry
    /// cannot be read right now: the job waits for another try.
    NotReady,
}

/// A consumer's way to ask for a reload and wait for it.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
}

/// A consumer's question to the reloader: version `name@version`, and
/// where to answer.
pub type ReloadRequest = (String, oneshot::Sender<Answer>);

impl ReloadHandle {
    /// A handle, and the end the reloader answers on.
    pub fn channel() -> (Self, mpsc::Receiver<ReloadRequest>) {
        let (tx, rx) = mpsc::channel(64);
        (Self { tx }, rx)
    }

    /// Asks about version `id` (`name@version`), reloading first if the
    /// registry file changed since the last reload that read it whole;
    /// `None` if the reloader is gone (shutting down).
    pub async fn ask(&self, id: String) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((id, tx)).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::registry::Registry;
    use std::path::Path;

    fn spec(extra: &str) -> ModelSpec {
        let text = format!(
            "[[model]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ninputs = [{{ name = \"x\" }}]\noutputs = [{{ name = \"y\" }}]\n{extra}\n"
        );
        Registry::parse(&text, Path::new("models.toml"), Path::new("."))
            .unwrap()
            .models()[0]
            .clone()
    }

    #[test]
    fn prefetch_covers_two_batches_per_instance_within_amqp_limits() {
        assert_eq!(prefetch_for(&spec("max_batch_size = 64")), 128);
        assert_eq!(
            prefetch_for(&spec("max_batch_size = 256\ninstances = 4")),
            2048
        );
        assert_eq!(
            prefetch_for(&spec("max_batch_size = 65536\ninstances = 16")),
            u16::MAX
        );
    }
}

//! What every handler shares: the configuration, the registry, the stores
//! and the broker link, built once at start-up.

use crate::publisher;
use crate::spool;
use crate::waiters;
use infq_common::config::Settings;
use infq_common::registry::Registry;
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use infq_common::topology::Topology;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// What every handler shares.
pub struct AppState {
    /// The whole configuration.
    pub settings: Settings,
    /// Models and their schemas; swapped whole by a hot reload.
    pub registry: arc_swap::ArcSwap<Registry>,
    /// The model names the producer started with: it declared their
    /// queues, and a reload keeps to them.
    pub model_names: Vec<String>,
    /// Job records.
    pub store: JobStore,
    /// Idempotency keys.
    pub idempotency: infq_common::idempotency::IdempotencyStore,
    /// The broker link.
    pub publisher: publisher::Publisher,
    /// Bulk chunks' turns while single jobs are arriving.
    pub pacing: crate::pacing::Pacing,
    /// Long-poll wake-ups.
    pub waiters: Arc<waiters::Waiters>,
    /// Disk held by the spool files of uploads in flight.
    pub spool: Arc<spool::SpoolBudget>,
    /// Checks callback URLs; `None` when callbacks are off (no secret).
    pub guard: Option<infq_common::webhooks::guard::Guard>,
    /// Tenants, API keys and quotas.
    pub tenants: infq_common::tenants::TenantStore,
    /// The tenants' shares of bulk lanes (see [`infq_common::shares`]).
    pub shares: infq_common::shares::Shares,
    /// Webhook events and their delivery logs.
    pub deliveries: infq_common::webhooks::store::DeliveryStore,
    /// Renders `/metrics`; `None` where no recorder is installed (tests).
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled when the server shuts down, so long-polls answer at once.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The registry as it is now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Builds the state; nothing connects yet.
    pub fn new(
        settings: Settings,
        registry: Registry,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let store = JobStore::new(&settings.redis, &settings.namespace)?;
        let topology = Topology::of(&settings);
        let models: Vec<String> = registry.names().iter().map(|s| s.to_string()).collect();
        let publisher = publisher::Publisher::new(settings.amqp.clone(), topology, models.clone());
        let idempotency = infq_common::idempotency::IdempotencyStore::new(
            store.connection(),
            &settings.namespace,
            settings.producer.idempotency_ttl_secs,
        );
        let guard = settings
            .webhooks
            .enabled()
            .then(|| infq_common::webhooks::guard::Guard::new(settings.webhooks.guard_policy()));
        let deliveries = infq_common::webhooks::store::DeliveryStore::for_settings(
            store.connection(),
            &settings,
        );
        let tenants = infq_common::tenants::TenantStore::new(store.connection(), &settings);
        let shares = infq_common::shares::Shares::new(store.connection(), store.keys());
        let spool = spool::SpoolBudget::new(
            settings.producer.spool_budget_bytes,
            settings.producer.tenant_spool_bytes,
        );
        let pacing = crate::pacing::Pacing::new(
            settings.producer.publish_window_with_jobs,
            std::time::Duration::from_millis(settings.producer.single_jobs_recent_ms),
        );
        Ok(Self {
            pacing,
            tenants,
            shares,
            guard,
            deliveries,
            settings,
            registry: arc_swap::ArcSwap::from_pointee(registry),
            model_names: models.clone(),
            store,
            idempotency,
            publisher,
            waiters: Arc::new(waiters::Waiters::default()),
            spool,
            prometheus,
            shutdown: CancellationToken::new(),
        })
    }
}

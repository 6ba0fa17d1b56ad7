//! The infq producer: the HTTP API in front of the queue.
//!
//! It validates submissions against the model registry, records each job in
//! Redis, publishes it with publisher confirms, and answers `202` only once
//! the broker holds it. Clients read results back from Redis through it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod batches;
pub mod bulk;
pub mod deliveries;
pub mod error;
pub mod idempotency;
pub mod publisher;
pub mod routes;
pub mod validate;
pub mod waiters;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use infq_common::config::Settings;
use infq_common::registry::Registry;
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use infq_common::topology::Topology;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::IntoFuture;
use std::sync::Arc;

/// How long requests in flight may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What every handler shares.
pub struct AppState {
    /// The whole configuration.
    pub settings: Settings,
    /// Models and their schemas.
    pub registry: Registry,
    /// Job records.
    pub store: JobStore,
    /// Idempotency keys.
    pub idempotency: infq_common::idempotency::IdempotencyStore,
    /// The broker link.
    pub publisher: publisher::Publisher,
    /// Long-poll wake-ups.
    pub waiters: Arc<waiters::Waiters>,
    /// Checks callback URLs; `None` when callbacks are off (no secret).
    pub guard: Option<infq_common::webhooks::guard::Guard>,
    /// Webhook events and their delivery logs.
    pub deliveries: infq_common::webhooks::store::DeliveryStore,
    /// Renders `/metrics`; `None` where no recorder is installed (tests).
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled when the server shuts down, so long-polls answer at once.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Builds the state; nothing connects yet.
    pub fn new(
        settings: Settings,
        registry: Registry,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let store = JobStore::new(&settings.redis, &settings.namespace)?;
        let topology = Topology::of(&settings);
        let models = registry.names().iter().map(|s| s.to_string()).collect();
        let publisher = publisher::Publisher::new(settings.amqp.clone(), topology, models);
        let idempotency = infq_common::idempotency::IdempotencyStore::new(
            store.connection(),
            &settings.namespace,
            settings.producer.idempotency_ttl_secs,
        );
        let guard = settings
            .webhooks
            .enabled()
            .then(|| infq_common::webhooks::guard::Guard::new(&settings.webhooks));
        let deliveries = infq_common::webhooks::store::DeliveryStore::for_settings(
            store.connection(),
            &settings,
        );
        Ok(Self {
            guard,
            deliveries,
            settings,
            registry,
            store,
            idempotency,
            publisher,
            waiters: Arc::new(waiters::Waiters::default()),
            prometheus,
            shutdown: CancellationToken::new(),
        })
    }
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.settings.producer.max_body_bytes;
    Router::new()
        .route("/v1/jobs", post(routes::submit_job))
        .route(
            "/v1/jobs/{id}",
            get(routes::get_job).delete(routes::cancel_job),
        )
        .route("/v1/batches", post(batches::create_batch))
        .route(
            "/v1/batches/{id}",
            get(batches::get_batch).delete(batches::cancel_batch),
        )
        .route("/v1/batches/{id}/results", get(batches::batch_results))
        .route("/v1/jobs/{id}/deliveries", get(deliveries::job_deliveries))
        .route(
            "/v1/jobs/{id}/deliveries/{event}/retry",
            post(deliveries::retry_job_event),
        )
        .route(
            "/v1/batches/{id}/deliveries",
            get(deliveries::batch_deliveries),
        )
        .route(
            "/v1/batches/{id}/deliveries/{event}/retry",
            post(deliveries::retry_batch_event),
        )
        .route("/v1/models", get(routes::list_models))
        .route("/v1/admin/dead-letters", get(admin::list))
        .route("/v1/admin/dead-letters/replay", post(admin::replay))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics_text))
        .fallback(routes::fallback)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown`, then finishes the
/// requests in flight.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Connect early so the first request does not pay for it; failure is
    // not fatal, /readyz reports it and requests get 503.
    let _ = state.publisher.channel().await;
    tokio::spawn(waiters::listener_task(
        state.settings.redis.url.clone(),
        state.store.done_channel(),
        state.waiters.clone(),
        shutdown.clone(),
    ));
    let state_shutdown = state.shutdown.clone();
    let app = router(state);
    // Small JSON answers must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        _ = shutdown.cancelled() => {
            state_shutdown.cancel();
            // Requests in flight get a grace period, then the server stops.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!(?SHUTDOWN_GRACE, "requests still open at shutdown; closing them");
            }
        }
    }
    Ok(())
}

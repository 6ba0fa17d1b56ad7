//! The infq producer: the HTTP API in front of the queue.
//!
//! It validates submissions against the model registry, records each job in
//! Redis, publishes it with publisher confirms, and answers `202` only once
//! the broker holds it. Clients read results back from Redis through it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod batches;
pub mod bulk;
pub mod callback;
pub mod deliveries;
pub mod detail;
pub mod error;
pub mod idempotency;
pub mod lookup;
pub mod openapi;
pub mod pacing;
pub mod publisher;
pub mod record_limit;
pub mod routes;
pub mod spool;
pub mod state;
pub mod validate;
pub mod wait;
pub mod waiters;

use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use axum::Router;
use infq_common::job::Priority;
use infq_common::registry::Registry;
use infq_common::shutdown::CancellationToken;
use infq_common::topology::Topology;
use std::future::IntoFuture;
use std::sync::Arc;

pub use state::AppState;

/// How long requests in flight may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The API's routes: `/v1` behind an API key, `/v1/admin` behind an
/// admin tenant's key; health, metrics and `/openapi.json` open. Every
/// route but the catch-alls comes from a handler's `#[utoipa::path]`, so
/// the OpenAPI document lists exactly what is served.
pub fn router(state: Arc<AppState>) -> Router {
    router_and_api(state).0
}

/// The router and its OpenAPI 3.1 document.
pub fn router_and_api(state: Arc<AppState>) -> (Router, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let limit = state.settings.producer.max_body_bytes;
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::list))
        .routes(routes!(admin::replay))
        .layer(middleware::from_fn(auth::require_admin));
    let v1 = OpenApiRouter::new()
        .routes(routes!(routes::submit_job))
        .routes(routes!(routes::get_job, routes::delete_job))
        .routes(routes!(routes::cancel_job))
        .routes(routes!(batches::upload::create_batch))
        .routes(routes!(batches::get_batch, batches::delete_batch))
        .routes(routes!(batches::cancel_batch))
        .routes(routes!(batches::results::batch_results))
        .routes(routes!(deliveries::job_deliveries))
        .routes(routes!(deliveries::retry_job_event))
        .routes(routes!(deliveries::batch_deliveries))
        .routes(routes!(deliveries::retry_batch_event))
        .routes(routes!(routes::list_models))
        .routes(routes!(routes::get_model))
        .merge(admin)
        // Unknown /v1 paths need a key too, then answer 404.
        .route("/v1/{*rest}", any(routes::fallback))
        // `layer`, not `route_layer`: a wrong method needs a key too
        // (401 before 405).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let (router, mut api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(v1)
        .routes(routes!(routes::healthz))
        .routes(routes!(routes::readyz))
        .routes(routes!(routes::metrics_text))
        .split_for_parts();
    utoipa::Modify::modify(&openapi::CommonErrors, &mut api);
    let document = Arc::new(openapi::registry::Document::new(
        serde_json::to_value(&api).unwrap_or_default(),
        state.guard.as_ref(),
    ));
    let router = router
        .route(
            "/openapi.json",
            get(move |State(state): State<Arc<AppState>>| {
                let d = document.for_registry(state.registry());
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], d) }
            }),
        )
        .fallback(routes::fallback)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    (router, api)
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
    let _ = state.publisher.ready().await;
    tokio::spawn(waiters::listener_task(
        state.settings.redis.clone(),
        state.store.keys().clone(),
        state.waiters.clone(),
        shutdown.clone(),
    ));
    let (trigger_tx, trigger_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(infq_common::reload::triggers(
        state.settings.redis.clone(),
        state.settings.namespace.clone(),
        state.settings.models_file.clone(),
        std::time::Duration::from_millis(state.settings.models_poll_ms),
        trigger_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reload_task(state.clone(), trigger_rx, shutdown.clone()));
    let topology = Topology::of(&state.settings);
    let models: Vec<String> = state
        .registry()
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let queues = models
        .iter()
        .flat_map(|name| Priority::ALL.map(|lane| topology.job_queue(name, lane)))
        .collect();
    tokio::spawn(infq_common::queue_stats::watch(
        state.settings.amqp.clone(),
        infq_common::queue_stats::Watched {
            queues,
            dead: topology.dead_queue(),
            shares: Some(infq_common::queue_stats::ShareQueues {
                store: state.shares.clone(),
                topology: topology.clone(),
                models,
            }),
        },
        None,
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

/// Swaps in the registry file's new content on each trigger, keeping to
/// the model names the producer started with (their queues exist); a bad
/// file keeps the registry in use.
async fn reload_task(
    state: Arc<AppState>,
    mut triggers: tokio::sync::mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            t = triggers.recv() => if t.is_none() { return },
        }
        let outcome = match Registry::load(&state.settings.models_file) {
            Ok(new) => {
                let names: Vec<&str> = state.model_names.iter().map(String::as_str).collect();
                let (new, left_out) = new.retain_names(&names);
                if !left_out.is_empty() {
                    tracing::warn!(
                        ?left_out,
                        "new model names need a producer restart to be served"
                    );
                }
                if new.models().is_empty() {
                    tracing::error!("registry reload left no model; keeping the registry in use");
                    "failed"
                } else {
                    let versions: Vec<String> = new.models().iter().map(|m| m.id()).collect();
                    state.registry.store(Arc::new(new));
                    tracing::info!(?versions, "registry reloaded");
                    "ok"
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "registry reload failed; keeping the registry in use");
                "failed"
            }
        };
        metrics::counter!(infq_common::metrics::REGISTRY_RELOADS, "outcome" => outcome)
            .increment(1);
    }
}

//! The worker's small HTTP server: `/healthz`, `/readyz` and `/metrics`,
//! for probes and Prometheus.

use crate::stats::WorkerStats;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use infq_common::store::JobStore;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone)]
struct HealthState {
    stats: Arc<WorkerStats>,
    store: JobStore,
    prometheus: Option<PrometheusHandle>,
}

/// The router; `prometheus` is `None` where no recorder is installed.
pub fn router(
    stats: Arc<WorkerStats>,
    store: JobStore,
    prometheus: Option<PrometheusHandle>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState {
            stats,
            store,
            prometheus,
        })
}

async fn readyz(State(s): State<HealthState>) -> impl IntoResponse {
    let models = s.stats.models_loaded.load(Ordering::Relaxed);
    let broker = s.stats.broker_connected.load(Ordering::Relaxed);
    let redis = s.store.ping().await.is_ok();
    let ready = models && broker && redis;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let loaded = format!(
        "{}/{} loaded",
        s.stats.models_ready.load(Ordering::Relaxed),
        s.stats.models_total.load(Ordering::Relaxed)
    );
    (
        code,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "models": if models { "ok".to_string() } else { format!("loading: {loaded}") },
                "broker": word(broker),
                "redis": word(redis),
            },
        })),
    )
}

async fn metrics_text(State(s): State<HealthState>) -> impl IntoResponse {
    match s.prometheus {
        Some(h) => (StatusCode::OK, h.render()),
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n".to_string()),
    }
}

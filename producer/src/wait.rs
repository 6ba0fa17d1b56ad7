//! Long-polling: the `?wait=SECONDS` of `GET /v1/jobs/{id}`,
//! `GET /v1/batches/{id}` and `POST /v1/jobs`, and the loop that reads a
//! record until it is final, woken by its completion notice.

use crate::detail::Detail;
use crate::error::ApiError;
use crate::state::AppState;
use infq_common::job::JobId;
use serde::Deserialize;
use std::time::Duration;

/// Query of `GET /v1/jobs/{id}` and `GET /v1/batches/{id}`.
#[derive(Deserialize)]
pub struct WaitQuery {
    /// Seconds to wait for a terminal state.
    #[serde(default)]
    wait: Option<f64>,
}

impl WaitQuery {
    /// The wait, checked and capped at `producer.max_wait_secs`.
    pub fn seconds(&self, max: u64) -> Result<f64, ApiError> {
        match self.wait {
            None => Ok(0.0),
            Some(w) if w.is_finite() && w >= 0.0 => Ok(w.min(max as f64)),
            Some(_) => Err(ApiError::Invalid(vec![Detail::field(
                "wait",
                "must be a non-negative number of seconds",
            )])),
        }
    }
}

/// Reads a record until `done` says it is final or `wait` seconds pass,
/// waking on the completion notice of `id` and re-reading every second.
pub async fn poll_until<T, F, Fut>(
    state: &AppState,
    id: JobId,
    wait: f64,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    if wait <= 0.0 {
        return read().await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let guard = state.waiters.register(id);
    loop {
        let notified = guard.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let rec = read().await?;
        if done(&rec) || tokio::time::Instant::now() >= deadline || state.shutdown.is_cancelled() {
            return Ok(rec);
        }
        let recheck = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(recheck) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

//! Long-polling: the `?wait=SECONDS` of `GET /v1/jobs/{id}`,
//! `GET /v1/batches/{id}` and `POST /v1/jobs`, and the loop that reads a
//! record until it is final, woken by its completion notice.

use crate::detail::Detail;
use crate::error::ApiError;
use crate::state::AppState;
use crate::waiters::WaitGuard;
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
    read: F,
    done: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    if wait <= 0.0 {
        let mut read = read;
        return read().await;
    }
    poll_registered(state, state.waiters.register(id), false, wait, read, done).await
}

/// [`poll_until`] with the wait already registered as `guard`. With
/// `unfinished`, the caller registered it before the record could become
/// final (a job not yet published), so the record is not read until a
/// completion notice, or the once-a-second recheck, says to.
pub async fn poll_registered<T, F, Fut>(
    state: &AppState,
    guard: WaitGuard,
    mut unfinished: bool,
    wait: f64,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    loop {
        let notified = guard.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Enabled first, so a notice from now on is not missed; one that
        // came before is remembered by the guard.
        if !unfinished || guard.woken() {
            let rec = read().await?;
            if done(&rec)
                || tokio::time::Instant::now() >= deadline
                || state.shutdown.is_cancelled()
            {
                return Ok(rec);
            }
        }
        unfinished = false;
        let recheck = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(recheck) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

//! Writing a batch's outcomes to Redis in one pipelined round trip: the
//! transition script for single jobs (forward-only, terminal states final,
//! TTL set), the chunk script for bulk chunks (stored once, counted once,
//! the last chunk completes its batch).

use crate::pending::Pending;
use crate::writer::Outcome;
use infq_common::job::{JobError, JobStatus};
use infq_common::retry::Schedule;
use infq_common::store::{Applied, JobStore, StoreError, Transition, Write};
use std::time::Duration;

/// Writes the outcomes, retrying with backoff while Redis is away, for up
/// to `patience`; then the caller sends the jobs back through the retry
/// tiers rather than holding their deliveries. Returns what each job's
/// write did (`None` where nothing was written).
pub(super) async fn store_all(
    store: &JobStore,
    jobs: &[Pending],
    updates: &[Outcome],
    patience: Duration,
) -> Result<Vec<Option<Applied>>, StoreError> {
    let retrying: Vec<Option<Transition>> = updates
        .iter()
        .map(|u| match u {
            Outcome::Retry(e) => Some(Transition {
                error: Some(JobError::new("model_error", e.to_string())),
                ..Transition::to(JobStatus::Retrying)
            }),
            _ => None,
        })
        .collect();
    let planned: Vec<Option<Write>> = jobs
        .iter()
        .zip(updates)
        .zip(&retrying)
        .map(|((j, u), r)| match (u, r) {
            (Outcome::Job(t), _) => Some(Write::Job(j.msg.record(), t)),
            (Outcome::Chunk(c), _) => Some(Write::Chunk(c)),
            (Outcome::Retry(_), Some(t)) if !j.msg.work.is_chunk() => {
                Some(Write::Job(j.msg.record(), t))
            }
            (Outcome::Retry(_), _) => None,
        })
        .collect();
    let writes: Vec<Write> = planned.iter().flatten().copied().collect();
    if writes.is_empty() {
        return Ok(vec![None; jobs.len()]);
    }
    let give_up = tokio::time::Instant::now() + patience;
    let mut schedule = Schedule::exponential(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match store.write_many(&writes).await {
            Ok(done) => {
                let mut done = done.into_iter();
                return Ok(planned
                    .iter()
                    .map(|w| w.as_ref().and_then(|_| done.next()))
                    .collect());
            }
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < give_up => {
                let wait = schedule.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %e, ?wait, jobs = jobs.len(), "storing results failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

//! How many bulk chunks the producer keeps awaiting their confirms while
//! single jobs are being submitted.
//!
//! Each chunk in flight is one more message the broker handles before a
//! single job's publish. An upload alone publishes up to
//! `producer.publish_window` chunks at once, which keeps the workers fed;
//! while single jobs are arriving (one published within
//! `producer.single_jobs_recent_ms`), the whole producer's chunks take
//! turns through `producer.publish_window_with_jobs` permits instead, each
//! held until its chunk's confirm. The narrow window applies from the next
//! chunk on, and lifts once single jobs have stopped for that long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The producer's pacing of chunk publishes against single jobs.
pub struct Pacing {
    born: Instant,
    /// Milliseconds since `born` at the last single job's publish, plus
    /// one; 0 while none has been published.
    last_job: AtomicU64,
    recent: Duration,
    turns: Semaphore,
}

impl Pacing {
    /// Chunks take one of `with_jobs` turns while a single job was
    /// published within `recent`.
    pub fn new(with_jobs: usize, recent: Duration) -> Self {
        Self {
            born: Instant::now(),
            last_job: AtomicU64::new(0),
            recent,
            turns: Semaphore::new(with_jobs.max(1)),
        }
    }

    /// Notes a single job's publish, now.
    pub fn note_job(&self) {
        self.note_job_at(Instant::now());
    }

    fn note_job_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.born).as_millis() as u64 + 1;
        self.last_job.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether a single job was published within `recent` of `now`.
    fn jobs_recent_at(&self, now: Instant) -> bool {
        let last = self.last_job.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now_ms = now.saturating_duration_since(self.born).as_millis() as u64 + 1;
        now_ms.saturating_sub(last) <= self.recent.as_millis() as u64
    }

    /// What a chunk waits for before it is published: a turn, to be held
    /// until its confirm, while single jobs are arriving; nothing
    /// otherwise.
    pub async fn chunk_turn(&self) -> Option<SemaphorePermit<'_>> {
        if !self.jobs_recent_at(Instant::now()) {
            return None;
        }
        // The semaphore is never closed.
        self.turns.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Pacing;
    use std::time::Duration;

    #[test]
    fn chunks_are_paced_only_while_single_jobs_are_recent() {
        let p = Pacing::new(8, Duration::from_millis(100));
        let t0 = p.born;
        // No single job yet: no pacing, whenever.
        assert!(!p.jobs_recent_at(t0));
        assert!(!p.jobs_recent_at(t0 + Duration::from_secs(3600)));
        p.note_job_at(t0 + Duration::from_millis(1_000));
        assert!(p.jobs_recent_at(t0 + Duration::from_millis(1_000)));
        assert!(p.jobs_recent_at(t0 + Duration::from_millis(1_100)));
        assert!(!p.jobs_recent_at(t0 + Duration::from_millis(1_101)));
        // A clock read before the note (another thread's) counts as recent.
        assert!(p.jobs_recent_at(t0 + Duration::from_millis(900)));
        // An older note, noted late, does not move the last one back.
        p.note_job_at(t0 + Duration::from_millis(500));
        assert!(p.jobs_recent_at(t0 + Duration::from_millis(1_100)));
        p.note_job_at(t0 + Duration::from_millis(5_000));
        assert!(!p.jobs_recent_at(t0 + Duration::from_millis(5_101)));
        assert!(p.jobs_recent_at(t0 + Duration::from_millis(5_050)));
    }

    #[tokio::test]
    async fn recent_single_jobs_bound_the_chunks_in_flight() {
        let p = Pacing::new(2, Duration::from_secs(3600));
        // Alone: no turn needed, any number at once.
        assert!(p.chunk_turn().await.is_none());
        p.note_job();
        let a = p.chunk_turn().await.expect("a turn");
        let b = p.chunk_turn().await.expect("a turn");
        // Both turns held: a third chunk waits until one is confirmed.
        let third = tokio::time::timeout(Duration::from_millis(50), p.chunk_turn()).await;
        assert!(third.is_err(), "a third chunk got a turn");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), p.chunk_turn())
            .await
            .expect("a turn once one was given back");
        assert!(c.is_some());
        drop((b, c));
        // At most one turn when configured with none.
        let one = Pacing::new(0, Duration::from_secs(3600));
        one.note_job();
        let _held = one.chunk_turn().await.expect("a turn");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), one.chunk_turn())
                .await
                .is_err()
        );
    }
}

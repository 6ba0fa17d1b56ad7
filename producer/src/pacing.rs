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

use infq_common::recency::Recency;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The producer's pacing of chunk publishes against single jobs.
pub struct Pacing {
    /// The last single job's publish.
    jobs: Recency,
    turns: Semaphore,
}

impl Pacing {
    /// Chunks take one of `with_jobs` turns while a single job was
    /// published within `recent`.
    pub fn new(with_jobs: usize, recent: Duration) -> Self {
        Self {
            jobs: Recency::new(recent),
            turns: Semaphore::new(with_jobs.max(1)),
        }
    }

    /// Notes a single job's publish, now.
    pub fn note_job(&self) {
        self.jobs.note();
    }

    /// What a chunk waits for before it is published: a turn, to be held
    /// until its confirm, while single jobs are arriving; nothing
    /// otherwise.
    pub async fn chunk_turn(&self) -> Option<SemaphorePermit<'_>> {
        if !self.jobs.is_recent() {
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

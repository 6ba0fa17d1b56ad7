//! Whether something happened recently: the one rule by which the
//! producer's chunk publishes and the worker's bulk chunks give way while
//! single jobs arrive (`producer/src/pacing.rs`, `worker/src/share_prefetch.rs`).
//!
//! One atomic per [`Recency`], written with `fetch_max`, so noting an event
//! costs no lock and a note made late (another thread's older clock) never
//! moves the last one back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the last of some event happened, and how long it counts as recent.
pub struct Recency {
    born: Instant,
    /// Milliseconds since `born` at the last event, plus one; 0 while none
    /// has happened.
    last: AtomicU64,
    within: Duration,
}

impl Recency {
    /// Events count as recent for `within` after they happen.
    pub fn new(within: Duration) -> Self {
        Self {
            born: Instant::now(),
            last: AtomicU64::new(0),
            within,
        }
    }

    /// How long an event counts as recent.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// Notes an event, now.
    pub fn note(&self) {
        self.note_at(Instant::now());
    }

    /// Notes an event at `at`.
    pub fn note_at(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.born).as_millis() as u64 + 1;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Whether an event happened within [`Recency::within`] of now.
    pub fn is_recent(&self) -> bool {
        self.is_recent_at(Instant::now())
    }

    /// Whether an event happened within [`Recency::within`] of `now`; a
    /// clock read before the last note (another thread's) counts as recent.
    pub fn is_recent_at(&self, now: Instant) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let now_ms = now.saturating_duration_since(self.born).as_millis() as u64 + 1;
        now_ms.saturating_sub(last) <= self.within.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Recency;
    use std::time::Duration;

    #[test]
    fn recent_for_its_window_after_the_last_event_only() {
        let r = Recency::new(Duration::from_millis(100));
        let t0 = r.born;
        // Nothing yet: never recent.
        assert!(!r.is_recent_at(t0));
        assert!(!r.is_recent_at(t0 + Duration::from_secs(3600)));
        r.note_at(t0 + Duration::from_millis(1_000));
        assert!(r.is_recent_at(t0 + Duration::from_millis(1_000)));
        assert!(r.is_recent_at(t0 + Duration::from_millis(1_100)));
        assert!(!r.is_recent_at(t0 + Duration::from_millis(1_101)));
        // A clock read before the note (another thread's) counts as recent.
        assert!(r.is_recent_at(t0 + Duration::from_millis(900)));
        // An older event, noted late, does not move the last one back.
        r.note_at(t0 + Duration::from_millis(500));
        assert!(r.is_recent_at(t0 + Duration::from_millis(1_100)));
        r.note_at(t0 + Duration::from_millis(5_000));
        assert!(!r.is_recent_at(t0 + Duration::from_millis(5_101)));
        assert!(r.is_recent_at(t0 + Duration::from_millis(5_050)));
        // An event at the very start counts too (0 means "none").
        let s = Recency::new(Duration::from_millis(10));
        s.note_at(s.born);
        assert!(s.is_recent_at(s.born + Duration::from_millis(10)));
        assert!(!s.is_recent_at(s.born + Duration::from_millis(11)));
    }
}

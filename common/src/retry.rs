//! The one place that knows the retry library.
//!
//! `backoff` is unmaintained (RUSTSEC-2025-0012); it is kept as the project
//! asked, behind this module, so swapping it touches only this file.
//! Callers get a [`Schedule`]: an iterator of delays with exponential growth
//! and jitter.

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use std::time::Duration;

/// Delays between attempts of one operation: exponential, with jitter.
pub struct Schedule {
    inner: ExponentialBackoff,
}

impl Schedule {
    /// Starts at `initial`, multiplies by 2 with +-50% jitter, caps each
    /// delay at `max`, and never ends (callers stop on shutdown).
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            inner: backoff::ExponentialBackoffBuilder::new()
                .with_initial_interval(initial)
                .with_multiplier(2.0)
                .with_randomization_factor(0.5)
                .with_max_interval(max)
                .with_max_elapsed_time(None)
                .build(),
        }
    }

    /// The schedule for reconnecting to a dependency: 100 ms growing to 5 s.
    pub fn reconnect() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

/// `delay` lowered by a random part of up to `2 * factor` of it, so events
/// that failed together do not all come back at once.
pub fn jitter_down(delay: Duration, factor: f64) -> Duration {
    let mut b = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(delay)
        .with_multiplier(1.0)
        .with_randomization_factor(factor)
        .with_max_interval(delay.saturating_mul(2))
        .with_max_elapsed_time(None)
        .build();
    // In [delay * (1 - factor), delay * (1 + factor)].
    let v = b.next_backoff().unwrap_or(delay);
    v.saturating_sub(delay.mul_f64(factor)).min(delay)
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.inner.next_backoff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let delays: Vec<_> =
            Schedule::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .take(12)
                .collect();
        assert_eq!(delays.len(), 12, "the schedule never ends");
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1500)));
        assert!(delays[8] >= Duration::from_millis(500), "{delays:?}");
    }

    #[test]
    fn jitter_only_lowers_and_by_at_most_twice_the_factor() {
        let d = Duration::from_secs(10);
        let waits: Vec<_> = (0..200).map(|_| jitter_down(d, 0.1)).collect();
        assert!(waits
            .iter()
            .all(|w| *w <= d && *w >= Duration::from_secs(8)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(9_500)));
        assert_eq!(jitter_down(Duration::ZERO, 0.1), Duration::ZERO);
    }

    #[test]
    fn reset_starts_over() {
        let mut s = Schedule::exponential(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..6 {
            s.next();
        }
        s.reset();
        assert!(s.next().unwrap() <= Duration::from_millis(150));
    }
}

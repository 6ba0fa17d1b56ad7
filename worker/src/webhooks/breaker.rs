//! Per-endpoint circuit breaker and concurrency cap.
//!
//! A receiver that is down must not tie up the dispatcher: after
//! [`THRESHOLD`] failed attempts in a row, attempts to that host are not
//! sent for a cooldown (30 s, doubling to 10 min while it keeps failing);
//! they are logged as not sent and wait for their next turn on the
//! schedule, so no message is held waiting on a dead host. When the
//! cooldown ends, one attempt probes the host: success closes the circuit,
//! failure opens it again. Each host also gets at most a quarter of the
//! dispatcher's requests in flight, so one slow receiver cannot take them
//! all. Plain logic over the clock it is given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The `host:port` a callback URL goes to: what a breaker is kept for.
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| url.to_string())
}

/// Where an event of a host paused for `pause` waits: the first delay
/// tier (index into `schedule_ms`, from 1) that outlasts the pause, else
/// the longest; `None` if the schedule has no delay at all.
pub fn deferral_tier(schedule_ms: &[u64], pause: Duration) -> Option<usize> {
    let pause_ms = pause.as_millis() as u64;
    let tiers = (1..schedule_ms.len()).filter(|&t| schedule_ms[t] > 0);
    tiers
        .clone()
        .filter(|&t| schedule_ms[t] >= pause_ms)
        .min_by_key(|&t| schedule_ms[t])
        .or_else(|| tiers.max_by_key(|&t| schedule_ms[t]))
}

/// Failed attempts in a row that open a host's circuit.
pub const THRESHOLD: u32 = 5;
/// First cooldown of an open circuit.
pub const COOLDOWN: Duration = Duration::from_secs(30);
/// Longest cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Host {
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
    slots: Arc<Semaphore>,
}

/// The breakers of every host a dispatcher talks to.
#[derive(Debug)]
pub struct Breakers {
    hosts: Mutex<HashMap<String, Host>>,
    per_host: usize,
}

impl Breakers {
    /// Breakers allowing `per_host` requests in flight per host.
    pub fn new(per_host: usize) -> Self {
        Self {
            hosts: Mutex::new(HashMap::new()),
            per_host: per_host.max(1),
        }
    }

    fn host<'a>(&self, map: &'a mut HashMap<String, Host>, key: &str) -> &'a mut Host {
        map.entry(key.to_string()).or_insert_with(|| Host {
            failures: 0,
            open_until: None,
            cooldown: COOLDOWN,
            probing: false,
            slots: Arc::new(Semaphore::new(self.per_host)),
        })
    }

    /// The request slots of `key`: take one before [`Breakers::admit`].
    pub fn slots(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.hosts.lock().expect("breaker lock");
        self.host(&mut map, key).slots.clone()
    }

    /// Whether an attempt to `key` may be sent at `now`; `Err` holds how
    /// long the host stays paused. After a cooldown, the first attempt
    /// admitted is the probe.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.hosts.lock().expect("breaker lock");
        let h = self.host(&mut map, key);
        match h.open_until {
            Some(until) if now < until => Err(until - now),
            // A probe that never reported (its task ended) does not block
            // the host for good: after another cooldown, a new one goes.
            Some(until) if h.probing && now < until + h.cooldown => Err(until + h.cooldown - now),
            Some(_) => {
                h.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// How long attempts to `key` are paused at `now`: the rest of an open
    /// circuit's cooldown, or, while its probe is out, the probe's time;
    /// `None` when an attempt may go.
    pub fn paused(&self, key: &str, now: Instant) -> Option<Duration> {
        let map = self.hosts.lock().expect("breaker lock");
        let h = map.get(key)?;
        let until = h.open_until?;
        if now < until {
            Some(until - now)
        } else if h.probing && now < until + h.cooldown {
            Some(until + h.cooldown - now)
        } else {
            None
        }
    }

    /// Records an attempt's result.
    pub fn record(&self, key: &str, ok: bool, now: Instant) {
        let mut map = self.hosts.lock().expect("breaker lock");
        let h = self.host(&mut map, key);
        if ok {
            h.failures = 0;
            h.open_until = None;
            h.cooldown = COOLDOWN;
            h.probing = false;
            return;
        }
        h.failures += 1;
        if h.probing || h.failures >= THRESHOLD {
            if h.probing {
                h.cooldown = (h.cooldown * 2).min(MAX_COOLDOWN);
            }
            h.open_until = Some(now + h.cooldown);
            h.probing = false;
        }
    }

    /// Hosts whose circuit is not closed (open, or waiting for a probe):
    /// only these can be [`Breakers::paused`].
    pub fn open(&self) -> usize {
        let map = self.hosts.lock().expect("breaker lock");
        map.values().filter(|h| h.open_until.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_probes_after_the_cooldown() {
        let b = Breakers::new(4);
        let t0 = Instant::now();
        for _ in 0..THRESHOLD - 1 {
            assert!(b.admit("h:443", t0).is_ok());
            b.record("h:443", false, t0);
        }
        assert!(b.admit("h:443", t0).is_ok(), "not yet");
        b.record("h:443", false, t0);
        assert_eq!(b.admit("h:443", t0), Err(COOLDOWN));
        assert!(b.admit("other:443", t0).is_ok(), "other hosts go on");
        assert_eq!(b.open(), 1);
        assert_eq!(b.paused("h:443", t0), Some(COOLDOWN));
        assert_eq!(b.paused("other:443", t0), None);
        // After the cooldown one probe goes; the rest wait for it.
        let t1 = t0 + COOLDOWN;
        assert_eq!(b.paused("h:443", t1), None);
        assert!(b.admit("h:443", t1).is_ok());
        assert!(b.admit("h:443", t1).is_err());
        assert!(b.paused("h:443", t1).is_some(), "the probe is out");
        // A failed probe doubles the cooldown.
        b.record("h:443", false, t1);
        assert!(b.admit("h:443", t1 + COOLDOWN).is_err());
        let t2 = t1 + 2 * COOLDOWN;
        assert!(b.admit("h:443", t2).is_ok());
        // A good probe closes it.
        b.record("h:443", true, t2);
        assert!(b.admit("h:443", t2).is_ok());
        assert!(b.admit("h:443", t2).is_ok());
        assert_eq!(b.open(), 0);
    }

    #[test]
    fn deferrals_outlast_the_pause() {
        let s = [0, 5_000, 300_000, 1_800_000];
        assert_eq!(deferral_tier(&s, Duration::from_secs(30)), Some(2));
        assert_eq!(deferral_tier(&s, Duration::from_secs(5)), Some(1));
        assert_eq!(deferral_tier(&s, Duration::from_secs(600)), Some(3));
        assert_eq!(deferral_tier(&s, Duration::from_secs(99_999)), Some(3));
        assert_eq!(deferral_tier(&[0], Duration::from_secs(1)), None);
        assert_eq!(
            host_of("https://Hooks.Example.com/x?y"),
            "hooks.example.com:443"
        );
        assert_eq!(host_of("http://127.0.0.1:9000/"), "127.0.0.1:9000");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breakers::new(1);
        let t = Instant::now();
        for _ in 0..10 {
            for _ in 0..THRESHOLD - 1 {
                b.record("h", false, t);
            }
            b.record("h", true, t);
        }
        assert!(b.admit("h", t).is_ok());
    }

    #[test]
    fn cooldowns_stop_growing() {
        let b = Breakers::new(1);
        let mut t = Instant::now();
        for _ in 0..THRESHOLD {
            b.record("h", false, t);
        }
        for _ in 0..20 {
            t += MAX_COOLDOWN;
            assert!(b.admit("h", t).is_ok());
            b.record("h", false, t);
        }
        assert!(b.admit("h", t + MAX_COOLDOWN).is_ok());
    }

    #[test]
    fn each_host_gets_its_own_slots() {
        let b = Breakers::new(2);
        let a = b.slots("a");
        let _x = a.clone().try_acquire_owned().unwrap();
        let _y = a.clone().try_acquire_owned().unwrap();
        assert!(a.clone().try_acquire_owned().is_err());
        assert!(b.slots("a").try_acquire_owned().is_err(), "the same slots");
        assert!(b.slots("b").try_acquire_owned().is_ok());
    }
}

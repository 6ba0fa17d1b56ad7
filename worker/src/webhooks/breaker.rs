//! Per-host circuit breaker and share of the dispatcher.
//!
//! A receiver that is down must not tie up the dispatcher: after
//! [`THRESHOLD`] failed attempts in a row, attempts to that host are not
//! sent for a cooldown (30 s, doubling to 10 min while it keeps failing);
//! they wait for their next turn on the schedule, so no message is held
//! waiting on a dead host. When the cooldown ends, one attempt probes the
//! host: success closes the circuit, failure opens it again.
//!
//! A receiver that is up but slow must not tie it up either. Each host
//! gets at most `per_host` requests in flight (a quarter of the
//! dispatcher's), and fewer once it is slow: a slow answer (see
//! [`Outcome::Slow`]) or a failure halves the host's limit, down to one,
//! and each quick answer raises it by one again. So a host's share is paid
//! in time, not only in requests: one that takes 9 s an answer holds one
//! request slot, not a quarter of them. An event that finds its host's
//! slots taken waits a bounded time ([`Breakers::wait_slot`]) and is then
//! deferred by the caller, so it never holds its message for long.
//!
//! The state of a host is forgotten once it has been idle for [`IDLE`] (no
//! request in flight), and at most [`MAX_HOSTS`] hosts are kept (past it
//! the least recently used idle ones go first): URLs that never resolve,
//! or a stream of new hosts, cannot grow it without bound. Plain logic
//! over the clock it is given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The `host:port` a callback URL goes to: what a breaker is kept for, and
/// all that is logged of a URL (its path and query may carry a secret).
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "(not a URL)".into())
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
/// A host with nothing in flight for this long is forgotten: longer than
/// the longest cooldown, so a host that keeps failing keeps its pause.
pub const IDLE: Duration = Duration::from_secs(900);
/// Most hosts kept at once.
pub const MAX_HOSTS: usize = 10_000;
/// How often idle hosts are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How an attempt went, for its host's breaker and share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (2xx or 410) quickly.
    Fast,
    /// Answered, but slowly (the caller decides how slow is slow: a good
    /// share of the request timeout): the host's share shrinks.
    Slow,
    /// Failed in a way that may pass (an error status, no answer).
    Failed,
}

#[derive(Debug)]
struct Host {
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
    /// Requests in flight, and how many it may have now.
    in_flight: usize,
    limit: usize,
    last_used: Instant,
}

impl Host {
    fn idle_since(&self, now: Instant) -> Option<Duration> {
        (self.in_flight == 0).then(|| now.saturating_duration_since(self.last_used))
    }
}

#[derive(Debug)]
struct Inner {
    hosts: HashMap<String, Host>,
    last_sweep: Instant,
}

/// The breakers of every host a dispatcher talks to.
#[derive(Debug)]
pub struct Breakers {
    inner: Mutex<Inner>,
    per_host: usize,
    max_hosts: usize,
    /// Woken whenever a request slot is given back.
    released: Notify,
}

/// What [`Breakers::take`] found.
#[derive(Debug)]
pub enum Take {
    /// A request slot of the host: send, record, then drop it.
    Go(Slot),
    /// The host's circuit is open (or its probe is out) for this long.
    Paused(Duration),
    /// All the slots the host may have now are taken.
    Busy,
}

/// One request in flight to a host; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    breakers: Arc<Breakers>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut inner = self.breakers.inner.lock().expect("breaker lock");
            if let Some(h) = inner.hosts.get_mut(&self.key) {
                h.in_flight = h.in_flight.saturating_sub(1);
                h.last_used = Instant::now();
            }
        }
        self.breakers.released.notify_waiters();
    }
}

impl Breakers {
    /// Breakers allowing `per_host` requests in flight per host.
    pub fn new(per_host: usize) -> Self {
        Self::with_max_hosts(per_host, MAX_HOSTS)
    }

    /// Breakers keeping at most `max_hosts` hosts.
    pub fn with_max_hosts(per_host: usize, max_hosts: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                hosts: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            per_host: per_host.max(1),
            max_hosts: max_hosts.max(1),
            released: Notify::new(),
        }
    }

    /// The entry of `key`, made (room first) if new; idle hosts are swept
    /// out now and then.
    fn host<'a>(&self, inner: &'a mut Inner, key: &str, now: Instant) -> &'a mut Host {
        if now.saturating_duration_since(inner.last_sweep) >= SWEEP_EVERY {
            inner.last_sweep = now;
            inner
                .hosts
                .retain(|_, h| h.idle_since(now).is_none_or(|d| d < IDLE));
        }
        if !inner.hosts.contains_key(key) && inner.hosts.len() >= self.max_hosts {
            self.make_room(&mut inner.hosts, now);
        }
        inner.hosts.entry(key.to_string()).or_insert_with(|| Host {
            failures: 0,
            open_until: None,
            cooldown: COOLDOWN,
            probing: false,
            in_flight: 0,
            limit: self.per_host,
            last_used: now,
        })
    }

    /// Forgets idle hosts, then, if still full, the least recently used
    /// tenth of those with nothing in flight, so a stream of new hosts pays
    /// for a scan once per many of them. Hosts with requests in flight stay
    /// (there are at most as many as the dispatcher's requests).
    fn make_room(&self, hosts: &mut HashMap<String, Host>, now: Instant) {
        hosts.retain(|_, h| h.idle_since(now).is_none_or(|d| d < IDLE));
        if hosts.len() < self.max_hosts {
            return;
        }
        let mut idle: Vec<(Instant, String)> = hosts
            .iter()
            .filter(|(_, h)| h.in_flight == 0)
            .map(|(k, h)| (h.last_used, k.clone()))
            .collect();
        let n = (self.max_hosts / 10).max(1).min(idle.len());
        if n == 0 {
            return;
        }
        idle.select_nth_unstable(n - 1);
        for (_, k) in &idle[..n] {
            hosts.remove(k);
        }
    }

    /// Takes a request slot of `key` at `now`, if its circuit and share
    /// allow one. After a cooldown, the first attempt let through is the
    /// probe; the others wait for it.
    pub fn take(self: &Arc<Self>, key: &str, now: Instant) -> Take {
        let mut inner = self.inner.lock().expect("breaker lock");
        let h = self.host(&mut inner, key, now);
        match h.open_until {
            Some(until) if now < until => return Take::Paused(until - now),
            // A probe that never reported (its task ended) does not block
            // the host for good: after another cooldown, a new one goes.
            Some(until) if h.probing && now < until + h.cooldown => {
                return Take::Paused(until + h.cooldown - now)
            }
            _ => {}
        }
        if h.in_flight >= h.limit {
            return Take::Busy;
        }
        if h.open_until.is_some() {
            h.probing = true;
        }
        h.in_flight += 1;
        h.last_used = now;
        Take::Go(Slot {
            breakers: self.clone(),
            key: key.to_string(),
        })
    }

    /// How long attempts to `key` are paused at `now`: the rest of an open
    /// circuit's cooldown, or, while its probe is out, the probe's time;
    /// `None` when an attempt may go. Reads only: an unknown host is not
    /// added.
    pub fn paused(&self, key: &str, now: Instant) -> Option<Duration> {
        let inner = self.inner.lock().expect("breaker lock");
        let h = inner.hosts.get(key)?;
        let until = h.open_until?;
        if now < until {
            Some(until - now)
        } else if h.probing && now < until + h.cooldown {
            Some(until + h.cooldown - now)
        } else {
            None
        }
    }

    /// [`Breakers::take`], waiting up to `within` for a slot while the
    /// host is busy; still `Busy` past that.
    pub async fn wait_slot(self: &Arc<Self>, key: &str, within: Duration) -> Take {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Armed before the check, so a release in between is not
            // missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.take(key, Instant::now()) {
                Take::Busy if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Records an attempt's result.
    pub fn record(&self, key: &str, outcome: Outcome, now: Instant) {
        let mut inner = self.inner.lock().expect("breaker lock");
        let h = self.host(&mut inner, key, now);
        h.last_used = now;
        match outcome {
            Outcome::Fast | Outcome::Slow => {
                h.failures = 0;
                h.open_until = None;
                h.cooldown = COOLDOWN;
                h.probing = false;
                h.limit = match outcome {
                    Outcome::Fast => (h.limit + 1).min(self.per_host),
                    _ => (h.limit / 2).max(1),
                };
            }
            Outcome::Failed => {
                h.failures += 1;
                h.limit = (h.limit / 2).max(1);
                if h.probing || h.failures >= THRESHOLD {
                    if h.probing {
                        h.cooldown = (h.cooldown * 2).min(MAX_COOLDOWN);
                    }
                    h.open_until = Some(now + h.cooldown);
                    h.probing = false;
                }
            }
        }
    }

    /// Hosts whose state is kept.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("breaker lock").hosts.len()
    }

    /// Whether no host's state is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(t: Take) -> Slot {
        match t {
            Take::Go(s) => s,
            other => panic!("no slot: {other:?}"),
        }
    }

    fn paused(t: Take) -> Duration {
        match t {
            Take::Paused(d) => d,
            other => panic!("not paused: {other:?}"),
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_and_probes_after_the_cooldown() {
        let b = Arc::new(Breakers::new(4));
        let t0 = Instant::now();
        for _ in 0..THRESHOLD - 1 {
            let _s = go(b.take("h:443", t0));
            b.record("h:443", Outcome::Failed, t0);
        }
        let s = go(b.take("h:443", t0));
        b.record("h:443", Outcome::Failed, t0);
        drop(s);
        assert_eq!(paused(b.take("h:443", t0)), COOLDOWN);
        assert_eq!(b.paused("h:443", t0), Some(COOLDOWN));
        assert_eq!(b.paused("other:443", t0), None);
        drop(go(b.take("other:443", t0)));
        // After the cooldown one probe goes; the rest wait for it.
        let t1 = t0 + COOLDOWN;
        let probe = go(b.take("h:443", t1));
        assert!(
            paused(b.take("h:443", t1)) > Duration::ZERO,
            "the probe is out"
        );
        // A failed probe doubles the cooldown.
        b.record("h:443", Outcome::Failed, t1);
        drop(probe);
        assert!(matches!(b.take("h:443", t1 + COOLDOWN), Take::Paused(_)));
        let t2 = t1 + 2 * COOLDOWN;
        let probe = go(b.take("h:443", t2));
        // A good probe closes it.
        b.record("h:443", Outcome::Fast, t2);
        drop(probe);
        let _a = go(b.take("h:443", t2));
        let _b = go(b.take("h:443", t2));
    }

    #[test]
    fn deferrals_outlast_the_pause() {
        let s = [0, 5_000, 300_000, 1_800_000];
        assert_eq!(deferral_tier(&s, Duration::from_secs(30)), Some(2));
        assert_eq!(deferral_tier(&s, Duration::from_secs(5)), Some(1));
        assert_eq!(deferral_tier(&s, Duration::ZERO), Some(1));
        assert_eq!(deferral_tier(&s, Duration::from_secs(600)), Some(3));
        assert_eq!(deferral_tier(&s, Duration::from_secs(99_999)), Some(3));
        assert_eq!(deferral_tier(&[0], Duration::from_secs(1)), None);
        assert_eq!(
            host_of("https://Hooks.Example.com/x?y"),
            "hooks.example.com:443"
        );
        assert_eq!(host_of("http://127.0.0.1:9000/"), "127.0.0.1:9000");
        // What is logged of a URL that does not parse says nothing of it.
        assert_eq!(host_of("secret-token-not-a-url"), "(not a URL)");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Arc::new(Breakers::new(1));
        let t = Instant::now();
        for _ in 0..10 {
            for _ in 0..THRESHOLD - 1 {
                b.record("h", Outcome::Failed, t);
            }
            b.record("h", Outcome::Fast, t);
        }
        drop(go(b.take("h", t)));
    }

    #[test]
    fn cooldowns_stop_growing() {
        let b = Arc::new(Breakers::new(1));
        let mut t = Instant::now();
        for _ in 0..THRESHOLD {
            b.record("h", Outcome::Failed, t);
        }
        for _ in 0..20 {
            t += MAX_COOLDOWN;
            let probe = go(b.take("h", t));
            b.record("h", Outcome::Failed, t);
            drop(probe);
        }
        drop(go(b.take("h", t + MAX_COOLDOWN)));
    }

    #[test]
    fn each_host_gets_its_own_slots() {
        let b = Arc::new(Breakers::new(2));
        let t = Instant::now();
        let x = go(b.take("a", t));
        let _y = go(b.take("a", t));
        assert!(matches!(b.take("a", t), Take::Busy));
        let _z = go(b.take("b", t));
        drop(x);
        let _x = go(b.take("a", t));
    }

    #[test]
    fn slow_answers_shrink_a_host_s_share_and_quick_ones_grow_it_back() {
        let b = Arc::new(Breakers::new(8));
        let t = Instant::now();
        let held: Vec<Slot> = (0..8).map(|_| go(b.take("slow", t))).collect();
        assert!(matches!(b.take("slow", t), Take::Busy));
        // Each slow success halves what the host may have in flight, down
        // to one request, though every one of them was a success.
        for _ in 0..4 {
            b.record("slow", Outcome::Slow, t);
        }
        drop(held);
        let one = go(b.take("slow", t));
        assert!(matches!(b.take("slow", t), Take::Busy), "one at a time");
        assert!(
            !matches!(b.take("slow", t), Take::Paused(_)),
            "slow is not down"
        );
        // Other hosts keep their whole share.
        let others: Vec<Slot> = (0..8).map(|_| go(b.take("quick", t))).collect();
        drop(others);
        // Quick answers give it back, one slot each.
        b.record("slow", Outcome::Fast, t);
        drop(one);
        let a = go(b.take("slow", t));
        let c = go(b.take("slow", t));
        assert!(matches!(b.take("slow", t), Take::Busy));
        drop((a, c));
        for _ in 0..20 {
            b.record("slow", Outcome::Fast, t);
        }
        let all: Vec<Slot> = (0..8).map(|_| go(b.take("slow", t))).collect();
        assert!(
            matches!(b.take("slow", t), Take::Busy),
            "never past per_host"
        );
        drop(all);
    }

    #[tokio::test]
    async fn waiting_for_a_slot_is_bounded_and_ends_at_a_release() {
        let b = Arc::new(Breakers::new(1));
        let held = go(b.take("h", Instant::now()));
        let started = std::time::Instant::now();
        assert!(matches!(
            b.wait_slot("h", Duration::from_millis(100)).await,
            Take::Busy
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.wait_slot("h", Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the release")
            .unwrap();
        assert!(matches!(got, Take::Go(_)));
    }

    #[test]
    fn idle_hosts_are_forgotten_and_the_map_is_bounded() {
        let b = Arc::new(Breakers::with_max_hosts(2, 100));
        let t0 = Instant::now();
        // A stream of hosts that never answer (never resolve, say).
        for i in 0..1_000 {
            let key = format!("nowhere-{i}.invalid:443");
            let s = go(b.take(&key, t0));
            b.record(&key, Outcome::Failed, t0);
            drop(s);
            assert!(b.len() <= 100, "{} hosts kept", b.len());
        }
        // A host with a request in flight is never dropped to make room.
        let busy = [go(b.take("busy:443", t0)), go(b.take("busy:443", t0))];
        for i in 0..500 {
            let key = format!("more-{i}:443");
            b.record(&key, Outcome::Fast, t0);
        }
        assert!(b.len() <= 100);
        assert!(
            matches!(b.take("busy:443", t0), Take::Busy),
            "its slots are still counted"
        );
        drop(busy);
        // Once idle past IDLE, everything is swept out.
        let later = t0 + IDLE + SWEEP_EVERY;
        b.record("last:443", Outcome::Fast, later);
        assert_eq!(b.len(), 1, "only the host just used is left");
    }
}

//! The `[webhooks]` section: signing secrets, the delivery schedule, and
//! the policy of the guard against callback URLs into the operator's own
//! network.

use crate::webhooks::guard::Policy;
use serde::{Deserialize, Serialize};

/// Webhook callbacks: signing, delivery schedule and the guard against
/// callback URLs that point into the operator's own network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Signing secrets in `whsec_<base64>` form. Every request carries one
    /// signature per secret, so a new secret can be added, receivers moved
    /// to it, and the old one removed. Empty: `webhook_url` is refused.
    pub secrets: Vec<String>,
    /// Delays before each attempt of one event, in ms: the first (usually
    /// 0) after the event, each later one after the previous failure.
    pub schedule_ms: Vec<u64>,
    /// Longest a receiver may take to answer one request.
    pub timeout_ms: u64,
    /// Most bytes of a receiver's answer that are read (and kept, at most
    /// 512 of them, in the delivery log).
    pub max_response_bytes: usize,
    /// Requests in flight at once per dispatcher.
    pub concurrency: u16,
    /// Allows `http://` callback URLs (development and tests only).
    pub allow_http: bool,
    /// Hosts (names or IP addresses, as written in the URL) exempt from the
    /// address checks, e.g. a receiver on loopback in development.
    pub allow_hosts: Vec<String>,
    /// Public base URL of the API, for the results link of
    /// `batch.completed`; the link is a path when unset.
    pub public_url: Option<String>,
    /// Whether this worker runs a dispatcher that sends the events.
    pub dispatch: bool,
}

/// The retry schedule of the Standard Webhooks specification: at once,
/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h.
pub const STANDARD_WEBHOOK_SCHEDULE_MS: [u64; 10] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000,
    86_400_000,
];

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            schedule_ms: STANDARD_WEBHOOK_SCHEDULE_MS.to_vec(),
            timeout_ms: 10_000,
            max_response_bytes: 64 << 10,
            concurrency: 64,
            allow_http: false,
            allow_hosts: Vec::new(),
            public_url: None,
            dispatch: true,
        }
    }
}

impl WebhooksConfig {
    /// Whether callbacks are on: there is a secret to sign them with.
    pub fn enabled(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// What the guard against callback URLs is to enforce.
    pub fn guard_policy(&self) -> Policy<'_> {
        Policy {
            allow_http: self.allow_http,
            allow_hosts: &self.allow_hosts,
        }
    }
}

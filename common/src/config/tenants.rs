//! The `[tenants]` section: default limits, the keys known from the
//! configuration, and what a tenant name may be.

use serde::{Deserialize, Serialize};

/// What one tenant may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Submissions (single jobs and bulk uploads) per second, sustained.
    pub rate_per_sec: f64,
    /// Submissions allowed at once above the sustained rate.
    pub burst: u32,
    /// Jobs and bulk rows accepted but not yet finished, at most.
    pub max_queued: u64,
    /// How long job records, results and batch results are kept.
    pub retention_secs: u64,
}

/// What a tenant name may look like.
pub const TENANT_NAME_RULE: &str = "use 1 to 64 of A-Z, a-z, 0-9, '-' and '_'";

/// Whether `name` can name a tenant (it becomes part of Redis keys).
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Limits {
    /// Adds a problem for each value that cannot work, under `at`.
    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0 && self.rate_per_sec <= 1e6) {
            problems.push(format!(
                "{at}.rate_per_sec: must be above 0 and at most 1000000"
            ));
        }
        if self.burst == 0 {
            problems.push(format!("{at}.burst: must be at least 1"));
        }
        if self.max_queued == 0 {
            problems.push(format!("{at}.max_queued: must be at least 1"));
        }
        if !(60..=366 * 86_400).contains(&self.retention_secs) {
            problems.push(format!(
                "{at}.retention_secs: must be between 60 and 31622400"
            ));
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_sec: 200.0,
            burst: 400,
            max_queued: 1_000_000,
            retention_secs: 86_400,
        }
    }
}

/// An API key known from the configuration rather than created with
/// `infq admin keys create` (the development tenant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// Hex SHA-256 of the key (the key itself is never stored).
    pub sha256: String,
    /// Whether the key may use `/v1/admin`.
    #[serde(default)]
    pub admin: bool,
    /// The tenant's limits; `tenants.defaults` when unset.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Tenants and their API keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Limits of a tenant created without limits of its own.
    pub defaults: Limits,
    /// Keys from configuration; production configs have none.
    pub static_keys: Vec<StaticKey>,
    /// How long a producer trusts what it read about a key: a revoked key
    /// stops working within this time.
    pub cache_ms: u64,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        Self {
            defaults: Limits::default(),
            static_keys: Vec::new(),
            cache_ms: 1_000,
        }
    }
}

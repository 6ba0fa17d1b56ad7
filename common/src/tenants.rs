//! Tenants, their API keys and their quotas.
//!
//! A tenant is one client firm. It reaches the API with bearer keys, which
//! are stored only as SHA-256 hashes: a key is 32 random bytes, so a plain
//! digest cannot be reversed or guessed. Redis holds the tenants in one
//! hash (name -> JSON) and the keys in another (hash -> JSON; see
//! [`crate::keys`]);
//! keys named in the configuration (`tenants.static_keys`, the development
//! tenant) need no record.
//!
//! Each tenant has a quota (a rate and a count of open jobs and rows):
//! see [`crate::store::quota`], which this store applies.

use crate::config::{valid_tenant_name, Limits, Settings, TENANT_NAME_RULE};
use crate::job::{now_ms, JobId};
use crate::keys::Keys;
use crate::redis_link::RedisLink;
use crate::sha256::hex as digest;
use crate::store::quota;
use crate::store::StoreError;
use base64::Engine;
use redis::{AsyncCommands, Script};

pub use crate::store::quota::{Admission, QuotaCheck, QUOTA_HORIZON_MS};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The key of the development tenant `dev` in `config/default.toml`. It is
/// public: production configurations must not list its hash.
pub const DEV_API_KEY: &str = "infq_dev_0000000000000000000000000000000000000000000";

/// What a created key starts with, so that secret scanners can find leaked
/// ones.
pub const KEY_PREFIX: &str = "infq_";

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name, unique in the deployment.
    pub name: String,
    /// Whether its keys may use `/v1/admin`.
    #[serde(default)]
    pub admin: bool,
    /// What it may use.
    pub limits: Limits,
    /// Secrets that sign its webhooks (`whsec_...`), several side by side
    /// during a rotation; the deployment's `webhooks.secrets` when empty.
    #[serde(default)]
    pub webhook_secrets: Vec<String>,
    /// When it was created (epoch ms); 0 for a tenant from configuration.
    #[serde(default)]
    pub created_at_ms: u64,
    /// Revoked tenants keep their record (so the name is not reused) but
    /// no key works.
    #[serde(default)]
    pub revoked: bool,
}

/// A created key, as stored (the key itself is not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// A short public id, for listing and revoking.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// When it was created (epoch ms).
    pub created_at_ms: u64,
}

/// Why a tenant operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The name cannot be used.
    #[error("tenant name `{0}`: {TENANT_NAME_RULE}")]
    BadName(String),
    /// Limits or secrets that cannot work.
    #[error("{}", .0.join("; "))]
    BadLimits(Vec<String>),
    /// The name is taken (also by a revoked tenant).
    #[error("tenant `{0}` exists")]
    Exists(String),
    /// No such tenant, or it is revoked.
    #[error("no active tenant `{0}`")]
    Unknown(String),
}

impl From<redis::RedisError> for TenantError {
    fn from(e: redis::RedisError) -> Self {
        TenantError::Store(StoreError::Redis(e))
    }
}

/// The hex SHA-256 under which a key is stored.
pub fn key_hash(key: &str) -> String {
    digest(key.as_bytes())
}

/// The public id of the key with this hash.
pub fn key_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// A new random key: `infq_` and 43 base64url characters (32 bytes).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Sets an active tenant's webhook secrets: `lua/tenant_set_secrets.lua`.
static SET_SECRETS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/tenant_set_secrets.lua")));

/// Tenants, keys and quotas in Redis, with a short in-process cache of
/// what keys resolve to.
#[derive(Clone)]
pub struct TenantStore {
    conn: RedisLink,
    keys: Keys,
    defaults: Limits,
    statics: Arc<HashMap<String, Arc<Tenant>>>,
    cache: moka::sync::Cache<String, Option<Arc<Tenant>>>,
    by_name: moka::sync::Cache<String, Option<Arc<Tenant>>>,
}

impl TenantStore {
    /// The store of the deployment in `settings`, over `conn`.
    pub fn new(conn: RedisLink, settings: &Settings) -> Self {
        let t = &settings.tenants;
        let statics = t
            .static_keys
            .iter()
            .map(|k| {
                let tenant = Tenant {
                    name: k.tenant.clone(),
                    admin: k.admin,
                    limits: k.limits.clone().unwrap_or_else(|| t.defaults.clone()),
                    webhook_secrets: Vec::new(),
                    created_at_ms: 0,
                    revoked: false,
                };
                (k.sha256.to_ascii_lowercase(), Arc::new(tenant))
            })
            .collect();
        Self {
            conn,
            keys: Keys::new(&settings.namespace),
            defaults: t.defaults.clone(),
            statics: Arc::new(statics),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(t.cache_ms))
                .build(),
            by_name: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(t.cache_ms))
                .build(),
        }
    }

    fn tenants_key(&self) -> String {
        self.keys.tenants()
    }

    fn keys_key(&self) -> String {
        self.keys.api_keys()
    }

    /// The active tenant a bearer key belongs to; `None` for an unknown or
    /// revoked key, or one of a revoked tenant.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        let hash = key_hash(key);
        if let Some(t) = self.statics.get(&hash) {
            return Ok(Some(t.clone()));
        }
        if let Some(hit) = self.cache.get(&hash) {
            return Ok(hit);
        }
        let found = self.lookup(&hash).await?;
        self.cache.insert(hash, found.clone());
        Ok(found)
    }

    async fn lookup(&self, hash: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        let mut conn = self.conn.clone();
        let entry: Option<String> = conn.hget(self.keys_key(), hash).await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let entry: KeyEntry =
            serde_json::from_str(&entry).map_err(|e| StoreError::Reply(e.to_string()))?;
        Ok(self
            .stored(&entry.tenant)
            .await?
            .filter(|t| !t.revoked)
            .map(Arc::new))
    }

    async fn stored(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.hget(self.tenants_key(), name).await?;
        raw.map(|r| serde_json::from_str(&r).map_err(|e| StoreError::Reply(e.to_string())))
            .transpose()
    }

    /// A tenant by name: created ones first, then those of static keys.
    pub async fn tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        if let Some(t) = self.stored(name).await? {
            return Ok(Some(t));
        }
        Ok(self
            .statics
            .values()
            .find(|t| t.name == name)
            .map(|t| (**t).clone()))
    }

    /// [`Self::tenant`], trusted for `tenants.cache_ms` (the dispatchers
    /// ask for every event).
    pub async fn cached(&self, name: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(hit) = self.by_name.get(name) {
            return Ok(hit);
        }
        let found = self.tenant(name).await?.map(Arc::new);
        self.by_name.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// Creates a tenant with `limits` (the configured defaults when
    /// `None`) and a webhook signing secret of its own; returns it with
    /// its first key, which is shown once and never stored.
    pub async fn create_tenant(
        &self,
        name: &str,
        limits: Option<Limits>,
        admin: bool,
    ) -> Result<(Tenant, KeyEntry, String), TenantError> {
        if !valid_tenant_name(name) {
            return Err(TenantError::BadName(name.to_string()));
        }
        let limits = limits.unwrap_or_else(|| self.defaults.clone());
        let mut problems = Vec::new();
        limits.check("limits", &mut problems);
        if !problems.is_empty() {
            return Err(TenantError::BadLimits(problems));
        }
        if self.statics.values().any(|t| t.name == name) {
            return Err(TenantError::Exists(name.to_string()));
        }
        let tenant = Tenant {
            name: name.to_string(),
            admin,
            limits,
            webhook_secrets: vec![crate::webhooks::sign::generate_secret()],
            created_at_ms: now_ms(),
            revoked: false,
        };
        let json = serde_json::to_string(&tenant).expect("a tenant serialises");
        let mut conn = self.conn.clone();
        let created: bool = conn.hset_nx(self.tenants_key(), name, json).await?;
        if !created {
            return Err(TenantError::Exists(name.to_string()));
        }
        let (entry, key) = self.create_key(name).await?;
        Ok((tenant, entry, key))
    }

    /// Every created tenant, by name.
    pub async fn list(&self) -> Result<Vec<Tenant>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.tenants_key()).await?;
        let mut out: Vec<Tenant> = all
            .values()
            .map(|r| serde_json::from_str(r).map_err(|e| StoreError::Reply(e.to_string())))
            .collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every created key, optionally of one tenant, oldest first.
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.keys_key()).await?;
        let mut out: Vec<KeyEntry> = all
            .values()
            .map(|r| serde_json::from_str(r).map_err(|e| StoreError::Reply(e.to_string())))
            .collect::<Result<Vec<KeyEntry>, _>>()?
            .into_iter()
            .filter(|k| tenant.is_none_or(|t| k.tenant == t))
            .collect();
        out.sort_by_key(|k| k.created_at_ms);
        Ok(out)
    }

    /// Adds a key to an active tenant; returns it once.
    pub async fn create_key(&self, tenant: &str) -> Result<(KeyEntry, String), TenantError> {
        match self.stored(tenant).await? {
            Some(t) if !t.revoked => {}
            _ => return Err(TenantError::Unknown(tenant.to_string())),
        }
        let key = generate_key();
        let hash = key_hash(&key);
        let entry = KeyEntry {
            id: key_id(&hash),
            tenant: tenant.to_string(),
            created_at_ms: now_ms(),
        };
        let json = serde_json::to_string(&entry).expect("a key entry serialises");
        let mut conn = self.conn.clone();
        let _: () = conn.hset(self.keys_key(), hash, json).await?;
        Ok((entry, key))
    }

    /// Revokes the key with this id (or hash); `false` if there is none.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.keys_key()).await?;
        let Some(hash) = all
            .keys()
            .find(|h| key_id(h) == id || h.as_str() == id)
            .cloned()
        else {
            return Ok(false);
        };
        let removed: u32 = conn.hdel(self.keys_key(), &hash).await?;
        self.cache.invalidate(&hash);
        Ok(removed > 0)
    }

    /// Revokes a tenant and deletes its keys; returns how many keys went.
    pub async fn revoke_tenant(&self, name: &str) -> Result<usize, TenantError> {
        let Some(mut t) = self.stored(name).await? else {
            return Err(TenantError::Unknown(name.to_string()));
        };
        t.revoked = true;
        let json = serde_json::to_string(&t).expect("a tenant serialises");
        let mut conn = self.conn.clone();
        let _: () = conn.hset(self.tenants_key(), name, json).await?;
        let mut n = 0;
        for k in self.keys(Some(name)).await? {
            if self.revoke_key(&k.id).await? {
                n += 1;
            }
        }
        self.cache.invalidate_all();
        Ok(n)
    }

    /// The claim of a submission of `rows` jobs or rows on `tenant`'s
    /// quota: its rate (when `rate`) and, with `rows` above 0, its open jobs
    /// and rows, registering `subject` as open until it ends or its
    /// retention passes.
    pub fn check(&self, tenant: &Tenant, subject: &JobId, rows: u64, rate: bool) -> QuotaCheck {
        QuotaCheck::new(
            &self.keys,
            &tenant.name,
            &tenant.limits,
            subject,
            rows,
            rate,
        )
    }

    /// Applies a [`Self::check`] on its own (uploads: the rate before
    /// reading, the rows once counted; single jobs go through
    /// [`crate::store::JobStore::create_admitted`] instead).
    pub async fn admit(&self, check: &QuotaCheck) -> Result<Admission, StoreError> {
        quota::admit(&self.conn, check).await
    }

    /// Replaces a tenant's webhook secrets (rotation: add the new one,
    /// later drop the old one): one or more valid `whsec_` secrets, for an
    /// active tenant (checked in the same step as the write, so a
    /// revocation is never undone).
    pub async fn set_webhook_secrets(
        &self,
        name: &str,
        secrets: Vec<String>,
    ) -> Result<Tenant, TenantError> {
        let mut problems: Vec<String> = secrets
            .iter()
            .filter_map(|s| crate::webhooks::sign::check_secret(s).err())
            .collect();
        if secrets.is_empty() {
            problems.push("at least one webhook secret".into());
        }
        if !problems.is_empty() {
            return Err(TenantError::BadLimits(problems));
        }
        let mut conn = self.conn.clone();
        let answer: String = SET_SECRETS
            .key(self.tenants_key())
            .arg(name)
            .arg(serde_json::to_string(&secrets).expect("strings serialise"))
            .invoke_async(&mut conn)
            .await?;
        if answer != "ok" {
            return Err(TenantError::Unknown(name.to_string()));
        }
        self.by_name.invalidate(name);
        self.stored(name)
            .await?
            .ok_or_else(|| TenantError::Unknown(name.to_string()))
    }

    /// Gives back what `subject` holds of `tenant`'s queued limit (one that
    /// was counted but never recorded); nothing if it holds nothing.
    pub async fn release(&self, tenant: &str, subject: &JobId) -> Result<(), StoreError> {
        quota::release(&self.conn, &self.keys, tenant, subject).await
    }

    /// Jobs and rows of `tenant` accepted and not finished.
    pub async fn queued(&self, tenant: &str) -> Result<u64, StoreError> {
        quota::queued(&self.conn, &self.keys, tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_eq!(key_hash(&a).len(), 64);
        assert_ne!(key_hash(&a), key_hash(&b));
        assert_eq!(key_id(&key_hash(&a)).len(), 12);
    }

    #[test]
    fn the_dev_key_matches_the_shipped_config() {
        let cfg = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/default.toml"),
        )
        .unwrap();
        assert!(cfg.contains(&key_hash(DEV_API_KEY)));
    }
}

//! The signers of tenants' webhook secrets, built once per set of secrets
//! and rebuilt when a tenant rotates them.

use crate::webhooks::error::AttemptError;
use infq_common::tenants::TenantStore;
use infq_common::webhooks::sign::Signer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most tenants whose signers are kept; past it the cache starts over.
const MAX_TENANTS: usize = 10_000;

/// A tenant's secrets and the signer built from them.
type Built = (Vec<String>, Arc<Signer>);

/// Tenants' signers, by tenant, with the secrets each was built from.
pub struct Signers {
    tenants: TenantStore,
    cache: Mutex<HashMap<String, Built>>,
}

impl Signers {
    /// Signers of the tenants in `tenants`.
    pub fn new(tenants: TenantStore) -> Self {
        Self {
            tenants,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The signer of `tenant` (the record's, never a message's), if it has
    /// secrets of its own; `None`: the deployment's secrets sign.
    pub async fn of(&self, tenant: Option<&str>) -> Result<Option<Arc<Signer>>, AttemptError> {
        let Some(name) = tenant else {
            return Ok(None);
        };
        let tenant = self.tenants.cached(name).await?;
        let Some(t) = tenant.filter(|t| !t.webhook_secrets.is_empty()) else {
            return Ok(None);
        };
        let mut cache = self.cache.lock().expect("signers lock");
        if let Some((secrets, s)) = cache.get(name) {
            if *secrets == t.webhook_secrets {
                return Ok(Some(s.clone()));
            }
        }
        let s = Arc::new(Signer::new(&t.webhook_secrets).map_err(AttemptError::Secrets)?);
        if cache.len() >= MAX_TENANTS {
            cache.clear();
        }
        cache.insert(name.to_string(), (t.webhook_secrets.clone(), s.clone()));
        Ok(Some(s))
    }
}

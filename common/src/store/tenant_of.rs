//! The tenants of the subjects a [`JobStore`] has seen: a record's tenant
//! never changes after creation, so it is learnt once per subject (from
//! the record this process created, from a claim's reply, or with one
//! pipelined `HMGET`) and the scripts that give quota back are handed its
//! keys (see `quota.rs`).

use super::error::StoreError;
use super::handle::JobStore;
use crate::job::JobId;
use crate::keys::Subject;
use std::sync::Arc;

impl JobStore {
    /// Notes the tenant of a subject whose record exists.
    pub(super) fn note_tenant(&self, id: &JobId, tenant: Option<&str>) {
        self.tenants.insert(*id, tenant.map(Arc::from));
    }

    /// The quota keys of a subject's tenant, if it is known to have one
    /// (`None` inside: known to have none; outer `None`: not known).
    /// In a cluster it is always "none": scripts are given no key outside
    /// their subject's slot (see `after.rs`).
    pub(super) fn cached_quota(&self, id: &JobId) -> Option<Option<[String; 3]>> {
        if self.one_slot_per_script() {
            return Some(None);
        }
        self.tenants.get(id).map(|t| t.map(|t| self.keys.quota(&t)))
    }

    /// The quota keys of the tenants of `subjects` (`None`: it has none, or
    /// no record), learning those not known yet in one round trip.
    pub(super) async fn quota_of(
        &self,
        subjects: &[Subject],
    ) -> Result<Vec<Option<[String; 3]>>, StoreError> {
        if self.one_slot_per_script() {
            return Ok(vec![None; subjects.len()]);
        }
        Ok(self
            .tenants_of(subjects)
            .await?
            .into_iter()
            .map(|t| t.map(|t| self.keys.quota(&t)))
            .collect())
    }

    /// The tenants of `subjects` (`None`: it has none, or no record),
    /// learning those not known yet in one round trip.
    pub async fn tenants_of(
        &self,
        subjects: &[Subject],
    ) -> Result<Vec<Option<Arc<str>>>, StoreError> {
        let mut out: Vec<Option<Option<Arc<str>>>> =
            subjects.iter().map(|s| self.tenants.get(s.id())).collect();
        let unknown: Vec<usize> = (0..subjects.len()).filter(|&i| out[i].is_none()).collect();
        if !unknown.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &unknown {
                pipe.cmd("HMGET")
                    .arg(self.keys.record(&subjects[i]))
                    .arg("status")
                    .arg("tenant");
            }
            let found: Vec<(Option<String>, Option<String>)> =
                redis::from_redis_value(redis::Value::Array(self.run_plain(&pipe).await?))
                    .map_err(|e| StoreError::Reply(e.to_string()))?;
            for (&i, (status, tenant)) in unknown.iter().zip(found) {
                if status.is_some() {
                    self.note_tenant(subjects[i].id(), tenant.as_deref());
                }
                out[i] = Some(tenant.map(Arc::from));
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
    }

    /// [`Self::quota_of`] for one subject.
    pub(super) async fn quota_of_one(
        &self,
        subject: Subject,
    ) -> Result<Option<[String; 3]>, StoreError> {
        Ok(self.quota_of(&[subject]).await?.pop().flatten())
    }
}

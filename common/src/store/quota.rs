//! Tenants' quotas: what a submission takes (`admit.lua`: a GCRA rate
//! limiter and the count of jobs and rows accepted but not finished) and
//! what ends give back (`release` in `prelude.lua`).
//!
//! A quota lives in three keys of its tenant ([`Keys::quota`]): the hash
//! (`sum`, `tat_us`, `prune_at`), the open subjects (id -> rows) and their
//! expiry. The state scripts release a subject when it ends; one that never
//! ends (its record expired) is released when its expiry passes, so the
//! count cannot drift upwards for good.
//!
//! No script derives a tenant's keys from a record: the scripts that may
//! end a subject are given its tenant's quota keys. A record's tenant never
//! changes after creation, so the store learns it once per subject — from
//! the record it creates, from a claim's reply (the worker's hot path: no
//! round trip of its own), or else with one pipelined `HMGET` before the
//! scripts run — and keeps it in the store's cache (`tenant_of.rs`).

use super::error::StoreError;
use super::scripts::{QUOTA_ADMIT, QUOTA_RELEASE};
use super::ttl::OPEN_TTL_MS;
use crate::config::Limits;
use crate::job::JobId;
use crate::keys::Keys;
use crate::redis_link::RedisLink;
use redis::AsyncCommands;
use std::time::Duration;

/// The longest an open subject counts against its tenant's `max_queued`
/// when it never ends (its message was dropped): its retention, and at
/// least as long as a record of open work is kept ([`OPEN_TTL_MS`]), so a
/// long backlog does not free the quota of jobs still waiting in the
/// queue.
pub const QUOTA_HORIZON_MS: u64 = OPEN_TTL_MS;

/// What a quota check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Counted; go ahead.
    Admitted,
    /// Over the rate; the next submission is allowed after this long.
    RateLimited(Duration),
    /// Over `max_queued` with this many jobs and rows open.
    Full {
        /// Jobs and rows open now.
        queued: u64,
        /// The limit.
        max: u64,
    },
}

/// One submission's claim on its tenant's quota: the keys and arguments of
/// `admit.lua`, and how to read its answer.
#[derive(Debug, Clone)]
pub struct QuotaCheck {
    /// Quota hash, open subjects, their expiry.
    pub keys: [String; 3],
    /// Counting horizon (ms), us per submission, burst, max open rows,
    /// rows, subject.
    pub args: [String; 6],
    max: u64,
}

impl QuotaCheck {
    /// The claim of a submission of `rows` jobs or rows on the quota of
    /// `tenant` (with `limits`): its rate (when `rate`) and, with `rows`
    /// above 0, its open jobs and rows, registering `subject` as open until
    /// it ends or its retention passes.
    pub fn new(
        keys: &Keys,
        tenant: &str,
        limits: &Limits,
        subject: &JobId,
        rows: u64,
        rate: bool,
    ) -> Self {
        let interval_us = if rate {
            (1e6 / limits.rate_per_sec).round().max(1.0)
        } else {
            0.0
        };
        QuotaCheck {
            keys: keys.quota(tenant),
            args: [
                (limits.retention_secs * 1000)
                    .max(QUOTA_HORIZON_MS)
                    .to_string(),
                interval_us.to_string(),
                limits.burst.to_string(),
                limits.max_queued.to_string(),
                rows.to_string(),
                subject.to_string(),
            ],
            max: limits.max_queued,
        }
    }

    /// What the script's reply `{what, n}` means.
    pub fn answer(&self, what: &str, n: f64) -> Result<Admission, StoreError> {
        Ok(match what {
            "ok" | "held" => Admission::Admitted,
            "rate" => Admission::RateLimited(Duration::from_millis(n.max(1.0) as u64)),
            "full" => Admission::Full {
                queued: n as u64,
                max: self.max,
            },
            other => return Err(StoreError::Reply(format!("admit: {other}"))),
        })
    }
}

/// Applies a [`QuotaCheck`] on its own (uploads: the rate before reading,
/// the rows once counted; single jobs are admitted as they are created).
pub async fn admit(conn: &RedisLink, check: &QuotaCheck) -> Result<Admission, StoreError> {
    Ok(admit_taking(conn, check).await?.0)
}

/// [`admit`], and whether this call took quota (`false` when the subject
/// was counted already): only what was taken may be given back.
pub(super) async fn admit_taking(
    conn: &RedisLink,
    check: &QuotaCheck,
) -> Result<(Admission, bool), StoreError> {
    let mut inv = QUOTA_ADMIT.prepare_invoke();
    for k in &check.keys {
        inv.key(k);
    }
    for a in &check.args {
        inv.arg(a);
    }
    let mut conn = conn.clone();
    let (what, n): (String, f64) = inv.invoke_async(&mut conn).await?;
    Ok((check.answer(&what, n)?, what == "ok"))
}

/// Gives back what `subject` holds of `tenant`'s queued limit (one that was
/// counted but never recorded); nothing if it holds nothing.
pub async fn release(
    conn: &RedisLink,
    keys: &Keys,
    tenant: &str,
    subject: &JobId,
) -> Result<(), StoreError> {
    let [q, open, due] = keys.quota(tenant);
    let mut conn = conn.clone();
    let _: i64 = QUOTA_RELEASE
        .key(q)
        .key(open)
        .key(due)
        .arg(subject.to_string())
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// Jobs and rows of `tenant` accepted and not finished.
pub async fn queued(conn: &RedisLink, keys: &Keys, tenant: &str) -> Result<u64, StoreError> {
    let [q, _, _] = keys.quota(tenant);
    let mut conn = conn.clone();
    let n: Option<i64> = conn.hget(q, "sum").await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

impl super::JobStore {
    /// Adds a tenant's quota keys (if any) to a script call, as its last
    /// keys; never in a Redis Cluster, where they live in another slot than
    /// the script's subject and the store gives quota back after the
    /// script (see `after.rs`).
    pub(super) fn with_quota(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        quota: &Option<[String; 3]>,
    ) {
        if self.one_slot_per_script() {
            return;
        }
        if let Some(q) = quota {
            for k in q {
                inv.key(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_names_its_tenants_keys_and_limits() {
        let keys = Keys::new("ns");
        let limits = Limits {
            rate_per_sec: 4.0,
            burst: 2,
            max_queued: 10,
            retention_secs: 1,
        };
        let id = crate::job::new_job_id();
        let c = QuotaCheck::new(&keys, "acme", &limits, &id, 3, true);
        assert_eq!(c.keys, keys.quota("acme"));
        assert_eq!(
            c.args[0],
            QUOTA_HORIZON_MS.to_string(),
            "at least the horizon"
        );
        assert_eq!(c.args[1], "250000");
        assert_eq!(&c.args[2..], ["2", "10", "3", &id.to_string()]);
        let c = QuotaCheck::new(&keys, "acme", &limits, &id, 0, false);
        assert_eq!(c.args[1], "0", "no rate check");
        assert_eq!(c.answer("ok", 0.0).unwrap(), Admission::Admitted);
        assert_eq!(
            c.answer("rate", 0.2).unwrap(),
            Admission::RateLimited(Duration::from_millis(1))
        );
        assert_eq!(
            c.answer("full", 9.0).unwrap(),
            Admission::Full { queued: 9, max: 10 }
        );
        assert!(c.answer("what", 0.0).is_err());
    }
}

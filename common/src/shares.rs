//! Fair shares: each tenant's bulk chunks travel in a queue of their own.
//!
//! A model's bulk lane is split by tenant: the chunks of a tenant's
//! batches are published to `<ns>.jobs.<model>.bulk.<tenant>` (routing key
//! `<model>.bulk.<tenant>`), the tenant's *share* of the lane. Workers
//! consume every share of the models they serve, each with a bounded
//! prefetch (32 chunks unless a model needs more), and the shares'
//! consumers take turns feeding the model's batcher. So a tenant with a
//! backlog of millions of rows holds that many chunks at each worker, not
//! the whole lane: another tenant's first chunk
//! runs after those, not after the backlog, and tenants with work waiting
//! get equal turns. This is the broker's own mechanism (one queue per
//! tenant, per-consumer prefetch); there is no scheduler process.
//!
//! The set of shares is kept in Redis ([`Shares`], the key
//! [`Keys::shares`]): the producer adds a share (and declares its queue)
//! before it publishes the share's first chunk; workers read the set when
//! their broker session starts and every [`POLL`] after, and consume each
//! new share of their models. A share, once made, stays: it is one quorum
//! queue per tenant and model that ever uploaded.
//!
//! The share a chunk travels in is named by the message's `tenant` field
//! ([`crate::message::JobMessage::routing_key`]). That is routing only:
//! what a chunk's tenant is, for quota, results and webhooks, is the
//! batch's stored record, never the message. A chunk without a tenant (a
//! deployment without tenants, or a message of an earlier release) travels
//! in the model's shared bulk queue `<ns>.jobs.<model>.bulk`, which workers
//! also consume.

use crate::config::valid_tenant_name;
use crate::keys::Keys;
use crate::redis_link::RedisLink;
use crate::store::StoreError;
use redis::AsyncCommands;
use std::time::Duration;

/// How often a worker reads the set of shares for new ones: the longest a
/// new tenant's first chunk waits for a consumer.
pub const POLL: Duration = Duration::from_millis(250);

/// One tenant's share of one model's bulk lane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Share {
    /// The model.
    pub model: String,
    /// The tenant.
    pub tenant: String,
}

impl Share {
    /// The share of `tenant` in `model`'s bulk lane; `None` if `tenant`
    /// cannot name one (it becomes part of a queue name).
    pub fn new(model: &str, tenant: &str) -> Option<Self> {
        valid_tenant_name(tenant).then(|| Share {
            model: model.to_string(),
            tenant: tenant.to_string(),
        })
    }

    /// Its member of the set: `<model>/<tenant>` (neither name can hold a
    /// `/`).
    pub fn member(&self) -> String {
        format!("{}/{}", self.model, self.tenant)
    }

    /// A member read back; `None` for anything a producer cannot have
    /// written (the set is input like any other).
    pub fn parse(member: &str) -> Option<Self> {
        let (model, tenant) = member.split_once('/')?;
        if !crate::registry::name::valid_name(model) {
            return None;
        }
        Share::new(model, tenant)
    }
}

/// The set of shares, in Redis.
#[derive(Clone)]
pub struct Shares {
    conn: RedisLink,
    key: String,
}

/// Most members read at once; a set this large is not one a producer
/// made (a tenant per model is a queue each).
const MAX_SHARES: usize = 100_000;

impl Shares {
    /// The set of namespace `keys`' shares, on `conn`.
    pub fn new(conn: RedisLink, keys: &Keys) -> Self {
        Self {
            conn,
            key: keys.shares(),
        }
    }

    /// Adds `share` (idempotent).
    pub async fn add(&self, share: &Share) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.sadd(&self.key, share.member()).await?;
        Ok(())
    }

    /// Every share, sorted; members that name none are left out.
    pub async fn list(&self) -> Result<Vec<Share>, StoreError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = conn.smembers(&self.key).await?;
        let mut shares: Vec<Share> = members
            .iter()
            .take(MAX_SHARES)
            .filter_map(|m| Share::parse(m))
            .collect();
        shares.sort();
        Ok(shares)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_hostile_ones_name_no_share() {
        let s = Share::new("credit-default", "acme_Corp-1").unwrap();
        assert_eq!(s.member(), "credit-default/acme_Corp-1");
        assert_eq!(Share::parse(&s.member()), Some(s));
        for bad in [
            "",
            "/",
            "credit-default",
            "credit-default/",
            "/acme",
            "credit-default/acme/x",
            "credit-default/acme.x",
            "credit-default/ac me",
            "Credit/acme",
            "credit.default/acme",
            &format!("credit-default/{}", "a".repeat(65)),
            &format!("{}/acme", "m".repeat(65)),
        ] {
            assert_eq!(Share::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Share::new("m", "a.b"), None);
        assert_eq!(Share::new("m", ""), None);
    }
}

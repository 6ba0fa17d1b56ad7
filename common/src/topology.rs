//! Names and declarations of the exchanges and queues infq uses.
//!
//! - `<ns>.jobs` (direct) routes `<model>.<lane>` to the quorum queue
//!   `<ns>.jobs.<model>.<lane>`. Every job queue has a delivery limit and
//!   dead-letters (at least once) to `<ns>.dead`.
//! - `<ns>.jobs.<model>.bulk.<tenant>`, bound by `<model>.bulk.<tenant>`,
//!   is a tenant's share of a model's bulk lane (see [`crate::shares`]),
//!   declared like a job queue when the tenant first uploads to the model.
//! - `<ns>.dead` (fanout) feeds two quorum queues: `<ns>.dead`, which keeps
//!   dead letters for inspection and replay, and `<ns>.dead.record`, from
//!   which workers record each dead-lettered job as `failed`. Both have an
//!   explicit delivery limit high enough never to be reached (see
//!   [`DEAD_LETTER_DELIVERY_LIMIT`]).
//! - `<ns>.retry.<delay>ms` (fanout exchange and quorum queue, one per
//!   delay of `amqp.retry_delays_ms`, named by the delay so a changed
//!   schedule declares new queues instead of clashing with the old ones)
//!   hold jobs waiting for another attempt; when a message's time is up the
//!   queue dead-letters it to `<ns>.jobs` under its own routing key, which
//!   puts it back on its job queue.
//!
//! - `<ns>.webhooks` (fanout exchange and quorum queue) carries webhook
//!   events to the dispatchers; `<ns>.webhooks.wait.<delay>ms` (fanout and
//!   quorum, one per delay of `webhooks.schedule_ms` after the first, named
//!   by the delay so a changed schedule declares new queues) hold
//!   events whose attempt failed until the next one is due, then
//!   dead-letter them back to `<ns>.webhooks`.
//!
//! - `<ns>.audit` (a stream, declared when `amqp.audit.enabled`) keeps the
//!   audit trail (see [`crate::audit`]), by age and size.
//!
//! Producer and worker both declare the topology, idempotently, so either
//! may start first.

pub(crate) mod death;
mod declare;

use crate::config::AmqpConfig;
use crate::job::Priority;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;

pub use death::death_reason;

/// Deliveries of one webhook message before it is dead-lettered.
pub const WEBHOOK_DELIVERY_LIMIT: i64 = 50;

/// Deliveries of one message from `<ns>.dead` or `<ns>.dead.record` before
/// the broker drops it (neither queue dead-letters further): in effect
/// never. Listing or replaying dead letters takes them and puts them back,
/// which a quorum queue counts as a delivery, and the recorder puts a dead
/// letter back each second while Redis is down; RabbitMQ 4.0 to 4.2 give a
/// quorum queue without a limit of its own a limit of 20, which would drop
/// dead letters after 20 listings and leave their jobs unrecorded after a
/// 20 s outage. Positive, because 3.x refuses the `-1` that 4.x reads as
/// unlimited.
pub const DEAD_LETTER_DELIVERY_LIMIT: i64 = 1_000_000_000;

/// Names of one deployment's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    amqp: AmqpConfig,
    delivery_limit: u32,
    queue_expires_ms: Option<u64>,
    max_queue_length: u64,
    retry_delays_ms: Vec<u64>,
    webhook_delays_ms: Vec<u64>,
}

impl Topology {
    /// The topology of namespace `ns`, with the standard webhook schedule.
    pub fn new(ns: &str, amqp: &AmqpConfig) -> Self {
        Self {
            ns: ns.to_string(),
            amqp: amqp.clone(),
            delivery_limit: amqp.delivery_limit,
            queue_expires_ms: amqp.queue_expires_ms,
            max_queue_length: amqp.max_queue_length,
            retry_delays_ms: amqp.retry_delays_ms.clone(),
            webhook_delays_ms: crate::config::STANDARD_WEBHOOK_SCHEDULE_MS.to_vec(),
        }
    }

    /// The topology a configuration describes.
    pub fn of(settings: &crate::config::Settings) -> Self {
        Self {
            webhook_delays_ms: settings.webhooks.schedule_ms.clone(),
            ..Self::new(&settings.namespace, &settings.amqp)
        }
    }

    /// The exchange (and queue) of webhook events.
    pub fn webhooks_exchange(&self) -> String {
        format!("{}.webhooks", self.ns)
    }

    /// The webhook delay queue (and exchange) for attempt index `tier`
    /// (from 1), named by its delay; `None` when that step has no delay
    /// (the event goes straight back).
    pub fn webhook_retry_exchange(&self, tier: usize) -> Option<String> {
        match self.webhook_delays_ms.get(tier) {
            Some(d) if *d > 0 && tier > 0 => Some(format!("{}.webhooks.wait.{d}ms", self.ns)),
            _ => None,
        }
    }

    /// Delays of the webhook schedule.
    pub fn webhook_delays_ms(&self) -> &[u64] {
        &self.webhook_delays_ms
    }

    /// The stream audit records are appended to (through the default
    /// exchange, by name).
    pub fn audit_stream(&self) -> String {
        format!("{}.audit", self.ns)
    }

    /// Whether audit records are written.
    pub fn audits(&self) -> bool {
        self.amqp.audit.enabled
    }

    /// The exchange jobs are published to.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    /// The dead-letter exchange.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The queue that keeps dead letters for inspection and replay.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The queue workers record dead-lettered jobs from.
    pub fn dead_record_queue(&self) -> String {
        format!("{}.dead.record", self.ns)
    }

    /// Delays of the retry tiers, shortest first.
    pub fn retry_delays_ms(&self) -> &[u64] {
        &self.retry_delays_ms
    }

    /// Exchange (and queue) of retry tier `tier` (clamped to the last),
    /// named by its delay.
    pub fn retry_exchange(&self, tier: usize) -> String {
        let tier = tier.min(self.retry_delays_ms.len().saturating_sub(1));
        let delay = self.retry_delays_ms.get(tier).copied().unwrap_or(0);
        format!("{}.retry.{delay}ms", self.ns)
    }

    /// Routing key of a model's lane (the rule is
    /// [`crate::message::routing_key`]'s).
    pub fn routing_key(model: &str, lane: Priority) -> String {
        crate::message::routing_key(model, lane)
    }

    /// Queue of a model's lane.
    pub fn job_queue(&self, model: &str, lane: Priority) -> String {
        format!("{}.jobs.{model}.{}", self.ns, lane.as_str())
    }

    /// Queue of a tenant's share of a model's bulk lane (see
    /// [`crate::shares`]).
    pub fn share_queue(&self, share: &crate::shares::Share) -> String {
        format!(
            "{}.{}",
            self.job_queue(&share.model, Priority::Bulk),
            share.tenant
        )
    }

    /// The queue a job message is published to: its share's, or its
    /// lane's.
    pub fn queue_of(&self, msg: &crate::message::JobMessage) -> String {
        match msg.share() {
            Some(s) => self.share_queue(&s),
            None => self.job_queue(&msg.model, msg.priority),
        }
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_str("quorum"));
        if let Some(ms) = self.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
        }
        if self.amqp.clustered() {
            args.insert("x-queue-leader-locator".into(), long_str("balanced"));
            if let Some(n) = self.amqp.initial_group_size() {
                args.insert(
                    "x-quorum-initial-group-size".into(),
                    AMQPValue::LongLongInt(i64::from(n)),
                );
            }
        }
        args
    }

    /// Arguments of `<ns>.dead` and `<ns>.dead.record`: quorum, with
    /// [`DEAD_LETTER_DELIVERY_LIMIT`].
    pub fn dead_letter_queue_args(&self) -> FieldTable {
        let mut args = self.quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DEAD_LETTER_DELIVERY_LIMIT),
        );
        args
    }

    /// Quorum queue that dead-letters to `dlx` at least once (which needs
    /// `reject-publish` overflow).
    fn dead_lettering_args(&self, dlx: &str) -> FieldTable {
        let mut args = self.quorum_args();
        args.insert("x-dead-letter-exchange".into(), long_str(dlx));
        args.insert("x-dead-letter-strategy".into(), long_str("at-least-once"));
        args.insert("x-overflow".into(), long_str("reject-publish"));
        args
    }

    /// Arguments of a job queue: quorum, delivery limit, dead-lettering,
    /// and a maximum length past which the broker refuses publishes
    /// (`reject-publish`: the producer's confirm is a nack, which becomes
    /// a `429`; a flood cannot exhaust the broker). `reject-publish` is
    /// also what at-least-once dead-lettering needs.
    fn job_queue_args(&self) -> FieldTable {
        let mut args = self.dead_lettering_args(&self.dead_exchange());
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(self.max_queue_length.min(i64::MAX as u64) as i64),
        );
        args.insert("x-overflow".into(), long_str("reject-publish"));
        args
    }

    /// Arguments of the webhook queue: like a job queue, with room for the
    /// redeliveries of a long Redis outage (a dispatcher holds a message a
    /// minute before it goes back).
    fn webhook_queue_args(&self) -> FieldTable {
        let mut args = self.dead_lettering_args(&self.dead_exchange());
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(WEBHOOK_DELIVERY_LIMIT),
        );
        args
    }

    /// Arguments of a retry tier: its delay as message TTL, then back to
    /// the jobs exchange.
    fn retry_queue_args(&self, delay_ms: u64) -> FieldTable {
        let mut args = self.dead_lettering_args(&self.jobs_exchange());
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(delay_ms as i64),
        );
        args
    }

    /// Deletes every exchange and queue of the namespace (the models'
    /// lanes and the tenants' `shares` of them included), messages and
    /// all: for tearing down test and benchmark namespaces.
    pub async fn delete(
        &self,
        ch: &Channel,
        models: &[&str],
        shares: &[crate::shares::Share],
    ) -> lapin::Result<()> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let mut queues = vec![self.dead_queue(), self.dead_record_queue()];
        let mut exchanges = vec![self.jobs_exchange(), self.dead_exchange()];
        for tier in 0..self.retry_delays_ms.len() {
            let name = self.retry_exchange(tier);
            if !queues.contains(&name) {
                queues.push(name.clone());
                exchanges.push(name);
            }
        }
        for model in models {
            for lane in Priority::ALL {
                queues.push(self.job_queue(model, lane));
            }
        }
        queues.extend(shares.iter().map(|s| self.share_queue(s)));
        queues.push(self.audit_stream());
        queues.push(self.webhooks_exchange());
        exchanges.push(self.webhooks_exchange());
        for tier in 1..self.webhook_delays_ms.len() {
            if let Some(name) = self.webhook_retry_exchange(tier) {
                if !queues.contains(&name) {
                    queues.push(name.clone());
                    exchanges.push(name);
                }
            }
        }
        for q in queues {
            ch.queue_delete(q.into(), QueueDeleteOptions::default())
                .await?;
        }
        for x in exchanges {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

pub(crate) fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_namespace() {
        let t = Topology::new("infq", &AmqpConfig::default());
        assert_eq!(t.jobs_exchange(), "infq.jobs");
        assert_eq!(t.dead_queue(), "infq.dead");
        assert_eq!(t.dead_record_queue(), "infq.dead.record");
        assert_eq!(
            t.job_queue("credit-default", Priority::Interactive),
            "infq.jobs.credit-default.interactive"
        );
        assert_eq!(
            Topology::routing_key("credit-default", Priority::Bulk),
            "credit-default.bulk"
        );
    }

    #[test]
    fn retry_tiers_clamp_to_the_last() {
        let t = Topology::new("infq", &AmqpConfig::default());
        let n = t.retry_delays_ms().len();
        assert!(n >= 2);
        assert_eq!(t.retry_exchange(0), "infq.retry.1000ms");
        assert_eq!(
            t.retry_exchange(99),
            format!("infq.retry.{}ms", t.retry_delays_ms()[n - 1])
        );
        let args = t.retry_queue_args(1000);
        assert_eq!(
            args.inner().get("x-dead-letter-exchange"),
            Some(&long_str("infq.jobs")),
            "a retried job goes back to its job queue"
        );
    }

    #[test]
    fn retry_tiers_are_named_by_delay_so_a_new_schedule_declares_new_queues() {
        let old = Topology::new("infq", &AmqpConfig::default());
        let amqp = AmqpConfig {
            retry_delays_ms: vec![500, 5_000, 60_000],
            ..AmqpConfig::default()
        };
        let new = Topology::new("infq", &amqp);
        // The same delay keeps its queue; another delay gets a new one.
        assert_eq!(new.retry_exchange(1), old.retry_exchange(1));
        assert_ne!(new.retry_exchange(0), old.retry_exchange(0));
        assert_eq!(new.retry_exchange(2), "infq.retry.60000ms");
    }

    #[test]
    fn dead_letter_queues_have_a_limit_listing_and_replay_never_reach() {
        let t = Topology::new("infq", &AmqpConfig::default());
        let args = t.dead_letter_queue_args();
        let inner = args.inner();
        assert_eq!(inner.get("x-queue-type"), Some(&long_str("quorum")));
        let Some(AMQPValue::LongLongInt(limit)) = inner.get("x-delivery-limit") else {
            panic!("no explicit x-delivery-limit: {inner:?}");
        };
        // A listing a second for thirty years; and positive, which every
        // RabbitMQ version takes.
        assert!(*limit >= 30 * 365 * 86_400, "{limit}");
        assert!(
            *limit <= i64::from(i32::MAX),
            "fits the broker's signed int"
        );
        assert!(
            !inner.contains_key("x-dead-letter-exchange"),
            "a dead letter goes nowhere further"
        );
    }

    #[test]
    fn job_queues_dead_letter_at_least_once() {
        let t = Topology::new("infq", &AmqpConfig::default());
        let args = t.job_queue_args();
        let inner = args.inner();
        assert!(inner.contains_key("x-delivery-limit"));
        assert_eq!(
            inner.get("x-overflow"),
            Some(&long_str("reject-publish")),
            "at-least-once dead-lettering needs reject-publish"
        );
        assert_eq!(
            inner.get("x-dead-letter-exchange"),
            Some(&long_str("infq.dead"))
        );
    }
}

//! Names and declarations of the exchanges and queues infq uses.
//!
//! `<ns>.jobs` (direct) routes `<model>.<lane>` to the quorum queue
//! `<ns>.jobs.<model>.<lane>`. Every job queue has a delivery limit and
//! dead-letters (at least once) to `<ns>.dead` (fanout), whose queue of the
//! same name holds what could not be processed. Producer and worker both
//! declare the topology, idempotently, so either may start first.

use crate::config::AmqpConfig;
use crate::job::Priority;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Names of one deployment's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    ns: String,
    delivery_limit: u32,
    queue_expires_ms: Option<u64>,
}

impl Topology {
    /// The topology of namespace `ns`.
    pub fn new(ns: &str, amqp: &AmqpConfig) -> Self {
        Self {
            ns: ns.to_string(),
            delivery_limit: amqp.delivery_limit,
            queue_expires_ms: amqp.queue_expires_ms,
        }
    }

    /// The exchange jobs are published to.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    /// The dead-letter exchange.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The queue that holds dead letters.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// Routing key of a model's lane.
    pub fn routing_key(model: &str, lane: Priority) -> String {
        format!("{model}.{}", lane.as_str())
    }

    /// Queue of a model's lane.
    pub fn job_queue(&self, model: &str, lane: Priority) -> String {
        format!("{}.jobs.{model}.{}", self.ns, lane.as_str())
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_str("quorum"));
        if let Some(ms) = self.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
        }
        args
    }

    /// Arguments of a job queue: quorum, delivery limit, at-least-once
    /// dead-lettering (which needs `reject-publish` overflow).
    fn job_queue_args(&self) -> FieldTable {
        let mut args = self.quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            long_str(&self.dead_exchange()),
        );
        args.insert("x-dead-letter-strategy".into(), long_str("at-least-once"));
        args.insert("x-overflow".into(), long_str("reject-publish"));
        args
    }

    /// Declares the exchanges, the dead-letter queue and both lanes of each
    /// model. Idempotent; fails if an existing queue has other arguments.
    pub async fn declare(&self, ch: &Channel, models: &[&str]) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.jobs_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.dead_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(
            self.dead_queue().into(),
            QueueDeclareOptions::durable(),
            self.quorum_args(),
        )
        .await?;
        ch.queue_bind(
            self.dead_queue().into(),
            self.dead_exchange().into(),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for model in models {
            for lane in Priority::ALL {
                let queue = self.job_queue(model, lane);
                ch.queue_declare(
                    queue.clone().into(),
                    QueueDeclareOptions::durable(),
                    self.job_queue_args(),
                )
                .await?;
                ch.queue_bind(
                    queue.into(),
                    self.jobs_exchange().into(),
                    Self::routing_key(model, lane).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn long_str(s: &str) -> AMQPValue {
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

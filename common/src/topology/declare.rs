//! Declaring the topology on a connection, keeping queues that an earlier
//! release or configuration declared with fewer arguments.
//!
//! RabbitMQ refuses to declare an existing queue with other arguments
//! (`406 PRECONDITION_FAILED`, which closes the channel). Two kinds of
//! arguments were added after queues existed in the field: the dead-letter
//! queues' delivery limit, and the cluster placement of every quorum queue
//! (`x-queue-leader-locator`, `x-quorum-initial-group-size`, which only
//! apply when a queue is created). A queue that matches an earlier set is
//! kept as it is, with a warning; any other mismatch fails as before.

use super::Topology;
use crate::job::Priority;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

/// The arguments that only place a new queue in a cluster.
const PLACEMENT: [&str; 2] = ["x-queue-leader-locator", "x-quorum-initial-group-size"];

/// `args` without the cluster placement arguments.
fn without_placement(args: &FieldTable) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in args.inner() {
        if !PLACEMENT.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The arguments any stream matches on redeclaration but its type.
fn stream_type_only() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    args
}

/// Whether the broker refused a declaration as inequivalent to an existing
/// one (`406 PRECONDITION_FAILED`).
fn is_precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
    )
}

/// A channel for declarations that is replaced when the broker closes it.
struct Declarer<'a> {
    conn: &'a Connection,
    ch: Channel,
}

impl<'a> Declarer<'a> {
    async fn open(conn: &'a Connection) -> lapin::Result<Self> {
        let ch = conn.create_channel().await?;
        Ok(Self { conn, ch })
    }

    async fn exchange(&self, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.ch
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await
    }

    async fn bind(&self, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
        self.ch
            .queue_bind(
                queue.into(),
                exchange.into(),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Declares `name` with `args`; an existing queue that was declared
    /// with one of `earlier` (tried in order) is kept, with a warning.
    async fn queue(
        &mut self,
        name: &str,
        args: FieldTable,
        earlier: &[FieldTable],
    ) -> lapin::Result<()> {
        let durable = QueueDeclareOptions::durable();
        let first = match self
            .ch
            .queue_declare(name.into(), durable, args.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_precondition_failed(&e) => e,
            Err(e) => return Err(e),
        };
        for old in earlier.iter().filter(|old| **old != args) {
            self.ch = self.conn.create_channel().await?;
            if self
                .ch
                .queue_declare(name.into(), durable, old.clone())
                .await
                .is_ok()
            {
                let missing: Vec<&str> = args
                    .inner()
                    .keys()
                    .filter(|k| !old.inner().contains_key(*k))
                    .map(|k| k.as_str())
                    .collect();
                tracing::warn!(
                    queue = %name,
                    missing = %missing.join(", "),
                    "this queue was declared by an earlier infq or configuration without \
                     these arguments and is kept as it is (README, Upgrading)"
                );
                return Ok(());
            }
        }
        Err(first)
    }

    async fn close(self) {
        let _ = self.ch.close(200, "declared".into()).await;
    }
}

impl Topology {
    /// Declares every exchange and queue, including both lanes of each
    /// model, on channels of its own on `conn`. Idempotent; fails if an
    /// existing queue has other arguments, except those a queue of an
    /// earlier release or a single-node configuration lacks (see the
    /// module's doc).
    pub async fn declare(&self, conn: &Connection, models: &[&str]) -> lapin::Result<()> {
        let mut d = Declarer::open(conn).await?;
        d.exchange(&self.jobs_exchange(), ExchangeKind::Direct)
            .await?;
        d.exchange(&self.dead_exchange(), ExchangeKind::Fanout)
            .await?;
        // Declared by a release before their delivery limit: without it.
        let before_limit = self.quorum_args();
        let dead_args = self.dead_letter_queue_args();
        for q in [self.dead_queue(), self.dead_record_queue()] {
            let earlier = [
                without_placement(&dead_args),
                without_placement(&before_limit),
            ];
            d.queue(&q, dead_args.clone(), &earlier).await?;
            d.bind(&q, &self.dead_exchange(), "").await?;
        }
        for (tier, delay) in self.retry_delays_ms.iter().enumerate() {
            let name = self.retry_exchange(tier);
            d.exchange(&name, ExchangeKind::Fanout).await?;
            let args = self.retry_queue_args(*delay);
            let earlier = [without_placement(&args)];
            d.queue(&name, args, &earlier).await?;
            d.bind(&name, &name, "").await?;
        }
        for model in models {
            for lane in Priority::ALL {
                let q = self.job_queue(model, lane);
                self.job_queue_on(&mut d, &q, &Self::routing_key(model, lane))
                    .await?;
            }
        }
        let hooks = self.webhooks_exchange();
        d.exchange(&hooks, ExchangeKind::Fanout).await?;
        let args = self.webhook_queue_args();
        let earlier = [without_placement(&args)];
        d.queue(&hooks, args, &earlier).await?;
        d.bind(&hooks, &hooks, "").await?;
        for tier in 1..self.webhook_delays_ms.len() {
            if let Some(name) = self.webhook_retry_exchange(tier) {
                let mut args = self.dead_lettering_args(&hooks);
                args.insert(
                    "x-message-ttl".into(),
                    AMQPValue::LongLongInt(self.webhook_delays_ms[tier] as i64),
                );
                d.exchange(&name, ExchangeKind::Fanout).await?;
                let earlier = [without_placement(&args)];
                d.queue(&name, args, &earlier).await?;
                d.bind(&name, &name, "").await?;
            }
        }
        if self.audits() {
            // A stream: its retention is set when it is created (a policy
            // changes it later), so an existing one is kept as it is.
            let args = self.amqp.audit.stream_args();
            let earlier = [stream_type_only()];
            d.queue(&self.audit_stream(), args, &earlier).await?;
        }
        d.close().await;
        Ok(())
    }

    /// Declares a tenant's share of a model's bulk lane (see
    /// [`crate::shares`]): a queue like the lane's own, bound by the
    /// share's routing key. Idempotent.
    pub async fn declare_share(
        &self,
        conn: &Connection,
        share: &crate::shares::Share,
    ) -> lapin::Result<()> {
        let mut d = Declarer::open(conn).await?;
        let key = crate::message::share_routing_key(share);
        self.job_queue_on(&mut d, &self.share_queue(share), &key)
            .await?;
        d.close().await;
        Ok(())
    }

    /// Declares job queue `q` (a lane's, or a share of one) and binds it to
    /// the jobs exchange by `key`.
    async fn job_queue_on(&self, d: &mut Declarer<'_>, q: &str, key: &str) -> lapin::Result<()> {
        let args = self.job_queue_args();
        let earlier = [without_placement(&args)];
        d.queue(q, args, &earlier).await?;
        d.bind(q, &self.jobs_exchange(), key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AmqpConfig;

    #[test]
    fn a_cluster_places_new_queues_and_the_fallback_drops_only_placement() {
        let amqp = AmqpConfig {
            urls: vec!["amqp://a/".into(), "amqp://b/".into(), "amqp://c/".into()],
            ..Default::default()
        };
        let t = Topology::new("t", &amqp);
        let args = t.job_queue_args();
        assert_eq!(
            args.inner().get("x-quorum-initial-group-size"),
            Some(&AMQPValue::LongLongInt(3))
        );
        assert!(args.inner().contains_key("x-queue-leader-locator"));
        let old = without_placement(&args);
        assert!(!PLACEMENT.iter().any(|k| old.inner().contains_key(*k)));
        assert_eq!(old.inner().len(), args.inner().len() - 2);

        let single = Topology::new("t", &AmqpConfig::default()).job_queue_args();
        assert!(!PLACEMENT.iter().any(|k| single.inner().contains_key(*k)));
        assert_eq!(single, old);
    }
}

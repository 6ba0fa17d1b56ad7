//! The broker as the tests see it: publishing straight to an exchange of
//! a test's namespace, as anyone with access to the broker could, and
//! reading and waiting for its dead letters.

use crate::TestEnv;
use infq_common::job::Priority;
use infq_common::topology::Topology;

/// The development tenant of `config/default.toml`, whose key the
/// environment's client sends.
pub const DEV_TENANT: &str = "dev";
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use std::time::Duration;

impl TestEnv {
    /// The exchanges and queues of this environment's namespace.
    pub fn topology(&self) -> Topology {
        Topology::of(&self.settings)
    }

    /// The queue `tenant`'s chunks of `model` travel in: its share of the
    /// model's bulk lane (see [`infq_common::shares`]).
    pub fn share_queue(&self, model: &str, tenant: &str) -> String {
        let share = infq_common::shares::Share::new(model, tenant).expect("a tenant name");
        self.topology().share_queue(&share)
    }

    /// The queue the development tenant's chunks of `model` travel in (the
    /// environment's own client is that tenant's).
    pub fn dev_bulk_queue(&self, model: &str) -> String {
        self.share_queue(model, DEV_TENANT)
    }

    /// Chunks of `model` waiting in its bulk lane: its own queue and every
    /// tenant's share of it.
    pub async fn bulk_queued(&self, model: &str) -> u32 {
        let topology = self.topology();
        let mut n = self
            .queue_depth(&topology.job_queue(model, Priority::Bulk))
            .await
            .unwrap();
        let shares = infq_common::shares::Shares::new(self.redis().await, self.store().keys())
            .list()
            .await
            .unwrap();
        for share in shares.iter().filter(|s| s.model == model) {
            n += self
                .queue_depth(&topology.share_queue(share))
                .await
                .unwrap();
        }
        n
    }

    /// A confirm channel of its own on `conn`, leased as infq's
    /// publishers lease theirs (publish with confirm and `mandatory`).
    pub async fn confirm_lease(conn: &lapin::Connection) -> infq_common::confirms::Lease {
        infq_common::confirms::ConfirmChannels::open(conn, 1)
            .await
            .unwrap()
            .lease(Duration::from_secs(5))
            .await
            .unwrap()
    }

    /// Publishes `body` to `exchange` under `routing_key`, persistent, with
    /// `message_id` if given, and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: Option<&str>,
    ) {
        let conn = self.amqp().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
        infq_common::amqp::close(&conn, "done").await;
    }

    /// Every dead letter in `<ns>.dead`, taken off it: its message id (empty
    /// if it has none) and its reason.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        let conn = self.amqp().await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                self.topology().dead_queue().as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .unwrap()
        {
            let id = m
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.push((id, infq_common::topology::death_reason(&m.properties)));
            m.ack(BasicAckOptions::default()).await.unwrap();
        }
        infq_common::amqp::close(&conn, "done").await;
        out
    }

    /// Waits up to 30 s until `<ns>.dead` holds at least `n` messages.
    pub async fn wait_dead(&self, n: u32) {
        let queue = self.topology().dead_queue();
        for _ in 0..300 {
            if self.queue_depth(&queue).await.unwrap() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} dead letters");
    }
}

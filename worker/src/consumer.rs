//! Consuming: a supervisor keeps one broker connection with a consumer per
//! queue, and rebuilds connection, topology and consumers with backoff
//! whenever the broker goes away.
//!
//! Each consumer decodes deliveries and routes them by model version to the
//! batcher's lanes. A message that cannot be decoded is rejected without
//! requeue, so the broker dead-letters it, and the worker goes on.

use crate::batcher::LaneSenders;
use crate::pending::{Pending, Settle};
use crate::reload::{Answer, ReloadHandle};
use crate::requeue::Requeuer;
use crate::settle::Settler;
use crate::stats::WorkerStats;
use crate::webhooks::events::Events;
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use infq_common::config::AmqpConfig;
use infq_common::job::{JobError, Priority};
use infq_common::message::JobMessage;
use infq_common::metrics as m;
use infq_common::queue_stats::HeadTimes;
use infq_common::registry::ModelSpec;
use infq_common::retry::Schedule;
use infq_common::shutdown::CancellationToken;
use infq_common::store::{Applied, JobStore};
use infq_common::topology::Topology;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::task::JoinSet;

/// The versions of one model a worker runs: version -> spec and lanes.
type VersionMap = HashMap<String, (Arc<ModelSpec>, LaneSenders)>;

/// Where the deliveries of one model name go: a pair of lanes per version.
/// Versions are added while consumers run (hot reload).
pub struct ModelRoute {
    name: String,
    versions: ArcSwap<VersionMap>,
    prefetch: AtomicU16,
    reload: OnceLock<(ReloadHandle, Arc<Requeuer>)>,
}

impl ModelRoute {
    /// A route for the model `spec` names, with no versions yet.
    pub fn new(spec: Arc<ModelSpec>) -> Self {
        Self {
            name: spec.name.clone(),
            versions: ArcSwap::from_pointee(HashMap::new()),
            prefetch: AtomicU16::new(0),
            reload: OnceLock::new(),
        }
    }

    /// Adds a version's lanes; the consumer prefetch grows to twice the
    /// rows that version's instances run at once (from the next broker
    /// session on), so each instance finds a full batch waiting.
    pub fn add_version(&self, spec: Arc<ModelSpec>, lanes: LaneSenders) {
        let want = prefetch_for(&spec);
        self.prefetch.fetch_max(want, Ordering::Relaxed);
        self.versions.rcu(|map| {
            let mut map = VersionMap::clone(map);
            map.insert(spec.version.clone(), (spec.clone(), lanes.clone()));
            map
        });
    }

    /// `name@version` of every version served.
    pub fn version_ids(&self) -> Vec<String> {
        self.versions
            .load()
            .values()
            .map(|(spec, _)| spec.id())
            .collect()
    }

    /// Where a consumer asks for a reload on meeting an unknown version,
    /// and where a job waits when its version cannot be served yet.
    pub fn set_reload(&self, handle: ReloadHandle, requeuer: Arc<Requeuer>) {
        let _ = self.reload.set((handle, requeuer));
    }

    /// The lanes of `version`, after a reload if it is not served yet:
    /// `Ok(None)` if the registry does not list it, `Err` if it cannot be
    /// served now (listed but not loaded, registry unreadable, shutting
    /// down).
    async fn lanes_of(&self, version: &str) -> Result<Option<(Arc<ModelSpec>, LaneSenders)>, ()> {
        if let Some(v) = self.versions.load().get(version) {
            return Ok(Some(v.clone()));
        }
        let Some((reload, _)) = self.reload.get() else {
            return Ok(None);
        };
        match reload.ask(format!("{}@{version}", self.name)).await {
            Some(Answer::Served) => Ok(self.versions.load().get(version).cloned()),
            Some(Answer::Unlisted) => Ok(None),
            Some(Answer::NotReady) | None => Err(()),
        }
    }
}

/// The prefetch a version needs: twice `max_batch_size` for each instance,
/// within AMQP's 16-bit limit.
pub fn prefetch_for(spec: &ModelSpec) -> u16 {
    (2 * spec.max_batch_size * spec.instances).min(usize::from(u16::MAX)) as u16
}

/// Keeps consumers running until `shutdown`; returns the connection so
/// that it is closed only after the batches in flight are acknowledged.
#[allow(clippy::too_many_arguments)]
pub async fn supervisor_task(
    cfg: AmqpConfig,
    topology: Topology,
    routes: Vec<Arc<ModelRoute>>,
    store: JobStore,
    stats: Arc<WorkerStats>,
    requeuer: Arc<Requeuer>,
    events: Arc<Events>,
    heads: Arc<HeadTimes>,
    shutdown: CancellationToken,
) -> Option<Connection> {
    let mut schedule = Schedule::reconnect();
    let mut first = true;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match session(
            &cfg,
            &topology,
            &routes,
            &store,
            &stats,
            &requeuer,
            &events,
            &heads,
            &shutdown,
            &mut schedule,
        )
        .await
        {
            Ok(conn) => return Some(conn),
            Err(e) => {
                stats.broker_connected.store(false, Ordering::Relaxed);
                requeuer.set_channel(None);
                events.set_channel(None);
                if !first {
                    metrics::counter!(m::RECONNECTS, "outcome" => "amqp").increment(1);
                }
                let wait = schedule.next().unwrap_or_default();
                tracing::warn!(error = %e, ?wait, "broker session ended; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        first = false;
    }
}

/// One connection's life: declare, consume, forward; `Ok` when shut down.
#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &AmqpConfig,
    topology: &Topology,
    routes: &[Arc<ModelRoute>],
    store: &JobStore,
    stats: &Arc<WorkerStats>,
    requeuer: &Arc<Requeuer>,
    events: &Arc<Events>,
    heads: &HeadTimes,
    shutdown: &CancellationToken,
    schedule: &mut Schedule,
) -> anyhow::Result<Connection> {
    let conn = infq_common::amqp::connect(cfg, "infq-worker").await?;
    let setup = conn.create_channel().await?;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    topology.declare(&setup, &names).await?;
    let _ = setup.close(200, "declared".into()).await;

    // The channels deliveries are settled through exist before the first
    // delivery arrives.
    let retry = conn.create_channel().await?;
    retry
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    requeuer.set_channel(Some(retry));
    let announce = conn.create_channel().await?;
    announce
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    events.set_channel(Some(announce));
    let mut consumers: Vec<(Channel, String)> = Vec::new();
    let mut tasks = JoinSet::new();
    let ctx = Arc::new(ConsumerCtx {
        store: store.clone(),
        events: events.clone(),
        requeuer: requeuer.clone(),
        shutdown: shutdown.clone(),
    });
    for route in routes {
        for lane in Priority::ALL {
            let ch = conn.create_channel().await?;
            ch.basic_qos(
                route.prefetch.load(Ordering::Relaxed),
                BasicQosOptions::default(),
            )
            .await?;
            let queue = topology.job_queue(&route.name, lane);
            let tag = format!(
                "infq-worker-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            );
            let consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let settler = Settler::new(ch.clone(), stats.held.clone());
            consumers.push((ch, tag));
            let queue = QueueCtx {
                name: queue.clone(),
                head: heads.slot(&queue),
                lane,
                route: route.clone(),
            };
            tasks.spawn(consumer_task(consumer, settler, queue, ctx.clone()));
        }
    }
    // Dead letters are recorded by every worker, whatever its models.
    let dead = conn.create_channel().await?;
    dead.basic_qos(16, BasicQosOptions::default()).await?;
    let tag = format!(
        "infq-recorder-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    let recorder = dead
        .basic_consume(
            topology.dead_record_queue().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    consumers.push((dead, tag));
    tasks.spawn(crate::deadletter::recorder_task(
        recorder,
        store.clone(),
        events.clone(),
        shutdown.clone(),
    ));

    stats.broker_connected.store(true, Ordering::Relaxed);
    schedule.reset();
    tracing::info!(queues = consumers.len(), "consuming");

    let ended = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = tasks.join_next() => ended,
    };
    if shutdown.is_cancelled() {
        for (ch, tag) in &consumers {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        while tasks.join_next().await.is_some() {}
        return Ok(conn);
    }
    tasks.abort_all();
    infq_common::amqp::close(&conn, "reconnecting").await;
    anyhow::bail!("a consumer stopped: {ended:?}")
}

/// What every consumer of a worker shares.
struct ConsumerCtx {
    store: JobStore,
    events: Arc<Events>,
    requeuer: Arc<Requeuer>,
    shutdown: CancellationToken,
}

/// The queue one consumer reads, and where its jobs go.
struct QueueCtx {
    name: String,
    head: Option<Arc<AtomicU64>>,
    lane: Priority,
    route: Arc<ModelRoute>,
}

/// Forwards one queue's deliveries to the batchers until the consumer ends
/// (connection lost) or shutdown.
async fn consumer_task(
    mut consumer: lapin::Consumer,
    settler: Arc<Settler>,
    queue: QueueCtx,
    ctx: Arc<ConsumerCtx>,
) -> &'static str {
    loop {
        let delivery = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return "shutdown",
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                return "consumer error";
            }
            None => return "consumer closed",
        };
        settler.received();
        match JobMessage::decode(&delivery.data) {
            Ok(msg) => {
                if let Some(h) = &queue.head {
                    h.fetch_max(msg.created_at_ms, Ordering::Relaxed);
                }
                let span = Pending::span_of(&msg, delivery.properties.headers().as_ref());
                let delivery = Settle {
                    tag: delivery.delivery_tag,
                    settler: settler.clone(),
                };
                if !route_job(msg, delivery, span, &queue, &ctx).await {
                    return "batcher gone";
                }
            }
            Err(e) => dead_letter(delivery, &settler, &queue.name, &e.to_string(), &ctx).await,
        }
    }
}

/// Sends a decoded job to its version's lane; `false` if the batcher is gone.
async fn route_job(
    msg: JobMessage,
    delivery: Settle,
    span: tracing::Span,
    queue: &QueueCtx,
    ctx: &ConsumerCtx,
) -> bool {
    let (lane, route) = (queue.lane, &*queue.route);
    let pending = Pending {
        msg,
        delivery,
        lane,
        received: Instant::now(),
        span,
        webhook: false,
    };
    let msg = &pending.msg;
    if msg.model != route.name || msg.priority != lane {
        // A message copied onto another model's queue must not run on
        // that model: its output would be stored as the job's.
        let reason = format!(
            "it names {} ({}) but came from {}",
            msg.model,
            msg.priority.as_str(),
            queue.name
        );
        ctx.requeuer.dead_letter(vec![(pending, reason)]).await;
        return true;
    }
    let queue_wait = infq_common::job::now_ms().saturating_sub(msg.created_at_ms) as f64 / 1000.0;
    metrics::histogram!(m::QUEUE_WAIT_SECONDS, "model" => route.name.clone()).record(queue_wait);
    let Ok(found) = route.lanes_of(&msg.version).await else {
        // Listed but not loadable now, or shutting down: the job waits in
        // a retry tier (another worker, or a later reload, may serve it),
        // and goes to the dead-letter queue once out of retries.
        match route.reload.get() {
            Some((_, requeuer)) => {
                requeuer
                    .requeue_all(vec![pending], "model version not loaded")
                    .await;
            }
            None => {
                let _ = pending.delivery.reject(true).await;
            }
        }
        return true;
    };
    let Some((spec, lanes)) = found else {
        // A version this worker does not serve: final for a single job; a
        // chunk goes to the dead-letter queue, where it can be replayed.
        let reason = format!("{}@{} is not served", msg.model, msg.version);
        return fail_or_dead_letter(pending, "unknown_model_version", reason, ctx).await;
    };
    if !msg.inputs.len().is_multiple_of(spec.width())
        || (msg.chunk.is_none() && msg.inputs.len() != spec.width())
    {
        let reason = format!(
            "{} inputs do not make rows of {} features",
            msg.inputs.len(),
            spec.width()
        );
        return fail_or_dead_letter(pending, "invalid_input", reason, ctx).await;
    }
    let tx = match lane {
        Priority::Interactive => &lanes.interactive,
        Priority::Bulk => &lanes.bulk,
    };
    tx.send(pending).await.is_ok()
}

/// Ends a message that decoded but cannot run: a single job is recorded as
/// failed (if the message is the one its record was accepted with) and
/// acknowledged; a chunk, or a message that matches no record, is
/// dead-lettered with the reason.
async fn fail_or_dead_letter(
    mut pending: Pending,
    code: &str,
    reason: String,
    ctx: &ConsumerCtx,
) -> bool {
    tracing::warn!(job_id = %pending.msg.id, code, %reason, "message cannot run");
    if pending.msg.chunk.is_some() {
        ctx.requeuer
            .dead_letter(vec![(pending, format!("{code}: {reason}"))])
            .await;
        return true;
    }
    pending.span.record("outcome", code);
    let error = JobError::new(code, reason.clone());
    let applied = match ctx.store.fail_matching(&pending.msg, &error).await {
        Ok(a) => a,
        Err(e) => {
            // Redelivered later, when the store may answer.
            tracing::warn!(error = %e, "could not record a job that cannot run");
            let _ = pending.delivery.reject(true).await;
            return true;
        }
    };
    match applied {
        // Failed now, or ended before (perhaps by this very message, whose
        // event could not be published then): announce it if due.
        Applied::Yes | Applied::Refused(_) => {}
        _ => {
            let why = "it matches no job record".to_string();
            ctx.requeuer
                .dead_letter(vec![(pending, format!("{code}: {reason}; {why}"))])
                .await;
            return true;
        }
    }
    pending.webhook = match ctx.store.get(&pending.msg.id).await {
        Ok(Some(rec)) => {
            rec.webhook_url.is_some()
                && rec.status.is_terminal()
                && rec.status != infq_common::job::JobStatus::Cancelled
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a failed job's record");
            let _ = pending.delivery.reject(true).await;
            return true;
        }
    };
    let due: Vec<_> = pending.event().into_iter().collect();
    if ctx.events.publish(due).await.is_ok() {
        let _ = pending.delivery.ack().await;
    } else {
        let _ = pending.delivery.reject(true).await;
    }
    true
}

/// Dead-letters an undecodable message with the reason. Nothing in it can
/// be trusted, not even the `message_id` it carries, so no record is
/// touched: the producer never publishes such a message (rows and chunks
/// are sized to fit), so only a foreign or damaged one gets here.
async fn dead_letter(
    delivery: Delivery,
    settler: &Settler,
    queue: &str,
    reason: &str,
    ctx: &ConsumerCtx,
) {
    tracing::warn!(
        reason,
        bytes = delivery.data.len(),
        "undecodable message; dead-lettering"
    );
    metrics::counter!(m::DEAD_LETTERED, "outcome" => "undecodable").increment(1);
    let published = ctx
        .requeuer
        .dead_letter_raw(queue, &delivery.data, &delivery.properties, reason)
        .await;
    let settled = if published {
        settler.ack(&[delivery.delivery_tag]).await
    } else {
        settler.reject(delivery.delivery_tag, false).await
    };
    if let Err(e) = settled {
        tracing::warn!(error = %e, "settling a dead letter failed; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infq_common::registry::Registry;
    use std::path::Path;

    fn spec(extra: &str) -> ModelSpec {
        let text = format!(
            "[[model]]\nname = \"m\"\nversion = \"1\"\npath = \"m.pt\"\ninputs = [{{ name = \"x\" }}]\noutputs = [{{ name = \"y\" }}]\n{extra}\n"
        );
        Registry::parse(&text, Path::new("models.toml"), Path::new("."))
            .unwrap()
            .models()[0]
            .clone()
    }

    #[test]
    fn prefetch_covers_two_batches_per_instance_within_amqp_limits() {
        assert_eq!(prefetch_for(&spec("max_batch_size = 64")), 128);
        assert_eq!(
            prefetch_for(&spec("max_batch_size = 256\ninstances = 4")),
            2048
        );
        assert_eq!(
            prefetch_for(&spec("max_batch_size = 65536\ninstances = 16")),
            u16::MAX
        );
    }
}

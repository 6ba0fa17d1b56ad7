//! Consuming: a supervisor keeps one broker connection with a consumer per
//! queue, and rebuilds connection, topology and consumers with backoff
//! whenever the broker goes away.
//!
//! Each consumer decodes deliveries and routes them by model version to the
//! batcher's lanes. A message that cannot run (undecodable, off its own
//! queue, a version not served, inputs that make no rows) goes to the
//! completion stage with what is wrong with it, and the consumer goes on.

use crate::context::WorkerCtx;
use crate::outcome::{CompletionCommand, RawDelivery};
use crate::pending::{Pending, Settle};
use crate::route::ModelRoute;
use crate::session::Session;
use crate::settle::Settler;
use crate::share_prefetch::ShareQos;
use crate::subscription::Subscription;
use infq_common::job::Priority;
use infq_common::message::JobMessage;
use infq_common::metrics as m;
use infq_common::retry::Schedule;
use infq_common::shares::{Share, Shares};
use lapin::options::BasicQosOptions;
use lapin::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;

/// Keeps consumers running until consuming stops; returns the connection
/// so that it is closed only after the batches in flight are acknowledged.
/// Decoded jobs go to their routes' lanes, everything else to
/// `completion`.
pub async fn supervisor_task(
    ctx: Arc<WorkerCtx>,
    routes: Vec<Arc<ModelRoute>>,
    completion: Sender<CompletionCommand>,
) -> Option<Connection> {
    let mut schedule = Schedule::reconnect();
    let mut first = true;
    let shutdown = &ctx.consuming;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match session(&ctx, &routes, &completion, &mut schedule).await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                ctx.stats.broker_connected.store(false, Ordering::Relaxed);
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

/// A unique consumer tag of this process.
fn consumer_tag(kind: &str) -> String {
    format!("{kind}-{}-{}", std::process::id(), uuid::Uuid::new_v4())
}

/// One connection's life: declare, consume, forward; `Ok` when shut down.
async fn session(
    ctx: &Arc<WorkerCtx>,
    routes: &[Arc<ModelRoute>],
    completion: &Sender<CompletionCommand>,
    schedule: &mut Schedule,
) -> anyhow::Result<Connection> {
    let (topology, shutdown) = (&ctx.topology, &ctx.consuming);
    let conn = infq_common::amqp::connect(&ctx.settings.amqp, "infq-worker").await?;
    let names: Vec<&str> = routes.iter().map(|r| r.name()).collect();
    topology.declare(&conn, &names).await?;

    // The publishers a delivery's end needs exist before the first
    // delivery arrives.
    let publishers = Session::open(&conn, topology, ctx.stats.clone()).await?;
    let mut consumers = 0;
    let mut tasks = JoinSet::new();
    for route in routes {
        for lane in Priority::ALL {
            let ch = conn.create_channel().await?;
            ch.basic_qos(route.prefetch(), BasicQosOptions::default())
                .await?;
            let queue = topology.job_queue(route.name(), lane);
            let tag = consumer_tag("infq-worker");
            let sub = Subscription::open(&ch, &queue, &tag, Some(ctx.stats.clone())).await?;
            let settler =
                Settler::new(ch.clone(), publishers.clone(), Some(ctx.stats.held.clone()));
            consumers += 1;
            let queue = QueueCtx {
                head: ctx.heads.slot(&queue),
                name: queue,
                lane,
                share: None,
                qos: None,
                route: route.clone(),
                settler,
                completion: completion.clone(),
            };
            tasks.spawn(consumer_task(sub, queue, ctx.clone()));
        }
    }
    // Dead letters are recorded by every worker, whatever its models.
    let dead = conn.create_channel().await?;
    dead.basic_qos(16, BasicQosOptions::default()).await?;
    let tag = consumer_tag("infq-recorder");
    let recorder = Subscription::open(
        &dead,
        &topology.dead_record_queue(),
        &tag,
        Some(ctx.stats.clone()),
    )
    .await?;
    let settler = Settler::new(dead, publishers.clone(), None);
    consumers += 1;
    tasks.spawn(crate::deadletter::recorder_task(
        recorder,
        settler,
        completion.clone(),
        shutdown.clone(),
    ));

    // The tenants' shares of the bulk lanes: those known now, then each
    // new one as it appears (see infq_common::shares).
    let mut shares = ShareConsumers::new(&conn, routes, completion, &publishers, ctx);
    if let Err(e) = shares.refresh(&mut tasks).await {
        infq_common::amqp::close(&conn, "reconnecting").await;
        return Err(e);
    }

    ctx.stats.broker_connected.store(true, Ordering::Relaxed);
    ctx.stats.broker_sessions.fetch_add(1, Ordering::Relaxed);
    schedule.reset();
    tracing::info!(
        queues = consumers + shares.len(),
        shares = shares.len(),
        "consuming"
    );

    let mut poll = tokio::time::interval(infq_common::shares::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            ended = tasks.join_next() => break ended.map(|e| e.map(|why| why.to_string())),
            // What a delivery's end publishes (retries, events) could no
            // longer go out.
            _ = publishers.spent() => break Some(Ok("the session's publish channels are spent".into())),
            _ = poll.tick() => {
                if let Err(e) = shares.refresh(&mut tasks).await {
                    break Some(Ok(format!("consuming a new share failed: {e}")));
                }
            }
        }
    };
    drop(shares);
    drop(publishers);
    if shutdown.is_cancelled() {
        // Each task cancels its consumer as it ends.
        while tasks.join_next().await.is_some() {}
        return Ok(conn);
    }
    tasks.abort_all();
    infq_common::amqp::close(&conn, "reconnecting").await;
    anyhow::bail!("a consumer stopped: {ended:?}")
}

/// The consumers of the tenants' shares of the bulk lanes of a session's
/// routes: one channel per route, one consumer per share on it.
struct ShareConsumers<'a> {
    conn: &'a Connection,
    routes: &'a [Arc<ModelRoute>],
    completion: &'a Sender<CompletionCommand>,
    publishers: &'a Arc<Session>,
    ctx: &'a Arc<WorkerCtx>,
    store: Shares,
    /// Each route's share channel and its settler, once it has one.
    channels: HashMap<String, (Arc<ShareQos>, Arc<Settler>)>,
    /// The shares consumed.
    open: HashSet<Share>,
}

impl<'a> ShareConsumers<'a> {
    fn new(
        conn: &'a Connection,
        routes: &'a [Arc<ModelRoute>],
        completion: &'a Sender<CompletionCommand>,
        publishers: &'a Arc<Session>,
        ctx: &'a Arc<WorkerCtx>,
    ) -> Self {
        Self {
            conn,
            routes,
            completion,
            publishers,
            ctx,
            store: Shares::new(ctx.store.connection(), ctx.store.keys()),
            channels: HashMap::new(),
            open: HashSet::new(),
        }
    }

    fn len(&self) -> usize {
        self.open.len()
    }

    /// Consumes each share of the routes' models not consumed yet. The
    /// set unreadable (Redis down) leaves the shares consumed as they are;
    /// a broker error ends the session. Every new share is subscribed to
    /// before any of their consumers starts feeding the batcher, so no
    /// share found together with others (a session's start) gets a head
    /// start of more than its prefetch while the others are declared.
    async fn refresh(&mut self, tasks: &mut JoinSet<&'static str>) -> anyhow::Result<()> {
        let listed = match tokio::time::timeout(SHARE_LIST_WAIT, self.store.list()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the set of shares cannot be read now");
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let mut opened = Vec::new();
        for share in listed {
            if self.open.contains(&share) {
                continue;
            }
            let Some(route) = self.routes.iter().find(|r| r.name() == share.model) else {
                continue;
            };
            opened.push(self.open(route.clone(), share).await?);
        }
        for (sub, queue) in opened {
            tasks.spawn(consumer_task(sub, queue, self.ctx.clone()));
        }
        Ok(())
    }

    /// Declares `share` and subscribes to it; its consumer is started by
    /// the caller.
    async fn open(
        &mut self,
        route: Arc<ModelRoute>,
        share: Share,
    ) -> anyhow::Result<(Subscription, QueueCtx)> {
        let topology = &self.ctx.topology;
        topology.declare_share(self.conn, &share).await?;
        let (qos, settler) = match self.channels.get(route.name()) {
            Some(c) => c.clone(),
            None => {
                let ch = self.conn.create_channel().await?;
                let chunk_rows = self.ctx.settings.producer.chunk_rows;
                // Per consumer: every share's consumer holds this many,
                // fewer while single jobs arrive (crate::share_prefetch).
                let limits = self.ctx.share_prefetch.limits(route.prefetch(), chunk_rows);
                let now = self.ctx.share_prefetch.now(limits);
                let qos = Arc::new(ShareQos::new(ch.clone(), now, limits).await?);
                let settler = Settler::new(
                    ch,
                    self.publishers.clone(),
                    Some(self.ctx.stats.held.clone()),
                );
                self.channels
                    .insert(route.name().to_string(), (qos.clone(), settler.clone()));
                (qos, settler)
            }
        };
        let queue = topology.share_queue(&share);
        let tag = consumer_tag("infq-worker");
        let (sub, prefetch) = qos
            .subscribe(&queue, &tag, Some(self.ctx.stats.clone()))
            .await?;
        tracing::info!(%queue, "consuming a new share");
        let queue = QueueCtx {
            head: None,
            name: queue,
            lane: Priority::Bulk,
            share: Some(share.clone()),
            qos: Some((qos, prefetch)),
            route,
            settler,
            completion: self.completion.clone(),
        };
        self.open.insert(share);
        Ok((sub, queue))
    }
}

/// How long a session waits to read the set of shares.
const SHARE_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The queue one consumer reads, where its jobs go, and how its
/// deliveries are settled.
struct QueueCtx {
    name: String,
    head: Option<Arc<AtomicU64>>,
    lane: Priority,
    /// The tenant's share of the bulk lane the queue is, if it is one.
    share: Option<Share>,
    /// A share's channel, and the prefetch its consumer started with.
    qos: Option<(Arc<ShareQos>, u16)>,
    route: Arc<ModelRoute>,
    /// Settles the consumer's channel.
    settler: Arc<Settler>,
    /// Where deliveries that do not run go.
    completion: Sender<CompletionCommand>,
}

/// Forwards one queue's deliveries to the batchers until the connection is
/// lost or shutdown (see [`Subscription`] for a broker-side cancel).
async fn consumer_task(
    mut sub: Subscription,
    mut queue: QueueCtx,
    ctx: Arc<WorkerCtx>,
) -> &'static str {
    loop {
        let delivery = match sub.next(&ctx.consuming).await {
            Ok(d) => d,
            Err(why) => {
                if ctx.consuming.is_cancelled() {
                    sub.cancel().await;
                }
                return why;
            }
        };
        if queue.lane == Priority::Interactive {
            ctx.share_prefetch.note_job();
        }
        if let Some((qos, prefetch)) = &mut queue.qos {
            let want = ctx.share_prefetch.now(qos.limits);
            if want != *prefetch {
                if let Err(e) = qos.change(&mut sub, want).await {
                    tracing::warn!(queue = %queue.name, error = %e, "changing the prefetch failed");
                    return "changing a share's prefetch failed";
                }
                *prefetch = want;
                let to = if want < qos.limits.full {
                    "with_jobs"
                } else {
                    "full"
                };
                metrics::counter!(m::SHARE_PREFETCH_CHANGES, "to" => to).increment(1);
                ctx.stats
                    .share_prefetch_changes
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        queue.settler.received();
        let settle = Settle {
            tag: delivery.delivery_tag,
            settler: queue.settler.clone(),
        };
        let cmd = match JobMessage::decode(&delivery.data) {
            Ok(mut msg) => {
                // A chunk sent back (a retry) goes to the queue it came
                // from: its share, or the lane's own queue.
                if queue.lane == Priority::Bulk {
                    msg.tenant = queue.share.as_ref().map(|s| s.tenant.clone());
                }
                if let Some(h) = &queue.head {
                    h.fetch_max(msg.created_at_ms, Ordering::Relaxed);
                }
                let span = Pending::span_of(&msg, delivery.properties.headers().as_ref());
                let pending = Pending {
                    msg,
                    delivery: settle,
                    lane: queue.lane,
                    received: Instant::now(),
                    span,
                    webhook: false,
                    explain: false,
                };
                match route_job(pending, &queue).await {
                    Routed::Sent => continue,
                    Routed::BatcherGone => return "batcher gone",
                    Routed::Not(cmd) => *cmd,
                }
            }
            Err(e) => CompletionCommand::Undecodable {
                raw: RawDelivery {
                    delivery: settle,
                    data: delivery.data,
                    properties: delivery.properties,
                },
                queue: queue.name.clone(),
                reason: e.to_string(),
            },
        };
        if queue.completion.send(cmd).await.is_err() {
            return "completion stage gone";
        }
    }
}

/// Where a decoded job went.
enum Routed {
    /// To its version's lane.
    Sent,
    /// Nowhere: the batcher is gone.
    BatcherGone,
    /// It does not run: this is its end, for the completion stage.
    Not(Box<CompletionCommand>),
}

/// Sends a decoded job to its version's lane, or says why it cannot run.
async fn route_job(pending: Pending, queue: &QueueCtx) -> Routed {
    let (lane, route) = (queue.lane, &*queue.route);
    let msg = &pending.msg;
    if msg.model != route.name() || msg.priority != lane {
        // A message copied onto another model's queue must not run on
        // that model: its output would be stored as the job's.
        let reason = format!(
            "it names {} ({}) but came from {}",
            msg.model,
            msg.priority.as_str(),
            queue.name
        );
        return Routed::Not(Box::new(CompletionCommand::Misplaced(pending, reason)));
    }
    let queue_wait = infq_common::job::now_ms().saturating_sub(msg.created_at_ms) as f64 / 1000.0;
    metrics::histogram!(m::QUEUE_WAIT_SECONDS, "model" => route.name().to_string(), "priority" => lane.as_str())
        .record(queue_wait);
    let Ok(found) = route.lanes_of(&msg.version).await else {
        // Listed but not loadable now, or shutting down: the job waits in
        // a retry tier (another worker, or a later reload, may serve it),
        // and goes to the dead-letter queue once out of retries.
        return Routed::Not(Box::new(CompletionCommand::Retry {
            jobs: vec![pending],
            reason: "model version not loaded".into(),
        }));
    };
    let Some((spec, lanes)) = found else {
        // A version this worker does not serve: final for a single job; a
        // chunk goes to the dead-letter queue, where it can be replayed.
        let reason = format!("{}@{} is not served", msg.model, msg.version);
        return Routed::Not(Box::new(CompletionCommand::CannotRun {
            job: pending,
            code: "unknown_model_version",
            reason,
        }));
    };
    if !msg.inputs.len().is_multiple_of(spec.width())
        || (!msg.work.is_chunk() && msg.inputs.len() != spec.width())
    {
        let reason = format!(
            "{} inputs do not make rows of {} features",
            msg.inputs.len(),
            spec.width()
        );
        return Routed::Not(Box::new(CompletionCommand::CannotRun {
            job: pending,
            code: "invalid_input",
            reason,
        }));
    }
    let tx = match lane {
        Priority::Interactive => &lanes.interactive,
        Priority::Bulk => &lanes.bulk,
    };
    match tx.send(pending).await {
        Ok(()) => Routed::Sent,
        Err(_) => Routed::BatcherGone,
    }
}

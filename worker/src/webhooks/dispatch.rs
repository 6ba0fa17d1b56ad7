//! The dispatcher: consumes `<ns>.webhooks` on a connection of its own and
//! sends each event, apart from the batching path, so a slow or dead
//! receiver holds up nothing but its own deliveries.
//!
//! Per event: check the message against the record it names
//! ([`super::subject`]: the URL, the tenant and the body come from Redis,
//! never from the message; a message the record does not back is
//! dead-lettered with the reason), start or continue its chain in Redis (a
//! delivered, given-up or superseded event stops here), skip a disabled
//! endpoint, take a request slot of its host ([`super::breaker`]: a host
//! whose circuit is open, or whose share stays taken for [`SLOT_WAIT`],
//! gets the event back later through a delay tier, unattempted), send,
//! and on a failure that may pass queue the next attempt in the delay tier
//! of the schedule (honouring `Retry-After`); then log the attempt.
//!
//! Every event of a message is settled on its own, as soon as its own
//! request ends: events for one host never wait for another's. The
//! message (a batch of results' events) is acknowledged once its last
//! event is settled; as no event waits long for a slot and a slow host's
//! share shrinks to one request, that is at most about one request's
//! timeout, and the prefetch leaves room above the requests in flight, so
//! held messages never stop the dispatcher from taking new ones.

use super::breaker::{deferral_tier, host_of, Breakers, Outcome, Take};
use super::client::{Sender, Sent, Verdict};
use super::error::AttemptError;
use super::events::{publish_on, EventsError};
use super::signers::Signers;
use super::subject::{self, Resolution};
use crate::subscription::Subscription;
use infq_common::config::Settings;
use infq_common::confirms::ConfirmChannels;
use infq_common::dead::publish_dead;
use infq_common::job::{format_ms, now_ms};
use infq_common::metrics as m;
use infq_common::retry::Schedule;
use infq_common::shutdown::CancellationToken;
use infq_common::store::JobStore;
use infq_common::tenants::TenantStore;
use infq_common::topology::Topology;
use infq_common::webhooks::event::{decode_all, next_wait, Event, EventMessage};
use infq_common::webhooks::sign::Signer;
use infq_common::webhooks::store::{Attempt, Begin, BeginArgs, DeliveryStore, EventState};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicQosOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Everything one dispatcher needs.
pub struct Dispatcher {
    settings: Settings,
    topology: Topology,
    jobs: JobStore,
    deliveries: DeliveryStore,
    sender: Sender,
    /// Signers of tenants' webhook secrets.
    signers: Signers,
    /// Bounds the requests in flight to `webhooks.concurrency`.
    sending: tokio::sync::Semaphore,
    /// Per-host circuit breakers and shares.
    breakers: Arc<Breakers>,
    /// An answer that takes this long is slow: it shrinks its host's share.
    slow: Duration,
    /// The worker's counters (broker-side cancels of the consumer).
    stats: Arc<crate::stats::WorkerStats>,
}

/// What became of one event, up to its request.
enum Step {
    /// Nothing to send (settled before, superseded, erased).
    Nothing,
    /// The record does not back the message: dead-letter it with this.
    Refused(String),
    /// An attempt was made (or skipped for a disabled endpoint).
    Made(Box<Made>),
    /// Not attempted: the event (of this end) waits at least this long
    /// (zero: the shortest delay), because its host is paused or busy.
    Defer(Option<u32>, Duration),
}

/// How one event of a message ended.
enum Settled {
    /// Done with: sent and logged, queued for later, or nothing to do.
    Done,
    /// Refused: dead-letter it with this reason.
    Refused(String),
    /// Could not be settled (Redis or the broker away): the message goes
    /// back to the queue.
    Again,
    /// Not attempted now (its host paused or busy): to be published to
    /// this delay tier, with the message's other deferrals to the same
    /// tier (one message for all of them).
    Deferred(Retry),
}

/// Where and how long an event's next attempt waits: the exchange, the
/// event, and the delay tier's message TTL.
type Retry = (String, EventMessage, Option<u64>);

/// An attempt made (or skipped), waiting to be settled: the next attempt
/// queued, the attempt logged.
struct Made {
    msg: EventMessage,
    gen: u32,
    /// The record's callback URL.
    url: String,
    log: Attempt,
    state: EventState,
    /// The endpoint answered 410 Gone now.
    gone: bool,
    /// Where and how long the next attempt waits.
    retry: Option<Retry>,
}

/// Publishes `msgs` as one message to `exchange` (with `wait` as its TTL)
/// on a confirm channel leased from `publish`.
async fn publish_events(
    publish: &Publish,
    exchange: &str,
    msgs: &[EventMessage],
    wait: Option<u64>,
) -> Result<(), EventsError> {
    let lease = publish
        .lease(PUBLISH_WAIT)
        .await
        .map_err(|source| EventsError::Publish {
            exchange: exchange.to_string(),
            source,
        })?;
    publish_on(&lease, exchange, msgs, wait).await
}

/// How long a message whose events cannot be settled (Redis or the broker
/// away) is held and retried before it goes back to the queue.
const HOLD: Duration = Duration::from_secs(60);

/// Longest an event waits for a request slot of its host (or of the
/// dispatcher) before it is deferred through a delay tier instead.
pub const SLOT_WAIT: Duration = Duration::from_secs(1);

/// Event messages taken at once beyond the requests that may be in flight
/// (each holds a batch's events).
const PREFETCH: u16 = 32;

/// The dispatcher's confirm channels: its handlers' retries, deferrals
/// and dead letters wait on as many publishes at once.
const PUBLISH_CHANNELS: usize = 16;

/// How long a publish waits for a channel, and for its confirm.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// The confirm channels a session's handlers publish on.
type Publish = Arc<ConfirmChannels>;

/// An answer taking this share of the request timeout or more is slow.
const SLOW_SHARE: u32 = 4;

impl Dispatcher {
    /// A dispatcher for `settings` (whose webhook secrets must be set),
    /// keeping its hosts' state in `breakers` and counting into the
    /// worker's `stats`.
    pub fn new(
        settings: Settings,
        jobs: JobStore,
        breakers: Arc<Breakers>,
        stats: Arc<crate::stats::WorkerStats>,
    ) -> anyhow::Result<Self> {
        let deliveries = DeliveryStore::for_settings(jobs.connection(), &settings);
        let tenants = TenantStore::new(jobs.connection(), &settings);
        Ok(Self {
            signers: Signers::new(tenants),
            sending: tokio::sync::Semaphore::new(usize::from(settings.webhooks.concurrency)),
            breakers,
            slow: Duration::from_millis(settings.webhooks.timeout_ms) / SLOW_SHARE,
            sender: Sender::new(&settings.webhooks)?,
            topology: Topology::of(&settings),
            settings,
            jobs,
            deliveries,
            stats,
        })
    }

    /// Consumes until `shutdown`, reconnecting with backoff; then waits up
    /// to `drain` for the attempts in flight.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, drain: Duration) {
        match self.deliveries.migrate_disabled().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(endpoints = n, "disabled endpoints moved to expiring keys"),
            Err(e) => {
                tracing::warn!(error = %e, "could not move the disabled endpoints of an earlier version")
            }
        }
        let mut schedule = Schedule::reconnect();
        let mut first = true;
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, drain, &mut schedule).await {
                Ok(()) => return,
                Err(e) => {
                    if !first {
                        metrics::counter!(m::RECONNECTS, "outcome" => "amqp").increment(1);
                    }
                    let wait = schedule.next().unwrap_or_default();
                    tracing::warn!(error = %e, ?wait, "webhook dispatcher session ended; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            first = false;
        }
    }

    async fn session(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        drain: Duration,
        schedule: &mut Schedule,
    ) -> anyhow::Result<()> {
        let conn = infq_common::amqp::connect(&self.settings.amqp, "infq-webhooks").await?;
        self.topology.declare(&conn, &[]).await?;
        let ch = conn.create_channel().await?;
        // Room for a message per request in flight (each may hold its
        // message for a request's time) and more, so new messages always
        // come in.
        let prefetch = self.settings.webhooks.concurrency.saturating_add(PREFETCH);
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let publish = ConfirmChannels::open(&conn, PUBLISH_CHANNELS).await?;
        let tag = format!(
            "infq-webhooks-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        );
        let queue = self.topology.webhooks_exchange();
        let mut sub = Subscription::open(&ch, &queue, &tag, Some(self.stats.clone())).await?;
        schedule.reset();
        self.stats.webhook_sessions.fetch_add(1, Ordering::Relaxed);
        tracing::info!("webhook dispatcher consuming");
        let mut inflight = JoinSet::new();
        // A handler that finds the publishing channels unusable ends the
        // session, so it is rebuilt; so does shutdown.
        let broken = shutdown.child_token();
        let ended = loop {
            match sub.next(&broken).await {
                Ok(d) => {
                    let me = self.clone();
                    let publish = publish.clone();
                    let broken = broken.clone();
                    inflight.spawn(async move { me.handle(d, &publish, &broken).await });
                    while inflight.try_join_next().is_some() {}
                }
                Err(_) if shutdown.is_cancelled() => break None,
                Err(_) if broken.is_cancelled() => {
                    break Some("the publishing channel closed".to_string())
                }
                Err(why) => break Some(why.to_string()),
            }
        };
        if ended.is_none() {
            sub.cancel().await;
            if tokio::time::timeout(drain, async {
                while inflight.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                tracing::warn!(
                    "webhook attempts still in flight at shutdown; they will be redelivered"
                );
            }
            infq_common::amqp::close(&conn, "worker shut down").await;
            return Ok(());
        }
        inflight.abort_all();
        infq_common::amqp::close(&conn, "reconnecting").await;
        anyhow::bail!("webhook consumer stopped: {ended:?}")
    }

    /// Handles one delivery (the events of one batch of results, or one
    /// retry): settles each event on its own, dead-letters those refused
    /// with their reasons, and settles the delivery once all are done.
    async fn handle(&self, d: Delivery, publish: &Publish, broken: &CancellationToken) {
        let queue = self.topology.webhooks_exchange();
        let msgs = match decode_all(&d.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable webhook message; dead-lettering");
                metrics::counter!(m::DEAD_LETTERED, "outcome" => "undecodable_event").increment(1);
                let dead = self
                    .dead_letter(publish, &queue, &d.data, &d.properties, &e.to_string())
                    .await;
                settle_delivery(&d, false, dead.is_err()).await;
                return;
            }
        };
        let give_up = tokio::time::Instant::now() + HOLD;
        let ends =
            futures_util::future::join_all(msgs.iter().map(|m| self.event(m, publish, give_up)))
                .await;
        let (mut again, mut undead) = (false, false);
        let mut deferred = Vec::new();
        let mut refused = Vec::new();
        for (i, (msg, end)) in msgs.iter().zip(ends).enumerate() {
            match end {
                Settled::Done => {}
                Settled::Again => again = true,
                Settled::Deferred(r) => deferred.push(r),
                Settled::Refused(r) => refused.push((i, msg, r)),
            }
        }
        if !deferred.is_empty() && !self.defer_all(deferred, publish, give_up).await {
            again = true;
        }
        for (i, msg, reason) in refused {
            tracing::warn!(subject = %msg.subject, %reason, "webhook event refused; dead-lettering");
            metrics::counter!(m::DEAD_LETTERED, "outcome" => "refused_event").increment(1);
            // A message of one event goes as it came; one event of many
            // goes alone, under an id of its own, so the others are not
            // dead-lettered (or replayed) with it.
            let (data, props) = if msgs.len() == 1 {
                (d.data.clone(), d.properties.clone())
            } else {
                let id = d.properties.message_id().as_ref().map(|s| s.as_str());
                let id = format!("{}:{i}", id.unwrap_or("events"));
                (
                    msg.encode(),
                    d.properties.clone().with_message_id(id.into()),
                )
            };
            let dead = self.dead_letter(publish, &queue, &data, &props, &reason);
            undead |= dead.await.is_err();
        }
        if !publish.usable() {
            broken.cancel();
        }
        settle_delivery(&d, again, undead).await;
    }

    /// Publishes a refused message to `<ns>.dead` with its reason, on a
    /// channel of its own.
    async fn dead_letter(
        &self,
        publish: &Publish,
        queue: &str,
        data: &[u8],
        props: &lapin::BasicProperties,
        reason: &str,
    ) -> Result<(), infq_common::amqp::PublishError> {
        let lease = publish.lease(PUBLISH_WAIT).await?;
        publish_dead(&lease, &self.topology, queue, data, props, reason, false).await
    }

    /// Takes one event as far as it goes now: attempted and settled,
    /// deferred, refused, or (Redis or the broker away past `give_up`)
    /// left for the message's redelivery.
    async fn event(
        &self,
        msg: &EventMessage,
        publish: &Publish,
        give_up: tokio::time::Instant,
    ) -> Settled {
        let mut pause = Schedule::exponential(Duration::from_millis(200), Duration::from_secs(5));
        let made = loop {
            match self.attempt(msg).await {
                Ok(Step::Nothing) => return Settled::Done,
                Ok(Step::Refused(why)) => return Settled::Refused(why),
                Ok(Step::Defer(gen, wait)) => {
                    return Settled::Deferred(self.deferral(msg, gen, wait))
                }
                Ok(Step::Made(made)) => break *made,
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, error = %e, "webhook attempt postponed");
                    if tokio::time::Instant::now() >= give_up || !publish.usable() {
                        return Settled::Again;
                    }
                    tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(1))).await;
                }
            }
        };
        // What was sent is settled here, never by sending it again,
        // unless that cannot be done before `give_up`.
        if self.settle(&made, publish, give_up).await {
            Settled::Done
        } else {
            Settled::Again
        }
    }

    /// Queues the next attempt of an event and logs the attempt made;
    /// `false` if that could not be done before `give_up`.
    async fn settle(&self, made: &Made, publish: &Publish, give_up: tokio::time::Instant) -> bool {
        let mut pause = Schedule::exponential(Duration::from_millis(100), Duration::from_secs(5));
        let mut queued = false;
        loop {
            let settled = async {
                if made.gone {
                    self.deliveries.disable(&made.url, now_ms()).await?;
                }
                if !queued {
                    if let Some((x, next, wait)) = &made.retry {
                        publish_events(publish, x, std::slice::from_ref(next), *wait).await?;
                    }
                    queued = true;
                }
                self.deliveries
                    .record_attempt(
                        &made.msg.subject,
                        made.gen,
                        &made.msg.chain,
                        &made.log,
                        made.state,
                    )
                    .await?;
                Ok::<(), AttemptError>(())
            }
            .await;
            match settled {
                Ok(()) => return true,
                Err(e) if tokio::time::Instant::now() < give_up && publish.usable() => {
                    tracing::warn!(subject = %made.msg.subject, error = %e, "settling a webhook attempt failed; retrying");
                    tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    tracing::warn!(subject = %made.msg.subject, error = %e, "webhook attempt not settled; it will be made again");
                    return false;
                }
            }
        }
    }

    /// An event not attempted now (its host paused, or its share taken),
    /// of end `gen` if known, into the first delay tier that outlasts
    /// `pause` (else the longest), so it comes back once the host may take
    /// it rather than cycling meanwhile.
    fn deferral(&self, msg: &EventMessage, gen: Option<u32>, pause: Duration) -> Retry {
        let schedule = self.topology.webhook_delays_ms();
        let next = EventMessage {
            gen: gen.or(msg.gen),
            ..msg.clone()
        };
        let retry = match deferral_tier(schedule, pause)
            .and_then(|t| Some((self.topology.webhook_retry_exchange(t)?, t)))
        {
            Some((x, t)) => (x, next, Some(schedule[t])),
            None => (self.topology.webhooks_exchange(), next, None),
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "deferred").increment(1);
        retry
    }

    /// Publishes deferred events, those bound for the same delay tier as
    /// one message; `false` if that could not be done before `give_up`.
    async fn defer_all(
        &self,
        deferred: Vec<Retry>,
        publish: &Publish,
        give_up: tokio::time::Instant,
    ) -> bool {
        let mut tiers: Vec<(String, Option<u64>, Vec<EventMessage>)> = Vec::new();
        for (x, msg, wait) in deferred {
            match tiers.iter_mut().find(|(tx, tw, _)| *tx == x && *tw == wait) {
                Some((_, _, msgs)) => msgs.push(msg),
                None => tiers.push((x, wait, vec![msg])),
            }
        }
        let mut pause = Schedule::exponential(Duration::from_millis(100), Duration::from_secs(5));
        for (x, wait, msgs) in tiers {
            loop {
                match publish_events(publish, &x, &msgs, wait).await {
                    Ok(()) => break,
                    Err(e) if tokio::time::Instant::now() < give_up && publish.usable() => {
                        tracing::warn!(exchange = %x, error = %e, "deferring webhook events failed; retrying");
                        tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(1))).await;
                    }
                    Err(e) => {
                        tracing::warn!(exchange = %x, error = %e, "webhook events not deferred; they will be taken again");
                        return false;
                    }
                }
            }
        }
        true
    }

    /// One attempt, up to the request; `Err` when it must be made again as
    /// it is (nothing was sent).
    async fn attempt(&self, msg: &EventMessage) -> Result<Step, AttemptError> {
        if let Some(n) = msg.progress {
            return self.progress(msg, n).await;
        }
        let schedule = &self.settings.webhooks.schedule_ms;
        let public_url = self.settings.webhooks.public_url.as_deref();
        let resolved = subject::resolve(&self.jobs, public_url, msg, schedule.len()).await?;
        let target = match resolved {
            Resolution::Go(t) => t,
            Resolution::Erased | Resolution::Outdated(_) => return Ok(Step::Nothing),
            Resolution::Refused(why) => return Ok(Step::Refused(why)),
        };
        let (gen, url) = (target.gen, target.url.as_str());
        let host = host_of(url);
        if let Some(pause) = self.breakers.paused(&host, std::time::Instant::now()) {
            return Ok(Step::Defer(Some(gen), pause));
        }
        let begun = self
            .deliveries
            .begin(&BeginArgs {
                kind: msg.kind,
                subject: &msg.subject,
                gen,
                chain: &msg.chain,
                url,
                attempts: msg.attempt,
                create: target.built.is_some(),
            })
            .await?;
        let event = match (begun, target.built) {
            (Begin::Go(Some(saved)), _) => saved,
            (Begin::Go(None), Some(e)) => {
                self.deliveries.save_event(&msg.subject, &e).await?;
                e
            }
            (Begin::Missing, _) if msg.attempt > 0 => {
                return Ok(Step::Refused(format!(
                    "attempt {} of an event chain that was never begun",
                    msg.attempt
                )))
            }
            (Begin::Go(None), None) | (Begin::Missing, _) => {
                return Ok(Step::Refused(subject::superseded(msg, gen)))
            }
            (Begin::Settled(_) | Begin::Stale, _) => return Ok(Step::Nothing),
        };
        let number = msg.attempt + 1;
        let mut made = Made {
            msg: msg.clone(),
            gen,
            url: url.to_string(),
            log: Attempt {
                webhook_id: event.id.clone(),
                attempt: number,
                at: format_ms(now_ms()),
                url: url.to_string(),
                ..Attempt::default()
            },
            state: EventState::Pending,
            gone: false,
            retry: None,
        };
        if let Some(since) = self.deliveries.disabled_since(url).await? {
            made.log.outcome = "disabled".into();
            made.log.error = Some(format!(
                "the endpoint answered 410 Gone at {} and is disabled",
                format_ms(since)
            ));
            made.state = EventState::Disabled;
            metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "disabled").increment(1);
            return Ok(Step::Made(Box::new(made)));
        }
        let signer = self.signers.of(target.tenant.as_deref()).await?;
        let sent = match self
            .send_through(&host, url, &event, signer.as_deref())
            .await?
        {
            Through::Sent(sent) => sent,
            Through::Paused(pause) => return Ok(Step::Defer(Some(gen), pause)),
            Through::Busy => return Ok(Step::Defer(Some(gen), Duration::ZERO)),
        };
        made.log.status_code = sent.status_code;
        made.log.error = sent.error.clone();
        made.log.duration_ms = sent.duration.as_millis() as u64;
        made.log.response = sent.response.clone();
        let (verdict, retry_after) = (sent.verdict, sent.retry_after_ms);
        made.state = match verdict {
            Verdict::Delivered => EventState::Delivered,
            Verdict::Gone => {
                tracing::warn!(%host, "webhook endpoint answered 410 Gone; disabling it");
                made.gone = true;
                EventState::Disabled
            }
            Verdict::Refused => EventState::Failed,
            Verdict::Retry if (number as usize) < schedule.len() => {
                let (tier, wait) = next_wait(schedule, number as usize, retry_after);
                let next = EventMessage {
                    attempt: number,
                    gen: Some(gen),
                    ..msg.clone()
                };
                made.retry = Some(match self.topology.webhook_retry_exchange(tier) {
                    Some(x) => (x, next, Some(wait)),
                    None => (self.topology.webhooks_exchange(), next, None),
                });
                made.log.next_attempt_at = Some(format_ms(now_ms() + wait));
                EventState::Pending
            }
            Verdict::Retry => {
                let why = made.log.error.take().unwrap_or_default();
                made.log.error = Some(format!("{why}; gave up after {number} attempts"));
                EventState::Failed
            }
        };
        made.log.outcome = match made.state {
            EventState::Delivered => "delivered",
            EventState::Disabled => "disabled",
            EventState::Pending => "retrying",
            EventState::Failed => "failed",
        }
        .into();
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => made.log.outcome.clone()).increment(1);
        tracing::debug!(subject = %msg.subject, attempt = number, outcome = %made.log.outcome, %host, "webhook attempt");
        Ok(Step::Made(Box::new(made)))
    }
}

impl Dispatcher {
    /// A batch's progress event: checked against its record, built from
    /// it now, and sent once if its host may take it at once. Never
    /// retried, deferred or logged as a delivery: the next one (or
    /// `batch.completed`) says more. `Err` when it must be made again as
    /// it is (nothing was sent).
    async fn progress(&self, msg: &EventMessage, n: u32) -> Result<Step, AttemptError> {
        let public_url = self.settings.webhooks.public_url.as_deref();
        let dropped = |why: &str| {
            tracing::debug!(batch_id = %msg.subject, sequence = n, reason = why, "progress event dropped");
            metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "progress_dropped").increment(1);
            Ok(Step::Nothing)
        };
        let target = match subject::resolve_progress(&self.jobs, public_url, msg, n).await? {
            Resolution::Go(t) => t,
            Resolution::Erased => return Ok(Step::Nothing),
            Resolution::Outdated(why) => return dropped(&why),
            Resolution::Refused(why) => return Ok(Step::Refused(why)),
        };
        let Some(event) = target.built else {
            return dropped("nothing to send");
        };
        let url = target.url.as_str();
        let host = host_of(url);
        if self
            .breakers
            .paused(&host, std::time::Instant::now())
            .is_some()
        {
            return dropped("its host is paused");
        }
        if self.deliveries.disabled_since(url).await?.is_some() {
            return dropped("its endpoint is disabled");
        }
        let signer = self.signers.of(target.tenant.as_deref()).await?;
        let sent = match self
            .send_through(&host, url, &event, signer.as_deref())
            .await?
        {
            Through::Sent(sent) => sent,
            Through::Paused(_) | Through::Busy => return dropped("its host is busy"),
        };
        let label = match sent.verdict {
            Verdict::Delivered => "progress_delivered",
            Verdict::Gone => {
                tracing::warn!(%host, "webhook endpoint answered 410 Gone; disabling it");
                self.deliveries.disable(url, now_ms()).await?;
                "progress_failed"
            }
            Verdict::Retry | Verdict::Refused => {
                tracing::debug!(batch_id = %msg.subject, sequence = n, error = ?sent.error, "progress event not delivered; not retried");
                "progress_failed"
            }
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => label).increment(1);
        Ok(Step::Nothing)
    }
}

/// What became of a request through its host's and the dispatcher's
/// slots.
enum Through {
    /// Sent (or refused by our own guard), and counted for its host.
    Sent(Sent),
    /// Not sent: the host is paused for this long.
    Paused(Duration),
    /// Not sent: no slot of the host or of the dispatcher came in time.
    Busy,
}

impl Dispatcher {
    /// Sends `event` to `url` within a slot of `host` (its circuit asked
    /// again: a host that failed while the event waited is not tried now)
    /// and one of the dispatcher, neither waited for long; records how the
    /// host answered and how long it took.
    async fn send_through(
        &self,
        host: &str,
        url: &str,
        event: &Event,
        signer: Option<&Signer>,
    ) -> Result<Through, AttemptError> {
        let slot = match self.breakers.wait_slot(host, SLOT_WAIT).await {
            Take::Go(slot) => slot,
            Take::Paused(pause) => return Ok(Through::Paused(pause)),
            Take::Busy => return Ok(Through::Busy),
        };
        let sent = {
            let Ok(all) = tokio::time::timeout(SLOT_WAIT, self.sending.acquire()).await else {
                return Ok(Through::Busy);
            };
            let _all = all?;
            self.sender.send(url, event, signer).await
        };
        let outcome = match sent.verdict {
            Verdict::Delivered | Verdict::Gone if sent.duration >= self.slow => Some(Outcome::Slow),
            Verdict::Delivered | Verdict::Gone => Some(Outcome::Fast),
            Verdict::Retry => Some(Outcome::Failed),
            // Refused by our own guard: nothing reached the host.
            Verdict::Refused => None,
        };
        if let Some(o) = outcome {
            self.breakers.record(host, o, std::time::Instant::now());
        }
        drop(slot);
        metrics::histogram!(m::WEBHOOK_SECONDS).record(sent.duration.as_secs_f64());
        Ok(Through::Sent(sent))
    }
}

/// Acknowledges a handled delivery; sends it back to the queue if some of
/// its events are `again` to be made, or to the dead-letter queue (by the
/// broker, without a reason) if a refused event could not be
/// dead-lettered with its own (`undead`).
async fn settle_delivery(d: &Delivery, again: bool, undead: bool) {
    if again || undead {
        let _ = d
            .acker
            .nack(BasicNackOptions {
                requeue: again,
                ..Default::default()
            })
            .await;
    } else {
        let _ = d.acker.ack(BasicAckOptions::default()).await;
    }
}

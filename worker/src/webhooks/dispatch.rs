//! The dispatcher: consumes `<ns>.webhooks` on a connection of its own and
//! sends each event, apart from the batching path, so a slow or dead
//! receiver holds up nothing but its own deliveries.
//!
//! Per event: build it from the stored record (first attempt only; later
//! ones carry it), start or continue its chain in Redis (a delivered,
//! given-up or superseded event stops here), skip a disabled endpoint or
//! one whose circuit is open ([`super::breaker`]), send, and on a failure
//! that may pass queue the next attempt in the delay tier of the schedule
//! (honouring `Retry-After`); then log the attempt. A message (a batch's
//! events) is acknowledged once all its events are settled; the next
//! attempts of its events go out together, one message per delay tier.

use super::breaker::{deferral_tier, host_of, Breakers};
use super::client::{Sender, Verdict};
use super::events::publish_on;
use futures_util::StreamExt;
use infq_common::config::Settings;
use infq_common::job::{format_ms, now_ms};
use infq_common::metrics as m;
use infq_common::retry::Schedule;
use infq_common::shutdown::CancellationToken;
use infq_common::store::{JobStore, StoreError};
use infq_common::tenants::TenantStore;
use infq_common::topology::Topology;
use infq_common::webhooks::event::{
    batch_event, decode_all, job_event, next_wait, Event, EventMessage, SubjectKind,
};
use infq_common::webhooks::sign::Signer;
use infq_common::webhooks::store::{Attempt, Begin, DeliveryStore, EventState};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
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
    /// Tenants, for their webhook secrets.
    tenants: TenantStore,
    /// Signers of tenants' secrets, by tenant, with the secrets they sign
    /// with.
    signers: std::sync::Mutex<std::collections::HashMap<String, TenantSigner>>,
    /// Bounds the requests in flight to `webhooks.concurrency`.
    sending: tokio::sync::Semaphore,
    /// Per-host circuit breakers and request slots (shared with the
    /// worker's event publisher).
    breakers: Arc<Breakers>,
}

/// A tenant's secrets and the signer built from them.
type TenantSigner = (Vec<String>, Arc<Signer>);

/// What became of one event of a message.
enum Step {
    /// Nothing to send (settled before, superseded, not ended).
    Nothing,
    /// An attempt was made (or skipped for a disabled endpoint).
    Made(Box<Made>),
    /// Its host is paused: the event waits this long, unattempted.
    Defer(EventMessage, Duration),
}

/// An attempt made (or skipped), waiting to be settled: the next attempt
/// queued, the attempt logged.
struct Made {
    msg: EventMessage,
    gen: u32,
    log: Attempt,
    state: EventState,
    /// The endpoint answered 410 Gone now.
    gone: bool,
    /// Where and how long the next attempt waits.
    retry: Option<(String, EventMessage, Option<u64>)>,
    /// Not attempted (its host is paused): only `retry` applies.
    deferred: bool,
}

/// How long a message whose events cannot be settled (Redis or the broker
/// away) is held and retried before it goes back to the queue.
const HOLD: Duration = Duration::from_secs(60);

/// Event messages taken at once (each holds a batch's events).
const PREFETCH: u16 = 32;

impl Dispatcher {
    /// A dispatcher for `settings` (whose webhook secrets must be set),
    /// keeping its hosts' state in `breakers`.
    pub fn new(
        settings: Settings,
        jobs: JobStore,
        breakers: Arc<Breakers>,
    ) -> anyhow::Result<Self> {
        let deliveries = DeliveryStore::for_settings(jobs.connection(), &settings);
        let tenants = TenantStore::new(jobs.connection(), &settings);
        Ok(Self {
            tenants,
            signers: Default::default(),
            sending: tokio::sync::Semaphore::new(usize::from(settings.webhooks.concurrency)),
            breakers,
            sender: Sender::new(&settings.webhooks)?,
            topology: Topology::of(&settings),
            settings,
            jobs,
            deliveries,
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
        let setup = conn.create_channel().await?;
        self.topology.declare(&setup, &[]).await?;
        let _ = setup.close(200, "declared".into()).await;
        let ch = conn.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let tag = format!(
            "infq-webhooks-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        );
        let mut consumer = ch
            .basic_consume(
                self.topology.webhooks_exchange().as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        schedule.reset();
        tracing::info!("webhook dispatcher consuming");
        let mut inflight = JoinSet::new();
        // A handler that finds the publishing channel closed ends the
        // session, so it is rebuilt.
        let broken = CancellationToken::new();
        let ended = loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break None,
                _ = broken.cancelled() => break Some("the publishing channel closed".into()),
                Some(_) = inflight.join_next(), if !inflight.is_empty() => continue,
                d = consumer.next() => d,
            };
            match next {
                Some(Ok(d)) => {
                    let me = self.clone();
                    let publish = publish.clone();
                    let broken = broken.clone();
                    inflight.spawn(async move { me.handle(d, &publish, &broken).await });
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break Some("consumer closed".into()),
            }
        };
        if ended.is_none() {
            let _ = ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
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

    /// The signer of the event's tenant, if it has secrets of its own
    /// (else the deployment's secrets sign it); built once per set of
    /// secrets.
    async fn signer_of(&self, msg: &EventMessage) -> Result<Option<Arc<Signer>>, String> {
        let Some(name) = msg.tenant.as_deref() else {
            return Ok(None);
        };
        let tenant = self.tenants.cached(name).await.map_err(|e| e.to_string())?;
        let Some(t) = tenant.filter(|t| !t.webhook_secrets.is_empty()) else {
            return Ok(None);
        };
        let mut signers = self.signers.lock().expect("signers lock");
        if let Some((secrets, s)) = signers.get(name) {
            if *secrets == t.webhook_secrets {
                return Ok(Some(s.clone()));
            }
        }
        let s = Arc::new(Signer::new(&t.webhook_secrets)?);
        if signers.len() >= 10_000 {
            signers.clear();
        }
        signers.insert(name.to_string(), (t.webhook_secrets.clone(), s.clone()));
        Ok(Some(s))
    }

    async fn build(&self, msg: &EventMessage) -> Result<Option<Event>, StoreError> {
        let now = now_ms();
        Ok(match msg.kind {
            SubjectKind::Job => self
                .jobs
                .get(&msg.subject)
                .await?
                .and_then(|r| job_event(r, now)),
            SubjectKind::Batch => self
                .jobs
                .get_batch(&msg.subject)
                .await?
                .and_then(|r| batch_event(r, self.settings.webhooks.public_url.as_deref(), now)),
        })
    }

    /// Handles one delivery (the events of one batch of results, or one
    /// retry) and settles it once every event in it is settled.
    async fn handle(&self, d: Delivery, publish: &Channel, broken: &CancellationToken) {
        let mut left = match decode_all(&d.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable webhook message; dead-lettering");
                metrics::counter!(m::DEAD_LETTERED, "outcome" => "undecodable_event").increment(1);
                let _ = d.acker.reject(BasicRejectOptions { requeue: false }).await;
                return;
            }
        };
        // Redis or the broker away: the unsettled events are tried again
        // here, with backoff, for a while, before the message goes back to
        // the queue (where its delivery count grows).
        let give_up = tokio::time::Instant::now() + HOLD;
        let mut pause = Schedule::exponential(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let results =
                futures_util::future::join_all(left.iter().map(|m| self.attempt(m))).await;
            let mut again = Vec::new();
            let mut made = Vec::new();
            for (m, r) in left.into_iter().zip(results) {
                match r {
                    Ok(Step::Made(a)) => made.push(*a),
                    Ok(Step::Defer(m, wait)) => made.push(self.deferral(m, wait)),
                    Ok(Step::Nothing) => {}
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, error = %e, "webhook attempt postponed");
                        again.push(m);
                    }
                }
            }
            // What was sent is settled here, never by sending it again,
            // unless that cannot be done before `give_up`.
            again.extend(self.settle(made, publish, give_up).await);
            if !publish.status().connected() {
                broken.cancel();
            }
            left = again;
            if left.is_empty() {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                return;
            }
            if tokio::time::Instant::now() >= give_up || broken.is_cancelled() {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return;
            }
            tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(1))).await;
        }
    }

    /// Queues the next attempts (one message per delay tier) and logs the
    /// attempts made; returns the events that could not be settled.
    async fn settle(
        &self,
        made: Vec<Made>,
        publish: &Channel,
        give_up: tokio::time::Instant,
    ) -> Vec<EventMessage> {
        if made.is_empty() {
            return Vec::new();
        }
        let mut pause = Schedule::exponential(Duration::from_millis(100), Duration::from_secs(5));
        let mut queued = false;
        loop {
            let settled = async {
                for m in made.iter().filter(|m| m.gone) {
                    self.deliveries
                        .disable(&m.msg.url, now_ms())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if !queued {
                    let mut tiers: Vec<(&str, Vec<EventMessage>, Option<u64>)> = Vec::new();
                    for (x, next, wait) in made.iter().filter_map(|m| m.retry.as_ref()) {
                        match tiers.iter_mut().find(|(t, _, _)| t == x) {
                            Some((_, msgs, w)) => {
                                msgs.push(next.clone());
                                *w = (*w).max(*wait);
                            }
                            None => tiers.push((x, vec![next.clone()], *wait)),
                        }
                    }
                    for (x, msgs, wait) in &tiers {
                        publish_on(publish, x, msgs, *wait).await?;
                    }
                    queued = true;
                }
                for m in made.iter().filter(|m| !m.deferred) {
                    self.deliveries
                        .record_attempt(&m.msg.subject, m.gen, &m.msg.chain, &m.log, m.state)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            }
            .await;
            match settled {
                Ok(()) => return Vec::new(),
                Err(e) if tokio::time::Instant::now() < give_up && publish.status().connected() => {
                    tracing::warn!(error = %e, events = made.len(), "settling webhook attempts failed; retrying");
                    tokio::time::sleep(pause.next().unwrap_or(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = made.len(), "webhook attempts not settled; they will be made again");
                    return made.into_iter().map(|m| m.msg).collect();
                }
            }
        }
    }

    /// An event of a paused host, unchanged, into the first delay tier
    /// that outlasts the pause (else the longest), so it comes back once
    /// the host may be up again rather than cycling while it is down.
    fn deferral(&self, msg: EventMessage, pause: Duration) -> Made {
        let schedule = self.topology.webhook_delays_ms();
        let tier = deferral_tier(schedule, pause);
        let retry = match tier.and_then(|t| Some((self.topology.webhook_retry_exchange(t)?, t))) {
            Some((x, t)) => (x, msg.clone(), Some(schedule[t])),
            None => (self.topology.webhooks_exchange(), msg.clone(), None),
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "deferred").increment(1);
        Made {
            gen: 0,
            log: Attempt {
                webhook_id: String::new(),
                attempt: msg.attempt,
                at: String::new(),
                url: String::new(),
                status_code: None,
                error: None,
                duration_ms: 0,
                outcome: "deferred".into(),
                next_attempt_at: None,
                response: None,
            },
            msg,
            state: EventState::Pending,
            gone: false,
            retry: Some(retry),
            deferred: true,
        }
    }

    /// One attempt, up to the request; `Err` when it must be made again as
    /// it is (nothing was sent).
    async fn attempt(&self, msg: &EventMessage) -> Result<Step, String> {
        let host = host_of(&msg.url);
        if let Some(pause) = self.breakers.paused(&host, std::time::Instant::now()) {
            return Ok(Step::Defer(msg.clone(), pause));
        }
        let mut event = msg.event.clone();
        if event.is_none() {
            event = self.build(msg).await.map_err(|e| e.to_string())?;
            if event.is_none() {
                // Not finished (a chunk's redelivery before its batch
                // completed), cancelled, or its record is gone (expired
                // before a dispatcher got to it).
                tracing::info!(subject = %msg.subject, url = %msg.url, "no event to send: the job or batch has not ended, was cancelled, or expired");
                return Ok(Step::Nothing);
            }
        }
        let gen = event.as_ref().map_or(0, |e| e.gen);
        let begun = self
            .deliveries
            .begin(
                msg.kind,
                &msg.subject,
                gen,
                &msg.chain,
                &msg.url,
                msg.attempt,
            )
            .await
            .map_err(|e| e.to_string())?;
        let event = match begun {
            Begin::Go(Some(saved)) => saved,
            Begin::Go(None) => {
                let e = event.expect("built above");
                self.deliveries
                    .save_event(&msg.subject, &e)
                    .await
                    .map_err(|e| e.to_string())?;
                e
            }
            Begin::Settled(_) | Begin::Stale => return Ok(Step::Nothing),
        };
        let number = msg.attempt + 1;
        let mut made = Made {
            msg: msg.clone(),
            gen,
            log: Attempt {
                webhook_id: event.id.clone(),
                attempt: number,
                at: format_ms(now_ms()),
                url: msg.url.clone(),
                status_code: None,
                error: None,
                duration_ms: 0,
                outcome: String::new(),
                next_attempt_at: None,
                response: None,
            },
            state: EventState::Pending,
            gone: false,
            retry: None,
            deferred: false,
        };
        if let Some(since) = self
            .deliveries
            .disabled_since(&msg.url)
            .await
            .map_err(|e| e.to_string())?
        {
            made.log.outcome = "disabled".into();
            made.log.error = Some(format!(
                "the endpoint answered 410 Gone at {} and is disabled",
                format_ms(since)
            ));
            made.state = EventState::Disabled;
            metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => "disabled").increment(1);
            return Ok(Step::Made(Box::new(made)));
        }
        let signer = self.signer_of(msg).await?;
        // Wait for a slot of the host, then ask its breaker: a host that
        // failed while this event waited is not tried again now.
        let sent = {
            let _host = self
                .breakers
                .slots(&host)
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            if let Err(pause) = self.breakers.admit(&host, std::time::Instant::now()) {
                return Ok(Step::Defer(msg.clone(), pause));
            }
            let _all = self.sending.acquire().await.map_err(|e| e.to_string())?;
            self.sender.send(&msg.url, &event, signer.as_deref()).await
        };
        self.breakers.record(
            &host,
            matches!(sent.verdict, Verdict::Delivered | Verdict::Gone),
            std::time::Instant::now(),
        );
        made.log.status_code = sent.status_code;
        made.log.error = sent.error.clone();
        made.log.duration_ms = sent.duration.as_millis() as u64;
        made.log.response = sent.response.clone();
        metrics::histogram!(m::WEBHOOK_SECONDS).record(sent.duration.as_secs_f64());
        let (verdict, retry_after) = (sent.verdict, sent.retry_after_ms);
        let schedule = &self.settings.webhooks.schedule_ms;
        made.state = match verdict {
            Verdict::Delivered => EventState::Delivered,
            Verdict::Gone => {
                tracing::warn!(url = %msg.url, "webhook endpoint answered 410 Gone; disabling it");
                made.gone = true;
                EventState::Disabled
            }
            Verdict::Refused => EventState::Failed,
            Verdict::Retry if (number as usize) < schedule.len() => {
                let (tier, wait) = next_wait(schedule, number as usize, retry_after);
                let next = EventMessage {
                    attempt: number,
                    event: Some(event.clone()),
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
        tracing::debug!(subject = %msg.subject, attempt = number, outcome = %made.log.outcome, "webhook attempt");
        Ok(Step::Made(Box::new(made)))
    }
}

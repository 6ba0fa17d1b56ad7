//! What Redis keeps about events: per subject, the event record of each
//! end (its first, then one after each reopening: webhook-id, type, body,
//! url, state, current chain) and the delivery log (one JSON entry per
//! attempt); per deployment, each endpoint disabled by a `410 Gone` (kept
//! for [`DISABLED_MS`], so URLs that answer 410 cannot grow Redis without
//! bound). The keys are [`crate::keys::Keys`]'s; every script is given its
//! subject's job and batch record keys, which say its retention and
//! whether it was erased.

use super::event::{Event, SubjectKind};
use crate::job::JobId;
use crate::keys::Keys;
use crate::redis_link::RedisLink;
use crate::store::StoreError;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// Entries kept in a subject's delivery log.
pub const MAX_LOG_ENTRIES: isize = 200;

/// How long an endpoint stays disabled after its last `410 Gone` (30
/// days): long past any retry schedule, and bounded, so that a stream of
/// unique URLs answering 410 does not pile up; one still gone after it is
/// disabled again by its next answer.
pub const DISABLED_MS: u64 = 30 * 24 * 3600 * 1000;

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    /// Being delivered: an attempt is due or in flight.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up: out of attempts, or the URL may not be reached.
    Failed,
    /// The endpoint answered `410 Gone` (now or before) and is disabled.
    Disabled,
}

impl EventState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Delivered => "delivered",
            EventState::Failed => "failed",
            EventState::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EventState::Pending,
            "delivered" => EventState::Delivered,
            "failed" => EventState::Failed,
            "disabled" => EventState::Disabled,
            _ => return None,
        })
    }
}

/// One attempt, as logged and listed by the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The event's `webhook-id`.
    pub webhook_id: String,
    /// Attempt number within its chain, from 1.
    pub attempt: u32,
    /// When it was made.
    pub at: String,
    /// Where it went.
    pub url: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took, in ms.
    pub duration_ms: u64,
    /// `delivered`, `retrying`, `failed` or `disabled`.
    pub outcome: String,
    /// When the next attempt is due, after `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The start of the receiver's answer (at most 512 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// A subject's event and its delivery log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    /// The `webhook-id`, once the event is built.
    pub webhook_id: Option<String>,
    /// Its type, once built.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Where it goes.
    pub url: String,
    /// Where it stands.
    pub state: EventState,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

/// What [`DeliveryStore::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Go ahead; the event if it was built before.
    Go(Option<Event>),
    /// The event is settled (delivered, failed or disabled): nothing to do.
    Settled(EventState),
    /// A newer chain (a manual redelivery) replaced this one, or the
    /// subject was erased.
    Stale,
    /// No event record, and the caller may not start one (an end the
    /// subject has since left, whose event was never built).
    Missing,
}

/// What [`DeliveryStore::begin`] is asked about: one attempt of a chain.
#[derive(Debug, Clone, Copy)]
pub struct BeginArgs<'a> {
    /// Job or batch.
    pub kind: SubjectKind,
    /// Its id.
    pub subject: &'a JobId,
    /// Which end of it.
    pub gen: u32,
    /// The chain the attempt belongs to.
    pub chain: &'a uuid::Uuid,
    /// Where the event goes (from the subject's record).
    pub url: &'a str,
    /// Attempts the message says were made before.
    pub attempts: u32,
    /// Whether the event record may be created (the event was just built
    /// from a record that has ended).
    pub create: bool,
}

/// Where an event stood before a manual redelivery, to go back to if the
/// redelivery cannot be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Previous {
    state: String,
    chain: String,
    tries: String,
}

/// What [`DeliveryStore::redeliver`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Redeliver {
    /// Send it again.
    Go {
        /// The event.
        event: Event,
        /// Its URL.
        url: String,
        /// Where it stood.
        before: Previous,
    },
    /// No such event (not built yet, wrong id, or expired).
    Missing,
}

/// Functions of the scripts here (`lua/prelude.lua`): how long an event
/// record or log lives, and whether its subject was erased.
const PRELUDE: &str = include_str!("lua/prelude.lua");

/// A script of this module: [`PRELUDE`] and `body`.
fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Starts (or continues) a chain: `lua/begin.lua`.
static BEGIN: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/begin.lua")));

/// Logs an attempt and moves the event on if its chain is current:
/// `lua/attempt.lua`.
static ATTEMPT: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/attempt.lua")));

/// Starts a manual redelivery: `lua/redeliver.lua`.
static REDELIVER: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/redeliver.lua")));

/// Keeps a built event with its record: `lua/save.lua`.
static SAVE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/save.lua")));

/// Undoes a redelivery that could not be queued: `lua/restore.lua`.
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/restore.lua")));

/// Typed access to event records and delivery logs. Records and logs of a
/// tenant's job or batch live for its retention after their last change;
/// an erased subject's are gone and are not written again.
#[derive(Clone)]
pub struct DeliveryStore {
    conn: RedisLink,
    keys: Keys,
    ttl_ms: u64,
}

impl DeliveryStore {
    /// The store a deployment's settings describe, on `conn`: records live
    /// as long as results, and at least twice the longest wait of the
    /// schedule, after their last change.
    pub fn for_settings(conn: RedisLink, settings: &crate::config::Settings) -> Self {
        let longest = settings
            .webhooks
            .schedule_ms
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let ttl_ms = (settings.redis.result_ttl_secs * 1000).max(2 * longest);
        Self::new(conn, &settings.namespace, ttl_ms)
    }

    /// A store on `conn` (whose timeouts bound every call); records live
    /// `ttl_ms` after their last change.
    pub fn new(conn: RedisLink, ns: &str, ttl_ms: u64) -> Self {
        Self {
            conn,
            keys: Keys::new(ns),
            ttl_ms,
        }
    }

    /// The key of the event record of a subject's `gen`-th end.
    pub fn record_key(&self, id: &JobId, gen: u32) -> String {
        self.keys.webhook(id, gen)
    }

    /// The key of a subject's delivery log.
    pub fn log_key(&self, id: &JobId) -> String {
        self.keys.deliveries(id)
    }

    /// The record keys of a subject (one of them exists), which the
    /// scripts read its retention and erasure from.
    fn subject_keys(&self, id: &JobId) -> [String; 2] {
        [self.keys.job(id), self.keys.batch(id)]
    }

    fn disabled_key(&self, url: &str) -> String {
        self.keys.webhook_disabled(url)
    }

    /// Starts or continues the chain of an event message that says
    /// `attempts` were made before; creates the event record only if
    /// `create` (the caller built the event from a record that has ended).
    pub async fn begin(&self, b: &BeginArgs<'_>) -> Result<Begin, StoreError> {
        let kind = match b.kind {
            SubjectKind::Job => "job",
            SubjectKind::Batch => "batch",
        };
        let mut c = self.conn.clone();
        let r: Vec<String> = BEGIN
            .key(self.record_key(b.subject, b.gen))
            .key(&self.subject_keys(b.subject))
            .arg(b.chain.to_string())
            .arg(b.url)
            .arg(self.ttl_ms)
            .arg(kind)
            .arg(b.attempts)
            .arg(if b.create { "1" } else { "0" })
            .invoke_async(&mut c)
            .await?;
        Ok(match r.first().map(String::as_str) {
            Some("go") if r.len() == 4 => Begin::Go(Some(Event {
                id: r[1].clone(),
                kind: r[2].clone(),
                body: r[3].clone(),
                gen: b.gen,
            })),
            Some("go") => Begin::Go(None),
            Some("stale") | Some("erased") => Begin::Stale,
            Some("missing") => Begin::Missing,
            Some(s) => Begin::Settled(
                EventState::parse(s)
                    .ok_or_else(|| StoreError::Reply(format!("event state {s}")))?,
            ),
            None => return Err(StoreError::Reply("empty answer".into())),
        })
    }

    /// Keeps a built event with its record, so every later attempt and a
    /// manual redelivery send the very same body.
    pub async fn save_event(&self, subject: &JobId, event: &Event) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = SAVE
            .key(self.record_key(subject, event.gen))
            .key(&self.subject_keys(subject))
            .arg(&event.id)
            .arg(&event.kind)
            .arg(&event.body)
            .arg(self.ttl_ms)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Logs an attempt and moves the event to `state` if `chain` is still
    /// its current one; `false` if a newer chain replaced it.
    pub async fn record_attempt(
        &self,
        subject: &JobId,
        gen: u32,
        chain: &uuid::Uuid,
        attempt: &Attempt,
        state: EventState,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let current: i64 = ATTEMPT
            .key(self.record_key(subject, gen))
            .key(self.log_key(subject))
            .key(&self.subject_keys(subject))
            .arg(chain.to_string())
            .arg(state.as_str())
            .arg(serde_json::to_string(attempt).expect("an attempt serialises"))
            .arg(self.ttl_ms)
            .arg(MAX_LOG_ENTRIES)
            .arg(attempt.attempt)
            .invoke_async(&mut c)
            .await?;
        Ok(current == 1)
    }

    /// When (epoch ms) `url` was disabled by a `410 Gone`, if it was.
    pub async fn disabled_since(&self, url: &str) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.disabled_key(url))
            .query_async(&mut c)
            .await?)
    }

    /// Disables `url` for [`DISABLED_MS`]: events for it are not sent
    /// meanwhile.
    pub async fn disable(&self, url: &str, at_ms: u64) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        redis::cmd("SET")
            .arg(self.disabled_key(url))
            .arg(at_ms)
            .arg("PX")
            .arg(DISABLED_MS)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }

    /// Moves the endpoints disabled under the earlier layout (one hash
    /// `<ns>:webhooks:disabled` of URL -> time, never expiring) to keys of
    /// their own that expire [`DISABLED_MS`] after that time, then deletes
    /// the hash; returns how many were moved. Idempotent, so every
    /// dispatcher may run it at start.
    pub async fn migrate_disabled(&self) -> Result<u64, StoreError> {
        let old = self.keys.webhooks_disabled_legacy();
        let mut c = self.conn.clone();
        let entries: Vec<(String, u64)> =
            redis::cmd("HGETALL").arg(&old).query_async(&mut c).await?;
        let now = crate::job::now_ms();
        let mut moved = 0;
        for (url, at_ms) in &entries {
            let left = (at_ms + DISABLED_MS).saturating_sub(now);
            if left == 0 {
                continue;
            }
            // NX: a newer 410 of the same endpoint is kept as it is.
            redis::cmd("SET")
                .arg(self.disabled_key(url))
                .arg(at_ms)
                .arg("PX")
                .arg(left)
                .arg("NX")
                .query_async::<()>(&mut c)
                .await?;
            moved += 1;
        }
        if !entries.is_empty() {
            redis::cmd("DEL")
                .arg(&old)
                .query_async::<()>(&mut c)
                .await?;
        }
        Ok(moved)
    }

    /// Enables `url` again; `true` if it was disabled.
    pub async fn enable(&self, url: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("DEL")
            .arg(self.disabled_key(url))
            .query_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    /// A subject's events (of ends `0..=last_gen`, oldest first), each with
    /// its logged attempts.
    pub async fn deliveries(
        &self,
        subject: &JobId,
        last_gen: u32,
    ) -> Result<Vec<Deliveries>, StoreError> {
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        for gen in 0..=last_gen {
            pipe.hgetall(self.record_key(subject, gen));
        }
        pipe.lrange(self.log_key(subject), 0, -1);
        let mut values: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let log: Vec<String> =
            redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil)).unwrap_or_default();
        let attempts: Vec<Attempt> = log
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let mut out = Vec::new();
        for v in values {
            let rec: std::collections::HashMap<String, String> =
                redis::from_redis_value(v).unwrap_or_default();
            let Some(state) = rec.get("state").and_then(|s| EventState::parse(s)) else {
                continue;
            };
            let id = rec.get("id").cloned();
            out.push(Deliveries {
                attempts: attempts
                    .iter()
                    .filter(|a| Some(&a.webhook_id) == id.as_ref())
                    .cloned()
                    .collect(),
                webhook_id: id,
                kind: rec.get("type").cloned(),
                url: rec.get("url").cloned().unwrap_or_default(),
                state,
            });
        }
        Ok(out)
    }

    /// Starts a manual redelivery of the event named by `event` (its
    /// `webhook-id` or type) under the new chain `chain`.
    pub async fn redeliver(
        &self,
        subject: &JobId,
        gen: u32,
        event: &str,
        chain: &uuid::Uuid,
    ) -> Result<Redeliver, StoreError> {
        let mut c = self.conn.clone();
        let r: Option<Vec<String>> = REDELIVER
            .key(self.record_key(subject, gen))
            .key(&self.subject_keys(subject))
            .arg(event)
            .arg(chain.to_string())
            .arg(self.ttl_ms)
            .invoke_async(&mut c)
            .await?;
        Ok(match r {
            Some(v) if v.len() >= 7 => Redeliver::Go {
                event: Event {
                    id: v[0].clone(),
                    kind: v[1].clone(),
                    body: v[2].clone(),
                    gen,
                },
                url: v[3].clone(),
                before: Previous {
                    state: v[4].clone(),
                    chain: v[5].clone(),
                    tries: v[6].clone(),
                },
            },
            _ => Redeliver::Missing,
        })
    }

    /// Puts an event back where it stood before a manual redelivery under
    /// `chain` that could not be queued (unless something moved it since),
    /// so the automatic attempts still waiting go on.
    pub async fn restore(
        &self,
        subject: &JobId,
        gen: u32,
        chain: &uuid::Uuid,
        before: &Previous,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = RESTORE
            .key(self.record_key(subject, gen))
            .arg(chain.to_string())
            .arg(&before.state)
            .arg(&before.chain)
            .arg(&before.tries)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }
}

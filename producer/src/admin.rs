//! Operators' endpoints for the dead-letter queue: list what is in it, and
//! replay messages onto their job queues once their cause is fixed.
//!
//! A replayed job is reopened first (its `failed` / `dead_lettered` record
//! goes back to `queued`, a chunk's dead-letter rows are uncounted), which
//! is the one way a terminal state is left, and only for dead letters.
//!
//! A dead letter reaches `<ns>.dead` and `<ns>.dead.record` together, and
//! a worker records it from the second one. A replay may come first: then
//! the job is not `failed` yet, and the dead letter stays in the queue for
//! a later replay; only one whose record has moved on for good (succeeded,
//! cancelled, expired, or gone) is removed.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Query, State};
use axum::Json;
use infq_common::audit::Event;
use infq_common::job::JobStatus;
use infq_common::message::{JobMessage, Work, CONTENT_TYPE};
use infq_common::store::Reopened;
use infq_common::topology::{death_reason, Topology};
use infq_common::webhooks::event::decode_all;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Most messages one request looks at.
const MAX_SCAN: usize = 10_000;

/// What a replay can do with a dead letter's job or chunk.
enum Reopen {
    /// Reopened: it goes back on its queue.
    Reopened,
    /// Its dead-lettering is not recorded yet (it says how it stands): the
    /// dead letter stays for a later replay.
    NotYetRecorded(String),
    /// Its record ended otherwise, or is gone: the dead letter has nothing
    /// left to do.
    Settled,
    /// The dead letter is not the message its job was accepted with (or
    /// does not fit its batch): it is removed, and nothing is reopened.
    Forged(String),
}

/// Reopens `msg`'s job or chunk if it is recorded as dead-lettered. A
/// record that is not yet terminal is waiting for the recorder. One that
/// is terminal stays so (terminal states are final, but for this reopen),
/// so a second attempt decides, in case the recorder got there between
/// the two reads.
async fn reopen(
    state: &AppState,
    msg: &JobMessage,
) -> Result<Reopen, infq_common::store::StoreError> {
    match state.store.reopen(msg).await? {
        Reopened::Yes => return Ok(Reopen::Reopened),
        Reopened::Forged(why) => return Ok(Reopen::Forged(why)),
        Reopened::No => {}
    }
    if let Some(standing) = not_yet_recorded(state, msg).await? {
        return Ok(Reopen::NotYetRecorded(standing));
    }
    Ok(match state.store.reopen(msg).await? {
        Reopened::Yes => Reopen::Reopened,
        Reopened::Forged(why) => Reopen::Forged(why),
        Reopened::No => Reopen::Settled,
    })
}

/// How `msg`'s job or chunk stands if it has not ended yet (so its dead
/// letter may still be recorded); `None` if it has ended or is gone.
async fn not_yet_recorded(
    state: &AppState,
    msg: &JobMessage,
) -> Result<Option<String>, infq_common::store::StoreError> {
    let Some(c) = msg.work.chunk() else {
        return Ok(state
            .store
            .get(&msg.record())
            .await?
            .filter(|job| !job.status.is_terminal())
            .map(|job| format!("its job is still {}", job.status.as_str())));
    };
    let Some(batch) = state.store.get_batch(&msg.record()).await? else {
        return Ok(None);
    };
    if c.index >= batch.chunks || matches!(batch.status, JobStatus::Cancelled | JobStatus::Failed) {
        return Ok(None);
    }
    let stored = state
        .store
        .get_chunks(&msg.record(), c.index, c.index + 1)
        .await?;
    Ok(match stored.first() {
        Some(Some(_)) => None,
        _ => Some(format!(
            "its chunk has no result yet (batch {})",
            batch.status.as_str()
        )),
    })
}

/// Marks a reopened job (or chunk) dead-lettered again after a replay that
/// did not go out.
async fn kill_again(
    state: &AppState,
    msg: &JobMessage,
) -> Result<(), infq_common::store::StoreError> {
    let reason = "dead_lettered: a replay could not be published";
    match msg.work.chunk() {
        Some(_) => state.store.dead_chunk(msg, reason).await.map(|_| ()),
        None => {
            let err = infq_common::job::JobError::new("dead_lettered", reason);
            let t = infq_common::store::Transition::failed(err);
            state.store.transition(&msg.record(), &t).await.map(|_| ())
        }
    }
}

/// Query of `GET /v1/admin/dead-letters`.
#[derive(Deserialize)]
pub struct ListQuery {
    /// Most messages listed (default 100).
    limit: Option<usize>,
}

/// One dead letter as listed.
#[derive(Serialize)]
pub struct DeadLetter {
    /// `<job id>` or `<batch id>:<chunk>`, as replay takes it; `null` for a
    /// message that cannot be decoded.
    id: Option<String>,
    /// `job`, `chunk` or `undecodable`.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<usize>,
    reason: String,
    bytes: usize,
}

fn describe(data: &[u8], props: &BasicProperties) -> DeadLetter {
    let reason = death_reason(props);
    match JobMessage::decode(data) {
        Ok(m) => DeadLetter {
            id: Some(m.message_id().to_string()),
            kind: if m.work.is_chunk() { "chunk" } else { "job" },
            rows: m.work.is_chunk().then_some(m.inputs.len()),
            model: Some(format!("{}@{}", m.model, m.version)),
            reason,
            bytes: data.len(),
        },
        Err(_) if webhook_address(data, props).is_some() => DeadLetter {
            id: webhook_address(data, props),
            kind: "webhook",
            model: None,
            rows: decode_all(data).ok().map(|e| e.len()),
            reason,
            bytes: data.len(),
        },
        Err(e) => DeadLetter {
            id: None,
            kind: "undecodable",
            model: None,
            rows: None,
            reason: format!("{reason}: {e}"),
            bytes: data.len(),
        },
    }
}

/// `webhook:<message id>` for a dead-lettered message of webhook events.
fn webhook_address(data: &[u8], props: &BasicProperties) -> Option<String> {
    let events = decode_all(data).ok()?;
    let id = props
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| events[0].subject.to_string());
    Some(format!("webhook:{id}"))
}

/// Takes up to `limit` messages off the dead-letter queue, unacknowledged.
async fn take(
    ch: &Channel,
    queue: &str,
    limit: usize,
) -> Result<Vec<lapin::message::Delivery>, ApiError> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        match got {
            Some(m) => out.push(m.delivery),
            None => break,
        }
    }
    Ok(out)
}

/// Puts messages back on the dead-letter queue.
async fn put_back(deliveries: &[lapin::message::Delivery]) {
    for d in deliveries {
        let _ = d
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await;
    }
}

/// `GET /v1/admin/dead-letters?limit=N`: what the dead-letter queue holds.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin",
    security(("api_key" = [])),
    params(("limit" = Option<usize>, Query, description = "Most messages listed (default 100)")),
    responses(
        (status = 200, description = "What the dead-letter queue holds", body = crate::openapi::DeadLetters),
        (status = 403, description = "Not an admin tenant's key", body = crate::openapi::ErrorBody),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(MAX_SCAN);
    let ch = state
        .publisher
        .channel()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let topology = Topology::of(&state.settings);
    let taken = take(&ch, &topology.dead_queue(), limit).await?;
    let listed: Vec<DeadLetter> = taken
        .iter()
        .map(|d| describe(&d.data, &d.properties))
        .collect();
    put_back(&taken).await;
    Ok(Json(
        json!({ "dead_letters": listed, "count": listed.len() }),
    ))
}

/// Publishes a dead letter's body and properties again, with confirm.
async fn republish(
    state: &AppState,
    exchange: &str,
    key: &str,
    d: &lapin::message::Delivery,
) -> Result<(), String> {
    let props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_type(infq_common::webhooks::event::MESSAGE_TYPE.into())
        .with_message_id(
            d.properties
                .message_id()
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into()),
        );
    let timeout = std::time::Duration::from_millis(state.settings.amqp.publish_timeout_ms);
    let lease = state
        .publisher
        .lease()
        .await
        .map_err(|e| format!("not published: {e}"))?;
    lease
        .publish(exchange, key, &d.data, props, timeout)
        .await
        .map_err(|e| format!("not published: {e}"))
}

/// Body of `POST /v1/admin/dead-letters/replay`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Ids as listed (`<job id>` or `<batch id>:<chunk>`).
    #[serde(default)]
    ids: Vec<String>,
    /// Replay every decodable message instead.
    #[serde(default)]
    all: bool,
}

/// `POST /v1/admin/dead-letters/replay`: reopens the chosen jobs and
/// publishes them back to their job queues; the rest stay dead-lettered.
#[utoipa::path(post, path = "/v1/admin/dead-letters/replay", tag = "admin",
    security(("api_key" = [])),
    request_body(content = crate::openapi::ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Reopened and put back on their queues", body = crate::openapi::Replayed),
        (status = 403, description = "Not an admin tenant's key", body = crate::openapi::ErrorBody),
    ))]
pub async fn replay(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<crate::auth::Caller>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::Malformed(e.body_text()))?;
    if req.ids.is_empty() && !req.all {
        return Err(ApiError::Invalid(vec![crate::detail::Detail::field(
            "ids",
            "name the dead letters to replay, or set \"all\": true",
        )]));
    }
    let ch = state
        .publisher
        .channel()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let topology = Topology::of(&state.settings);
    let taken = take(&ch, &topology.dead_queue(), MAX_SCAN).await?;
    let mut replayed = Vec::new();
    let mut kept = Vec::new();
    let mut problems = Vec::new();
    let mut audit = Vec::new();
    for d in taken {
        let Ok(mut msg) = JobMessage::decode(&d.data) else {
            // Webhook events go back to the dispatchers as they are.
            match webhook_address(&d.data, &d.properties) {
                Some(id) if req.all || req.ids.contains(&id) => {
                    match republish(&state, &topology.webhooks_exchange(), "", &d).await {
                        Ok(()) => {
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                            replayed.push(id);
                        }
                        Err(reason) => {
                            problems.push(json!({"id": id, "reason": reason}));
                            kept.push(d);
                        }
                    }
                }
                _ => kept.push(d),
            }
            continue;
        };
        let id = msg.message_id().to_string();
        if !(req.all || req.ids.contains(&id)) {
            kept.push(d);
            continue;
        }
        match reopen(&state, &msg).await {
            Ok(Reopen::Reopened) => {}
            Ok(Reopen::NotYetRecorded(standing)) => {
                // The recorder has not reached it: acknowledging it here
                // would delete the one copy a later replay could use.
                problems.push(json!({"id": id, "reason": format!(
                    "not recorded as dead-lettered yet ({standing}); kept for a later replay"
                )}));
                kept.push(d);
                continue;
            }
            Ok(Reopen::Forged(why)) => {
                problems.push(json!({"id": id, "reason": format!(
                    "{why}: not replayed; removed"
                )}));
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                continue;
            }
            Ok(Reopen::Settled) => {
                // Its record moved on (it succeeded on a redelivery, or it
                // expired): the dead letter has nothing left to do.
                problems.push(
                    json!({"id": id, "reason": "its job is no longer dead-lettered; removed"}),
                );
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                continue;
            }
            Err(e) => {
                problems.push(json!({"id": id, "reason": e.to_string()}));
                kept.push(d);
                continue;
            }
        }
        // A chunk goes back to the share of its batch's tenant, as the
        // record says: the message's own `tenant` is anyone's to write.
        if msg.work.is_chunk() {
            match state.store.get_batch(&msg.record()).await {
                Ok(batch) => msg.tenant = batch.and_then(|b| b.tenant),
                Err(e) => {
                    problems.push(json!({"id": id, "reason": e.to_string()}));
                    kept.push(d);
                    continue;
                }
            }
        }
        msg.retries = 0;
        let props = msg.properties(None);
        let key = msg.routing_key();
        let timeout = std::time::Duration::from_millis(state.settings.amqp.publish_timeout_ms);
        // Its share made ready first (a dead letter may be older than
        // its share).
        let ready = match msg.share() {
            Some(share) => state.publisher.open_share(&state.shares, &share).await,
            None => Ok(()),
        };
        let published = match ready {
            Err(e) => Err(e),
            Ok(()) => match state.publisher.lease().await {
                Ok(lease) => {
                    lease
                        .publish(
                            &topology.jobs_exchange(),
                            &key,
                            &msg.encode(),
                            props,
                            timeout,
                        )
                        .await
                }
                Err(e) => Err(e),
            },
        };
        match published {
            Ok(()) => {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let record = match msg.work {
                    Work::Job { id } => caller.audit_job(Event::DeadLetterReplayed, &id),
                    Work::Chunk { batch, index, .. } => {
                        let mut r = caller.audit_batch(Event::DeadLetterReplayed, &batch);
                        r.chunk = Some(index);
                        r
                    }
                };
                audit.push(record.of_model(&msg.model, &msg.version));
                replayed.push(id);
            }
            Err(e) => {
                // Not replayed after all: the job is dead-lettered again, so
                // its record matches the message kept in the queue.
                let reason = format!("not published: {e}");
                if let Err(e) = kill_again(&state, &msg).await {
                    tracing::warn!(error = %e, "could not restore a dead letter's record");
                }
                problems.push(json!({"id": id, "reason": reason}));
                kept.push(d);
            }
        }
    }
    put_back(&kept).await;
    state.publisher.audit(audit).await;
    tracing::info!(replayed = replayed.len(), "dead letters replayed");
    Ok(Json(json!({
        "replayed": replayed,
        "count": replayed.len(),
        "problems": problems,
    })))
}

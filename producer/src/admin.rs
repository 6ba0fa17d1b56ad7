//! Operators' endpoints for the dead-letter queue: list what is in it, and
//! replay messages onto their job queues once their cause is fixed.
//!
//! A replayed job is reopened first (its `failed` / `dead_lettered` record
//! goes back to `queued`, a chunk's dead-letter rows are uncounted), which
//! is the one way a terminal state is left, and only for dead letters.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use infq_common::message::{JobMessage, CONTENT_TYPE, MESSAGE_TYPE};
use infq_common::topology::{death_reason, Topology};
use infq_common::webhooks::event::decode_all;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Most messages one request looks at.
const MAX_SCAN: usize = 10_000;

/// Marks a reopened job (or chunk) dead-lettered again after a replay that
/// did not go out.
async fn kill_again(
    state: &AppState,
    msg: &JobMessage,
) -> Result<(), infq_common::store::StoreError> {
    let reason = "dead_lettered: a replay could not be published";
    match msg.chunk {
        Some(c) => state
            .store
            .dead_chunk(&msg.id, c.index, reason)
            .await
            .map(|_| ()),
        None => {
            let err = infq_common::job::JobError::new("dead_lettered", reason);
            let t = infq_common::store::Transition::failed(err);
            state.store.transition(&msg.id, &t).await.map(|_| ())
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
            id: Some(address(&m)),
            kind: if m.chunk.is_some() { "chunk" } else { "job" },
            rows: m.chunk.map(|_| m.inputs.len()),
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

fn address(m: &JobMessage) -> String {
    match m.chunk {
        Some(c) => format!("{}:{}", m.id, c.index),
        None => m.id.to_string(),
    }
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
    ch: &Channel,
    exchange: &str,
    key: &str,
    d: &lapin::message::Delivery,
) -> Result<(), String> {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(infq_common::webhooks::event::MESSAGE_TYPE.into())
        .with_message_id(
            d.properties
                .message_id()
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into()),
        );
    let published = async {
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &d.data,
            props,
        )
        .await?
        .await
    };
    let timeout = std::time::Duration::from_millis(state.settings.amqp.publish_timeout_ms);
    match tokio::time::timeout(timeout, published).await {
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        other => Err(format!("not published: {other:?}")),
    }
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
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::Malformed(e.body_text()))?;
    if req.ids.is_empty() && !req.all {
        return Err(ApiError::Invalid(vec![crate::error::Detail::field(
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
    for d in taken {
        let Ok(mut msg) = JobMessage::decode(&d.data) else {
            // Webhook events go back to the dispatchers as they are.
            match webhook_address(&d.data, &d.properties) {
                Some(id) if req.all || req.ids.contains(&id) => {
                    match republish(&state, &ch, &topology.webhooks_exchange(), "", &d).await {
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
        let id = address(&msg);
        if !(req.all || req.ids.contains(&id)) {
            kept.push(d);
            continue;
        }
        match state
            .store
            .reopen(&msg.id, msg.chunk.map(|c| c.index))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
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
        msg.retries = 0;
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(CONTENT_TYPE.into())
            .with_type(MESSAGE_TYPE.into())
            .with_message_id(msg.id.to_string().into());
        let key = Topology::routing_key(&msg.model, msg.priority);
        let published = async {
            ch.basic_publish(
                topology.jobs_exchange().as_str().into(),
                key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &msg.encode(),
                props,
            )
            .await?
            .await
        };
        let timeout = std::time::Duration::from_millis(state.settings.amqp.publish_timeout_ms);
        match tokio::time::timeout(timeout, published).await {
            Ok(Ok(Confirmation::Ack(None))) => {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                replayed.push(id);
            }
            other => {
                // Not replayed after all: the job is dead-lettered again, so
                // its record matches the message kept in the queue.
                let reason = format!("not published: {other:?}");
                if let Err(e) = crate::admin::kill_again(&state, &msg).await {
                    tracing::warn!(error = %e, "could not restore a dead letter's record");
                }
                problems.push(json!({"id": id, "reason": reason}));
                kept.push(d);
            }
        }
    }
    put_back(&kept).await;
    tracing::info!(replayed = replayed.len(), "dead letters replayed");
    Ok(Json(json!({
        "replayed": replayed,
        "count": replayed.len(),
        "problems": problems,
    })))
}

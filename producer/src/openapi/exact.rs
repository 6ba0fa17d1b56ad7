//! What the derived document cannot say by itself, stated on its JSON:
//! links from the operations that create a job or a batch to those that
//! read, cancel, erase and redeliver it, the webhook events infq sends
//! (OpenAPI 3.1 `webhooks`), and the exact forms of the values the
//! handlers check by hand (a replay's alternatives, an idempotency key, a
//! wait, a listing's limit, an upload's parameters).

use crate::batches::upload::MAX_PROGRESS_SECS;
use crate::bulk::{Format, DELIMITER_NAMES, MAX_PASSTHROUGH_COLUMNS, RESERVED_NAMES};
use serde_json::{json, Value};

/// (path, method, status) and the links of that answer: (link name,
/// operation id). Each passes the answer's `id` as the `id` parameter.
type LinkTable = [(
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
); 5];

const JOB_LINKS: &[(&str, &str)] = &[
    ("GetJob", "get_job"),
    ("CancelJob", "cancel_job"),
    ("DeleteJob", "delete_job"),
    ("JobDeliveries", "job_deliveries"),
];

const LINKS: LinkTable = [
    ("/v1/jobs", "post", "202", JOB_LINKS),
    ("/v1/jobs", "post", "200", JOB_LINKS),
    (
        "/v1/jobs/{id}",
        "get",
        "200",
        &[("JobDeliveries", "job_deliveries")],
    ),
    (
        "/v1/batches",
        "post",
        "202",
        &[
            ("GetBatch", "get_batch"),
            ("CancelBatch", "cancel_batch"),
            ("DeleteBatch", "delete_batch"),
            ("BatchResults", "batch_results"),
            ("BatchDeliveries", "batch_deliveries"),
        ],
    ),
    (
        "/v1/batches/{id}",
        "get",
        "200",
        &[("BatchDeliveries", "batch_deliveries")],
    ),
];

/// States links and exact forms on the router's document.
pub fn refine(doc: &mut Value) {
    for (path, method, status, links) in LINKS {
        if let Some(response) = doc.pointer_mut(&answer(path, method, status)) {
            for (name, operation) in links {
                response["links"][*name] = json!({
                    "operationId": operation,
                    "parameters": { "id": "$response.body#/id" },
                });
            }
        }
    }
    // A listed delivery can be sent again.
    for (path, name, operation) in [
        (
            "/v1/jobs/{id}/deliveries",
            "RetryJobEvent",
            "retry_job_event",
        ),
        (
            "/v1/batches/{id}/deliveries",
            "RetryBatchEvent",
            "retry_batch_event",
        ),
    ] {
        if let Some(response) = doc.pointer_mut(&answer(path, "get", "200")) {
            response["links"][name] = json!({
                "operationId": operation,
                "parameters": { "id": "$response.body#/id", "event": "$response.body#/events/0/webhook_id" },
            });
        }
    }
    // Results come in each format.
    if let Some(response) = doc.pointer_mut(&answer("/v1/batches/{id}/results", "get", "200")) {
        let text = json!({ "schema": { "type": "string" } });
        response["content"] = json!({
            "text/csv": text,
            "application/x-ndjson": text,
            "application/vnd.apache.parquet": text,
        });
    }
    events(doc);
    doc["components"]["schemas"]["ReplayRequest"] = json!({
        "type": "object",
        "description": "Which dead letters to replay: `ids` as listed, or `\"all\": true` for every decodable one (or both).",
        "additionalProperties": false,
        "properties": {
            "ids": { "type": "array", "items": { "type": "string" }, "description": "Ids as listed" },
            "all": { "type": "boolean", "description": "Every decodable message" },
        },
        "anyOf": [
            { "required": ["ids"], "properties": { "ids": { "minItems": 1 } } },
            { "required": ["all"], "properties": { "all": { "const": true } } },
        ],
    });
    // An upload's file, in each of its media types.
    let text =
        |description: &str| json!({ "schema": { "type": "string", "description": description } });
    doc["paths"]["/v1/batches"]["post"]["requestBody"]["content"] = json!({
        "text/csv": text("CSV with a header row naming the features (a tensor feature's values as `name[k]`) and the passthrough columns"),
        "application/x-ndjson": text("JSON Lines: one object of named features (and passthrough values) per line"),
        "application/vnd.apache.parquet": { "schema": { "description": "Apache Parquet, with columns named as CSV's" } },
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params {
                let schema = match p["name"].as_str() {
                    // Query parameters the handlers check by hand.
                    Some("Idempotency-Key") => {
                        json!({ "type": "string", "pattern": "^[!-~]{1,255}$" })
                    }
                    Some("wait") => json!({ "type": ["number", "null"], "minimum": 0 }),
                    Some("format") => {
                        json!({ "type": ["string", "null"], "enum": with_null(&Format::NAMES) })
                    }
                    Some("delimiter") => {
                        json!({ "type": ["string", "null"], "enum": with_null(&DELIMITER_NAMES) })
                    }
                    Some("progress_interval_secs") => {
                        json!({ "type": ["integer", "null"], "minimum": 1, "maximum": MAX_PROGRESS_SECS })
                    }
                    Some("passthrough") => {
                        // `a,b`: a list of distinct names, none a result key.
                        p["style"] = json!("form");
                        p["explode"] = json!(false);
                        json!({
                            "type": "array",
                            "maxItems": MAX_PASSTHROUGH_COLUMNS,
                            "uniqueItems": true,
                            "items": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 64,
                                "pattern": "^[^,]*[^,\\s][^,]*$",
                                "not": { "enum": RESERVED_NAMES },
                            },
                        })
                    }
                    Some("limit") => {
                        json!({ "type": ["integer", "null"], "minimum": 0, "maximum": usize::MAX })
                    }
                    _ => continue,
                };
                p["schema"] = schema;
            }
        }
    }
}

/// The JSON pointer of an operation's answer.
fn answer(path: &str, method: &str, status: &str) -> String {
    format!(
        "/paths/{}/{method}/responses/{status}",
        path.replace('~', "~0").replace('/', "~1")
    )
}

/// `names`, or nothing.
fn with_null(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!(n))
        .chain([Value::Null])
        .collect()
}

/// The events sent to callback URLs, as OpenAPI 3.1 `webhooks`: each a
/// `POST` of `{"type", "timestamp", "data"}` signed as Standard Webhooks
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
fn events(doc: &mut Value) {
    let event = |types: Value, data: Value, description: &str| {
        json!({
            "type": "object",
            "description": description,
            "additionalProperties": false,
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": types,
                "timestamp": { "type": "string", "format": "date-time", "description": "When the event was built (RFC 3339, UTC)" },
                "data": data,
            },
        })
    };
    let schemas = &mut doc["components"]["schemas"];
    schemas["JobEvent"] = event(
        json!({ "enum": ["job.succeeded", "job.failed"] }),
        json!({ "$ref": "#/components/schemas/Job" }),
        "A job ended: `job.succeeded` with its outputs, `job.failed` with its error (`expired` when its deadline passed unrun).",
    );
    schemas["BatchEvent"] = event(
        json!({ "const": "batch.completed" }),
        json!({ "$ref": "#/components/schemas/Batch" }),
        "A batch ended, with its counts and the link to its results.",
    );
    schemas["BatchProgressEvent"] = event(
        json!({ "const": "batch.progress" }),
        json!({
            "allOf": [{ "$ref": "#/components/schemas/Batch" }],
            "required": ["sequence"],
            "properties": { "sequence": { "type": "integer", "minimum": 1, "description": "1 for the batch's first progress event, then one more each time" } },
        }),
        "A running batch's counts, rate and ETA, at most once per `progress_interval_secs`; sent once, never retried.",
    );
    let mut hooks = serde_json::Map::new();
    for (kind, schema, summary) in [
        ("job.succeeded", "JobEvent", "A job succeeded"),
        ("job.failed", "JobEvent", "A job failed or expired"),
        ("batch.completed", "BatchEvent", "A batch ended"),
        (
            "batch.progress",
            "BatchProgressEvent",
            "A running batch's progress",
        ),
    ] {
        hooks.insert(
            kind.into(),
            json!({ "post": {
                "summary": summary,
                "description": "Sent to the job's or batch's `webhook_url`, signed as Standard Webhooks under the deployment's secrets. Any 2xx takes it; other answers are retried on the deployment's schedule (progress events excepted), and `410 Gone` disables the endpoint.",
                "parameters": [
                    { "name": "webhook-id", "in": "header", "required": true, "schema": { "type": "string" }, "description": "The event's id: the same on every attempt" },
                    { "name": "webhook-timestamp", "in": "header", "required": true, "schema": { "type": "string" }, "description": "Seconds since the Unix epoch, at signing" },
                    { "name": "webhook-signature", "in": "header", "required": true, "schema": { "type": "string" }, "description": "`v1,<base64 HMAC-SHA256>`, one per secret, separated by spaces" },
                ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
                "responses": { "2XX": { "description": "Taken" }, "410": { "description": "Gone: disables the endpoint until a manual redelivery" } },
            } }),
        );
    }
    doc["webhooks"] = Value::Object(hooks);
}

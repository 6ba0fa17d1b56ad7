//! The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`.
//!
//! Paths come from the `#[utoipa::path]` attribute on each handler, and the
//! router is built from the same handlers (`utoipa_axum::routes!`), so a
//! route cannot be served without being described. Job, batch, delivery
//! and job-error schemas are derived from the types the handlers serialise;
//! the answers built as JSON values are described by the types below, and
//! `tests/openapi.rs` checks real answers of a running server against the
//! document, so neither can drift unnoticed.

pub mod exact;
pub mod registry;

use serde::Deserialize;
use std::collections::HashMap;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "infq",
        description = "Machine-learning inference as an asynchronous job system: submit jobs alone or as bulk files, poll for results or receive signed webhooks.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&BearerKey),
    components(schemas(
        ErrorBody, ErrorInner, Problem, JobAccepted, JobSubmission, Priority,
        infq_common::views::JobView, infq_common::views::BatchView,
        infq_common::job::JobError, infq_common::webhooks::store::Deliveries,
        infq_common::explain::ExplanationDoc, infq_common::explain::ReasonDoc,
    )),
    tags(
        (name = "jobs", description = "Single jobs"),
        (name = "batches", description = "Bulk files of rows"),
        (name = "webhooks", description = "Webhook delivery logs and manual redelivery"),
        (name = "models", description = "The model registry"),
        (name = "admin", description = "Operators: dead letters (admin tenants only)"),
        (name = "operations", description = "Probes, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The API-key scheme every `/v1` route requires.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant's API key: `Authorization: Bearer infq_...`"))
                    .build(),
            ),
        );
    }
}

/// The error answers any `/v1` operation can give besides those its
/// handler names: a bad body or query, no key, no such resource, limits,
/// rates, a dependency down, a bug.
/// Applied once the router has added its paths.
pub struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let common: [(&str, &str); 9] = [
            ("400", "Malformed body or query"),
            ("401", "No valid API key"),
            ("403", "The key may not use this route"),
            ("404", "No such resource of this tenant"),
            ("413", "Over a size or structure limit"),
            ("422", "Invalid request; every problem listed"),
            ("429", "Over the tenant's rate or quota; see Retry-After"),
            ("500", "Internal error"),
            ("503", "Broker or Redis unavailable; see Retry-After"),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let ops = [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()];
            for op in ops.into_iter().flatten() {
                for (code, description) in common {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Error")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorInner,
}

/// The error itself.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInner {
    /// Stable code: `malformed_request`, `invalid_request`, `invalid_file`,
    /// `unknown_model`, `not_found`, `conflict`, `idempotency_conflict`,
    /// `payload_too_large`, `limit_exceeded`, `unauthorized`, `forbidden`,
    /// `too_many_requests`, `unavailable`, `internal`.
    pub code: String,
    /// For people.
    pub message: String,
    /// Each problem of an invalid request or file.
    pub details: Vec<Problem>,
}

/// One problem, located by field path or by line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// A field path such as `inputs.balance` or `inputs[0].shape`.
    pub field: Option<String>,
    /// A line of an uploaded file, from 1.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// The lane a job travels in.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Single jobs waiting for an answer (the default).
    Interactive,
    /// Work that may wait behind interactive jobs.
    Bulk,
}

/// The body of `POST /v1/jobs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// `name` (its default version) or `name@version`.
    pub model: String,
    /// An object of named features (a tensor feature as a nested array of
    /// its shape, or flat); an array of every value in schema order, or of
    /// one value per feature; or Open Inference Protocol (KServe v2)
    /// tensors `[{"name", "shape", "datatype", "data"}]`.
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// `interactive` unless given.
    pub priority: Option<Priority>,
    /// Where the signed `job.succeeded` / `job.failed` event is sent.
    pub webhook_url: Option<String>,
    /// The job expires unrun after this many milliseconds.
    pub deadline_ms: Option<u64>,
    /// Stored and returned with the job (an object of at most 4 KiB).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Explain the score: each feature's attribution and the principal
    /// reasons (refused for a model without an `explain` section).
    pub explain: Option<bool>,
}

/// `202` to a submitted job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAccepted {
    /// The job id (UUID v7).
    pub id: uuid::Uuid,
    /// `queued`.
    pub status: String,
    /// Model name.
    pub model: String,
    /// The version it is pinned to.
    pub version: String,
    /// `interactive` or `bulk`.
    pub priority: String,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A model version as the registry describes it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelVersion {
    /// Model name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Whether plain `name` resolves to it.
    pub default: bool,
    /// What the model does.
    pub description: String,
    /// Input features in the order of the model's input row.
    pub inputs: Vec<Feature>,
    /// Output columns in order.
    pub outputs: Vec<Output>,
    /// Values in one input row.
    pub width: usize,
    /// Most rows in one forward pass.
    pub max_batch_size: usize,
    /// Longest a batch waits to fill.
    pub max_batch_delay_ms: u64,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: String,
    /// Model threads per worker.
    pub instances: usize,
    /// `f32`, `f16` or `bf16`.
    pub precision: String,
    /// How its scores are explained (`explain` on a job or batch); null
    /// when they are not.
    pub explain: Option<ModelExplain>,
    /// The model file's SHA-256: the registry's `sha256`, else the file's
    /// as this producer read it; null if it could not.
    pub sha256: Option<String>,
}

/// How a model version's scores are explained.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelExplain {
    /// `integrated_gradients`.
    pub method: String,
    /// Points on the path from the baseline to the row.
    pub steps: usize,
    /// Each feature's value at the baseline: one number, or a tensor
    /// feature's values (all, or one per entry of its last dimension).
    pub baseline: std::collections::BTreeMap<String, infq_common::registry::Baseline>,
    /// The explained output.
    pub output: String,
    /// `higher` or `lower`: which way of the output is adverse.
    pub adverse: String,
    /// Reasons given per row, at most.
    pub top_k: usize,
    /// The least push toward the adverse outcome that makes a reason.
    pub min_contribution: f64,
}

/// One input feature.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Its name.
    pub name: String,
    /// `f32`.
    pub dtype: String,
    /// Dimensions of a tensor feature; empty for a number.
    pub shape: Vec<usize>,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// What it means.
    pub description: String,
    /// A categorical feature's names and their codes (`{"No": 0, "Yes":
    /// 1}`); empty for a plain number. Clients send a name or its code.
    pub categories: std::collections::BTreeMap<String, f64>,
    /// The principal reason it states when it pushes a score toward the
    /// adverse outcome (models with an `explain` section).
    pub reason: Option<String>,
}

/// One output.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Its name in results.
    pub name: String,
    /// What it means.
    pub description: String,
}

/// `GET /v1/models`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelList {
    /// Every version of every model.
    pub models: Vec<ModelVersion>,
}

/// `GET /v1/models/{name}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Model name.
    pub name: String,
    /// What plain `name` resolves to.
    pub default_version: String,
    /// Every version.
    pub versions: Vec<ModelVersion>,
}

/// `GET /v1/models/{name}`: a model, or one version for `name@version`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ModelAnswer {
    /// `name`: the model and every version.
    Model(Model),
    /// `name@version`: that version.
    Version(Box<ModelVersion>),
}

/// `GET /v1/{jobs,batches}/{id}/deliveries`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryLog {
    /// The job or batch.
    pub id: uuid::Uuid,
    /// Its events, each with every attempt.
    #[schema(value_type = Vec<infq_common::webhooks::store::Deliveries>)]
    pub events: Vec<serde_json::Value>,
}

/// `202` to a manual redelivery.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redelivery {
    /// The event's `webhook-id`.
    pub webhook_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it goes.
    pub url: String,
    /// `pending`.
    pub state: String,
    /// The endpoint had been disabled (`410 Gone`) and is enabled again.
    pub endpoint_enabled_again: bool,
}

/// One dead letter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// `<job id>` or `<batch id>:<chunk>`; null when undecodable.
    pub id: Option<String>,
    /// `job`, `chunk`, `webhook` or `undecodable`.
    pub kind: String,
    /// Model name.
    pub model: Option<String>,
    /// Rows of a chunk.
    pub rows: Option<usize>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Message size.
    pub bytes: usize,
}

/// `GET /v1/admin/dead-letters`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetters {
    /// What the queue holds, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// How many are listed.
    pub count: usize,
}

/// `POST /v1/admin/dead-letters/replay` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Ids as listed.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every decodable message instead.
    #[serde(default)]
    pub all: bool,
}

/// One id that could not be replayed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayProblem {
    /// The id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// The answer to a replay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replayed {
    /// Ids put back on their queues.
    pub replayed: Vec<String>,
    /// How many.
    pub count: usize,
    /// Ids not replayed, with the reason.
    pub problems: Vec<ReplayProblem>,
}

/// `GET /healthz`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each dependency: `ok` or `down`.
    pub checks: HashMap<String, String>,
}

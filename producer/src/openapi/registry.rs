//! The parts of the OpenAPI document that follow the model registry and
//! the callback policy, so that the document states exactly what this
//! deployment accepts: each model version's job body (its features, their
//! bounds and categories, the forms `inputs` may take), the model names an
//! upload and `GET /v1/models/{name}` accept, and the callback URL's scheme. The document is
//! rebuilt from them whenever the registry is reloaded
//! ([`Document::for_registry`]).
//!
//! What a JSON Schema cannot state is said in descriptions: metadata's
//! size in bytes, and that v2 tensors may come in any order with `data`
//! nested as well as flat.

use crate::validate::{DATATYPES, MAX_DEADLINE_MS, MAX_METADATA_BYTES};
use infq_common::registry::{FeatureSpec, ModelSpec, Registry};
use infq_common::webhooks::guard::{Guard, MAX_URL_LEN};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};

/// The served document: the router's, completed for the registry in use,
/// kept until the registry changes.
pub struct Document {
    base: Value,
    callbacks: Option<bool>,
    cached: Mutex<Option<(Arc<Registry>, bytes::Bytes)>>,
}

impl Document {
    /// `base` is the document the router built, refined here
    /// ([`super::exact::refine`]); `guard` is the callback
    /// policy (`None`: callbacks are off).
    pub fn new(mut base: Value, guard: Option<&Guard>) -> Self {
        super::exact::refine(&mut base);
        Self {
            base,
            callbacks: guard.map(Guard::allows_http),
            cached: Mutex::new(None),
        }
    }

    /// The document as JSON for `registry`.
    pub fn for_registry(&self, registry: Arc<Registry>) -> bytes::Bytes {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((r, doc)) = cached.as_ref() {
            if Arc::ptr_eq(r, &registry) {
                return doc.clone();
            }
        }
        let doc = bytes::Bytes::from(
            serde_json::to_vec(&complete(&self.base, &registry, self.callbacks))
                .unwrap_or_default(),
        );
        *cached = Some((registry, doc.clone()));
        doc
    }
}

/// The largest magnitude a value may have: the model reads 32-bit floats.
const F32_MAX: f64 = f32::MAX as f64;

/// `base` with the registry's models and the callback policy filled in
/// (`callbacks`: `None` when off, else whether `http://` is allowed).
pub fn complete(base: &Value, registry: &Registry, callbacks: Option<bool>) -> Value {
    let mut doc = base.clone();
    let mut variants = Vec::new();
    let mut mapping = Map::new();
    let mut addresses = Vec::new();
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the router's document has schemas");
    for spec in registry.models() {
        let key = component_key(spec);
        let mut names = vec![spec.id()];
        if registry
            .resolve(&spec.name)
            .is_some_and(|d| std::ptr::eq(d, spec))
        {
            names.insert(0, spec.name.clone());
        }
        let reference = format!("#/components/schemas/JobSubmission.{key}");
        for n in &names {
            mapping.insert(n.clone(), Value::String(reference.clone()));
        }
        addresses.extend(names.iter().cloned());
        schemas.insert(format!("Inputs.{key}"), inputs(spec));
        schemas.insert(
            format!("JobSubmission.{key}"),
            submission(spec, &names, &key, callbacks),
        );
        variants.push(json!({ "$ref": reference }));
    }
    schemas.insert(
        "JobSubmission".into(),
        json!({
            "description": "The body of `POST /v1/jobs`: one of the registry's model versions, with its inputs.",
            "oneOf": variants,
            "discriminator": { "propertyName": "model", "mapping": mapping },
        }),
    );
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1models~1{name}/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "name") {
            p["schema"] = json!({ "type": "string", "enum": addresses });
        }
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1batches/post/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut() {
            let schema = match p["name"].as_str() {
                Some("model") => json!({ "type": "string", "enum": addresses }),
                Some("webhook_url") => match callbacks {
                    Some(http) => nullable(url(http)),
                    None => json!({ "type": "null" }),
                },
                _ => continue,
            };
            p["schema"] = schema;
        }
    }
    doc
}

/// A component name for a model version (`^[a-zA-Z0-9._-]+$`).
fn component_key(spec: &ModelSpec) -> String {
    format!("{}.{}", spec.name, spec.version)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn nullable(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

/// A callback URL as the guard's form checks state it.
fn url(http: bool) -> Value {
    json!({
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LEN,
        "pattern": if http { "^https?://[^/?#@]+([/?#]|$)" } else { "^https://[^/?#@]+([/?#]|$)" },
        "description": "Where the signed event is sent. Its host may not be, or resolve to, a private, loopback or link-local address.",
    })
}

/// One model version's job body.
fn submission(spec: &ModelSpec, names: &[String], key: &str, callbacks: Option<bool>) -> Value {
    let mut properties = json!({
        "model": {
            "type": "string",
            "enum": names,
            "description": "`name` (its default version) or `name@version`",
        },
        "inputs": { "$ref": format!("#/components/schemas/Inputs.{key}") },
        "priority": nullable(json!({ "$ref": "#/components/schemas/Priority" })),
        "deadline_ms": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_DEADLINE_MS,
            "description": "The job expires unrun after this many milliseconds.",
        },
        "metadata": {
            "type": ["object", "null"],
            "description": format!("Stored and returned with the job: an object of at most {MAX_METADATA_BYTES} bytes of JSON."),
        },
        "explain": if spec.explain.is_some() {
            json!({ "type": "boolean", "description": "Explain the score: each feature's attribution and the principal reasons." })
        } else {
            json!({ "const": false, "description": "This model version is not explained." })
        },
    });
    if let Some(http) = callbacks {
        properties["webhook_url"] = nullable(url(http));
    }
    json!({
        "title": spec.id(),
        "description": spec.description,
        "type": "object",
        "additionalProperties": false,
        "required": ["model", "inputs"],
        "properties": properties,
    })
}

/// One value of a feature: a number within its bounds, or a categorical
/// feature's name or code.
fn value(f: &FeatureSpec) -> Value {
    if f.is_categorical() {
        let names = f.categories.keys().map(|n| json!(n));
        let codes = f.categories.values().map(|c| json!(c));
        return json!({ "enum": names.chain(codes).collect::<Vec<_>>() });
    }
    json!({
        "type": "number",
        "minimum": f.min.unwrap_or(-F32_MAX),
        "maximum": f.max.unwrap_or(F32_MAX),
    })
}

/// A value as a number only (a category by its code).
fn number(f: &FeatureSpec) -> Value {
    if f.is_categorical() {
        return json!({ "enum": f.categories.values().collect::<Vec<_>>() });
    }
    value(f)
}

/// Exactly these items, in order.
fn tuple(items: Vec<Value>) -> Value {
    let n = items.len();
    json!({ "type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n })
}

/// A feature as a job gives it: a number, or a tensor nested in its shape
/// (or flat, row-major).
fn feature(f: &FeatureSpec) -> Value {
    if f.shape.is_empty() {
        return value(f);
    }
    let nested = f.shape.iter().rev().fold(
        value(f),
        |inner, &d| json!({ "type": "array", "items": inner, "minItems": d, "maxItems": d }),
    );
    if f.shape.len() == 1 {
        return nested;
    }
    let flat =
        json!({ "type": "array", "items": value(f), "minItems": f.size(), "maxItems": f.size() });
    json!({ "anyOf": [nested, flat] })
}

/// A v2 tensor: `name`, one of `shapes`, a datatype, and `data` flat.
fn tensor(name: Value, shapes: Vec<Vec<usize>>, data: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": name,
            "shape": { "enum": shapes },
            "datatype": { "enum": DATATYPES },
            "data": data,
            "parameters": {},
        },
    })
}

/// Every form a model version's `inputs` may take.
fn inputs(spec: &ModelSpec) -> Value {
    let names: Vec<&str> = spec.inputs.iter().map(|f| f.name.as_str()).collect();
    let named = json!({
        "type": "object",
        "additionalProperties": false,
        "required": names,
        "properties": spec.inputs.iter().map(|f| (f.name.clone(), feature(f))).collect::<Map<_, _>>(),
        "description": "Named features",
    });
    let per_feature = tuple(spec.inputs.iter().map(feature).collect());
    let row: Vec<Value> = spec
        .columns()
        .into_iter()
        .map(|(i, _)| number(&spec.inputs[i]))
        .collect();
    let mut forms = vec![named, per_feature];
    if !spec.is_scalar() {
        forms.push(tuple(row.clone()));
    }
    let tensors = spec
        .inputs
        .iter()
        .map(|f| {
            let mut shapes = vec![f.shape.clone(), [vec![1], f.shape.clone()].concat()];
            if f.shape.is_empty() {
                shapes.push(vec![1, 1]);
            }
            let data = json!({ "type": "array", "items": value(f), "minItems": f.size(), "maxItems": f.size() });
            tensor(json!({ "const": f.name }), shapes, data)
        })
        .collect();
    forms.push(tuple(tensors));
    let width = spec.width();
    forms.push(tuple(vec![tensor(
        json!({ "type": "string", "not": { "enum": names } }),
        vec![vec![width], vec![1, width]],
        tuple(row),
    )]));
    json!({
        "description": format!(
            "`{}`: named features; an array of one value per feature; {}Open Inference Protocol (KServe v2) tensors, one per feature (in any order; `data` may also be nested), or one named otherwise holding the whole row. Categorical features take a name or its code.",
            spec.id(),
            if spec.is_scalar() { "" } else { "an array of every value in schema order; " },
        ),
        "anyOf": forms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/models.toml"),
        )
        .unwrap()
    }

    /// The fixed parts of the document, with the upload's parameters.
    fn base() -> Value {
        use utoipa::OpenApi;
        let mut doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).unwrap();
        doc["paths"] = json!({ "/v1/batches": { "post": { "parameters": [
            { "name": "model", "in": "query", "schema": { "type": "string" } },
            { "name": "webhook_url", "in": "query", "schema": { "type": ["string", "null"] } },
        ] } } });
        doc
    }

    fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
        let mut root = json!({ "$ref": format!("#/components/schemas/{name}") });
        root["components"] = doc["components"].clone();
        jsonschema::draft202012::new(&root).unwrap()
    }

    #[test]
    fn each_model_version_states_its_inputs() {
        let doc = complete(&base(), &registry(), Some(true));
        let v = validator(&doc, "JobSubmission");
        let ok = [
            json!({"model": "credit-default", "inputs": {"student": "Yes", "balance": 1200.5, "income": 30000}}),
            json!({"model": "credit-default@1", "inputs": ["No", 0, 1], "explain": true}),
            json!({"model": "credit-default", "inputs": [0, 1, 2], "webhook_url": "http://example.com/hook"}),
            json!({"model": "credit-default", "inputs": [
                {"name": "student", "shape": [1], "datatype": "FP32", "data": [1]},
                {"name": "balance", "shape": [], "datatype": "FP64", "data": [5]},
                {"name": "income", "shape": [1, 1], "datatype": "INT32", "data": [7]}]}),
            json!({"model": "credit-default", "inputs": [{"name": "row", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            json!({"model": "txn-risk", "inputs": {"history": vec![vec![0.5; 4]; 12], "tenure_months": 3}}),
            json!({"model": "txn-risk", "inputs": {"history": vec![0.5; 48], "tenure_months": 3}}),
            json!({"model": "txn-risk", "inputs": vec![1.0; 49]}),
        ];
        for body in ok {
            assert!(v.is_valid(&body), "{body}");
        }
        let refused = [
            json!({"model": "", "inputs": [0, 1, 2]}),
            json!({"model": "nope", "inputs": [0, 1, 2]}),
            json!({"model": "credit-default", "inputs": [0, 1]}),
            json!({"model": "credit-default", "inputs": ["Maybe", 1, 2]}),
            json!({"model": "credit-default", "inputs": [0, -1, 2]}),
            json!({"model": "credit-default", "inputs": [0, 1, 1e39]}),
            json!({"model": "credit-default", "inputs": {"student": 0, "balance": 1}}),
            json!({"model": "credit-default", "inputs": {"student": 0, "balance": 1, "income": 1, "x": 1}}),
            json!({"model": "credit-default", "inputs": [0, 1, 2], "deadline_ms": 0}),
            json!({"model": "credit-default", "inputs": [0, 1, 2], "explain": null}),
            json!({"model": "credit-default", "inputs": [0, 1, 2], "webhook_url": "ftp://example.com"}),
            json!({"model": "credit-default", "inputs": [0, 1, 2], "surprise": 1}),
            json!({"model": "credit-default", "inputs": [{"name": "student", "shape": [2], "datatype": "FP32", "data": [1, 1]}]}),
            json!({"model": "credit-default", "inputs": [{"name": "row", "shape": [1, 3], "datatype": "STRING", "data": [1, 2, 3]}]}),
            json!({"model": "txn-risk", "inputs": {"history": vec![vec![0.5; 4]; 11], "tenure_months": 3}}),
            json!({"model": "txn-risk", "inputs": {"history": vec![vec![-0.5; 4]; 12], "tenure_months": 3}}),
        ];
        for body in refused {
            assert!(!v.is_valid(&body), "{body}");
        }
    }

    #[test]
    fn the_schema_and_the_validator_agree() {
        // Whatever the schema accepts, the server accepts, and the other
        // way round, for a set of bodies on either side of each rule.
        let registry = registry();
        let guard = Guard::new(infq_common::webhooks::guard::Policy {
            allow_http: true,
            allow_hosts: &[],
        });
        let doc = complete(&base(), &registry, Some(true));
        let v = validator(&doc, "JobSubmission");
        let bodies = [
            r#"{"model":"credit-default","inputs":[0,1,2]}"#,
            r#"{"model":"credit-default","inputs":[0.5,1,2]}"#,
            r#"{"model":"credit-default","inputs":["Yes",1,2]}"#,
            r#"{"model":"credit-default","inputs":[1,3.4028234663852886e38,2]}"#,
            r#"{"model":"credit-default","inputs":[1,3.4028235e38,2]}"#,
            r#"{"model":"credit-default","inputs":{"student":1,"balance":0,"income":-0.0}}"#,
            r#"{"model":"credit-default","inputs":{"student":1,"balance":0,"income":-1}}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"priority":"bulk","deadline_ms":604800000}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"deadline_ms":604800001}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"deadline_ms":5.5}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"deadline_ms":-1}"#,
            r#"{"model":"txn-risk","inputs":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,3.4028234663852886e38]}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"priority":null,"metadata":null,"webhook_url":null}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"metadata":[1]}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"webhook_url":"https://example.com/x"}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"webhook_url":"gopher://example.com/x"}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"webhook_url":"https://user:pw@example.com/x"}"#,
            r#"{"model":"credit-default","inputs":[0,1,2],"webhook_url":"http://example.com"}"#,
            r#"{"model":"credit-default@2","inputs":[0,1,2]}"#,
            r#"{"model":"txn-risk","inputs":[[[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1],[1,1,1,1]],5]}"#,
            r#"{"model":"txn-risk","inputs":[[1,1,1,1],5]}"#,
        ];
        for body in bodies {
            let server =
                crate::validate::validate(body.as_bytes(), &registry, Some(&guard)).is_ok();
            let schema = v.is_valid(&serde_json::from_str(body).unwrap());
            assert_eq!(schema, server, "{body}: schema {schema}, server {server}");
        }
    }

    #[test]
    fn uploads_name_the_models_and_callbacks_follow_the_policy() {
        let doc = complete(&base(), &registry(), None);
        let params = &doc["paths"]["/v1/batches"]["post"]["parameters"];
        assert_eq!(
            params[0]["schema"]["enum"],
            json!([
                "credit-default",
                "credit-default@1",
                "txn-risk",
                "txn-risk@1"
            ])
        );
        assert_eq!(params[1]["schema"], json!({"type": "null"}));
        let jobs = &doc["components"]["schemas"]["JobSubmission.credit-default.1"];
        assert!(jobs["properties"]["webhook_url"].is_null());
        let strict = complete(&base(), &registry(), Some(false));
        let url = &strict["components"]["schemas"]["JobSubmission.txn-risk.1"]["properties"]
            ["webhook_url"];
        assert_eq!(url["anyOf"][0]["pattern"], "^https://[^/?#@]+([/?#]|$)");
    }
}

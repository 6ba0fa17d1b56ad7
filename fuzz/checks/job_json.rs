//! `POST /v1/jobs` bodies: the shape scan, the JSON parser and every check
//! against the registry, with callbacks on. An accepted body must give one
//! finite row of the model's width.
//!
//! The check itself: the fuzz target `job_json` runs it on what libFuzzer
//! makes, `tests/fuzz_inputs.rs` on the kept inputs on every test run.
use infq_common::config::WebhooksConfig;
use infq_common::registry::Registry;
use infq_common::webhooks::guard::Guard;
use std::path::Path;
use std::sync::LazyLock;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let text = include_str!("../../config/models.toml");
    Registry::parse(text, Path::new("models.toml"), Path::new(".")).expect("the shipped registry")
});

static GUARD: LazyLock<Guard> = LazyLock::new(|| {
    let cfg = WebhooksConfig {
        secrets: vec!["whsec_LlWcUn3fwix9VSGL3FJolkpztqwZERL8QxwYPtXJDYI=".into()],
        ..WebhooksConfig::default()
    };
    Guard::new(cfg.guard_policy())
});

/// Checks one input; panics on a broken invariant.
pub fn check(data: &[u8]) {
    if let Ok(job) = infq_producer::validate::validate(data, &REGISTRY, Some(&GUARD)) {
        assert_eq!(job.inputs.len(), job.spec.width());
        assert!(job.inputs.iter().all(|v| v.is_finite()));
    }
}

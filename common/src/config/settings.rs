//! The whole configuration ([`Settings`]): loaded in layers, then checked
//! as a whole, so a bad value stops start-up with one clear message.

use super::amqp::AmqpConfig;
use super::env::{self, ENV_PREFIX};
use super::error::ConfigError;
use super::log::LogConfig;
use super::producer::ProducerConfig;
use super::redis::RedisConfig;
use super::tenants::{valid_tenant_name, TenantsConfig, TENANT_NAME_RULE};
use super::webhooks::WebhooksConfig;
use super::worker::{WorkerConfig, MAX_SHARE_ROWS_WITH_JOBS};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSettings {
    namespace: String,
    models_file: RelativePathBuf,
    models_poll_ms: u64,
    amqp: AmqpConfig,
    redis: RedisConfig,
    producer: ProducerConfig,
    worker: WorkerConfig,
    webhooks: WebhooksConfig,
    tenants: TenantsConfig,
    log: LogConfig,
}

impl Default for RawSettings {
    fn default() -> Self {
        Self {
            namespace: "infq".into(),
            models_file: RelativePathBuf::from("config/models.toml"),
            models_poll_ms: 2_000,
            amqp: AmqpConfig::default(),
            redis: RedisConfig::default(),
            producer: ProducerConfig::default(),
            worker: WorkerConfig::default(),
            webhooks: WebhooksConfig::default(),
            tenants: TenantsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The whole configuration of a deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prefix of every exchange, queue and Redis key, so that several
    /// deployments (or test runs) can share one broker and one Redis.
    pub namespace: String,
    /// The model registry file; relative paths in the config file are
    /// resolved against that file's folder.
    pub models_file: PathBuf,
    /// How often producers and workers look for a changed registry file
    /// (hot reload); 0: only on `infq admin models reload`.
    pub models_poll_ms: u64,
    /// RabbitMQ.
    pub amqp: AmqpConfig,
    /// Redis.
    pub redis: RedisConfig,
    /// The HTTP producer.
    pub producer: ProducerConfig,
    /// The worker.
    pub worker: WorkerConfig,
    /// Webhook callbacks.
    pub webhooks: WebhooksConfig,
    /// Tenants, keys and limits.
    pub tenants: TenantsConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Settings {
    /// Loads defaults, then `file` (which must exist when given), then
    /// `INFQ_<SECTION>__<KEY>` variables (an unknown one is refused; the
    /// client's `INFQ_CLIENT_*` are skipped), then `overrides` as
    /// `("section.key", value)`.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, figment::value::Value)],
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(RawSettings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let known = serde_json::to_value(RawSettings::default())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        env::check(std::env::vars_os(), &known)?;
        fig = fig.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|rest| env::is_setting(rest.as_str()))
                .split("__"),
        );
        for (key, value) in overrides {
            fig = fig.merge(Serialized::default(key, value.clone()));
        }
        let raw: RawSettings = fig
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let settings = Settings {
            namespace: raw.namespace,
            models_file: raw.models_file.relative(),
            models_poll_ms: raw.models_poll_ms,
            amqp: raw.amqp,
            redis: raw.redis,
            producer: raw.producer,
            worker: raw.worker,
            webhooks: raw.webhooks,
            tenants: raw.tenants,
            log: raw.log,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but cannot work, naming each by its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let ns_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 64
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ns_ok {
            problems.push("namespace: use 1 to 64 of A-Z, a-z, 0-9, '-' and '_'".into());
        }
        problems.extend(self.amqp.problems());
        problems.extend(self.redis.problems());
        for (key, file) in [
            ("amqp.ca_file", &self.amqp.ca_file),
            ("redis.ca_file", &self.redis.ca_file),
        ] {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                problems.push(format!("{key}: {} is not a readable file", f.display()));
            }
        }
        for (key, v) in [
            ("amqp.connect_timeout_ms", self.amqp.connect_timeout_ms),
            ("amqp.publish_timeout_ms", self.amqp.publish_timeout_ms),
            ("redis.timeout_ms", self.redis.timeout_ms),
            ("redis.result_ttl_secs", self.redis.result_ttl_secs),
            ("amqp.delivery_limit", u64::from(self.amqp.delivery_limit)),
            ("amqp.max_queue_length", self.amqp.max_queue_length),
            ("amqp.stats_interval_ms", self.amqp.stats_interval_ms),
            (
                "producer.max_body_bytes",
                self.producer.max_body_bytes as u64,
            ),
            (
                "producer.publish_window",
                self.producer.publish_window as u64,
            ),
            (
                "producer.publish_window_with_jobs",
                self.producer.publish_window_with_jobs as u64,
            ),
        ] {
            if v == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        if self.producer.chunk_rows > 65_536 {
            problems.push("producer.chunk_rows: must be at most 65536".into());
        }
        if self.producer.spool_budget_bytes == 0 || self.producer.tenant_spool_bytes == 0 {
            problems.push(
                "producer.spool_budget_bytes, producer.tenant_spool_bytes: must be greater than 0"
                    .into(),
            );
        } else if self.producer.tenant_spool_bytes > self.producer.spool_budget_bytes {
            problems.push(
                "producer.tenant_spool_bytes: must be at most producer.spool_budget_bytes".into(),
            );
        }
        if self.amqp.retry_delays_ms.is_empty()
            || self
                .amqp
                .retry_delays_ms
                .iter()
                .any(|d| *d == 0 || *d > 86_400_000)
        {
            problems.push("amqp.retry_delays_ms: list one to many delays of 1 ms to 24 h".into());
        }
        if !(1..=MAX_SHARE_ROWS_WITH_JOBS).contains(&self.worker.share_rows_with_jobs) {
            problems.push(format!(
                "worker.share_rows_with_jobs: must be between 1 and {MAX_SHARE_ROWS_WITH_JOBS}"
            ));
        }
        if !(1..=256).contains(&self.worker.intra_op_threads) {
            problems.push("worker.intra_op_threads: must be between 1 and 256".into());
        }
        if let Some(d) = &self.worker.device {
            if crate::registry::parse_device(d).is_none() {
                problems.push(format!("worker.device: `{d}`: use auto, cpu or cuda:N"));
            }
        }
        self.validate_webhooks(&mut problems);
        self.validate_tenants(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn validate_tenants(&self, problems: &mut Vec<String>) {
        let t = &self.tenants;
        t.defaults.check("tenants.defaults", problems);
        for (i, k) in t.static_keys.iter().enumerate() {
            let at = format!("tenants.static_keys[{i}]");
            if !valid_tenant_name(&k.tenant) {
                problems.push(format!("{at}.tenant: {TENANT_NAME_RULE}"));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("{at}.sha256: must be 64 hex digits"));
            }
            if let Some(l) = &k.limits {
                l.check(&format!("{at}.limits"), problems);
            }
        }
    }

    fn validate_webhooks(&self, problems: &mut Vec<String>) {
        let w = &self.webhooks;
        for (i, secret) in w.secrets.iter().enumerate() {
            if let Err(e) = crate::webhooks::sign::check_secret(secret) {
                problems.push(format!("webhooks.secrets[{i}]: {e}"));
            }
        }
        if w.schedule_ms.is_empty()
            || w.schedule_ms.len() > 32
            || w.schedule_ms.iter().any(|d| *d > 7 * 86_400_000)
        {
            problems
                .push("webhooks.schedule_ms: list 1 to 32 delays of at most 7 days (in ms)".into());
        }
        if !(100..=120_000).contains(&w.timeout_ms) {
            problems.push("webhooks.timeout_ms: must be between 100 and 120000".into());
        }
        if !(1..=1 << 20).contains(&w.max_response_bytes) {
            problems.push("webhooks.max_response_bytes: must be between 1 and 1048576".into());
        }
        if w.concurrency == 0 {
            problems.push("webhooks.concurrency: must be greater than 0".into());
        }
        if let Some(u) = &w.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                problems.push("webhooks.public_url: must start with http:// or https://".into());
            }
        }
    }

    /// [`RedisConfig::timeout_ms`] as a duration.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.timeout_ms)
    }

    /// The registry file, read and validated.
    pub fn registry(&self) -> Result<crate::registry::Registry, crate::registry::RegistryError> {
        crate::registry::Registry::load(&self.models_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load(None, &[]).unwrap();
        assert_eq!(s.namespace, "infq");
        assert_eq!(s.models_file, PathBuf::from("config/models.toml"));
    }

    #[test]
    fn file_then_overrides() {
        let f = write(
            "namespace = \"prod\"\nmodels_file = \"m.toml\"\n[producer]\nmax_wait_secs = 5\n",
        );
        let s = Settings::load(Some(f.path()), &[("producer.max_wait_secs", 7.into())]).unwrap();
        assert_eq!(s.namespace, "prod");
        assert_eq!(s.producer.max_wait_secs, 7);
        assert_eq!(s.models_file, f.path().parent().unwrap().join("m.toml"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let f = write("[producer]\nmax_wait_sec = 5\n");
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("max_wait_sec"), "{err}");
        let f = write("[producer]\nlisten = \"not an address\"\n");
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let f = write("this is = = not toml");
        assert!(Settings::load(Some(f.path()), &[]).is_err());
    }

    #[test]
    fn bad_values_are_listed_together() {
        let f = write(
            "namespace = \"a b\"\n[amqp]\nurl = \"http://x\"\n[worker]\nintra_op_threads = 0\ndevice = \"tpu\"\nshare_rows_with_jobs = 0\n[producer]\npublish_window = 0\npublish_window_with_jobs = 0\n",
        );
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        for key in [
            "namespace",
            "amqp.url",
            "worker.intra_op_threads",
            "worker.device",
            "producer.publish_window:",
            "producer.publish_window_with_jobs:",
            "worker.share_rows_with_jobs:",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
        // Past the bound, negative, and the setting it replaced.
        let f = write("[worker]\nshare_rows_with_jobs = 16777217\n");
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(
            err.contains("share_rows_with_jobs: must be between 1 and 16777216"),
            "{err}"
        );
        let f = write("[worker]\nshare_rows_with_jobs = -4\n");
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("share_rows_with_jobs"), "{err}");
        let f = write("[worker]\nshare_chunks_with_jobs = 4\n");
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("share_chunks_with_jobs"), "{err}");
        let f = write("[worker]\nshare_rows_with_jobs = 16777216\n");
        assert!(Settings::load(Some(f.path()), &[]).is_ok());
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/no/such/infq.toml")), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)));
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn every_documented_kind_of_setting_passes_against_the_real_defaults() {
        let known = serde_json::to_value(RawSettings::default()).unwrap();
        let ok = vars(&[
            ("INFQ_NAMESPACE", "t1"),
            ("INFQ_MODELS_FILE", "m.toml"),
            ("INFQ_MODELS_POLL_MS", "0"),
            ("INFQ_REDIS__URL", "redis://127.0.0.1:6379/"),
            ("INFQ_AMQP__QUEUE_EXPIRES_MS", "60000"),
            ("INFQ_AMQP__CA_FILE", "/ca.pem"),
            ("INFQ_PRODUCER__SPOOL_DIR", "/tmp"),
            ("INFQ_WEBHOOKS__ALLOW_HOSTS", "[\"127.0.0.1\"]"),
            ("INFQ_TENANTS__DEFAULTS__BURST", "3"),
            ("INFQ_LOG__FILTER", "debug"),
            ("INFQ_CLIENT_URL", "http://127.0.0.1:8080"),
            ("INFQ_URL", "http://127.0.0.1:8080"),
        ]);
        env::check(ok, &known).unwrap();
        let err = env::check(vars(&[("INFQ_PRODUCR__PORT", "1")]), &known)
            .unwrap_err()
            .to_string();
        assert!(err.contains("producer"), "the sections are listed: {err}");
    }
}

//! Configuration, loaded in layers: built-in defaults, then a TOML file
//! (`config/default.toml`), then `INFQ_*` environment variables
//! (`INFQ_REDIS__URL` sets `redis.url`), then command-line flags.
//!
//! Each component reads its own section. [`Settings::load`] validates the
//! result, so a bad value stops start-up with one clear message. Which
//! `INFQ_*` variables are settings, and which belong to the command-line
//! client (`INFQ_CLIENT_*`), is in [`env`](self::env).

mod env;
mod error;

pub use error::ConfigError;

pub use env::{
    CLIENT_API_KEY_ENV, CLIENT_ENV_PREFIX, CLIENT_URL_ENV, CONFIG_ENV, ENV_PREFIX,
    LEGACY_CLIENT_ENV,
};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// RabbitMQ connection and queue settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL (`amqp://` or `amqps://`); `?heartbeat=N` sets the
    /// heartbeat that detects half-open connections.
    pub url: String,
    /// PEM file of certificate authorities trusted for `amqps://` besides
    /// the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a connection to open.
    pub connect_timeout_ms: u64,
    /// Longest wait for the broker to confirm a publish before answering 503.
    pub publish_timeout_ms: u64,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Removes a queue unused for this long (for tests and ephemeral setups).
    pub queue_expires_ms: Option<u64>,
    /// Messages a job queue holds at most; past it the broker refuses
    /// publishes and submissions get `429`. A bulk chunk is one message.
    pub max_queue_length: u64,
    /// Delays of the retry tiers a job waits in before another attempt,
    /// shortest first; attempt n waits in tier n (or the last).
    pub retry_delays_ms: Vec<u64>,
    /// How often queue depths and consumer counts are read for `/metrics`.
    pub stats_interval_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into(),
            ca_file: None,
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
            delivery_limit: 5,
            queue_expires_ms: None,
            max_queue_length: 1_000_000,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            stats_interval_ms: 5_000,
        }
    }
}

/// Redis connection and retention settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL (`redis://` or `rediss://`).
    pub url: String,
    /// PEM file of the certificate authorities trusted for `rediss://`
    /// instead of the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Timeout for connecting and for each command.
    pub timeout_ms: u64,
    /// How long job records and results are kept.
    pub result_ttl_secs: u64,
}

/// `url` without its user name and password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

impl RedisConfig {
    /// A client of the configured server, trusting `ca_file` for
    /// `rediss://` when it is set.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca_file {
            None => redis::Client::open(self.url.as_str()),
            Some(path) => {
                let pem = std::fs::read(path)?;
                redis::Client::build_with_tls(
                    self.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            ca_file: None,
            timeout_ms: 2_000,
            result_ttl_secs: 86_400,
        }
    }
}

/// The HTTP producer's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Largest accepted body of `POST /v1/jobs`.
    pub max_body_bytes: usize,
    /// Longest `?wait=` a client may ask for.
    pub max_wait_secs: u64,
    /// Rows per bulk chunk message: the broker's per-message cost is paid
    /// once per chunk.
    pub chunk_rows: u32,
    /// Most rows in one bulk upload.
    pub max_batch_rows: u64,
    /// Largest bulk upload, in bytes.
    pub max_upload_bytes: u64,
    /// Folder for the spool files that hold validated rows until the whole
    /// upload has passed; the system temporary folder when unset.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Spool bytes all uploads in flight in one producer may hold on disk
    /// together; past it an upload gets `429`.
    pub spool_budget_bytes: u64,
    /// Spool bytes one tenant's uploads in flight in one producer may hold
    /// together: one upload past it gets `413`, and one that others of the
    /// tenant leave no room for gets `429`.
    pub tenant_spool_bytes: u64,
    /// Chunk publishes awaiting their confirm at once, per upload.
    pub publish_window: usize,
    /// How long an `Idempotency-Key` is remembered after its request.
    pub idempotency_ttl_secs: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            max_body_bytes: 1 << 20,
            max_wait_secs: 60,
            chunk_rows: 256,
            max_batch_rows: 10_000_000,
            max_upload_bytes: 4 << 30,
            spool_dir: None,
            spool_budget_bytes: 16 << 30,
            tenant_spool_bytes: 8 << 30,
            publish_window: 256,
            idempotency_ttl_secs: 86_400,
        }
    }
}

/// The worker's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Models this worker serves; empty means every model in the registry.
    pub models: Vec<String>,
    /// Threads libtorch uses inside one operation.
    pub intra_op_threads: usize,
    /// Overrides every model's `device` (`auto`, `cpu`, `cuda:N`).
    pub device: Option<String>,
    /// Longest a shutdown waits for the batch in flight to be stored.
    pub drain_timeout_secs: u64,
    /// Where the worker serves `/metrics`, `/healthz` and `/readyz`.
    pub listen: Option<SocketAddr>,
    /// How long a batch waits for an unreachable store before its jobs are
    /// sent back through the retry tiers.
    pub store_retry_secs: u64,
    /// Retries of one job after transient failures, before it is failed or
    /// dead-lettered.
    pub max_retries: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            intra_op_threads: 1,
            device: None,
            drain_timeout_secs: 30,
            listen: Some("127.0.0.1:9091".parse().expect("static address")),
            store_retry_secs: 10,
            max_retries: 5,
        }
    }
}

/// Webhook callbacks: signing, delivery schedule and the guard against
/// callback URLs that point into the operator's own network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Signing secrets in `whsec_<base64>` form. Every request carries one
    /// signature per secret, so a new secret can be added, receivers moved
    /// to it, and the old one removed. Empty: `webhook_url` is refused.
    pub secrets: Vec<String>,
    /// Delays before each attempt of one event, in ms: the first (usually
    /// 0) after the event, each later one after the previous failure.
    pub schedule_ms: Vec<u64>,
    /// Longest a receiver may take to answer one request.
    pub timeout_ms: u64,
    /// Most bytes of a receiver's answer that are read (and kept, at most
    /// 512 of them, in the delivery log).
    pub max_response_bytes: usize,
    /// Requests in flight at once per dispatcher.
    pub concurrency: u16,
    /// Allows `http://` callback URLs (development and tests only).
    pub allow_http: bool,
    /// Hosts (names or IP addresses, as written in the URL) exempt from the
    /// address checks, e.g. a receiver on loopback in development.
    pub allow_hosts: Vec<String>,
    /// Public base URL of the API, for the results link of
    /// `batch.completed`; the link is a path when unset.
    pub public_url: Option<String>,
    /// Whether this worker runs a dispatcher that sends the events.
    pub dispatch: bool,
}

/// The retry schedule of the Standard Webhooks specification: at once,
/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h.
pub const STANDARD_WEBHOOK_SCHEDULE_MS: [u64; 10] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 50_400_000, 72_000_000,
    86_400_000,
];

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            schedule_ms: STANDARD_WEBHOOK_SCHEDULE_MS.to_vec(),
            timeout_ms: 10_000,
            max_response_bytes: 64 << 10,
            concurrency: 64,
            allow_http: false,
            allow_hosts: Vec::new(),
            public_url: None,
            dispatch: true,
        }
    }
}

impl WebhooksConfig {
    /// Whether callbacks are on: there is a secret to sign them with.
    pub fn enabled(&self) -> bool {
        !self.secrets.is_empty()
    }
}

impl<'a> From<&'a WebhooksConfig> for crate::webhooks::guard::Policy<'a> {
    fn from(cfg: &'a WebhooksConfig) -> Self {
        Self {
            allow_http: cfg.allow_http,
            allow_hosts: &cfg.allow_hosts,
        }
    }
}

/// What one tenant may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Submissions (single jobs and bulk uploads) per second, sustained.
    pub rate_per_sec: f64,
    /// Submissions allowed at once above the sustained rate.
    pub burst: u32,
    /// Jobs and bulk rows accepted but not yet finished, at most.
    pub max_queued: u64,
    /// How long job records, results and batch results are kept.
    pub retention_secs: u64,
}

/// What a tenant name may look like.
pub const TENANT_NAME_RULE: &str = "use 1 to 64 of A-Z, a-z, 0-9, '-' and '_'";

/// Whether `name` can name a tenant (it becomes part of Redis keys).
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Limits {
    /// Adds a problem for each value that cannot work, under `at`.
    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0 && self.rate_per_sec <= 1e6) {
            problems.push(format!(
                "{at}.rate_per_sec: must be above 0 and at most 1000000"
            ));
        }
        if self.burst == 0 {
            problems.push(format!("{at}.burst: must be at least 1"));
        }
        if self.max_queued == 0 {
            problems.push(format!("{at}.max_queued: must be at least 1"));
        }
        if !(60..=366 * 86_400).contains(&self.retention_secs) {
            problems.push(format!(
                "{at}.retention_secs: must be between 60 and 31622400"
            ));
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_sec: 200.0,
            burst: 400,
            max_queued: 1_000_000,
            retention_secs: 86_400,
        }
    }
}

/// An API key known from the configuration rather than created with
/// `infq admin keys create` (the development tenant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// Hex SHA-256 of the key (the key itself is never stored).
    pub sha256: String,
    /// Whether the key may use `/v1/admin`.
    #[serde(default)]
    pub admin: bool,
    /// The tenant's limits; `tenants.defaults` when unset.
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Tenants and their API keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantsConfig {
    /// Limits of a tenant created without limits of its own.
    pub defaults: Limits,
    /// Keys from configuration; production configs have none.
    pub static_keys: Vec<StaticKey>,
    /// How long a producer trusts what it read about a key: a revoked key
    /// stops working within this time.
    pub cache_ms: u64,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        Self {
            defaults: Limits::default(),
            static_keys: Vec::new(),
            cache_ms: 1_000,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Default filter when `RUST_LOG` is unset.
    pub filter: String,
    /// A line when each enabled span closes, with its duration: per job
    /// (`infq::job` at debug) and per batch.
    pub spans: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            json: false,
            filter: "info".into(),
            spans: false,
        }
    }
}

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
        if !(self.amqp.url.starts_with("amqp://") || self.amqp.url.starts_with("amqps://")) {
            problems.push("amqp.url: must start with amqp:// or amqps://".into());
        }
        if !(self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://")) {
            problems.push("redis.url: must start with redis:// or rediss://".into());
        }
        for (key, file) in [
            ("amqp.ca_file", &self.amqp.ca_file),
            ("redis.ca_file", &self.redis.ca_file),
        ] {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                problems.push(format!("{key}: {} is not a readable file", f.display()));
            }
        }
        if self.redis.ca_file.is_some() && !self.redis.url.starts_with("rediss://") {
            problems.push("redis.ca_file: needs a rediss:// redis.url".into());
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

    #[test]
    fn passwords_are_kept_out_of_messages() {
        let r = redacted("rediss://:s3cret@redis.internal:6380/");
        assert!(!r.contains("s3cret") && r.contains("redis.internal"), "{r}");
        assert!(!redacted("amqps://infq:pw@rabbit/%2f").contains("pw@"));
        assert_eq!(redacted("not a url ::"), "(an unparsable URL)");
    }

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
            "namespace = \"a b\"\n[amqp]\nurl = \"http://x\"\n[worker]\nintra_op_threads = 0\ndevice = \"tpu\"\n",
        );
        let err = Settings::load(Some(f.path()), &[]).unwrap_err().to_string();
        for key in [
            "namespace",
            "amqp.url",
            "worker.intra_op_threads",
            "worker.device",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
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

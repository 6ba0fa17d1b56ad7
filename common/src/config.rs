//! Configuration, loaded in layers: built-in defaults, then a TOML file
//! (`config/default.toml`), then `INFQ_*` environment variables
//! (`INFQ_REDIS__URL` sets `redis.url`), then command-line flags.
//!
//! Each component reads its own section. [`Settings::load`] validates the
//! result, so a bad value stops start-up with one clear message. Which
//! `INFQ_*` variables are settings, and which belong to the command-line
//! client (`INFQ_CLIENT_*`), is in [`env`](self::env).

mod amqp;
mod env;
mod error;
mod log;
mod producer;
mod redis;
mod settings;
mod tenants;
mod webhooks;
mod worker;

pub use amqp::AmqpConfig;
pub use env::{
    CLIENT_API_KEY_ENV, CLIENT_ENV_PREFIX, CLIENT_URL_ENV, CONFIG_ENV, ENV_PREFIX,
    LEGACY_CLIENT_ENV,
};
pub use error::ConfigError;
pub use log::LogConfig;
pub use producer::ProducerConfig;
pub use redis::{redacted, RedisConfig, RedisMode};
pub use settings::Settings;
pub use tenants::{valid_tenant_name, Limits, StaticKey, TenantsConfig, TENANT_NAME_RULE};
pub use webhooks::{WebhooksConfig, STANDARD_WEBHOOK_SCHEDULE_MS};
pub use worker::WorkerConfig;

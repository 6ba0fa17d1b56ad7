//! `infq admin`: tenants and API keys, managed in Redis directly with the
//! deployment's configuration (the operator's side; tenants never reach
//! these through the API).

use anyhow::Context;
use clap::{Args, Subcommand};
use infq_common::config::{Limits, Settings};
use infq_common::tenants::{Tenant, TenantStore};
use std::path::PathBuf;

/// Operator commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Tenants: create, list, revoke, rotate webhook secrets.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The model registry: reload.
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// `infq admin models ...`
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Checks the registry file, then tells every producer and worker of
    /// the deployment to reload it: new versions start serving, queued and
    /// running jobs go on.
    Reload {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// Where the configuration comes from.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The deployment's configuration file (`INFQ_<SECTION>__<KEY>` variables apply too).
    #[arg(long, env = "INFQ_CONFIG", default_value = "config/default.toml")]
    config: PathBuf,
}

impl ConfigArg {
    /// The configuration file.
    pub fn path(&self) -> &std::path::Path {
        &self.config
    }
}

/// `infq admin tenants ...`
#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Creates a tenant and prints its first API key (shown once) and its
    /// webhook signing secret.
    Create {
        /// Its name: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'.
        name: String,
        /// Its keys may use /v1/admin (dead letters).
        #[arg(long)]
        admin: bool,
        /// Submissions per second (default: tenants.defaults).
        #[arg(long)]
        rate_per_sec: Option<f64>,
        /// Submissions at once above the rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Jobs and bulk rows accepted and not finished, at most.
        #[arg(long)]
        max_queued: Option<u64>,
        /// How long its records and results are kept, in seconds.
        #[arg(long)]
        retention_secs: Option<u64>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Lists tenants with their limits and key counts.
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Revokes a tenant: every key of it stops working.
    Revoke {
        /// The tenant.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Adds a new webhook signing secret and prints it (old and new both
    /// sign until --drop-oldest removes the old one).
    RotateSecret {
        /// The tenant.
        name: String,
        /// Drops the oldest secret instead of adding one.
        #[arg(long)]
        drop_oldest: bool,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// `infq admin keys ...`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Creates another key for a tenant (shown once).
    Create {
        /// The tenant.
        tenant: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Lists keys (ids, never the keys).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Revokes a key by its id.
    Revoke {
        /// The key id, as `infq admin keys list` shows it.
        id: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

fn store(cfg: &ConfigArg) -> anyhow::Result<TenantStore> {
    let settings = Settings::load(Some(&cfg.config), &[])?;
    let conn = infq_common::redis_link::RedisLink::new(&settings.redis)
        .with_context(|| redis_target(&settings.redis))?;
    Ok(TenantStore::new(conn, &settings))
}

/// The configured Redis, for messages (passwords hidden).
fn redis_target(r: &infq_common::config::RedisConfig) -> String {
    use infq_common::config::{redacted, RedisMode};
    match r.mode {
        RedisMode::Standalone => format!("redis.url {}", redacted(&r.url)),
        m => format!(
            "redis.nodes ({} mode) {}",
            m.as_str(),
            r.nodes
                .iter()
                .map(|n| redacted(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn limits_line(t: &Tenant) -> String {
    let l = &t.limits;
    format!(
        "rate {}/s burst {}, max queued {}, retention {} s",
        l.rate_per_sec, l.burst, l.max_queued, l.retention_secs
    )
}

/// Runs one admin command.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Tenants(TenantsCommand::Create {
            name,
            admin,
            rate_per_sec,
            burst,
            max_queued,
            retention_secs,
            cfg,
        }) => {
            let settings = Settings::load(Some(&cfg.config), &[])?;
            let d = settings.tenants.defaults.clone();
            let limits = Limits {
                rate_per_sec: rate_per_sec.unwrap_or(d.rate_per_sec),
                burst: burst.unwrap_or(d.burst),
                max_queued: max_queued.unwrap_or(d.max_queued),
                retention_secs: retention_secs.unwrap_or(d.retention_secs),
            };
            let (t, entry, key) = store(&cfg)?
                .create_tenant(&name, Some(limits), admin)
                .await?;
            println!("tenant {} created ({})", t.name, limits_line(&t));
            println!("api key (shown once): {key}");
            println!("key id: {}", entry.id);
            println!(
                "webhook signing secret: {}",
                t.webhook_secrets.first().map(String::as_str).unwrap_or("-")
            );
        }
        AdminCommand::Tenants(TenantsCommand::RotateSecret {
            name,
            drop_oldest,
            cfg,
        }) => {
            let s = store(&cfg)?;
            let t = s
                .tenant(&name)
                .await?
                .filter(|t| t.created_at_ms > 0 && !t.revoked)
                .ok_or_else(|| {
                    anyhow::anyhow!("no active tenant {name} created with infq admin")
                })?;
            let mut secrets = t.webhook_secrets;
            if drop_oldest {
                anyhow::ensure!(
                    secrets.len() > 1,
                    "tenant {name} has one secret; add one before dropping the oldest"
                );
                secrets.remove(0);
            } else {
                let new = infq_common::webhooks::sign::generate_secret();
                println!("new webhook signing secret: {new}");
                secrets.push(new);
            }
            let t = s.set_webhook_secrets(&name, secrets).await?;
            println!(
                "tenant {name} signs with {} secret(s)",
                t.webhook_secrets.len()
            );
        }
        AdminCommand::Tenants(TenantsCommand::List { cfg }) => {
            let s = store(&cfg)?;
            let tenants = s.list().await?;
            let keys = s.keys(None).await?;
            if tenants.is_empty() {
                println!("no tenants (keys from the configuration are not listed)");
            }
            for t in tenants {
                let n = keys.iter().filter(|k| k.tenant == t.name).count();
                println!(
                    "{}\t{}{}\t{} key(s)\t{}",
                    t.name,
                    if t.revoked { "revoked" } else { "active" },
                    if t.admin { ", admin" } else { "" },
                    n,
                    limits_line(&t)
                );
            }
        }
        AdminCommand::Tenants(TenantsCommand::Revoke { name, cfg }) => {
            let n = store(&cfg)?.revoke_tenant(&name).await?;
            println!("tenant {name} revoked; {n} key(s) deleted");
        }
        AdminCommand::Keys(KeysCommand::Create { tenant, cfg }) => {
            let (entry, key) = store(&cfg)?.create_key(&tenant).await?;
            println!("api key (shown once): {key}");
            println!("key id: {}", entry.id);
        }
        AdminCommand::Keys(KeysCommand::List { tenant, cfg }) => {
            for k in store(&cfg)?.keys(tenant.as_deref()).await? {
                println!(
                    "{}\t{}\t{}",
                    k.id,
                    k.tenant,
                    infq_common::job::format_ms(k.created_at_ms)
                );
            }
        }
        AdminCommand::Keys(KeysCommand::Revoke { id, cfg }) => {
            if !store(&cfg)?.revoke_key(&id).await? {
                anyhow::bail!("no key with id {id}");
            }
            println!("key {id} revoked");
        }
        AdminCommand::Models(ModelsCommand::Reload { cfg }) => {
            let settings = Settings::load(Some(&cfg.config), &[])?;
            // A file that would fail everywhere is refused here, once.
            let registry = settings.registry()?;
            let mut conn = infq_common::redis_link::RedisLink::new(&settings.redis)
                .with_context(|| redis_target(&settings.redis))?;
            let channel = infq_common::reload::channel(&settings.namespace);
            let heard: u64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("reload")
                .query_async(&mut conn)
                .await?;
            let versions: Vec<String> = registry.models().iter().map(|m| m.id()).collect();
            println!(
                "registry {} ({}) valid; {heard} producer and worker process(es) told to reload",
                settings.models_file.display(),
                versions.join(", ")
            );
        }
    }
    Ok(())
}

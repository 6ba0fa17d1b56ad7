//! `infq audit tail|export`: reads the audit stream `<ns>.audit` straight
//! from the broker, with the deployment's configuration, and writes its
//! records as JSON lines (for a SIEM or an archive).

use crate::admin::ConfigArg;
use anyhow::Context;
use clap::Subcommand;
use infq_common::audit::{Reader, Since};
use infq_common::config::Settings;
use infq_common::topology::Topology;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// `infq audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Prints records as they are appended, as JSON lines, until stopped.
    Tail {
        /// Where to start: first, now, offset:N, an RFC 3339 time or a
        /// span back from now (15m, 2h, 7d).
        #[arg(long, default_value = "now")]
        since: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Writes the records from --since up to the newest as JSON lines,
    /// then stops.
    Export {
        /// Where to start: first, offset:N, an RFC 3339 time or a span back
        /// from now (15m, 2h, 7d).
        #[arg(long)]
        since: String,
        /// Writes to this file rather than to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The export ends once no record has come for this long.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
        idle_ms: u64,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// Runs an audit command.
pub async fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    let now = infq_common::job::now_ms();
    let (since, cfg, out, idle) = match cmd {
        AuditCommand::Tail { since, cfg } => (since, cfg, None, None),
        AuditCommand::Export {
            since,
            out,
            idle_ms,
            cfg,
        } => (since, cfg, out, Some(Duration::from_millis(idle_ms))),
    };
    let since = Since::parse(&since, now).map_err(|e| anyhow::anyhow!("--since {e}"))?;
    if idle.is_some() && since == Since::Now {
        anyhow::bail!("--since now exports nothing: use `infq audit tail` to follow new records");
    }
    let settings = Settings::load(Some(cfg.path()), &[])?;
    let topology = Topology::of(&settings);
    let conn = infq_common::amqp::connect(&settings.amqp, "infq-audit")
        .await
        .context("connecting to the broker")?;
    let stream = topology.audit_stream();
    let mut reader = Reader::open(&conn, &stream, since).await.with_context(|| {
        format!("reading the audit stream {stream} (is auditing on, and has a producer or worker started?)")
    })?;
    let mut sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::LineWriter::new(std::io::stdout())),
    };
    let mut written = 0u64;
    let mut skipped = Vec::new();
    while let Some(entry) = reader.next(idle).await? {
        match entry.records {
            Ok(records) => {
                for r in records {
                    serde_json::to_writer(&mut sink, &r)?;
                    sink.write_all(b"\n")?;
                    written += 1;
                }
            }
            Err(e) => {
                eprintln!(
                    "infq: offset {} is not audit records ({e}); skipped",
                    entry.offset
                );
                skipped.push(entry.offset);
            }
        }
    }
    sink.flush()?;
    infq_common::amqp::close(&conn, "export done").await;
    if let Some(p) = &out {
        eprintln!("{written} records written to {}", p.display());
    }
    if !skipped.is_empty() {
        anyhow::bail!(
            "{} messages of {stream} were not audit records and were skipped (offsets {:?})",
            skipped.len(),
            skipped
        );
    }
    Ok(())
}

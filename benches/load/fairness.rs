//! Fair shares between tenants (README, Fair shares), in two measurements:
//!
//! - a small tenant's 1,000 rows uploaded once a big tenant's backlog has
//!   been accepted (`202`: every chunk on the queue): from the start of
//!   the small upload to its last result, next to the time the backlog
//!   alone would take at the rate it ran;
//! - three tenants uploading the same number of rows at once: each one's
//!   rows per second while all three run, as a share of their sum.

use crate::report::{median, thousands, Report};
use crate::stack::Stack;
use crate::throughput::portfolio;
use crate::Args;
use serde_json::Value;
use std::time::Instant;

/// Rows of the small tenant's batch.
const SMALL_ROWS: usize = 1_000;

pub(crate) async fn fairness(
    args: &Args,
    big_rows: usize,
    each_rows: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let big_file = portfolio(big_rows)?;
    let small_file = portfolio(SMALL_ROWS)?;
    let each_file = portfolio(each_rows)?;
    let (mut small_s, mut backlog_s, mut worst) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        let room = (big_rows + SMALL_ROWS + each_rows) as u64 * 2;
        let big = stack.tenant("big", room).await?;
        let small = stack.tenant("small", room).await?;

        // The backlog, accepted whole; then the small batch.
        let t0 = Instant::now();
        let backlog = stack.upload_as(&big, &big_file).await?;
        let accepted = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let late = stack.upload_as(&small, &small_file).await?;
        let late = stack.wait_batch_as(&small, id(&late)).await?;
        let small_took = t1.elapsed().as_secs_f64();
        let backlog = stack.wait_batch_as(&big, id(&backlog)).await?;
        let backlog_took = t0.elapsed().as_secs_f64() - accepted;
        anyhow::ensure!(
            late["succeeded"].as_u64() == Some(SMALL_ROWS as u64)
                && backlog["succeeded"].as_u64() == Some(big_rows as u64),
            "rows lost: {late} {backlog}"
        );
        small_s.push(small_took);
        backlog_s.push(backlog_took);

        // Three tenants at once.
        let names = ["north", "south", "west"];
        let mut clients = Vec::new();
        for n in names {
            clients.push(stack.tenant(n, room).await?);
        }
        let uploads = clients.iter().map(|c| stack.upload_as(c, &each_file));
        let three: Vec<Value> = futures_util::future::try_join_all(uploads).await?;
        let waits = clients
            .iter()
            .zip(&three)
            .map(|(c, b)| stack.wait_batch_as(c, id(b)));
        let done: Vec<Value> = futures_util::future::try_join_all(waits).await?;
        let rates: Vec<f64> = done
            .iter()
            .map(|b| b["rows_per_second"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let sum: f64 = rates.iter().sum();
        let off = rates
            .iter()
            .map(|r| (r / sum * 3.0 - 1.0).abs())
            .fold(0.0, f64::max);
        worst.push(off);
        eprintln!(
            "fairness run {}: backlog of {} accepted in {accepted:.2} s; {} rows of another tenant done in {small_took:.2} s; backlog done {backlog_took:.2} s after its acceptance; three tenants at {} rows/s each (furthest {:.0}% off a third)",
            run + 1,
            thousands(big_rows as f64),
            SMALL_ROWS,
            rates
                .iter()
                .map(|r| thousands(*r))
                .collect::<Vec<_>>()
                .join(" / "),
            100.0 * off
        );
        stack.stop().await?;
    }
    let small = median(small_s);
    let backlog = median(backlog_s);
    report.row(
        &format!(
            "fair shares: {} rows of tenant B, uploaded after tenant A's {} rows were accepted, upload to last result",
            thousands(SMALL_ROWS as f64),
            thousands(big_rows as f64)
        ),
        format!("{small:.2} s"),
        format!("target: 2 s; A's backlog took {backlog:.1} s"),
        format!("{:.0}% of target", 100.0 * small / 2.0),
    );
    let worst = median(worst);
    report.row(
        &format!(
            "fair shares: three tenants uploading {} rows each at once, furthest share of rows/s from a third",
            thousands(each_rows as f64)
        ),
        format!("{:.0}% off", 100.0 * worst),
        "target: within 15%".into(),
        format!("{:.0}% of target", 100.0 * worst / 0.15),
    );
    Ok(())
}

fn id(batch: &Value) -> &str {
    batch["id"].as_str().unwrap_or_default()
}

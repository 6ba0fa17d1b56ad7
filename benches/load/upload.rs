//! A large upload and the producer's memory: a CSV of `txn-risk` rows (49
//! values each) of about the size asked for, streamed to the producer,
//! with its peak RSS (`VmHWM`) once the upload is accepted. The batch is
//! then cancelled: what is measured is the upload (read, validated,
//! spooled, published with confirms), not the scoring.

use crate::report::{mb, median, Report};
use crate::stack::Stack;
use crate::Args;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// A CSV of `txn-risk` rows of at least `bytes` bytes, cached under
/// target/: 48 history values and a tenure per row, varied by a simple
/// generator so no two neighbouring rows are alike.
fn wide_portfolio(bytes: u64) -> anyhow::Result<(PathBuf, u64)> {
    let dir = infq::procs::bin_dir("bench-data");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("txn-risk-{bytes}.csv"));
    let rows_of = |path: &PathBuf| -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(path.with_extension("rows"))?;
        Ok(text.trim().parse()?)
    };
    if path.exists() {
        if let Ok(rows) = rows_of(&path) {
            return Ok((path, rows));
        }
    }
    let tmp = path.with_extension("tmp");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let header: Vec<String> = (0..48)
        .map(|k| format!("history[{k}]"))
        .chain(["tenure_months".to_string()])
        .collect();
    writeln!(w, "{}", header.join(","))?;
    let mut written = 0u64;
    let mut rows = 0u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut line = String::with_capacity(512);
    while written < bytes {
        line.clear();
        for month in 0..12 {
            // xorshift: spend, payment ratio, utilisation, cash advances.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = (state % 10_000) as f64 / 10_000.0;
            use std::fmt::Write as _;
            write!(
                line,
                "{:.3},{:.3},{:.3},{}{}",
                0.5 + 2.0 * r,
                1.0 - 0.6 * r,
                0.1 + 0.8 * r,
                (state >> 32) % 3,
                if month < 11 { "," } else { "" }
            )?;
        }
        use std::fmt::Write as _;
        writeln!(line, ",{}", 6 + (state >> 40) % 120)?;
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        rows += 1;
    }
    w.flush()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::write(path.with_extension("rows"), rows.to_string())?;
    Ok((path, rows))
}

pub(crate) async fn big_upload(args: &Args, bytes: u64, report: &mut Report) -> anyhow::Result<()> {
    let (file, rows) = wide_portfolio(bytes)?;
    let size = std::fs::metadata(&file)?.len() as f64;
    let (mut peak, mut idle, mut secs) = (vec![], vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        let (_, base_peak) = stack.producer.rss().unwrap_or((0, 0));
        let t0 = Instant::now();
        let accepted = stack
            .upload_query(&stack.http, &file, "model=txn-risk")
            .await?;
        let up = t0.elapsed().as_secs_f64();
        let (_, hwm) = stack.producer.rss().unwrap_or((0, 0));
        anyhow::ensure!(
            accepted["total"].as_u64() == Some(rows),
            "{rows} rows uploaded, accepted: {accepted}"
        );
        let id = accepted["id"].as_str().unwrap_or_default();
        stack.cancel_batch(id).await?;
        eprintln!(
            "upload run {}: {} ({rows} rows) in {up:.1} s, producer peak {} (idle {})",
            run + 1,
            mb(size),
            mb(hwm as f64),
            mb(base_peak as f64)
        );
        peak.push(hwm as f64);
        idle.push(base_peak as f64);
        secs.push(up);
        stack.stop().await?;
    }
    let (p, i, s) = (median(peak), median(idle), median(secs));
    report.row(
        &format!(
            "producer peak RSS during a {} upload ({rows} txn-risk rows, CSV), accepted in {s:.1} s ({:.0} MB/s)",
            mb(size),
            size / s / 1e6
        ),
        mb(p),
        format!("target: at most 100 MB; idle producer: {}", mb(i)),
        format!("{:.0}%", 100.0 * p / 100e6),
    );
    Ok(())
}

//! The Python client's `infq.score` on a portfolio, next to the same file
//! through `infq submit --wait --out` on the same stack: the one call a
//! quant makes against the command line's path, both from a client's
//! start to every result in hand.

use crate::report::{median, thousands, Report};
use crate::stack::Stack;
use crate::throughput::portfolio;
use crate::Args;
use anyhow::Context;
use infq::root;
use std::process::Command;
use std::time::Instant;

/// Reads the file into a frame (not timed), then times `infq.score` on
/// it and checks every row came back, in order.
const SCORE: &str = r#"
import sys, time
import pandas as pd
import infq
df = pd.read_csv(sys.argv[1])
t = time.perf_counter()
out = infq.score(df, "credit-default", progress=False)
took = time.perf_counter() - t
assert len(out) == len(df) and (out.index == df.index).all(), "rows lost or out of order"
assert out["default_probability"].notna().all(), "a row without a score"
print(took)
"#;

pub(crate) async fn python(args: &Args, rows: usize, report: &mut Report) -> anyhow::Result<()> {
    let file = portfolio(rows)?;
    let out = file.with_file_name(format!("cli-results-{rows}.csv"));
    let (mut cli, mut score) = (vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start(&args.profile).await?;
        let url = stack.url("");
        let key = infq_common::tenants::DEV_API_KEY;
        let t0 = Instant::now();
        let status = Command::new(infq::procs::bin_dir(&args.profile).join("infq"))
            .arg("submit")
            .arg(&file)
            .args(["--model", "credit-default", "--quiet", "--out"])
            .arg(&out)
            .env("INFQ_CLIENT_URL", &url)
            .env("INFQ_CLIENT_API_KEY", key)
            .status()
            .context("infq submit")?;
        let cli_s = t0.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "infq submit failed");
        let lines = std::fs::read_to_string(&out)?.lines().count();
        anyhow::ensure!(lines == rows + 1, "{lines} result lines for {rows} rows");
        let py = Command::new(root().join(".venv/bin/python"))
            .args(["-c", SCORE])
            .arg(&file)
            .env("INFQ_URL", &url)
            .env("INFQ_API_KEY", key)
            .output()
            .context("python (run scripts/setup)")?;
        anyhow::ensure!(
            py.status.success(),
            "infq.score failed: {}",
            String::from_utf8_lossy(&py.stderr)
        );
        let score_s: f64 = String::from_utf8_lossy(&py.stdout).trim().parse()?;
        eprintln!(
            "python run {}: infq submit --wait --out {cli_s:.2} s, infq.score {score_s:.2} s",
            run + 1
        );
        cli.push(cli_s);
        score.push(score_s);
        stack.stop().await?;
    }
    let _ = std::fs::remove_file(&out);
    let (cli, score) = (median(cli), median(score));
    let n = thousands(rows as f64);
    report.row(
        &format!("Python `infq.score`, {n}-row frame, to scored frame"),
        format!("{score:.2} s ({} rows/s)", thousands(rows as f64 / score)),
        format!("`infq submit --wait --out`, same file: {cli:.2} s; target at most 1.5x"),
        format!("x{:.2}", score / cli),
    );
    Ok(())
}

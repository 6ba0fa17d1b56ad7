//! `infq submit`, `infq status`, `infq results`: bulk batches from the
//! command line, with progress bars for the upload and the scoring.

use crate::client::Client;
use futures_util::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The upload format of a file: `--format`, else its extension, else CSV.
pub fn format_of(path: &Path, explicit: Option<&str>) -> anyhow::Result<String> {
    let f = match explicit {
        Some(f) => f.to_string(),
        None => match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => "jsonl".into(),
            Some("parquet" | "pq") => "parquet".into(),
            _ => "csv".into(),
        },
    };
    if !["csv", "jsonl", "parquet"].contains(&f.as_str()) {
        anyhow::bail!("--format {f}: use csv, jsonl or parquet");
    }
    Ok(f)
}

/// Uploads `path` with a byte progress bar; returns the accepted batch.
pub async fn upload(
    client: &Client,
    path: &Path,
    model: &str,
    format: &str,
    webhook_url: Option<&str>,
    quiet: bool,
) -> anyhow::Result<Value> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let size = file.metadata().await?.len();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(size)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "upload   [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )?
        .progress_chars("=> "),
    );
    let counted = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16)
        .inspect_ok(move |b| counted.inc(b.len() as u64));
    let accepted = client
        .submit_batch(
            model,
            format,
            webhook_url,
            reqwest::Body::wrap_stream(stream),
        )
        .await;
    match &accepted {
        Ok(v) => bar.finish_with_message(format!(
            "batch {} ({} rows)",
            v["id"].as_str().unwrap_or("?"),
            v["total"]
        )),
        Err(_) => bar.abandon_with_message("refused"),
    }
    Ok(accepted?)
}

/// Follows a batch until it ends, showing rows done, rows/s and time left.
pub async fn follow(client: &Client, id: &str, quiet: bool) -> anyhow::Result<Value> {
    let first = client.get_batch(id, 0.0).await?;
    let total = first["total"].as_u64().unwrap_or(0);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "scoring  [{bar:40}] {human_pos}/{human_len} rows {per_sec} eta {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut batch = first;
    loop {
        let done = batch["succeeded"].as_u64().unwrap_or(0) + batch["failed"].as_u64().unwrap_or(0);
        bar.set_position(done);
        let status = batch["status"].as_str().unwrap_or("");
        if status != "queued" && status != "running" {
            bar.finish_with_message(status.to_string());
            return Ok(batch);
        }
        batch = client.get_batch(id, 1.0).await?;
    }
}

/// Writes a batch's results to `out`, or to stdout without one.
pub async fn results(
    client: &Client,
    id: &str,
    format: &str,
    out: Option<&Path>,
) -> anyhow::Result<u64> {
    match out {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let mut w = tokio::io::BufWriter::new(file);
            Ok(client.download_results(id, format, &mut w).await?)
        }
        None => {
            let mut w = tokio::io::stdout();
            Ok(client.download_results(id, format, &mut w).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_flag_or_extension() {
        assert_eq!(format_of(Path::new("a.csv"), None).unwrap(), "csv");
        assert_eq!(format_of(Path::new("a.jsonl"), None).unwrap(), "jsonl");
        assert_eq!(
            format_of(Path::new("book.parquet"), None).unwrap(),
            "parquet"
        );
        assert_eq!(
            format_of(Path::new("a.txt"), Some("jsonl")).unwrap(),
            "jsonl"
        );
        assert!(format_of(Path::new("a.csv"), Some("xml")).is_err());
    }
}

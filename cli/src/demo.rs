//! `infq demo`: real credit assessments from the Default data set, through
//! the running system, with a short summary.

use crate::client::Client;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// One borrower row of `Default.csv`.
#[derive(Debug, Clone)]
pub struct Row {
    /// 1 if a student.
    pub student: f64,
    /// Average card balance.
    pub balance: f64,
    /// Yearly income.
    pub income: f64,
    /// Whether the borrower defaulted.
    pub defaulted: bool,
}

/// Reads the data set, refusing rows that do not parse (with their line).
pub fn read_default_csv(path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rdr =
        csv::Reader::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let headers = rdr.headers()?.clone();
    if headers.iter().collect::<Vec<_>>() != ["default", "student", "balance", "income"] {
        anyhow::bail!(
            "{}: expected the header default,student,balance,income",
            path.display()
        );
    }
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| anyhow::anyhow!("{}: line {line}: {e}", path.display()))?;
        let num = |k: usize| -> anyhow::Result<f64> {
            rec[k]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: line {line}: `{}` is not a number",
                        path.display(),
                        &rec[k]
                    )
                })
        };
        rows.push(Row {
            defaulted: &rec[0] == "Yes",
            student: if &rec[1] == "Yes" { 1.0 } else { 0.0 },
            balance: num(2)?,
            income: num(3)?,
        });
    }
    Ok(rows)
}

/// Picks `n` rows spread evenly over the file, so the sample mirrors it.
pub fn spread(rows: &[Row], n: usize) -> Vec<Row> {
    if rows.is_empty() || n == 0 {
        return Vec::new();
    }
    let n = n.min(rows.len());
    (0..n).map(|i| rows[i * rows.len() / n].clone()).collect()
}

/// What the demo measured.
#[derive(Debug)]
pub struct Summary {
    /// Jobs submitted.
    pub jobs: usize,
    /// Jobs that succeeded.
    pub succeeded: usize,
    /// Seconds from the first submit to the last result.
    pub seconds: f64,
    /// Mean predicted probability of default.
    pub mean_probability: f64,
    /// Borrowers predicted to default (p > 0.5).
    pub predicted_defaults: usize,
    /// Borrowers who defaulted.
    pub actual_defaults: usize,
    /// Predictions (p > 0.5) that match the outcome.
    pub correct: usize,
    /// Median seconds from submit to result, as the client saw it.
    pub p50: f64,
    /// 99th percentile of the same.
    pub p99: f64,
}

/// Submits every row as a single job, `concurrency` at a time, and waits
/// for each result.
pub async fn run(client: &Client, rows: &[Row], concurrency: usize) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Value, f64)>> = stream::iter(rows)
        .map(|r| async move {
            let t = Instant::now();
            let body = json!({
                "model": "credit-default",
                "inputs": {"student": r.student, "balance": r.balance, "income": r.income},
            });
            let accepted = client.submit_job(&body).await?;
            let id = accepted["id"].as_str().unwrap_or_default().to_string();
            let done = client.get_job(&id, 30.0).await?;
            Ok((done, t.elapsed().as_secs_f64()))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let mut s = Summary {
        jobs: rows.len(),
        succeeded: 0,
        seconds,
        mean_probability: 0.0,
        predicted_defaults: 0,
        actual_defaults: rows.iter().filter(|r| r.defaulted).count(),
        correct: 0,
        p50: 0.0,
        p99: 0.0,
    };
    let mut latencies = Vec::with_capacity(rows.len());
    let mut sum = 0.0;
    for (row, res) in rows.iter().zip(results) {
        let (job, latency) = res?;
        latencies.push(latency);
        if job["status"] != "succeeded" {
            anyhow::bail!(
                "job {} ended {}: {}",
                job["id"],
                job["status"],
                job["error"]
            );
        }
        let p = job["output"]["default_probability"]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("job {} has no default_probability", job["id"]))?;
        s.succeeded += 1;
        sum += p;
        let predicted = p > 0.5;
        s.predicted_defaults += usize::from(predicted);
        s.correct += usize::from(predicted == row.defaulted);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    if !latencies.is_empty() {
        s.p50 = pct(0.5);
        s.p99 = pct(0.99);
    }
    s.mean_probability = sum / s.succeeded.max(1) as f64;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_rows_and_names_bad_lines() {
        let f = file("default,student,balance,income\nNo,Yes,10.5,200\nYes,No,900,1e3\n");
        let rows = read_default_csv(f.path()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].student, 1.0);
        assert!(rows[1].defaulted);
        let f = file("default,student,balance,income\nNo,No,1,2\nNo,No,abc,2\n");
        let err = read_default_csv(f.path()).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("abc"), "{err}");
        let f = file("default,student,balance,income\nNo,No,inf,2\n");
        assert!(read_default_csv(f.path()).is_err());
        let f = file("a,b\n1,2\n");
        assert!(read_default_csv(f.path())
            .unwrap_err()
            .to_string()
            .contains("header"));
        let f = file("default,student,balance,income\nNo,No,1\n");
        assert!(read_default_csv(f.path()).is_err());
    }

    #[test]
    fn spreads_over_the_file() {
        let rows: Vec<Row> = (0..100)
            .map(|i| Row {
                student: 0.0,
                balance: f64::from(i),
                income: 0.0,
                defaulted: false,
            })
            .collect();
        let picked: Vec<f64> = spread(&rows, 4).iter().map(|r| r.balance).collect();
        assert_eq!(picked, vec![0.0, 25.0, 50.0, 75.0]);
        assert_eq!(spread(&rows, 1000).len(), 100);
        assert!(spread(&[], 5).is_empty());
    }
}

//! Apache Parquet bulk files and results against the real RabbitMQ and
//! Redis: a portfolio as pandas writes it, results read back by the
//! parquet crate and by pandas, and hostile files refused. Parsing does
//! not depend on the deployment, so these run once, not again against
//! the clusters of `scripts/test`.

use infq::{load_default_csv, portfolio, root, test_settings, TestEnv};
use serde_json::Value;

async fn upload(env: &TestEnv, query: &str, content_type: &str, body: String) -> reqwest::Response {
    infq::upload_batch(&env.http, &env.base, query, Some(content_type), body).await
}

async fn wait_batch(env: &TestEnv, id: &str) -> Value {
    infq::wait_batch(&env.http, &env.base, id).await
}

/// The record batches of a Parquet file.
fn parquet_batches(bytes: Vec<u8>) -> Vec<arrow_array::RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
        bytes,
    ))
    .expect("a Parquet file")
    .build()
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_as_parquet_match_the_csv_row_for_row() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, UInt64Type};
    use arrow_array::Array;
    let env = TestEnv::start().await.unwrap();
    let (_, csv) = portfolio(100_000);
    let r = upload(&env, "model=credit-default&passthrough=id", "text/csv", csv).await;
    assert_eq!(r.status(), 202);
    let id = infq::id_of(r).await;
    assert_eq!(wait_batch(&env, &id).await["status"], "succeeded");
    let table = infq::batch_results(&env.http, &env.base, &id, "csv").await;
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results")))
        .header("accept", "application/vnd.apache.parquet")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let file = r.bytes().await.unwrap().to_vec();
    // pandas reads it with no options, as a quant would.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.parquet");
    std::fs::write(&path, &file).unwrap();
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .args([
            "-c",
            "import sys, pandas as pd; df = pd.read_parquet(sys.argv[1]); \
             print(len(df), ','.join(df.columns), df['id'].iloc[99999], \
             df['default_probability'].dtype, df['error'].isna().all())",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "100000 row,id,default_probability,model,version,model_sha256,error loan-99999 float32 True"
    );
    let batches = parquet_batches(file);
    assert!(batches.len() > 1, "row groups as the chunks are read");
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "row",
            "id",
            "default_probability",
            "model",
            "version",
            "model_sha256",
            "error"
        ]
    );
    let mut rows = csv::Reader::from_reader(table.as_bytes()).into_records();
    let mut n = 0;
    for b in &batches {
        let row = b.column(0).as_primitive::<UInt64Type>();
        let ids = b.column(1).as_string::<i32>();
        let p = b.column(2).as_primitive::<Float32Type>();
        let sha = b.column(5).as_string::<i32>();
        let error = b.column(6);
        for k in 0..b.num_rows() {
            let rec = rows.next().unwrap().unwrap();
            assert_eq!(row.value(k).to_string(), &rec[0]);
            assert_eq!(ids.value(k), &rec[1]);
            // The float written in CSV is the shortest that reads back
            // as the same f32.
            assert_eq!(
                p.value(k),
                rec[2].parse::<f32>().unwrap(),
                "row {}",
                &rec[0]
            );
            assert_eq!(sha.value(k), &rec[5]);
            assert!(error.is_null(k));
            n += 1;
        }
    }
    assert_eq!(n, 100_000);
    assert!(rows.next().is_none());

    // An explained batch of the recurrent model: reasons, each feature's
    // attribution, and the tensor's values one by one.
    let body: String = infq::txn_rows(40, 5)
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let r = upload(
        &env,
        "model=txn-risk&explain=true",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = infq::id_of(r).await;
    assert_eq!(wait_batch(&env, &id).await["status"], "succeeded");
    let jsonl = infq::batch_results(&env.http, &env.base, &id, "jsonl").await;
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = env
        .http
        .get(env.url(&format!("/v1/batches/{id}/results?format=parquet")))
        .send()
        .await
        .unwrap();
    let batches = parquet_batches(r.bytes().await.unwrap().to_vec());
    let b = &batches[0];
    assert_eq!(b.num_rows(), 40);
    let col = |name: &str| b.column_by_name(name).unwrap_or_else(|| panic!("{name}"));
    for (k, line) in lines.iter().enumerate() {
        let e = &line["explanation"];
        let reasons: Vec<&str> = e["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        for (j, name) in ["reason_1", "reason_2"].iter().enumerate() {
            let c = col(name).as_string::<i32>();
            let got = (!c.is_null(k)).then(|| c.value(k));
            assert_eq!(got, reasons.get(j).copied(), "row {} {name}", k + 1);
        }
        let tenure = col("attribution_tenure_months").as_primitive::<Float32Type>();
        assert_eq!(
            tenure.value(k),
            e["attributions"]["tenure_months"].as_f64().unwrap() as f32
        );
        let list = col("elements_history").as_list::<i32>().value(k);
        let values = list.as_primitive::<Float32Type>();
        let want = e["elements"]["history"].as_array().unwrap();
        assert_eq!(values.len(), want.len());
        for (a, w) in values.values().iter().zip(want) {
            assert_eq!(*a, w.as_f64().unwrap() as f32);
        }
    }
    env.stop().await.unwrap();
}

/// A Parquet file of `n` rows of the portfolio: `loan_id` (strings),
/// `student` by name, `balance` as float64 and `income` as int64, the
/// types a pandas export of such a table has; `columns` picks and orders
/// them.
fn portfolio_parquet(n: usize, columns: &[&str]) -> Vec<u8> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    let base = load_default_csv(&root().join("data/Default.csv")).unwrap();
    let row = |i: usize| base[i % base.len()];
    let column = |name: &str, from: usize, to: usize| -> ArrayRef {
        match name {
            "loan_id" => std::sync::Arc::new(StringArray::from_iter_values(
                (from..to).map(|i| format!("loan-{i}")),
            )),
            "student" => std::sync::Arc::new(StringArray::from_iter_values((from..to).map(|i| {
                if row(i).student == 1.0 {
                    "Yes"
                } else {
                    "No"
                }
            }))),
            "balance" => std::sync::Arc::new(Float64Array::from_iter_values(
                (from..to).map(|i| f64::from(row(i).balance + (i / base.len()) as f32)),
            )),
            "income" => std::sync::Arc::new(Int64Array::from_iter_values(
                (from..to).map(|i| row(i).income.round() as i64),
            )),
            // A name the model does not know, in row 7.
            "student_maybe" => {
                std::sync::Arc::new(StringArray::from_iter_values((from..to).map(|i| {
                    if i == 6 {
                        "Maybe"
                    } else {
                        "No"
                    }
                })))
            }
            // A feature of the wrong type: text where numbers belong.
            "balance_text" => std::sync::Arc::new(StringArray::from_iter_values(
                (from..to).map(|i| format!("{}", row(i).balance)),
            )),
            other => panic!("{other}"),
        }
    };
    let fields: Vec<(String, ArrayRef)> = columns
        .iter()
        .map(|c| {
            (
                c.replace("_text", "").replace("_maybe", ""),
                column(c, 0, 1),
            )
        })
        .collect();
    let schema = RecordBatch::try_from_iter(fields).unwrap().schema();
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None).unwrap();
    for from in (0..n).step_by(30_000) {
        let to = (from + 30_000).min(n);
        let arrays: Vec<ArrayRef> = columns.iter().map(|c| column(c, from, to)).collect();
        w.write(&RecordBatch::try_new(schema.clone(), arrays).unwrap())
            .unwrap();
    }
    w.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_portfolio_comes_back_as_parquet_like_its_csv() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    let env = TestEnv::start().await.unwrap();
    const N: usize = 100_000;
    let file = portfolio_parquet(N, &["loan_id", "student", "balance", "income"]);
    let r = infq::upload_batch(
        &env.http,
        &env.base,
        "model=credit-default&passthrough=loan_id",
        Some("application/vnd.apache.parquet"),
        file,
    )
    .await;
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let from_parquet = infq::id_of(r).await;
    // The same rows as CSV (the balance written as the f32 it is).
    let base = load_default_csv(&root().join("data/Default.csv")).unwrap();
    let mut csv = String::from("loan_id,student,balance,income\n");
    for i in 0..N {
        let b = base[i % base.len()];
        let student = if b.student == 1.0 { "Yes" } else { "No" };
        let balance = b.balance + (i / base.len()) as f32;
        csv.push_str(&format!(
            "loan-{i},{student},{balance},{}\n",
            b.income.round() as i64
        ));
    }
    let r = upload(
        &env,
        "model=credit-default&passthrough=loan_id",
        "text/csv",
        csv,
    )
    .await;
    assert_eq!(r.status(), 202);
    let from_csv = infq::id_of(r).await;
    let mut tables = Vec::new();
    for id in [&from_parquet, &from_csv] {
        assert_eq!(wait_batch(&env, id).await["status"], "succeeded");
        let r = env
            .http
            .get(env.url(&format!("/v1/batches/{id}/results?format=parquet")))
            .send()
            .await
            .unwrap();
        let mut ids = Vec::with_capacity(N);
        let mut p = Vec::with_capacity(N);
        for b in parquet_batches(r.bytes().await.unwrap().to_vec()) {
            ids.extend(
                b.column_by_name("loan_id")
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_string()),
            );
            p.extend(
                b.column_by_name("default_probability")
                    .unwrap()
                    .as_primitive::<Float32Type>()
                    .iter()
                    .map(Option::unwrap),
            );
        }
        tables.push((ids, p));
    }
    assert_eq!(tables[0].0.len(), N);
    assert_eq!(tables[0].0[N - 1], format!("loan-{}", N - 1));
    assert_eq!(tables[0], tables[1], "loan ids and outputs as from the CSV");
    env.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parquet_files_are_refused_naming_the_problem_and_enqueue_nothing() {
    // No worker: whatever is enqueued stays to be counted.
    let settings = test_settings();
    let env = TestEnv::start_with(settings.clone(), false).await.unwrap();
    let good = portfolio_parquet(1000, &["loan_id", "student", "balance", "income"]);
    let truncated = good[..good.len() / 2].to_vec();
    let cases = vec![
        (
            "a feature of the wrong type",
            "model=credit-default",
            portfolio_parquet(10, &["student", "balance_text", "income"]),
            "balance",
            "expected numbers",
        ),
        (
            "a missing feature",
            "model=credit-default",
            portfolio_parquet(10, &["student", "balance"]),
            "income",
            "missing column",
        ),
        (
            "an unknown passthrough column",
            "model=credit-default&passthrough=branch",
            good.clone(),
            "branch",
            "unknown passthrough column",
        ),
        (
            "a category the model does not know",
            "model=credit-default",
            portfolio_parquet(10, &["student_maybe", "balance", "income"]),
            "student",
            "`Maybe` is not one of No (0), Yes (1)",
        ),
        (
            "a truncated file",
            "model=credit-default",
            truncated,
            "",
            "not a readable Parquet file",
        ),
        (
            "not Parquet at all",
            "model=credit-default",
            b"student,balance,income\n0,1,2\n".to_vec(),
            "",
            "not a readable Parquet file",
        ),
    ];
    for (what, query, body, field, message) in cases {
        let r = infq::upload_batch(
            &env.http,
            &env.base,
            query,
            Some("application/vnd.apache.parquet"),
            body,
        )
        .await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{what}: {v}");
        let detail = &v["error"]["details"][0];
        assert!(
            detail["message"].as_str().unwrap().contains(message),
            "{what}: {v}"
        );
        if !field.is_empty() {
            assert_eq!(detail["field"], field, "{what}: {v}");
        }
    }
    assert_eq!(
        env.bulk_queued("credit-default").await,
        0,
        "nothing enqueued"
    );
    assert!(env.records().await.is_empty(), "no record");
    env.stop().await.unwrap();
}

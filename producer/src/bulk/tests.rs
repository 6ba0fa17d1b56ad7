//! Reading CSV and JSONL uploads: rows in schema order, every problem
//! with its line, and the limits.

use super::*;
use infq_common::registry::Registry;
use std::path::Path;

fn spec() -> ModelSpec {
    Registry::parse(
        r#"
[[model]]
name = "credit-default"
version = "1"
path = "x.pt"
inputs = [{ name = "student", min = 0, max = 1 }, { name = "balance", min = 0 }, { name = "income" }]
outputs = [{ name = "p" }]
"#,
        Path::new("models.toml"),
        Path::new("."),
    )
    .unwrap()
    .models()[0]
    .clone()
}

fn read(format: Format, text: &str) -> (Report, Vec<f32>) {
    let mut spool = Vec::new();
    let report = read_rows(format, text.as_bytes(), &spec(), &mut spool, 1000).unwrap();
    let mut r = SpoolReader::new(spool.as_slice(), 3, report.rows);
    let mut all = Vec::new();
    while let Some(chunk) = r.next_chunk(2).unwrap() {
        all.extend(chunk);
    }
    (report, all)
}

fn lines(r: &Report) -> Vec<u64> {
    r.problems.iter().map(|p| p.line.unwrap()).collect()
}

#[test]
fn csv_columns_in_any_order_with_extras() {
    let (r, rows) = read(
        Format::Csv,
        "id, income ,balance,student\na,40000.5,729.5,0\nb, 1e3 ,0,1\nc,\u{2003}7\t, 2,\u{a0}0\n",
    );
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.rows, 3);
    // Headers and fields lose their whitespace, Unicode's included.
    assert_eq!(
        rows,
        vec![0.0, 729.5, 40000.5, 1.0, 0.0, 1000.0, 0.0, 2.0, 7.0]
    );
}

#[test]
fn csv_problems_name_their_lines() {
    let text = "student,balance,income\n0,1,2\n0,x,2\n1,2\n5,1,1\n0,1,1e39\n\n0,1,2\n";
    let (r, _) = read(Format::Csv, text);
    assert_eq!(lines(&r), vec![3, 4, 5, 6]);
    assert!(r.problems[0].message.contains("`x` is not a number"));
    assert!(r.problems[1].message.contains("2 fields"));
    assert_eq!(r.problems[2].field.as_deref(), Some("student"));
    assert!(r.problems[3].message.contains("finite"));
    assert_eq!(r.rows, 2);
}

#[test]
fn csv_header_problems() {
    let (r, _) = read(Format::Csv, "student,balance\n0,1\n");
    assert_eq!(r.problems[0].field.as_deref(), Some("income"));
    assert_eq!(r.problems[0].line, Some(1));
    let (r, _) = read(Format::Csv, "student,balance,income,income\n0,1,2,3\n");
    assert!(r.problems[0].message.contains("more than once"));
    let (r, _) = read(Format::Csv, "");
    assert_eq!(r.problems.len(), 1);
    let (r, _) = read(Format::Csv, "student,balance,income\n");
    assert!(r.problems[0].message.contains("no data rows"));
}

#[test]
fn hostile_csv_is_reported_not_fatal() {
    let mut text = String::from("student,balance,income\n");
    text.push_str("\"0,1,2\n");
    text.push_str(&format!("0,{},2\n", "9".repeat(10_000)));
    let (r, _) = read(Format::Csv, &text);
    assert!(!r.problems.is_empty());
    let mut bytes = b"student,balance,income\n0,1,".to_vec();
    bytes.extend([0xff, 0xfe, b'\n']);
    let mut spool = Vec::new();
    let r = read_rows(Format::Csv, bytes.as_slice(), &spec(), &mut spool, 10).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
}

#[test]
fn stops_after_a_hundred_problems() {
    let mut text = String::from("student,balance,income\n");
    for _ in 0..500 {
        text.push_str("0,bad,1\n");
    }
    let (r, _) = read(Format::Csv, &text);
    assert_eq!(r.problems.len(), MAX_PROBLEMS);
    assert!(r.truncated);
}

#[test]
fn endless_lines_are_refused() {
    let mut spool = Vec::new();
    let text = format!(
        "student,balance,income\n0,{}",
        "9".repeat(MAX_RECORD_BYTES as usize + 10)
    );
    for format in [Format::Csv, Format::Jsonl] {
        let err = read_rows(format, text.as_bytes(), &spec(), &mut spool, 10).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(RecordTooLong::of(&err).map(|e| e.line), Some(2), "{err}");
    }
}

#[test]
fn row_limit() {
    let mut spool = Vec::new();
    let text = "student,balance,income\n0,1,2\n0,1,2\n0,1,2\n";
    let r = read_rows(Format::Csv, text.as_bytes(), &spec(), &mut spool, 2).unwrap();
    assert!(r.problems[0].message.contains("more than 2 rows"));
}

#[test]
fn jsonl_named_positional_and_wrapped() {
    let text = "{\"student\":0,\"balance\":1,\"income\":2}\n\n[1,3,4]\n{\"inputs\":[0,5,6]}\n";
    let (r, rows) = read(Format::Jsonl, text);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(rows, vec![0.0, 1.0, 2.0, 1.0, 3.0, 4.0, 0.0, 5.0, 6.0]);
}

#[test]
fn jsonl_problems_carry_line_and_field() {
    let text = "[0,1,2]\n{\"student\":0}\nnot json\n[0,1]\n[2,1,1]\n";
    let (r, _) = read(Format::Jsonl, text);
    assert_eq!(lines(&r), vec![2, 2, 3, 4, 5]);
    assert_eq!(r.problems[0].field.as_deref(), Some("inputs.balance"));
    assert_eq!(r.rows, 1);
}

#[test]
fn formats_are_detected() {
    assert_eq!(Format::detect(Some("jsonl"), None), Ok(Format::Jsonl));
    assert_eq!(
        Format::detect(None, Some("application/x-ndjson; charset=utf-8")),
        Ok(Format::Jsonl)
    );
    assert_eq!(Format::detect(None, Some("text/csv")), Ok(Format::Csv));
    assert_eq!(Format::detect(Some("parquet"), None), Ok(Format::Parquet));
    assert_eq!(
        Format::detect(None, Some("application/vnd.apache.parquet")),
        Ok(Format::Parquet)
    );
    assert_eq!(Format::detect(None, None), Ok(Format::Csv));
    assert!(Format::detect(Some("xml"), None).is_err());
}

fn categorical_spec() -> ModelSpec {
    Registry::parse(
        r#"
[[model]]
name = "credit-default"
version = "1"
path = "x.pt"
inputs = [{ name = "student", min = 0, max = 1, categories = { No = 0, Yes = 1 } }, { name = "balance", min = 0 }, { name = "income" }]
outputs = [{ name = "p" }]
"#,
        Path::new("models.toml"),
        Path::new("."),
    )
    .unwrap()
    .models()[0]
    .clone()
}

fn read_with(format: Format, delimiter: Option<u8>, text: &str) -> (Report, Vec<f32>) {
    let mut spool = Vec::new();
    let spec = categorical_spec();
    let report = read_upload(
        format,
        delimiter,
        text.as_bytes(),
        &spec,
        &mut spool,
        &mut Passthrough::none(),
        1000,
    )
    .unwrap();
    let rows = spool
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (report, rows)
}

#[test]
fn categories_are_read_by_name_in_csv_and_jsonl_and_others_refused_with_the_names() {
    // The Default data set as the islp package ships it.
    let text = "default,student,balance,income\nNo,No,729.5,44361.6\nNo,Yes,817.2,12106.1\n";
    let (r, rows) = read_with(Format::Csv, None, text);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(rows, vec![0.0, 729.5, 44361.6, 1.0, 817.2, 12106.1]);
    let (r, _) = read_with(
        Format::Csv,
        None,
        "student,balance,income\nMaybe,1,2\n0.5,1,2\n1,1,2\n",
    );
    assert_eq!(r.rows, 1, "the code 1 is accepted");
    assert_eq!(
        r.problems[0].message,
        "`Maybe` is not one of No (0), Yes (1)"
    );
    assert_eq!(r.problems[1].message, "must be one of No (0), Yes (1)");
    let jsonl = "{\"student\":\"Yes\",\"balance\":1,\"income\":2}\n{\"student\":\"yes\",\"balance\":1,\"income\":2}\n[\"No\",1,2]\n{\"student\":true,\"balance\":1,\"income\":2}\n";
    let (r, rows) = read_with(Format::Jsonl, None, jsonl);
    assert_eq!(r.rows, 2, "{:?}", r.problems);
    assert_eq!(rows, vec![1.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    assert_eq!(lines(&r), vec![2, 4]);
    assert!(r.problems[0]
        .message
        .contains("`yes` is not one of No (0), Yes (1)"));
    assert!(r.problems[1].message.contains("must be one of No, Yes"));
}

#[test]
fn semicolon_files_are_read_with_decimal_commas_given_or_found() {
    let text = "student;balance;income\nYes;1234,5;40000\n\"No\";\"7,25\";1e3\n";
    for delimiter in [None, Some(b';')] {
        let (r, rows) = read_with(Format::Csv, delimiter, text);
        assert!(r.problems.is_empty(), "{delimiter:?}: {:?}", r.problems);
        assert_eq!(rows, vec![1.0, 1234.5, 40000.0, 0.0, 7.25, 1000.0]);
    }
    // Tabs and bars too; a comma inside quotes does not count.
    assert_eq!(sniff(b"student\tbalance\tincome\n1,2"), b'\t');
    assert_eq!(sniff(b"\"a,b\";c;d"), b';');
    assert_eq!(sniff(b"a|b|c"), b'|');
    assert_eq!(sniff(b"alone"), b',');
    assert_eq!(sniff(b"a,b;c"), b',', "a tie goes to the comma");
    // Decimal commas are not read in a comma-separated file, and a given
    // delimiter wins over the header's.
    let (r, _) = read_with(Format::Csv, Some(b','), text);
    assert!(
        r.problems[0].message.contains("missing column"),
        "{:?}",
        r.problems
    );
    assert!(parse_delimiter("tab").is_ok() && parse_delimiter("::").is_err());
}

#[test]
fn a_header_longer_than_the_peek_still_reads() {
    let mut text = format!("{},student,balance,income\n", "x".repeat(100 << 10));
    text.push_str(&format!("{},1,2,3\n", "y".repeat(100 << 10)));
    let mut spool = Vec::new();
    let spec = categorical_spec();
    let r = read_upload(
        Format::Csv,
        None,
        text.as_bytes(),
        &spec,
        &mut spool,
        &mut Passthrough::none(),
        10,
    )
    .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.rows, 1);
}

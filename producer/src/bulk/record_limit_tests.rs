//! The record limit as the bulk readers meet it: a record, however it is
//! quoted, is refused once it passes the limit, and never before.

use crate::bulk::{read_rows, read_rows_within, Format, Report};
use crate::record_limit::{RecordTooLong, MAX_RECORD_BYTES, READ_AHEAD_BYTES};
use infq_common::registry::{ModelSpec, Registry};
use std::io::Read;
use std::path::Path;

fn spec() -> ModelSpec {
    Registry::parse(
        r#"
[[model]]
name = "m"
version = "1"
path = "x.pt"
inputs = [{ name = "student" }, { name = "balance" }, { name = "income" }]
outputs = [{ name = "p" }]
"#,
        Path::new("models.toml"),
        Path::new("."),
    )
    .unwrap()
    .models()[0]
        .clone()
}

/// An upload made as it is read: `head`, then `unit` again and again
/// up to `total` bytes; `pos` says how much was read.
struct Endless {
    head: Vec<u8>,
    unit: Vec<u8>,
    total: u64,
    pos: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() && self.pos < self.total {
            let p = self.pos as usize;
            buf[n] = match self.head.get(p) {
                Some(b) => *b,
                None => self.unit[(p - self.head.len()) % self.unit.len()],
            };
            n += 1;
            self.pos += 1;
        }
        Ok(n)
    }
}

fn csv(text: &str, limit: u64) -> std::io::Result<Report> {
    let mut spool = Vec::new();
    read_rows_within(
        Format::Csv,
        text.as_bytes(),
        &spec(),
        &mut spool,
        100,
        limit,
    )
}

#[test]
fn a_quoted_field_with_line_breaks_stops_at_the_record_limit() {
    let head = b"student,balance,income\n0,1,2\n0,\"".to_vec();
    let mut upload = Endless {
        head,
        unit: [vec![b'x'; 99], vec![b'\n']].concat(),
        total: 64 << 20,
        pos: 0,
    };
    let mut spool = Vec::new();
    let err = read_rows(Format::Csv, &mut upload, &spec(), &mut spool, 100).unwrap_err();
    let too_long = RecordTooLong::of(&err).expect("a record too long");
    let start = "student,balance,income\n0,1,2\n".len() as u64;
    assert_eq!(
        too_long,
        &RecordTooLong {
            line: 3,
            offset: start,
            limit: MAX_RECORD_BYTES
        }
    );
    assert!(err
        .to_string()
        .starts_with("line 3: a record is longer than 1048576 bytes"));
    assert!(
        upload.pos <= start + MAX_RECORD_BYTES + READ_AHEAD_BYTES,
        "read {} bytes of the upload",
        upload.pos
    );
}

#[test]
fn records_up_to_the_limit_pass_and_longer_ones_do_not() {
    let head = "student,balance,income\n";
    // 7 bytes around the quoted text: `0,1,"` and `"\n`.
    let record = |k: usize| format!("0,1,\"{}\"\n", "ab\n".repeat(k / 3));
    assert_eq!(record(993).len(), 1000);
    let r = csv(&format!("{head}{}0,1,2\n", record(993)), 1000).unwrap();
    assert_eq!(r.rows, 1);
    assert_eq!(r.problems.len(), 1, "the quoted text is not a number");
    let err = csv(&format!("{head}{}", record(996)), 1000).unwrap_err();
    assert_eq!(RecordTooLong::of(&err).map(|e| e.line), Some(2));
    // At the end of the upload, without its line break.
    let last = record(993);
    let r = csv(&format!("{head}0,1,2\n{}", last.trim_end()), 999).unwrap();
    assert_eq!(r.rows, 1);
    // Unquoted, one line.
    let err = csv(&format!("{head}0,1,{}\n", "9".repeat(2000)), 1000).unwrap_err();
    assert_eq!(RecordTooLong::of(&err).map(|e| e.offset), Some(23));
    // The header is a record too.
    let err = csv(&format!("\"{}\",balance\n", "s\n".repeat(600)), 1000).unwrap_err();
    assert_eq!(RecordTooLong::of(&err).map(|e| e.line), Some(1));
}

#[test]
fn the_limit_is_per_record_not_per_upload() {
    let mut upload = Endless {
        head: b"student,balance,income\n".to_vec(),
        unit: b"0,\"1\n\",2\n".to_vec(),
        total: 23 + 9 * 5000,
        pos: 0,
    };
    let mut spool = Vec::new();
    let r = read_rows_within(Format::Csv, &mut upload, &spec(), &mut spool, 10_000, 100).unwrap();
    assert_eq!(r.rows, 5000, "{:?}", r.problems.first());
}

#[test]
fn jsonl_lines_up_to_the_limit_pass_and_longer_ones_do_not() {
    let line = |n: usize| format!("[0,1,{}2]", " ".repeat(n - 7));
    assert_eq!(line(100).len(), 100);
    let mut spool = Vec::new();
    let text = format!("[0,1,2]\n{}\n", line(100));
    let r = read_rows_within(Format::Jsonl, text.as_bytes(), &spec(), &mut spool, 10, 100).unwrap();
    assert_eq!(r.rows, 2);
    let text = format!("[0,1,2]\n{}\n", line(101));
    let err =
        read_rows_within(Format::Jsonl, text.as_bytes(), &spec(), &mut spool, 10, 100).unwrap_err();
    assert_eq!(
        RecordTooLong::of(&err),
        Some(&RecordTooLong {
            line: 2,
            offset: 8,
            limit: 100
        })
    );
}

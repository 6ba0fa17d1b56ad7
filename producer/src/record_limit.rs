//! The bound on one record of a bulk upload: whatever its quoting, no
//! record is buffered past [`MAX_RECORD_BYTES`].
//!
//! Counting bytes between line breaks is not enough for CSV: a quoted field
//! may hold line breaks, and the CSV reader keeps a whole record in memory,
//! so one quoted field could grow as large as the upload. [`RecordLimit`]
//! sits between the upload and the CSV reader and counts the bytes fed to
//! it since the record being read began; [`LineLimit`] does the same for
//! JSONL, where a record is a line.

use std::io::Read;

/// Longest record (CSV) or line (JSONL) of an upload, in bytes.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;

/// Bytes fed to the CSV reader past the record limit before it is
/// stopped: its read buffer (the CSV reader's default capacity) may run
/// ahead of the record it is parsing. At least 1, so that a record of
/// exactly the limit that ends the upload is not refused.
pub const READ_AHEAD_BYTES: u64 = 8 << 10;

/// A record of an upload is longer than the limit ([`MAX_RECORD_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: a record is longer than {limit} bytes (a quoted field may hold line breaks, but no record may pass this limit)")]
pub struct RecordTooLong {
    /// Line on which the record begins.
    pub line: u64,
    /// Byte offset in the upload at which the record begins.
    pub offset: u64,
    /// The limit, in bytes.
    pub limit: u64,
}

impl RecordTooLong {
    /// As the I/O error the readers fail with.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }

    /// The [`RecordTooLong`] inside `e`, if that is what it is.
    pub fn of(e: &std::io::Error) -> Option<&RecordTooLong> {
        e.get_ref().and_then(|r| r.downcast_ref::<RecordTooLong>())
    }
}

/// Feeds a CSV reader, never more than the limit plus
/// [`READ_AHEAD_BYTES`] past the start of the record being read
/// ([`RecordLimit::next_record`]). The reader asks for bytes only once it
/// has parsed all it was given, so when this refuses, the record has
/// already passed the limit: a record within it is never refused.
pub struct RecordLimit<R> {
    inner: R,
    max: u64,
    pulled: u64,
    start: u64,
    line: u64,
}

impl<R> RecordLimit<R> {
    /// Wraps the upload, with records of at most `max` bytes (line breaks
    /// included); the first record starts at byte 0 on line 1.
    pub fn new(inner: R, max: u64) -> Self {
        Self {
            inner,
            max,
            pulled: 0,
            start: 0,
            line: 1,
        }
    }

    /// Ends the record being read, which the CSV reader finished at `end`:
    /// refuses it if it passed the limit (the feed lets it run a little
    /// past), else the next record starts there.
    pub fn next_record(&mut self, end: &csv::Position) -> Result<(), RecordTooLong> {
        if end.byte().saturating_sub(self.start) > self.max {
            return Err(self.too_long());
        }
        self.start = end.byte();
        self.line = end.line();
        Ok(())
    }

    /// The error for the record marked last.
    pub fn too_long(&self) -> RecordTooLong {
        RecordTooLong {
            line: self.line,
            offset: self.start,
            limit: self.max,
        }
    }

    /// Bytes read from the upload so far.
    pub fn pulled(&self) -> u64 {
        self.pulled
    }
}

impl<R: Read> Read for RecordLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = self.start + self.max + READ_AHEAD_BYTES;
        let allowed = end.saturating_sub(self.pulled);
        if allowed == 0 {
            return Err(self.too_long().into_io());
        }
        let take = buf
            .len()
            .min(usize::try_from(allowed).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..take])?;
        self.pulled += n as u64;
        Ok(n)
    }
}

/// Passes bytes through, failing once a line grows past the limit (JSONL,
/// where a record is a line).
pub struct LineLimit<R> {
    inner: R,
    max: u64,
    run: u64,
    line: u64,
    offset: u64,
}

impl<R> LineLimit<R> {
    /// Wraps the upload, with lines of at most `max` bytes (the line break
    /// not counted).
    pub fn new(inner: R, max: u64) -> Self {
        Self {
            inner,
            max,
            run: 0,
            line: 1,
            offset: 0,
        }
    }
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            self.offset += 1;
            if b == b'\n' {
                self.run = 0;
                self.line += 1;
            } else {
                self.run += 1;
                if self.run > self.max {
                    return Err(RecordTooLong {
                        line: self.line,
                        offset: self.offset - self.run,
                        limit: self.max,
                    }
                    .into_io());
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::{read_rows, read_rows_within, Format, Report};
    use infq_common::registry::{ModelSpec, Registry};
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
        let r =
            read_rows_within(Format::Csv, &mut upload, &spec(), &mut spool, 10_000, 100).unwrap();
        assert_eq!(r.rows, 5000, "{:?}", r.problems.first());
    }

    #[test]
    fn jsonl_lines_up_to_the_limit_pass_and_longer_ones_do_not() {
        let line = |n: usize| format!("[0,1,{}2]", " ".repeat(n - 7));
        assert_eq!(line(100).len(), 100);
        let mut spool = Vec::new();
        let text = format!("[0,1,2]\n{}\n", line(100));
        let r =
            read_rows_within(Format::Jsonl, text.as_bytes(), &spec(), &mut spool, 10, 100).unwrap();
        assert_eq!(r.rows, 2);
        let text = format!("[0,1,2]\n{}\n", line(101));
        let err = read_rows_within(Format::Jsonl, text.as_bytes(), &spec(), &mut spool, 10, 100)
            .unwrap_err();
        assert_eq!(
            RecordTooLong::of(&err),
            Some(&RecordTooLong {
                line: 2,
                offset: 8,
                limit: 100
            })
        );
    }
}

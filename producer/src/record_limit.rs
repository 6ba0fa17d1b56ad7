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

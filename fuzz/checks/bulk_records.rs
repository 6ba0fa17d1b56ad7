//! Bulk uploads with long records, through the producer's own readers:
//! CSV whose quoted fields hold line breaks, and JSONL. An input is a short
//! program that expands, as it is read, into an upload of up to
//! [`MAX_UPLOAD`] bytes, so that a few bytes make records far past the
//! record limit (a small one, [`LIMIT`], for speed; the producer uses the
//! same code with 1 MiB).
//!
//! Invariants: what the readers allocate stays bounded by the record
//! limit, whatever the upload's size (a record over it is refused, never
//! buffered whole); a refusal comes within the limit's reach of the
//! record's start and, for JSONL, names a line that really is too long,
//! by its number; every spooled row is finite and of the model's width.
//!
//! The program: byte 0 picks the format (bit 0: JSONL) and the model
//! (bit 1: txn-risk, 49 values a row, else credit-default, 3). Then pieces:
//! a byte `t` below 0x80 is followed by `t + 1` literal bytes; a byte `t`
//! from 0x80 by a count byte `c` and `(t & 15) + 1` bytes that repeat
//! `(c + 1) << (2 * ((t >> 4) & 7))` times.
//!
//! The check itself: the fuzz target `bulk_records` runs it on what libFuzzer
//! makes, `tests/fuzz_inputs.rs` on the kept inputs on every test run.
use infq_common::registry::Registry;
use infq_producer::bulk::{read_rows_within, Format, RecordTooLong};
use infq_producer::record_limit::READ_AHEAD_BYTES;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

/// The record limit the readers run with here.
const LIMIT: u64 = 4096;
/// Largest upload a program expands to.
const MAX_UPLOAD: u64 = 2 << 20;
/// Most bytes the readers may hold at once: a few copies of a record at
/// the limit with the CSV reader's read-ahead (the header is kept, a
/// record's buffer doubles as it grows), the JSON value of a line (up to
/// 32 bytes per byte of text, doubled as its vectors grow), and a small
/// fixed part (read buffers, column names, the first 100 problems). Far
/// below [`MAX_UPLOAD`]: a reader that buffered a whole record would pass
/// it.
const MAX_HELD: usize = 64 * LIMIT as usize + 8 * READ_AHEAD_BYTES as usize + (128 << 10);
/// Rows read at most.
const MAX_ROWS: u64 = 1000;

/// Counts the bytes allocated and live, and their peak: the binary that
/// runs [`check`] makes it its global allocator (the bound is checked
/// only where it is, and only one input runs at a time).
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; only sizes
// are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let text = include_str!("../../config/models.toml");
    Registry::parse(text, Path::new("models.toml"), Path::new(".")).expect("the shipped registry")
});

/// One piece of the upload: `unit` `times` times.
struct Piece<'a> {
    unit: &'a [u8],
    times: u64,
}

/// The upload a program describes, made as it is read.
struct Upload<'a> {
    pieces: Vec<Piece<'a>>,
    len: u64,
    /// Bytes read so far.
    pos: u64,
}

impl<'a> Upload<'a> {
    fn parse(mut program: &'a [u8]) -> Self {
        let mut pieces = Vec::new();
        let mut len = 0u64;
        while let Some((&t, rest)) = program.split_first() {
            let (times, unit_len, rest) = if t < 0x80 {
                (1, usize::from(t) + 1, rest)
            } else {
                let Some((&c, rest)) = rest.split_first() else {
                    break;
                };
                let times = (u64::from(c) + 1) << (2 * ((t >> 4) & 7));
                (times, usize::from(t & 15) + 1, rest)
            };
            let unit = &rest[..unit_len.min(rest.len())];
            program = &rest[unit.len()..];
            if unit.is_empty() || len >= MAX_UPLOAD {
                break;
            }
            let times = times.min((MAX_UPLOAD - len).div_ceil(unit.len() as u64));
            len += times * unit.len() as u64;
            pieces.push(Piece { unit, times });
        }
        Self {
            pieces,
            len,
            pos: 0,
        }
    }

    /// The bytes from `at` on.
    fn bytes_from(&self, mut at: u64) -> impl Iterator<Item = u8> + '_ {
        let mut skip = 0;
        for p in &self.pieces {
            let size = p.times * p.unit.len() as u64;
            if at < size {
                break;
            }
            at -= size;
            skip += 1;
        }
        self.pieces[skip..]
            .iter()
            .enumerate()
            .flat_map(move |(i, p)| {
                let from = if i == 0 { at } else { 0 };
                (from..p.times * p.unit.len() as u64)
                    .map(move |k| p.unit[(k % p.unit.len() as u64) as usize])
            })
    }
}

impl Read for Upload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // A unit (or what is left of it) at a time.
        let mut n = 0;
        let mut at = self.pos;
        for p in &self.pieces {
            let ulen = p.unit.len() as u64;
            let size = p.times * ulen;
            if at >= size {
                at -= size;
                continue;
            }
            while at < size && n < buf.len() {
                let from = (at % ulen) as usize;
                let take = (p.unit.len() - from).min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&p.unit[from..from + take]);
                n += take;
                at += take as u64;
            }
            if n == buf.len() {
                break;
            }
            at = 0;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A spool that keeps nothing: it checks every value is finite and counts
/// the bytes.
#[derive(Default)]
struct Spool {
    bytes: u64,
    value: Vec<u8>,
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.value.push(b);
            if self.value.len() == 4 {
                let v = f32::from_le_bytes([
                    self.value[0],
                    self.value[1],
                    self.value[2],
                    self.value[3],
                ]);
                assert!(v.is_finite(), "a spooled value is {v}");
                self.value.clear();
            }
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks one input; panics on a broken invariant.
pub fn check(data: &[u8]) {
    let Some((&flags, program)) = data.split_first() else {
        return;
    };
    let format = if flags & 1 == 0 {
        Format::Csv
    } else {
        Format::Jsonl
    };
    let spec = &REGISTRY.models()[usize::from((flags >> 1) & 1) % REGISTRY.models().len()];
    let mut upload = Upload::parse(program);
    let mut spool = Spool::default();
    spool.value.reserve(4);

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = read_rows_within(format, &mut upload, spec, &mut spool, MAX_ROWS, LIMIT);
    let held = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        held <= MAX_HELD,
        "the readers held {held} bytes of a {} byte upload (at most {MAX_HELD})",
        upload.len
    );

    match result {
        Ok(report) => {
            assert!(report.rows <= MAX_ROWS);
            if report.problems.is_empty() {
                assert_eq!(spool.bytes, report.rows * spec.width() as u64 * 4);
            }
        }
        Err(e) => {
            let too_long = RecordTooLong::of(&e).expect("only a record too long is an error here");
            assert_eq!(too_long.limit, LIMIT);
            assert!(too_long.line >= 1 && too_long.offset < upload.pos);
            let reach = match format {
                Format::Csv => LIMIT + READ_AHEAD_BYTES,
                // The JSONL reader reads 64 KiB at a time.
                Format::Jsonl => LIMIT + (64 << 10),
                // Not read from a stream (bulk_parquet fuzzes it).
                Format::Parquet => unreachable!("only CSV and JSONL are chosen above"),
            };
            assert!(
                upload.pos - too_long.offset <= reach,
                "read {} bytes past the start of the record",
                upload.pos - too_long.offset
            );
            if format == Format::Jsonl {
                let line_len = upload
                    .bytes_from(too_long.offset)
                    .take_while(|&b| b != b'\n')
                    .take(LIMIT as usize + 1)
                    .count() as u64;
                assert!(
                    line_len > LIMIT,
                    "line {} has {line_len} bytes",
                    too_long.line
                );
                let newlines = upload
                    .bytes_from(0)
                    .take(too_long.offset as usize)
                    .filter(|&b| b == b'\n')
                    .count() as u64;
                assert_eq!(too_long.line, newlines + 1);
            }
        }
    }
}

//! Bulk uploads in Parquet: whatever the bytes, the reader answers with a
//! report (a file it cannot read is a problem of the report, a panic of
//! the Parquet library included), spools only finite rows of the model's
//! width, and never more rows than the limit.
//!
//! The check itself: the fuzz target `bulk_parquet` runs it on what libFuzzer
//! makes, `tests/fuzz_inputs.rs` on the kept inputs on every test run.
use infq_common::registry::Registry;
use infq_producer::bulk::{read_parquet, Passthrough};
use std::io::{Seek, Write};
use std::path::Path;
use std::sync::LazyLock;

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let text = include_str!("../../config/models.toml");
    Registry::parse(text, Path::new("models.toml"), Path::new(".")).expect("the shipped registry")
});

const MAX_ROWS: u64 = 1000;

/// Checks one input; panics on a broken invariant.
pub fn check(data: &[u8]) {
    let Some((&first, file)) = data.split_first() else {
        return;
    };
    let spec = &REGISTRY.models()[usize::from(first & 1)];
    let mut f = tempfile();
    f.write_all(file).unwrap();
    f.rewind().unwrap();
    let names = vec!["loan_id".to_string()];
    let mut ids = Vec::new();
    let mut spool = Vec::new();
    let mut carry = if first & 2 == 0 {
        Passthrough::none()
    } else {
        Passthrough::new(&names, &mut ids)
    };
    let report = read_parquet(f, spec, &mut spool, &mut carry, MAX_ROWS)
        .expect("spooling to memory does not fail");
    assert!(report.rows <= MAX_ROWS);
    if report.problems.is_empty() {
        assert_eq!(spool.len() as u64, report.rows * spec.width() as u64 * 4);
        assert!(spool
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()));
    }
}

/// An unnamed file in memory-backed storage where there is one.
fn tempfile() -> std::fs::File {
    let dir = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("infq-fuzz-{}.parquet", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    f
}

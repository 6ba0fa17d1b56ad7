//! Bulk uploads: the CSV and JSONL row readers with their limits. The
//! first byte picks the format. Every row spooled is one finite row of the
//! model's width, and never more rows than the limit.
//!
//! The check itself: the fuzz target `bulk_rows` runs it on what libFuzzer
//! makes, `tests/fuzz_inputs.rs` on the kept inputs on every test run.
use infq_common::registry::Registry;
use infq_producer::bulk::{read_rows, Format};
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
    let format = if first & 1 == 0 {
        Format::Csv
    } else {
        Format::Jsonl
    };
    let spec = &REGISTRY.models()[0];
    let mut spool = Vec::new();
    if let Ok(report) = read_rows(format, file, spec, &mut spool, MAX_ROWS) {
        assert!(report.rows <= MAX_ROWS);
        if report.problems.is_empty() {
            assert_eq!(spool.len() as u64, report.rows * spec.width() as u64 * 4);
            assert!(spool
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()));
        }
    }
}

//! Fuzz target: see `fuzz/checks/bulk_rows.rs`.
#![no_main]

#[path = "../checks/bulk_rows.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

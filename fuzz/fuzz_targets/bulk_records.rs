//! Fuzz target: see `fuzz/checks/bulk_records.rs`.
#![no_main]

#[path = "../checks/bulk_records.rs"]
mod check;

#[global_allocator]
static ALLOCATOR: check::Counting = check::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

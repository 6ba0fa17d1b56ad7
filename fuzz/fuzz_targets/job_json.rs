//! Fuzz target: see `fuzz/checks/job_json.rs`.
#![no_main]

#[path = "../checks/job_json.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));

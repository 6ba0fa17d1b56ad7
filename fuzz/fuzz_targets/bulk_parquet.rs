//! Fuzz target: see `fuzz/checks/bulk_parquet.rs`.
#![no_main]

#[path = "../checks/bulk_parquet.rs"]
mod check;

libfuzzer_sys::fuzz_target!(
    init: {
        // The reader contains the library's panics; libFuzzer's hook
        // would abort on them before they are caught. One that escapes
        // still ends the run.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| check::check(data)
);

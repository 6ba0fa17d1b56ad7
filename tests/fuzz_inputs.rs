//! The fuzz targets' checks (`fuzz/checks/`) on every input the project
//! keeps: the seeds (`fuzz/seeds/<target>`), and where a fuzz run left
//! them, its corpus and the inputs that crashed (`fuzz/corpus`,
//! `fuzz/artifacts`), each with a fixed set of mutants (cut short, bytes
//! flipped, dropped, repeated, another input spliced in). So the hostile
//! inputs fuzzing found stay tested on every run, without the
//! instrumented build; `scripts/fuzz` explores further.
//!
//! One input at a time (`harness = false`): the bulk_records check
//! measures what the readers hold through the global allocator.

#[path = "../fuzz/checks/bulk_parquet.rs"]
mod bulk_parquet;
#[path = "../fuzz/checks/bulk_records.rs"]
mod bulk_records;
#[path = "../fuzz/checks/bulk_rows.rs"]
mod bulk_rows;
#[path = "../fuzz/checks/job_json.rs"]
mod job_json;
#[path = "../fuzz/checks/messages.rs"]
mod messages;

use std::path::Path;

#[global_allocator]
static ALLOCATOR: bulk_records::Counting = bulk_records::Counting;

/// A target's name, its check and the mutants tried per kept input.
type Target = (&'static str, fn(&[u8]), usize);

/// The targets (fewer mutants where one input expands to megabytes).
const TARGETS: [Target; 5] = [
    ("job_json", job_json::check, 3000),
    ("bulk_rows", bulk_rows::check, 3000),
    ("bulk_records", bulk_records::check, 300),
    ("bulk_parquet", bulk_parquet::check, 1000),
    ("messages", messages::check, 3000),
];

/// The kept inputs of `target`, in a stable order.
fn kept(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.is_file()) {
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            out.push((format!("fuzz/{dir}/{target}/{name}"), bytes));
        }
    }
    out
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// Mutant `k` of `input`, with `other` to splice from.
fn mutant(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    match rng.below(5) {
        0 => v.truncate(rng.below(v.len() + 1)),
        1 if !v.is_empty() => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(v.len());
                v[at] ^= 1 << rng.below(8);
            }
        }
        2 if !v.is_empty() => {
            let at = rng.below(v.len());
            let len = rng.below(v.len() - at + 1);
            v.drain(at..at + len);
        }
        3 if !v.is_empty() => {
            let at = rng.below(v.len());
            let len = rng.below((v.len() - at).min(64) + 1);
            let piece = v[at..at + len].to_vec();
            for _ in 0..=rng.below(8) {
                v.splice(at..at, piece.iter().copied());
            }
        }
        _ => {
            let cut = rng.below(v.len() + 1);
            let from = rng.below(other.len() + 1);
            v.truncate(cut);
            v.extend_from_slice(&other[from..]);
        }
    }
    v
}

fn main() {
    let started = std::time::Instant::now();
    for (target, check, mutants) in TARGETS {
        let inputs = kept(target);
        assert!(!inputs.is_empty(), "fuzz/seeds/{target} holds no input");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
        let mut runs = 0;
        for (i, (name, bytes)) in inputs.iter().enumerate() {
            let run = |data: &[u8], what: &str| {
                let caught = std::panic::catch_unwind(|| check(data));
                if caught.is_err() {
                    let path = std::env::temp_dir().join(format!("infq-fuzz-{target}-failing"));
                    let _ = std::fs::write(&path, data);
                    panic!(
                        "{target}: the check failed on {what} (input written to {}; \
                         `cargo fuzz run --fuzz-dir fuzz {target} <file>` replays it)",
                        path.display()
                    );
                }
            };
            run(bytes, name);
            let other = &inputs[(i + 1) % inputs.len()].1;
            for k in 0..mutants {
                let m = mutant(&mut rng, bytes, other);
                run(&m, &format!("mutant {k} of {name}"));
            }
            runs += 1 + mutants;
        }
        println!(
            "{target}: {} kept inputs, {runs} runs, none failed",
            inputs.len()
        );
    }
    println!(
        "all checks passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

//! Start-up: a bad registry entry or model file stops it, naming the
//! file and field; the GPU smoke check.

use crate::support::*;
use infq::root;

/// Runs a binary against a registry with `change` applied; returns its exit
/// status and output.
fn start_with_registry(bin: &str, from: &str, to: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("config/models.toml")).unwrap();
    let changed = text.replacen(from, to, 1);
    assert_ne!(text, changed, "{from} is in config/models.toml");
    // Model paths stay those of the repository.
    let changed = changed.replace("../models/", &format!("{}/models/", root().display()));
    let file = dir.path().join("models.toml");
    std::fs::write(&file, changed).unwrap();
    let out = std::process::Command::new(infq::procs::bin_dir(PROFILE).join(bin))
        .current_dir(root())
        .args([
            "--config",
            root().join("config/default.toml").to_str().unwrap(),
        ])
        .env("INFQ_MODELS_FILE", &file)
        .env("INFQ_LOG__FILTER", "error")
        .env(
            "INFQ_NAMESPACE",
            format!("bad{}", uuid::Uuid::new_v4().simple()),
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status,
        text.replace(&file.display().to_string(), "<file>"),
    )
}

#[test]
fn a_bad_registry_entry_stops_start_up_naming_the_file_and_field() {
    for bin in ["infq-worker", "infq-producer"] {
        let (status, out) = start_with_registry(bin, "max_batch_size = 256", "max_batch_size = 0");
        assert!(!status.success(), "{bin} started: {out}");
        assert!(
            out.contains("<file>: model `txn-risk@1`, field `max_batch_size`"),
            "{bin}: {out}"
        );
        let (status, out) = start_with_registry(bin, "shape = [12, 4]", "shape = [12, \"4\"]");
        assert!(!status.success(), "{bin} started: {out}");
        assert!(
            out.contains("<file>") && out.contains("shape"),
            "{bin}: {out}"
        );
    }
    // A file that is no TorchScript module stops the worker, naming it.
    let (status, out) = start_with_registry(
        "infq-worker",
        "../models/txn-risk.pt",
        "../models/txn_risk/train.py",
    );
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("loading model txn-risk@1") && out.contains("train.py"),
        "{out}"
    );
}

#[test]
fn the_gpu_smoke_check_skips_without_a_gpu_and_checks_itself_on_the_cpu() {
    let bin = infq::procs::bin_dir(PROFILE).join("infq-gpu-smoke");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .current_dir(root())
            .args(args)
            .output()
            .expect("infq-gpu-smoke (cargo build --workspace --bins)");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status, text)
    };
    if !tch::Cuda::is_available() {
        let (status, out) = run(&[]);
        assert!(status.success(), "{out}");
        assert!(
            out.contains("no CUDA device: GPU smoke test skipped"),
            "{out}"
        );
    }
    // The comparison and the rate table, CPU against CPU.
    let (status, out) = run(&["--device", "cpu", "--rows", "300"]);
    assert!(status.success(), "{out}");
    for model in ["credit-default@1", "txn-risk@1"] {
        assert!(
            out.contains(&format!("{model}: 300 rows, largest |cpu - cpu| = 0.00e0")),
            "{out}"
        );
    }
    assert!(out.contains("cpu rows/s"), "{out}");
    // The worker's own model threads, two instances, every batch matched.
    assert_eq!(
        out.matches("2 instances on cpu (worker model threads): largest |cpu - cpu| = 0.00e0")
            .count(),
        2,
        "{out}"
    );
    let (status, out) = run(&["--device", "tpu:0"]);
    assert!(
        !status.success() && out.contains("use cuda:N or cpu"),
        "{out}"
    );
}

//! What protects a user's run directory and output files: a resume checks everything
//! before it writes anything and accepts only changes that keep it the same run; budgets
//! on resume are "this many more"; `--force` starts over cleanly; outputs are checked
//! before any work and never overwritten without `--force`; empty list items are errors;
//! runs that go nowhere end with warnings. (Kills, signals, concurrent resumes and a full
//! disk: tests/crash.rs.)

mod common;

use common::kfac_pinn as cli;
use kfac_pinn::train::{read_log, Checkpoint};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kfac-safety-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const SMALL: [&str; 12] = [
    "--problem",
    "poisson2d",
    "--widths",
    "2,10,1",
    "--points",
    "40,16",
    "--eval-points",
    "40",
    "--optimizer",
    "adam",
    "--quiet",
    "--device=cpu",
];

fn small_run(dir: &Path, steps: &str) {
    let mut a = vec!["train", "--out", dir.to_str().unwrap(), "--steps", steps];
    a.extend(SMALL);
    let (code, _, err) = cli(&a);
    assert_eq!(code, 0, "{err}");
}

fn step_of(dir: &Path) -> u64 {
    Checkpoint::load(&dir.join("checkpoint.safetensors"))
        .unwrap()
        .step
}

#[test]
fn a_refused_resume_changes_nothing() {
    let root = scratch("refused");
    let dir = root.join("run");
    small_run(&dir, "20");
    let d = dir.to_str().unwrap();
    let snapshot = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let before: Vec<Vec<u8>> = ["config.toml", "log.csv", "checkpoint.safetensors"]
        .iter()
        .map(|p| snapshot(p))
        .collect();
    for (flags, setting, old, new) in [
        (vec!["--optimizer", "sgd"], "optimizer", "adam", "sgd"),
        (vec!["--widths", "2,8,1"], "widths", "2,10,1", "2,8,1"),
        (
            vec!["--problem", "heat1d"],
            "problem",
            "poisson2d",
            "heat1d",
        ),
        (vec!["--seed", "9"], "seed", "1", "9"),
    ] {
        let mut a = vec!["train", "--resume", d, "--steps", "5"];
        a.extend(flags);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("`{setting}` cannot change on resume"))
                && err.contains(old)
                && err.contains(new),
            "{err}"
        );
    }
    let (code, _, err) = cli(&["train", "--resume", d, "--log", "/tmp/elsewhere.csv"]);
    assert_eq!(code, 1);
    assert!(err.contains("`--log` cannot change on resume"), "{err}");
    let after: Vec<Vec<u8>> = ["config.toml", "log.csv", "checkpoint.safetensors"]
        .iter()
        .map(|p| snapshot(p))
        .collect();
    assert!(
        before == after,
        "a refused resume wrote to the run directory"
    );
    // the same settings written differently are the same run; a budget may change
    let (code, _, err) = cli(&[
        "train",
        "--resume",
        d,
        "--widths",
        "2, 10, 1",
        "--optimizer",
        "adam",
        "--steps",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_of(&dir), 25);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn resume_budgets_are_this_many_more_and_a_spent_budget_is_an_error() {
    let root = scratch("budget");
    let dir = root.join("run");
    small_run(&dir, "10");
    let d = dir.to_str().unwrap();
    // nothing left of the recorded budget: an error that says how to continue
    let (code, _, err) = cli(&["train", "--resume", d]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing to do") && err.contains("--steps"),
        "{err}"
    );
    let (code, _, err) = cli(&["train", "--resume", d, "--steps", "15"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_of(&dir), 25);
    // the new total is recorded: a plain resume of a run stopped early continues to it
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("steps = 25"), "{cfg}");
    // --seconds on resume is more seconds, and replaces the step budget
    let ck = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    let (code, _, err) = cli(&["train", "--resume", d, "--seconds", "0.3"]);
    assert_eq!(code, 0, "{err}");
    let ck2 = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert!(ck2.step > ck.step, "no steps done");
    assert!(
        ck2.elapsed >= ck.elapsed + 0.3 && ck2.elapsed < ck.elapsed + 5.0,
        "{} -> {}",
        ck.elapsed,
        ck2.elapsed
    );
    let steps: Vec<u64> = read_log(&dir.join("log.csv"))
        .unwrap()
        .iter()
        .map(|r| r.step)
        .collect();
    let mut sorted = steps.clone();
    sorted.dedup();
    assert_eq!(steps, sorted, "every logged step once");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn force_starts_over_without_the_old_checkpoint() {
    let root = scratch("force");
    let dir = root.join("run");
    small_run(&dir, "30");
    let d = dir.to_str().unwrap();
    let mut a = vec!["train", "--out", d, "--steps", "5", "--force"];
    a.extend(SMALL);
    let (code, _, err) = cli(&a);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_of(&dir), 5, "the old run's checkpoint is gone");
    let last = read_log(&dir.join("log.csv")).unwrap().last().unwrap().step;
    assert_eq!(last, 5, "the old run's log is gone");
    // and a resume continues the new run, not the old one
    let (code, _, err) = cli(&["train", "--resume", d, "--steps", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(step_of(&dir), 10);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn outputs_are_checked_before_any_work_and_never_overwritten_silently() {
    let root = scratch("outputs");
    let existing = root.join("model.safetensors");
    std::fs::write(&existing, b"keep me").unwrap();
    let run = root.join("run");
    // --out does not switch off the check for files outside the run directory
    for flag in ["--save", "--log"] {
        let mut a = vec![
            "train",
            "--out",
            run.to_str().unwrap(),
            flag,
            existing.to_str().unwrap(),
            "--steps",
            "3",
        ];
        a.extend(SMALL);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!("`{flag}`")) && err.contains("--force"),
            "{err}"
        );
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
        assert!(!run.exists(), "nothing is created for a refused run");
    }
    // an unwritable place fails at once, naming the flag and saying the OS error once
    let t0 = Instant::now();
    let mut a = vec![
        "train",
        "--save",
        "/proc/kfac/m.safetensors",
        "--seconds",
        "600",
    ];
    a.extend(SMALL);
    let (code, _, err) = cli(&a);
    assert_eq!(code, 1);
    assert!(t0.elapsed().as_secs() < 60, "the check came after training");
    assert!(err.contains("`--save`"), "{err}");
    let mut a = vec!["train", "--out", "/proc/kfac-run", "--seconds", "600"];
    a.extend(SMALL);
    let (code, _, err) = cli(&a);
    assert_eq!(code, 1);
    assert!(err.contains("`--out`"), "{err}");
    let (code, _, err) = cli(&[
        "eval",
        "--model",
        "/nonexistent.safetensors",
        "--points",
        "x.npy",
        "--out",
        "/proc/y.npy",
    ]);
    assert_eq!(code, 1);
    let once = err.matches("No such file").count() + err.matches("Permission denied").count();
    assert!(once <= 1, "OS error repeated: {err}");
    // a plot path is checked before the benchmark runs
    let t0 = Instant::now();
    let (code, _, err) = cli(&[
        "laplacian",
        "--dims",
        "50",
        "--batch",
        "4096",
        "--repeats",
        "50",
        "--plot",
        "x.bad",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("`--plot`") && err.contains(".png"), "{err}");
    assert!(
        t0.elapsed().as_secs() < 10,
        "the check came after the benchmark"
    );
    // compare refuses a name twice (one directory each)
    let (code, _, err) = cli(&[
        "compare",
        "--optimizers",
        "adam,adam",
        "--steps",
        "2",
        "--out",
        root.join("cmp").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("twice"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn empty_list_items_are_errors() {
    for (args, flag) in [
        (
            vec!["train", "--widths", "2,,64,1", "--steps", "1"],
            "widths",
        ),
        (
            vec!["train", "--points", "30,,10", "--steps", "1"],
            "points",
        ),
        (
            vec![
                "compare",
                "--optimizers",
                "adam,,kfac",
                "--steps",
                "1",
                "--out",
                "/tmp/x",
            ],
            "optimizers",
        ),
        (vec!["laplacian", "--dims", "1,,10"], "dims"),
    ] {
        let (code, _, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(flag) && err.contains("empty"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_saturated_run_ends_with_warnings() {
    // Adam with lr 1e3 drives every tanh to ±1 without a non-finite loss
    let out = Command::new(env!("CARGO_BIN_EXE_kfac-pinn"))
        .args([
            "train",
            "--problem",
            "poisson2d",
            "--widths",
            "2,16,16,1",
            "--points",
            "60,20",
            "--eval-points",
            "100",
            "--optimizer",
            "adam",
            "--lr",
            "1e3",
            "--steps",
            "150",
            "--device",
            "cpu",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = v["warnings"].as_array().expect("warnings array");
    let text = format!("{w:?}");
    assert!(text.contains("saturated"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning:"),
        "warnings also go to stderr"
    );
    // a healthy run has an empty list
    let out = Command::new(env!("CARGO_BIN_EXE_kfac-pinn"))
        .args([
            "train",
            "--problem",
            "poisson2d",
            "--widths",
            "2,16,1",
            "--points",
            "60,20",
            "--eval-points",
            "100",
            "--optimizer",
            "kfac-star",
            "--steps",
            "150",
            "--device",
            "cpu",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

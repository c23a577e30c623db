//! Checkpoint and resume: a run stopped and resumed from its checkpoint ends at the same
//! parameters, bit for bit, as an uninterrupted run with the same seeds (CPU); corrupted
//! or truncated checkpoints and configs are clear errors.

use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::geometry::PointKind;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::builtin;
use kfac_pinn::train::{Checkpoint, TrainOptions, Trainer};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn trainer(opt: &str, steps: u64) -> Trainer<Cpu, f64> {
    let name = opt;
    let problem = builtin("heat1d").unwrap();
    let mlp = Mlp::new(&[2, 12, 1]).unwrap();
    let params: Vec<f64> = mlp.init(3);
    let cfg = OptimizerConfig {
        lr: Some(1e-2),
        ..Default::default()
    };
    let opt = |obj: &Objective<Cpu, f64>| optim::build(opt, &cfg, obj);
    let o = TrainOptions {
        max_steps: Some(steps),
        max_seconds: None,
        log_every: 4,
        resample: 3, // exercises the data stream's RNG state
        points: vec![50, 20],
        // sgd's runs draw scrambled Sobol points: their scrambles come from the same stream
        point_kind: if name == "sgd" {
            PointKind::Sobol
        } else {
            PointKind::Uniform
        },
        eval_points: 100,
        data_seed: 7,
        chunk_rows: Some(64),
        progress: false,
        checkpoint: None,
        checkpoint_every: 0,
        checkpoint_seconds: None,
        neuron_log: None,
    };
    Trainer::new(Cpu, problem, mlp, &params, opt, o).unwrap()
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    for opt in ["adam", "sgd"] {
        let mut full = trainer(opt, 20);
        full.run(None, &AtomicBool::new(false)).unwrap();
        let mut first = trainer(opt, 11);
        first.run(None, &AtomicBool::new(false)).unwrap();
        let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
        let ck = Checkpoint::from_bytes(Path::new("ck"), &bytes).unwrap();
        assert_eq!(ck.step, 11);
        let mut second = trainer(opt, 20);
        second.restore(&ck).unwrap();
        second.run(None, &AtomicBool::new(false)).unwrap();
        let (a, b) = (full.params_host().unwrap(), second.params_host().unwrap());
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{opt}"
        );
        assert_eq!(full.step, second.step);
    }
}

#[test]
fn corrupted_checkpoints_are_rejected() {
    let mut t = trainer("adam", 3);
    t.run(None, &AtomicBool::new(false)).unwrap();
    let bytes = t.checkpoint().unwrap().to_bytes().unwrap();
    let p = Path::new("run/checkpoint.safetensors");
    let e = Checkpoint::from_bytes(p, &bytes[..bytes.len() - 9])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid checkpoint"), "{e}");
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0x40;
    let e = Checkpoint::from_bytes(p, &flipped).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
    // a checkpoint of another optimizer does not restore silently
    let ck = Checkpoint::from_bytes(p, &bytes).unwrap();
    let mut other = trainer("sgd", 3);
    assert!(other.restore(&ck).is_err());
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kfac-pinn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn cli_resume_continues_the_run_directory() {
    let base = std::env::temp_dir().join(format!("kfac-pinn-resume-{}", std::process::id()));
    let (a, b) = (base.join("a"), base.join("b"));
    let common = [
        "--problem",
        "heat1d",
        "--widths",
        "2,10,1",
        "--points",
        "40,16",
        "--resample",
        "4",
        "--eval-points",
        "50",
        "--quiet",
        "--log-every",
        "2",
    ];
    let mut args = vec!["train", "--out", a.to_str().unwrap(), "--steps", "13"];
    args.extend(common);
    let (code, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    // b: 6 steps, keep that checkpoint; resume to 7 (log row 7 written); then put the
    // step-6 checkpoint back: a run killed after step 7 whose last checkpoint was step 6
    let mut args = vec![
        "train",
        "--out",
        b.to_str().unwrap(),
        "--steps",
        "6",
        "--checkpoint-every",
        "3",
    ];
    args.extend(common);
    let (code, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    let ck_path = b.join("checkpoint.safetensors");
    let ck6 = std::fs::read(&ck_path).unwrap();
    assert_eq!(Checkpoint::load(&ck_path).unwrap().step, 6);
    // on resume, --steps is "this many more"
    let (code, err) = cli(&["train", "--resume", b.to_str().unwrap(), "--steps", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        Checkpoint::load(&ck_path).unwrap().step,
        7,
        "a checkpoint is also written when the run ends"
    );
    std::fs::write(&ck_path, &ck6).unwrap();
    let (code, err) = cli(&["train", "--resume", b.to_str().unwrap(), "--steps", "7"]);
    assert_eq!(code, 0, "{err}");
    let ma = kfac_pinn::model::io::load(&a.join("model.safetensors")).unwrap();
    let mb = kfac_pinn::model::io::load(&b.join("model.safetensors")).unwrap();
    assert_eq!(ma.params, mb.params);
    let la = kfac_pinn::train::read_log(&a.join("log.csv")).unwrap();
    let lb = kfac_pinn::train::read_log(&b.join("log.csv")).unwrap();
    let steps = |l: &[kfac_pinn::train::LogRow]| l.iter().map(|r| r.step).collect::<Vec<_>>();
    assert_eq!(steps(&la), steps(&lb));
    assert_eq!(la.last().unwrap().l2_abs, lb.last().unwrap().l2_abs);
    // the run directory is not overwritten without --force
    let mut args = vec!["train", "--out", a.to_str().unwrap(), "--steps", "2"];
    args.extend(common);
    let (code, err) = cli(&args);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    // a truncated checkpoint is a clear error
    let bytes = std::fs::read(&ck_path).unwrap();
    std::fs::write(&ck_path, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = cli(&["train", "--resume", b.to_str().unwrap(), "--steps", "20"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid checkpoint"), "{err}");
    // a checkpoint whose header (not its tensors) was changed is refused too
    std::fs::write(&ck_path, &bytes).unwrap();
    let key = b"\"step\":\"13\"";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("step in the header");
    let mut flipped = bytes.clone();
    flipped[at + 9] = b'4'; // 13 -> 14
    std::fs::write(&ck_path, &flipped).unwrap();
    let (code, err) = cli(&["train", "--resume", b.to_str().unwrap(), "--steps", "20"]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum"), "{err}");
    std::fs::remove_dir_all(base).ok();
}

#[test]
fn config_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("kfac-pinn-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(&cfg, "problem = \"poisson2d\"\nstepz = 3\n").unwrap();
    let (code, err) = cli(&["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("stepz"), "{err}");
    std::fs::write(&cfg, "problem = \"poisson2d\"\nsteps = \"three\"\n").unwrap();
    let (code, err) = cli(&["train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("steps"), "{err}");
    // a valid config; flags override it
    std::fs::write(
        &cfg,
        "problem = \"poisson2d\"\nsteps = 1000\npoints = \"30,10\"\neval-points = 20\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kfac-pinn"))
        .args([
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--steps",
            "2",
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
    assert_eq!(v["steps"], 2);
    std::fs::remove_dir_all(dir).ok();
}

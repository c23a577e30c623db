//! The training loop: Adam on Poisson 2d reaches L2 < 1e-2 in a short run; budgets, the
//! stop flag and divergence end runs cleanly with their logs intact.

use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::builtin;
use kfac_pinn::train::{read_log, CsvLog, StopReason, TrainOptions, Trainer};
use std::sync::atomic::AtomicBool;

fn options(steps: u64, points: Vec<usize>) -> TrainOptions {
    TrainOptions {
        max_steps: Some(steps),
        max_seconds: None,
        log_every: 500,
        resample: 0,
        points,
        point_kind: Default::default(),
        eval_points: 2000,
        data_seed: 0,
        chunk_rows: None,
        progress: false,
        checkpoint: None,
        checkpoint_every: 0,
        checkpoint_seconds: None,
        neuron_log: None,
    }
}

fn trainer(opt: &str, cfg: OptimizerConfig, steps: u64) -> Trainer<Cpu, f64> {
    let problem = builtin("poisson2d").unwrap();
    let mlp = Mlp::new(&[2, 64, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let opt = |obj: &Objective<Cpu, f64>| optim::build(opt, &cfg, obj);
    Trainer::new(
        Cpu,
        problem,
        mlp,
        &params,
        opt,
        options(steps, vec![400, 80]),
    )
    .unwrap()
}

#[test]
fn adam_on_poisson2d_reaches_1e_2() {
    let dir = std::env::temp_dir().join(format!("kfac-pinn-test-adam-{}", std::process::id()));
    let path = dir.join("log.csv");
    let mut log = CsvLog::create(&path).unwrap();
    let mut t = trainer(
        "adam",
        OptimizerConfig {
            lr: Some(5e-3),
            ..Default::default()
        },
        8000,
    );
    let s = t.run(Some(&mut log), &AtomicBool::new(false)).unwrap();
    assert_eq!(s.stop, StopReason::Steps);
    assert_eq!(s.steps, 8000);
    let rows = read_log(&path).unwrap();
    assert_eq!(rows.first().unwrap().step, 0);
    assert_eq!(rows.last().unwrap().step, 8000);
    let best = rows.iter().map(|r| r.l2_abs).fold(f64::INFINITY, f64::min);
    assert!(best < 1e-2, "best L2 {best:e}");
    assert!(
        rows.first().unwrap().l2_abs > 0.1,
        "the run must start far from the solution"
    );
    assert!(s.l2_abs < 3e-2, "final L2 {:e}", s.l2_abs);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn stop_flag_ends_the_run_with_the_log_intact() {
    let dir = std::env::temp_dir().join(format!("kfac-pinn-test-stop-{}", std::process::id()));
    let path = dir.join("log.csv");
    let mut log = CsvLog::create(&path).unwrap();
    let mut t = trainer("adam", OptimizerConfig::default(), 100);
    let s = t.run(Some(&mut log), &AtomicBool::new(true)).unwrap();
    assert_eq!(s.stop, StopReason::Interrupted);
    assert_eq!(s.steps, 0);
    let rows = read_log(&path).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].l2_abs.is_finite());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn seconds_budget_is_respected() {
    let problem = builtin("poisson2d").unwrap();
    let mlp = Mlp::new(&[2, 16, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let opt = |obj: &Objective<Cpu, f64>| optim::build("sgd", &OptimizerConfig::default(), obj);
    let mut o = options(u64::MAX, vec![50, 20]);
    o.max_steps = None;
    o.max_seconds = Some(0.3);
    let mut t = Trainer::new(Cpu, problem, mlp, &params, opt, o).unwrap();
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    assert_eq!(s.stop, StopReason::Seconds);
    assert!(s.seconds >= 0.3 && s.steps > 0);
}

#[test]
fn divergence_stops_cleanly() {
    let dir = std::env::temp_dir().join(format!("kfac-pinn-test-div-{}", std::process::id()));
    let path = dir.join("log.csv");
    let mut log = CsvLog::create(&path).unwrap();
    let mut t = trainer(
        "sgd",
        OptimizerConfig {
            lr: Some(1e6),
            ..Default::default()
        },
        1000,
    );
    let s = t.run(Some(&mut log), &AtomicBool::new(false)).unwrap();
    assert_eq!(s.stop, StopReason::Diverged);
    assert!(s.steps < 1000);
    assert!(
        s.message.as_deref().unwrap().contains("non-finite")
            || s.message.as_deref().unwrap().contains("loss"),
        "{:?}",
        s.message
    );
    let rows = read_log(&path).unwrap();
    assert!(!rows.is_empty());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_setups_are_errors() {
    let problem = builtin("poisson2d").unwrap();
    let mlp = Mlp::new(&[3, 8, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let adam =
        |cfg: OptimizerConfig| move |obj: &Objective<Cpu, f64>| optim::build("adam", &cfg, obj);
    let e = Trainer::new(
        Cpu,
        problem.clone(),
        mlp,
        &params,
        adam(OptimizerConfig::default()),
        options(5, vec![10, 5]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("2 input dimensions") && e.contains("3→8→1"),
        "{e}"
    );
    let mlp = Mlp::new(&[2, 8, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let default = adam(OptimizerConfig::default());
    let e = Trainer::new(
        Cpu,
        problem.clone(),
        mlp.clone(),
        &params,
        default,
        options(5, vec![10, 0]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("boundary") && e.contains("Got 0"), "{e}");
    // the trainer's optimizer is built for its objective, and checks its settings then
    let nan_lr = OptimizerConfig {
        lr: Some(f64::NAN),
        ..Default::default()
    };
    let e = Trainer::new(
        Cpu,
        problem,
        mlp,
        &params,
        adam(nan_lr),
        options(5, vec![10, 5]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("lr") && e.contains("NaN"), "{e}");
    let e = optim::validate(
        "adam",
        &OptimizerConfig {
            beta2: Some(1.0),
            ..Default::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("beta2") && e.contains("[0, 1)"), "{e}");
}

//! Time one optimizer step (developer tool): `profile_step PROBLEM OPTIMIZER [STEPS]`.
//! Uses the problem's default setup, fixed points; prints the mean step time after a
//! warm-up, then the loss-and-gradient and loss-only times (skipped with `ONLY_STEP=1`).
//! Run under `perf record` to see where the time goes.
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{build, OptimizerConfig};
use kfac_pinn::pde::builtin;
use rand::SeedableRng;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("heat4d");
    let opt_name = args.get(2).map(String::as_str).unwrap_or("kfac-star");
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let p = builtin(name).unwrap();
    let s = p.setup();
    let mlp = Mlp::new(&s.widths).unwrap();
    let rows = std::env::var("CHUNK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), rows).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (t, &n) in s.points.iter().enumerate() {
        obj.set_points(t, p.sample(t, n, &mut rng).unwrap())
            .unwrap();
    }
    let mut params: Vec<f64> = mlp.init(1);
    // first-order methods take no damping
    let damped = !matches!(opt_name, "sgd" | "adam" | "lbfgs");
    let cfg = OptimizerConfig {
        damping: damped.then_some(1e-8),
        ..Default::default()
    };
    let mut opt = build(opt_name, &cfg, &obj).unwrap();
    for _ in 0..3 {
        opt.step(&mut obj, &mut params).unwrap();
    }
    let t = Instant::now();
    for _ in 0..steps {
        opt.step(&mut obj, &mut params).unwrap();
    }
    println!(
        "{name} {opt_name}: {:.2} ms/step",
        t.elapsed().as_secs_f64() * 1e3 / steps as f64
    );
    if std::env::var_os("ONLY_STEP").is_some() {
        return;
    }
    let mut g = vec![0.0; params.len()];
    let t = Instant::now();
    for _ in 0..steps {
        obj.loss_grad(&params, &mut g).unwrap();
    }
    println!(
        "loss_grad: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / steps as f64
    );
    let t = Instant::now();
    for _ in 0..steps {
        obj.loss(&params).unwrap();
    }
    println!(
        "loss:      {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / steps as f64
    );
}

//! The randomized forward Laplacian (design §9): the jet of K random directions against
//! the autodiff baseline's Hessian — the estimate's mean over many draws equals the exact
//! operator (within five standard errors from the sample variance), its variance equals
//! the closed forms `2 Σ_{i≠j} H_ij²` (Rademacher) and `2 ‖H‖_F²` (Gaussian) divided by
//! K, so it falls as 1/K, and the derivative rows are the directional derivatives
//! `w·∇u`. Training: Adam, KFAC* and ENGD lower the error of a 5-d Poisson problem with
//! `random:2`, heat keeps its time axis exact, a resumed run draws the same directions
//! (bit for bit), and what cannot be estimated is refused with errors naming it.

mod common;

use common::{kfac_pinn, rng, uniform};
use kfac_pinn::autodiff::Autodiff;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::jet::{Direction, Estimator, JetEngine, JetKind, Operator, RandomOperator};
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::builtin;
use kfac_pinn::train::{Checkpoint, StopReason, TrainOptions, Trainer};
use rand::SeedableRng;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Per point: the draws' mean and variance of the estimated operator term, and the
/// largest deviation of the derivative rows from `w·∇u`.
#[allow(clippy::too_many_arguments)]
fn draw_stats(
    mlp: &Mlp,
    params: &[f64],
    x: &[f64],
    base: &Operator,
    k: usize,
    dist: Direction,
    draws: usize,
    grad: &[f64],
) -> (Vec<f64>, Vec<f64>, f64) {
    let d = mlp.input_dim();
    let n = x.len() / d;
    let mut ro = RandomOperator::new(base, 0, k, dist).unwrap();
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11 + k as u64);
    let kind = JetKind::Full(ro.operator().clone());
    let mut eng = JetEngine::<Cpu, f64>::new(Cpu, mlp.clone(), kind, None).unwrap();
    let p = Cpu.upload(params).unwrap();
    let xb = Cpu.upload(x).unwrap();
    let (mut sum, mut sq, mut dev) = (vec![0.0; n], vec![0.0; n], 0.0f64);
    let s = k + 2;
    for _ in 0..draws {
        let op = ro.draw(&mut r).clone();
        eng.set_operator(&op).unwrap();
        let y = eng.forward(&p, &xb, n).unwrap();
        for i in 0..n {
            let l = y[i * s + 1 + k];
            sum[i] += l;
            sq[i] += l * l;
            for kk in 0..k {
                let w = &op.dirs()[kk * d..(kk + 1) * d];
                let want: f64 = w
                    .iter()
                    .zip(&grad[i * d..(i + 1) * d])
                    .map(|(a, b)| a * b)
                    .sum();
                dev = dev.max((y[i * s + 1 + kk] - want).abs());
            }
        }
    }
    let mean: Vec<f64> = sum.iter().map(|v| v / draws as f64).collect();
    let var = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / draws as f64 - m * m) * draws as f64 / (draws - 1) as f64)
        .collect();
    (mean, var, dev)
}

#[test]
fn estimate_is_unbiased_with_the_closed_form_variance() {
    let d = 6;
    let mlp = Mlp::new(&[d, 16, 16, 1]).unwrap();
    let params: Vec<f64> = mlp.init(3);
    let n = 3;
    let x = uniform(&mut rng(5), n * d, -1.0, 1.0);
    let der = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone())
        .unwrap()
        .derivatives(&params, &x, n)
        .unwrap();
    let exact = der.laplacian();
    let draws = 4000;
    for dist in [Direction::Rademacher, Direction::Gaussian] {
        let mut var_by_k = vec![];
        for k in [1, 4] {
            let lap = Operator::laplacian(d);
            let (mean, var, dev) = draw_stats(&mlp, &params, &x, &lap, k, dist, draws, &der.grad);
            assert!(dev < 1e-12, "{dist:?} K={k}: derivative rows off by {dev}");
            for i in 0..n {
                let h = &der.hess[i * d * d..(i + 1) * d * d];
                let off: f64 = (0..d)
                    .flat_map(|a| (0..d).map(move |b| (a, b)))
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| h[a * d + b].powi(2))
                    .sum();
                let diag: f64 = (0..d).map(|a| h[a * d + a].powi(2)).sum();
                let one = match dist {
                    Direction::Rademacher => 2.0 * off,
                    Direction::Gaussian => 2.0 * (off + diag),
                };
                let se = (var[i] / draws as f64).sqrt();
                assert!(
                    (mean[i] - exact[i]).abs() < 5.0 * se,
                    "{dist:?} K={k} point {i}: mean {} vs exact {} (se {se})",
                    mean[i],
                    exact[i]
                );
                // the sample variance of 4000 draws is within ~10% of the truth
                let want = one / k as f64;
                assert!(
                    (var[i] / want - 1.0).abs() < 0.2,
                    "{dist:?} K={k} point {i}: variance {} vs closed form {want}",
                    var[i]
                );
            }
            var_by_k.push(var);
        }
        // variance ∝ 1/K: K = 1 vs K = 4
        for (i, (v1, v4)) in var_by_k[0].iter().zip(&var_by_k[1]).enumerate() {
            let ratio = v1 / v4;
            assert!(
                (3.0..5.3).contains(&ratio),
                "{dist:?} point {i}: Var(K=1)/Var(K=4) = {ratio}"
            );
        }
    }
    // a full coefficient matrix (eigen-factorised): the mean is Σ C_ij ∂_ij u
    let c = [
        2.0, 0.5, 0.0, 0.0, 0.0, 0.1, 0.5, 1.0, -0.3, 0.0, 0.0, 0.0, 0.0, -0.3, 0.7, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 1.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.2, 1.5, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.4,
    ];
    let op = Operator::from_matrix(d, &c).unwrap();
    let want = der.operator(&c);
    let (mean, var, dev) = draw_stats(
        &mlp,
        &params,
        &x,
        &op,
        3,
        Direction::Rademacher,
        draws,
        &der.grad,
    );
    assert!(dev < 1e-12, "full C: derivative rows off by {dev}");
    for i in 0..n {
        let se = (var[i] / draws as f64).sqrt();
        assert!(
            (mean[i] - want[i]).abs() < 5.0 * se,
            "full C point {i}: mean {} vs exact {} (se {se})",
            mean[i],
            want[i]
        );
    }
}

fn options(steps: u64, points: Vec<usize>) -> TrainOptions {
    TrainOptions {
        max_steps: Some(steps),
        log_every: steps,
        resample: 3,
        points,
        eval_points: 500,
        data_seed: 4,
        chunk_rows: Some(64),
        ..Default::default()
    }
}

fn trainer(
    problem: &str,
    widths: &[usize],
    opt: &str,
    cfg: OptimizerConfig,
    est: &str,
    steps: u64,
) -> kfac_pinn::Result<Trainer<Cpu, f64>> {
    let prob = builtin(problem).unwrap();
    let mlp = Mlp::new(widths).unwrap();
    let params: Vec<f64> = mlp.init(2);
    let o = move |obj: &Objective<Cpu, f64>| optim::build(opt, &cfg, obj);
    Trainer::with_estimator(
        Cpu,
        prob,
        mlp,
        &params,
        o,
        options(steps, vec![300, 100]),
        Estimator::parse(est)?,
    )
}

#[test]
fn every_kind_of_optimizer_trains_poisson5d_with_random_directions() {
    // (optimizer, settings, steps, required error reduction): margins from short runs of
    // the exact and the randomized operator (Adam moves slowly on this problem either way)
    let cases = [
        (
            "adam",
            OptimizerConfig {
                lr: Some(1e-2),
                ..Default::default()
            },
            60,
            0.9,
        ),
        (
            "kfac-star",
            OptimizerConfig {
                damping: Some(1e-3),
                ..Default::default()
            },
            200,
            0.5,
        ),
        (
            "engd",
            OptimizerConfig {
                damping: Some(1e-4),
                ..Default::default()
            },
            60,
            0.1,
        ),
    ];
    for (opt, cfg, steps, factor) in cases {
        let mut t = trainer("poisson5d", &[5, 32, 1], opt, cfg, "random:2", steps).unwrap();
        let start = t.l2().unwrap().rel;
        let s = t.run(None, &AtomicBool::new(false)).unwrap();
        eprintln!("{opt}: l2_rel {start:.3} -> {:.3}", s.l2_rel);
        assert_eq!(s.stop, StopReason::Steps, "{opt}: {:?}", s.message);
        assert_eq!(s.laplacian.as_deref(), Some("random:2"));
        assert!(
            s.l2_rel < factor * start,
            "{opt}: l2_rel {start} -> {}",
            s.l2_rel
        );
    }
}

#[test]
fn heat_keeps_its_time_axis_and_trains() {
    let cfg = OptimizerConfig {
        damping: Some(1e-3),
        ..Default::default()
    };
    let mut t = trainer("heat4d", &[5, 24, 1], "kfac-star", cfg, "random:2", 40).unwrap();
    let start = t.l2().unwrap().rel;
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    eprintln!("heat4d: l2_rel {start:.3} -> {:.3}", s.l2_rel);
    assert!(s.l2_rel < 0.5 * start, "l2_rel {start} -> {}", s.l2_rel);
    // the interior term's jet: e_t, then two drawn directions without a time component
    let kind = &t.obj.term_spec(0).kind;
    let JetKind::Full(op) = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(op.k(), 3);
    assert_eq!(&op.dirs()[..5], &[1.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!((op.dirs()[5], op.dirs()[10]), (0.0, 0.0));
    assert_eq!(op.coef(), &[0.0, 0.5, 0.5]);
}

#[test]
fn resumed_randomized_run_matches_uninterrupted_run() {
    for opt in ["adam", "kfac-star"] {
        let cfg = || OptimizerConfig::default();
        let run = |steps| trainer("poisson5d", &[5, 12, 1], opt, cfg(), "random:3", steps).unwrap();
        let mut full = run(10);
        full.run(None, &AtomicBool::new(false)).unwrap();
        let mut first = run(6);
        first.run(None, &AtomicBool::new(false)).unwrap();
        let bytes = first.checkpoint().unwrap().to_bytes().unwrap();
        let ck = Checkpoint::from_bytes(Path::new("ck"), &bytes).unwrap();
        let mut second = run(10);
        second.restore(&ck).unwrap();
        second.run(None, &AtomicBool::new(false)).unwrap();
        let bits = |t: &Trainer<Cpu, f64>| {
            t.params_host()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&full), bits(&second), "{opt}");
        // and the draws matter: an exact run ends elsewhere
        let mut exact = trainer("poisson5d", &[5, 12, 1], opt, cfg(), "exact", 10).unwrap();
        exact.run(None, &AtomicBool::new(false)).unwrap();
        assert_ne!(bits(&full), bits(&exact), "{opt}");
    }
}

#[test]
fn what_cannot_be_estimated_is_refused() {
    let cfg = OptimizerConfig::default;
    let err = |p: &str, w: &[usize], est: &str| match trainer(p, w, "adam", cfg(), est, 1) {
        Ok(_) => panic!("{p} {est} accepted"),
        Err(e) => e.to_string(),
    };
    let e = err("poisson2d", &[2, 8, 1], "random:3");
    assert!(e.contains("random:3") && e.contains("at most 2"), "{e}");
    let e = err("log-fokker-planck9d", &[10, 8, 1], "random:4");
    assert!(
        e.contains("term `interior`") && e.contains("gradient"),
        "{e}"
    );
    let e = err("poisson2d", &[2, 8, 1], "random:0");
    assert!(e.contains("random:0") && e.contains("K ≥ 1"), "{e}");
    // on the command line, before any training
    let (code, _, stderr) = kfac_pinn(&[
        "train",
        "--problem",
        "poisson5d",
        "--laplacian",
        "random:9",
        "--steps",
        "1",
        "--quiet",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("at most 5"), "{stderr}");
    let (code, _, stderr) = kfac_pinn(&["laplacian", "--dim", "4", "--laplacian", "random:0"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("random:0"), "{stderr}");
}

#[test]
fn laplacian_benchmark_reports_its_estimator() {
    let (code, out, err) = kfac_pinn(&[
        "laplacian",
        "--dim",
        "20",
        "--widths",
        "16,16",
        "--batch",
        "32",
        "--method",
        "forward",
        "--laplacian",
        "random:4",
        "--repeats",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["estimator"], "random:4");
    assert_eq!(v["dim"], 20);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
}

//! The high-dimensional two-body Poisson problems (src/pde/highdim.rs): the hand-derived
//! source `f = −Δu` against central second differences of `u` at D = 5 and D = 12, the
//! residuals of the exact solution on the problem's own points, the samplers (inside the
//! ball, on the sphere), and a short randomized KFAC* run that lowers the error.

mod common;

use common::rng;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::jet::Estimator;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::highdim::{build, two_body_f, two_body_u};
use kfac_pinn::pde::problem;
use kfac_pinn::train::{TrainOptions, Trainer};
use std::sync::atomic::AtomicBool;

#[test]
fn source_is_minus_the_laplacian_by_finite_differences() {
    for (d, seed) in [(5, 1), (12, 2)] {
        let mut r = rng(seed);
        let c: Vec<f64> = common::uniform(&mut r, d - 1, -1.5, 1.5);
        for _ in 0..5 {
            let x = common::uniform(&mut r, d, -0.6, 0.6);
            let h = 1e-4;
            let u0 = two_body_u(&c, &x);
            let mut lap = 0.0;
            for a in 0..d {
                let at = |s: f64| {
                    let mut p = x.clone();
                    p[a] += s;
                    two_body_u(&c, &p)
                };
                lap += (at(h) - 2.0 * u0 + at(-h)) / (h * h);
            }
            let f = two_body_f(&c, &x);
            assert!(
                (f + lap).abs() < 1e-5 * (1.0 + f.abs()),
                "D={d}: f = {f}, −Δu by differences = {}",
                -lap
            );
        }
    }
}

#[test]
fn samplers_and_exact_solution_fit_the_ball() {
    for name in ["highdim-5d", "highdim-100d"] {
        let p = build(name).unwrap().unwrap();
        use kfac_pinn::pde::Problem;
        let d = p.dim();
        let mut r = rng(3);
        let inside = p.sample(0, 200, &mut r).unwrap();
        let sphere = p.sample(1, 50, &mut r).unwrap();
        for x in inside.chunks(d) {
            let n2: f64 = x.iter().map(|v| v * v).sum();
            assert!(n2 < 1.0, "{name}: interior point at |x|² = {n2}");
        }
        for x in sphere.chunks(d) {
            let n2: f64 = x.iter().map(|v| v * v).sum();
            assert!((n2 - 1.0).abs() < 1e-12, "{name}: boundary |x|² = {n2}");
            // the boundary data are the exact solution
            let mut u = [0.0];
            assert!(p.exact(x, &mut u));
            let mut res = [1.0];
            p.terms()[1].residual.eval(x, &u, &mut res, None);
            assert!(res[0].abs() < 1e-14, "{name}: data residual {}", res[0]);
        }
        // uniform in the ball: the mean of |x|^D is 1/2
        let m: f64 = inside
            .chunks(d)
            .map(|x| x.iter().map(|v| v * v).sum::<f64>().sqrt().powi(d as i32))
            .sum::<f64>()
            / 200.0;
        assert!((m - 0.5).abs() < 0.1, "{name}: mean |x|^D = {m}");
        // the interior residual of the exact solution (derivatives from the closed forms)
        let terms = p.terms();
        for x in inside.chunks(d).take(5) {
            let f = two_body_f(p.coefficients_c(), x);
            let mut y = vec![0.0; d + 2];
            y[0] = two_body_u(p.coefficients_c(), x);
            y[d + 1] = -f;
            let mut res = [0.0];
            terms[0].residual.eval(x, &y, &mut res, None);
            assert!(res[0].abs() < 1e-12 * (1.0 + f.abs()), "{name}: {}", res[0]);
        }
    }
    assert!(problem("highdim-10k", &Default::default()).is_ok());
}

#[test]
fn randomized_kfac_star_trains_highdim_100d() {
    let prob = problem("highdim-100d", &Default::default()).unwrap();
    let mlp = Mlp::new(&[100, 32, 32, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let cfg = OptimizerConfig {
        damping: Some(1e-3),
        ..Default::default()
    };
    let o = move |obj: &Objective<Cpu, f64>| optim::build("kfac-star", &cfg, obj);
    let opts = TrainOptions {
        max_steps: Some(80),
        log_every: 80,
        resample: 1,
        points: vec![256, 64],
        eval_points: 500,
        ..Default::default()
    };
    let est = Estimator::parse("random:16").unwrap();
    let mut t = Trainer::with_estimator(Cpu, prob, mlp, &params, o, opts, est).unwrap();
    let start = t.l2().unwrap().rel;
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    eprintln!(
        "highdim-100d random:16: l2_rel {start:.3} -> {:.3e}",
        s.l2_rel
    );
    assert!(s.l2_rel < 0.5 * start, "l2_rel {start} -> {}", s.l2_rel);
}

//! Whole-engine comparisons of a backend against the CPU backend, generic over the
//! backend: the forward Laplacian (f64 and f32), the autodiff baseline, the loss
//! gradient, one KFAC step (its Kronecker factors and momentum), one KFAC* step and one
//! HIG step. tests/gpu.rs runs them on a GPU, tests/kernels.rs on the CPU emulation of
//! the CUDA kernels.
#![allow(dead_code)]

use crate::common::{assert_close, rng};
use kfac_pinn::autodiff::Autodiff;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::jet::{JetEngine, JetKind, Operator};
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{build, OptimizerConfig, State};
use kfac_pinn::pde::builtin;
use kfac_pinn::scalar::{convert, Real};

/// Relative tolerance of the comparisons in f64, measured against the largest entry of
/// the reference (so entries near zero are not held to a relative bound).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub f64: f64,
    pub f32: f64,
}

fn close(what: &str, got: &[f64], want: &[f64], rtol: f64) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    assert_close(what, got, want, rtol, rtol * scale);
}

fn points(d: usize, n: usize, seed: u64) -> Vec<f64> {
    crate::common::uniform(&mut rng(seed), n * d, -1.0, 1.0)
}

fn forward_on<B: Backend, T: Real>(
    be: &B,
    widths: &[usize],
    n: usize,
    chunk: Option<usize>,
    op: &Operator,
) -> Vec<f64> {
    let mlp = Mlp::new(widths).unwrap();
    let p = be.upload(&convert::<f64, T>(&mlp.init(7))).unwrap();
    let x = be
        .upload(&convert::<f64, T>(&points(widths[0], n, 11)))
        .unwrap();
    let mut eng =
        JetEngine::<B, T>::new(be.clone(), mlp, JetKind::Full(op.clone()), chunk).unwrap();
    eng.forward(&p, &x, n).unwrap()
}

/// Forward Laplacian (value, gradient and Laplacian of every output) of a few nets, with
/// chunk sizes that leave a ragged last chunk, and a weighted operator (heat-like).
pub fn forward_laplacian<B: Backend>(be: &B, tol: Tol) {
    let cases: [(Vec<usize>, usize, Option<usize>, Operator); 3] = [
        (vec![3, 7, 5, 1], 23, Some(10), Operator::laplacian(3)),
        (vec![2, 16, 16, 2], 70, None, Operator::laplacian(2)),
        (
            vec![4, 9, 1],
            31,
            Some(8),
            Operator::weighted(vec![0.0, 0.25, 0.25, 0.25]).unwrap(),
        ),
    ];
    for (widths, n, chunk, op) in cases {
        let want = forward_on::<Cpu, f64>(&Cpu, &widths, n, chunk, &op);
        let got = forward_on::<B, f64>(be, &widths, n, chunk, &op);
        close(&format!("forward {widths:?} f64"), &got, &want, tol.f64);
        let want = forward_on::<Cpu, f32>(&Cpu, &widths, n, chunk, &op);
        let got = forward_on::<B, f32>(be, &widths, n, chunk, &op);
        close(&format!("forward {widths:?} f32"), &got, &want, tol.f32);
    }
}

/// The nested-differentiation baseline's Laplacian.
pub fn autodiff_laplacian<B: Backend>(be: &B, tol: Tol) {
    let widths = [3usize, 8, 6, 1];
    let n = 19;
    let mlp = Mlp::new(&widths).unwrap();
    let params = mlp.init(5);
    let x = points(3, n, 4);
    let mut ad = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone()).unwrap();
    let d = ad.derivatives(&params, &x, n).unwrap();
    let want = [d.u.clone(), d.grad.clone(), d.laplacian()].concat();
    let mut ad = Autodiff::<B, f64>::new(be.clone(), mlp.clone()).unwrap();
    let d = ad
        .derivatives(&be.upload(&params).unwrap(), &be.upload(&x).unwrap(), n)
        .unwrap();
    let got = [d.u.clone(), d.grad.clone(), d.laplacian()].concat();
    close("autodiff baseline", &got, &want, tol.f64);
}

fn objective<B: Backend>(
    be: &B,
    problem: &str,
    widths: &[usize],
    n: &[usize],
) -> Objective<B, f64> {
    let p = builtin(problem).unwrap();
    let mlp = Mlp::new(widths).unwrap();
    let mut obj = Objective::<B, f64>::new(be.clone(), mlp, p.terms(), Some(16)).unwrap();
    let mut r = rng(3);
    for (t, &k) in n.iter().enumerate() {
        obj.set_points(t, p.sample(t, k, &mut r).unwrap()).unwrap();
    }
    obj
}

/// Loss and gradient (reverse mode through the jet) on a linear and a nonlinear problem.
pub fn gradient<B: Backend>(be: &B, tol: Tol) {
    for (problem, widths) in [
        ("poisson2d", vec![2, 8, 6, 1]),
        ("log-fokker-planck9d", vec![10, 6, 1]),
    ] {
        let mlp = Mlp::new(&widths).unwrap();
        let p = mlp.init(9);
        let mut want_g = vec![0.0; p.len()];
        let want_l = objective(&Cpu, problem, &widths, &[37, 21])
            .loss_grad(&p, &mut want_g)
            .unwrap();
        let mut obj = objective(be, problem, &widths, &[37, 21]);
        let pb = be.upload(&p).unwrap();
        let mut gb = be.alloc::<f64>(p.len()).unwrap();
        let l = obj.loss_grad(&pb, &mut gb).unwrap();
        close(&format!("{problem} loss"), &[l], &[want_l], tol.f64);
        close(
            &format!("{problem} gradient"),
            &be.download(&gb).unwrap(),
            &want_g,
            tol.f64,
        );
    }
}

/// One step of `name` on poisson2d from the same start: the new parameters and the whole
/// optimizer state (for KFAC: the Kronecker factors, their inverses and the momentum).
pub fn one_step<B: Backend>(be: &B, name: &str, cfg: &OptimizerConfig, tol: Tol) {
    let widths = [2usize, 7, 5, 1];
    let n = [33usize, 14];
    let mlp = Mlp::new(&widths).unwrap();
    let p0 = mlp.init(2);
    let run_cpu = || {
        let mut obj = objective(&Cpu, "poisson2d", &widths, &n);
        let mut o = build::<Cpu, f64>(name, cfg, &Cpu, p0.len()).unwrap();
        let mut p = p0.clone();
        o.step(&mut obj, &mut p).unwrap();
        (p, o.state(&Cpu).unwrap())
    };
    let (want_p, want_s): (Vec<f64>, State) = run_cpu();
    let mut obj = objective(be, "poisson2d", &widths, &n);
    let mut o = build::<B, f64>(name, cfg, be, p0.len()).unwrap();
    let mut p = be.upload(&p0).unwrap();
    o.step(&mut obj, &mut p).unwrap();
    let got_s = o.state(be).unwrap();
    close(
        &format!("{name}: parameters after one step"),
        &be.download(&p).unwrap(),
        &want_p,
        tol.f64,
    );
    assert_eq!(got_s.len(), want_s.len(), "{name}: state entries");
    for ((kg, vg), (kw, vw)) in got_s.iter().zip(&want_s) {
        assert_eq!(kg, kw, "{name}: state entry names");
        close(&format!("{name}: state `{kw}`"), vg, vw, tol.f64);
    }
}

/// KFAC (factors, inverse, momentum), KFAC*, HIG, the ENGD variants and Hessian-free:
/// one step each.
pub fn optimizer_steps<B: Backend>(be: &B, tol: Tol) {
    let kfac = OptimizerConfig {
        lr: Some(1e-2),
        momentum: Some(0.5),
        damping: Some(1e-3),
        ema: Some(0.6),
        ..Default::default()
    };
    one_step(be, "kfac", &kfac, tol);
    let star = OptimizerConfig {
        damping: Some(1e-3),
        ema: Some(0.9),
        ..Default::default()
    };
    one_step(be, "kfac-star", &star, tol);
    one_step(be, "hig", &OptimizerConfig::default(), tol);
    // the Gramian solves (ENGD per block and diagonal, in sample space) and the
    // Gauss–Newton products of Hessian-free
    let engd = OptimizerConfig {
        damping: Some(1e-6),
        ..Default::default()
    };
    for name in ["engd", "engd-layer", "engd-diag", "engd-woodbury"] {
        one_step(be, name, &engd, tol);
    }
    // conjugate gradients amplify last-bit differences of the products over their
    // iterations (about 1e-9 relative after one step on the emulation): a looser bound
    one_step(
        be,
        "hessian-free",
        &OptimizerConfig {
            damping: Some(1e-3),
            ..Default::default()
        },
        Tol {
            f64: tol.f64.max(1e-6),
            f32: tol.f32.max(1e-3),
        },
    );
}

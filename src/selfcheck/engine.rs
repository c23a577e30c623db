//! The whole engine on a backend against the CPU backend: the forward Laplacian (f64 and
//! f32, chunk sizes that leave a ragged last chunk, a weighted operator, an operator set
//! with a mixed term), the autodiff
//! baseline, loss and gradient on a linear and a nonlinear problem, and one step of every
//! second-order optimizer in f64 and f32 from the same start (the new parameters and the
//! whole optimizer state: KFAC's Kronecker factors, their inverses and the momentum,
//! KFAC*'s, HIG's, ...). Inputs are seeded, so both sides see the same numbers.

use super::Check;
use crate::autodiff::Autodiff;
use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::error::Result;
use crate::jet::{JetEngine, JetKind, Operator, OperatorSet};
use crate::loss::Objective;
use crate::model::Mlp;
use crate::optim::{build, OptimizerConfig, State};
use crate::scalar::{convert, Real};
use rand::{Rng, SeedableRng};

/// `n` numbers uniform in [lo, hi) from a seeded ChaCha8 stream.
pub(crate) fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn points(d: usize, n: usize, seed: u64) -> Vec<f64> {
    uniform(seed, n * d, -1.0, 1.0)
}

fn forward_on<B: Backend, T: Real>(
    be: &B,
    widths: &[usize],
    n: usize,
    chunk: Option<usize>,
    kind: &JetKind,
) -> Result<Vec<f64>> {
    let mlp = Mlp::new(widths)?;
    let p = be.upload(&convert::<f64, T>(&mlp.init(7)))?;
    let x = be.upload(&convert::<f64, T>(&points(widths[0], n, 11)))?;
    let mut eng = JetEngine::<B, T>::new(be.clone(), mlp, kind.clone(), chunk)?;
    eng.forward(&p, &x, n)
}

/// Forward Laplacian (value, gradient and Laplacian of every output) of a few nets, with
/// chunk sizes that leave a ragged last chunk, a weighted operator (heat-like), and a set
/// of two operators (the Laplacian and a mixed `∂_0∂_1`) on one jet.
pub fn forward_laplacian<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    let full = |op: Operator| JetKind::Full(op);
    let mixed = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let lap3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    // widths, points, chunk rows, the jet, a tag for the report
    type Case = (Vec<usize>, usize, Option<usize>, JetKind, &'static str);
    let cases: [Case; 4] = [
        (
            vec![3, 7, 5, 1],
            23,
            Some(10),
            full(Operator::laplacian(3)),
            "",
        ),
        (
            vec![2, 16, 16, 2],
            70,
            None,
            full(Operator::laplacian(2)),
            "",
        ),
        (
            vec![4, 9, 1],
            31,
            Some(8),
            full(Operator::weighted(vec![0.0, 0.25, 0.25, 0.25])?),
            " weighted",
        ),
        (
            vec![3, 8, 6, 2],
            29,
            Some(40),
            JetKind::Set(OperatorSet::from_matrices(3, &[&lap3[..], &mixed[..]])?),
            " two operators",
        ),
    ];
    for (widths, n, chunk, op, tag) in cases {
        let what = format!(
            "{widths:?} n={n} chunk={}{tag}",
            chunk.map_or("all".into(), |c| c.to_string()),
        );
        let want = ck.reference(|| forward_on::<Cpu, f64>(&Cpu, &widths, n, chunk, &op))?;
        let got = forward_on::<B, f64>(be, &widths, n, chunk, &op)?;
        ck.close(&what, "f64", &got, &want, ck.tol.engine.f64);
        let want = ck.reference(|| forward_on::<Cpu, f32>(&Cpu, &widths, n, chunk, &op))?;
        let got = forward_on::<B, f32>(be, &widths, n, chunk, &op)?;
        ck.close(&what, "f32", &got, &want, ck.tol.engine.f32);
    }
    Ok(())
}

/// The nested-differentiation baseline's value, gradient and Laplacian.
pub fn autodiff_laplacian<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    let widths = [3usize, 8, 6, 1];
    let n = 19;
    let mlp = Mlp::new(&widths)?;
    let params = mlp.init(5);
    let x = points(3, n, 4);
    let want = ck.reference(|| -> Result<Vec<f64>> {
        let mut ad = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone())?;
        let d = ad.derivatives(&params, &x, n)?;
        Ok([d.u.clone(), d.grad.clone(), d.laplacian()].concat())
    })?;
    let mut ad = Autodiff::<B, f64>::new(be.clone(), mlp.clone())?;
    let d = ad.derivatives(&be.upload(&params)?, &be.upload(&x)?, n)?;
    let got = [d.u.clone(), d.grad.clone(), d.laplacian()].concat();
    ck.close(
        format!("{widths:?} n={n} u, grad, laplacian"),
        "f64",
        &got,
        &want,
        ck.tol.engine.f64,
    );
    Ok(())
}

fn objective<B: Backend, T: Real>(
    be: &B,
    problem: &str,
    widths: &[usize],
    n: &[usize],
) -> Result<Objective<B, T>> {
    let p = crate::pde::problem(problem, &Default::default())?;
    let mlp = Mlp::new(widths)?;
    let mut obj = Objective::<B, T>::new(be.clone(), mlp, p.terms(), Some(16))?;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (t, &k) in n.iter().enumerate() {
        obj.set_points(t, p.sample(t, k, &mut r)?)?;
    }
    Ok(obj)
}

/// Loss and gradient (reverse mode through the jet) on a linear and a nonlinear problem,
/// and on a system whose jet carries three operators (elasticity: J = 3, a mixed term).
pub fn gradient<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    for (problem, widths) in [
        ("poisson2d", vec![2, 8, 6, 1]),
        ("log-fokker-planck9d", vec![10, 6, 1]),
        ("elasticity", vec![2, 8, 6, 2]),
    ] {
        let mlp = Mlp::new(&widths)?;
        let p = mlp.init(9);
        let (want_l, want_g) = ck.reference(|| -> Result<(f64, Vec<f64>)> {
            let mut g = vec![0.0; p.len()];
            let l =
                objective::<Cpu, f64>(&Cpu, problem, &widths, &[37, 21])?.loss_grad(&p, &mut g)?;
            Ok((l, g))
        })?;
        let mut obj = objective::<B, f64>(be, problem, &widths, &[37, 21])?;
        let pb = be.upload(&p)?;
        let mut gb = be.alloc::<f64>(p.len())?;
        let l = obj.loss_grad(&pb, &mut gb)?;
        let tol = ck.tol.engine.f64;
        ck.close(format!("{problem} loss"), "f64", &[l], &[want_l], tol);
        ck.close(
            format!("{problem} gradient"),
            "f64",
            &be.download(&gb)?,
            &want_g,
            tol,
        );
    }
    Ok(())
}

/// One step of `name` on poisson2d from the same start, with element type `T`: the new
/// parameters and the whole optimizer state.
fn one_step<B: Backend, T: Real>(
    be: &B,
    ck: &mut Check,
    name: &str,
    cfg: &OptimizerConfig,
    rtol: f64,
) -> Result<()> {
    let widths = [2usize, 7, 5, 1];
    let n = [33usize, 14];
    let mlp = Mlp::new(&widths)?;
    let p0 = mlp.init(2);
    let dtype = T::DTYPE.name();
    let (want_p, want_s) = ck.reference(|| -> Result<(Vec<f64>, State)> {
        let mut obj = objective::<Cpu, T>(&Cpu, "poisson2d", &widths, &n)?;
        let mut o = build(name, cfg, &obj)?;
        let mut p = convert::<f64, T>(&p0);
        o.step(&mut obj, &mut p)?;
        Ok((convert(&p), o.state(&Cpu)?))
    })?;
    let mut obj = objective::<B, T>(be, "poisson2d", &widths, &n)?;
    let mut o = build(name, cfg, &obj)?;
    let mut p = be.upload(&convert::<f64, T>(&p0))?;
    o.step(&mut obj, &mut p)?;
    let got_s = o.state(be)?;
    ck.close(
        format!("{name}: parameters"),
        dtype,
        &convert(&be.download(&p)?),
        &want_p,
        rtol,
    );
    let names = |s: &State| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    if names(&got_s) != names(&want_s) {
        ck.failed(
            format!("{name}: state entries"),
            format!(
                "the backend's state has entries {:?}, the CPU's {:?}",
                names(&got_s),
                names(&want_s)
            ),
        );
        return Ok(());
    }
    for ((_, vg), (kw, vw)) in got_s.iter().zip(&want_s) {
        ck.close(format!("{name}: state `{kw}`"), dtype, vg, vw, rtol);
    }
    Ok(())
}

/// The second-order optimizers and their settings for one step: KFAC (factors, inverse,
/// momentum), KFAC*, HIG and Gauss–Newton, the ENGD variants, Hessian-free and L-BFGS.
/// The last field says whether the step's tolerance is loosened to conjugate gradients'.
///
/// The f64 settings are those the GPU tests have always used. A step that solves with
/// the curvature amplifies the last-bit differences of its inputs by the system's
/// condition number, so in f32 (inputs good to ~1e-7) the solves get a damping or
/// singular-value cut that bounds the amplification (≤ ~1e3): otherwise the step itself
/// is undetermined at the f32 tolerance, on any two backends.
fn steps(f32: bool) -> Vec<(&'static str, OptimizerConfig, bool)> {
    let kfac = OptimizerConfig {
        lr: Some(1e-2),
        momentum: Some(0.5),
        damping: Some(1e-3),
        ema: Some(0.6),
        ..Default::default()
    };
    let star = OptimizerConfig {
        damping: Some(1e-3),
        ema: Some(0.9),
        ..Default::default()
    };
    // HIG keeps its default cut in f64; Gauss–Newton's full pseudo-inverse (κ = 1) needs
    // a cut in both precisions
    let hig = OptimizerConfig {
        tau: f32.then_some(1e-2),
        ..Default::default()
    };
    let gn = OptimizerConfig {
        tau: Some(if f32 { 1e-2 } else { 1e-4 }),
        ..Default::default()
    };
    // the Gramian solves (ENGD per block and diagonal, in sample space)
    let engd = OptimizerConfig {
        damping: Some(if f32 { 1e-3 } else { 1e-6 }),
        ..Default::default()
    };
    let hf = OptimizerConfig {
        damping: Some(if f32 { 1e-1 } else { 1e-3 }),
        ..Default::default()
    };
    let mut v = vec![
        ("kfac", kfac, false),
        ("kfac-star", star, false),
        ("hig", hig, false),
        ("gn", gn, false),
    ];
    for name in ["engd", "engd-layer", "engd-diag", "engd-woodbury"] {
        v.push((name, engd.clone(), false));
    }
    v.push(("hessian-free", hf, true));
    v.push(("lbfgs", OptimizerConfig::default(), false));
    v
}

/// One step of each second-order optimizer, in f64 and then f32.
pub fn optimizer_steps<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    let tol = ck.tol.steps;
    for f32 in [false, true] {
        for (name, cfg, cg) in steps(f32) {
            let mut rtol = tol.of(if f32 { "f32" } else { "f64" });
            if cg {
                // conjugate gradients amplify last-bit differences of the products over
                // their iterations (about 1e-9 relative after one f64 step on the
                // emulation): a looser bound
                rtol = rtol.max(if f32 { 1e-3 } else { 1e-6 });
            }
            let r = if f32 {
                one_step::<B, f32>(be, ck, name, &cfg, rtol)
            } else {
                one_step::<B, f64>(be, ck, name, &cfg, rtol)
            };
            // an error in one optimizer must not hide the others
            if let Err(e) = r {
                let dtype = if f32 { "f32" } else { "f64" };
                ck.failed(format!("{name} ({dtype}): error"), e.to_string());
            }
        }
    }
    Ok(())
}

//! Shared test helpers: tolerance checks that grow with the value's size and print the
//! first mismatches (llm.c style), random inputs.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Assert `|got - want| <= atol + rtol·|want|` elementwise; on failure print the first
/// mismatches with their indices and the worst relative error.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        worst = worst.max(err / (atol + rtol * w.abs()).max(f64::MIN_POSITIVE));
        if err.is_nan() || err > tol {
            bad.push((i, g, w, err));
        }
    }
    if !bad.is_empty() {
        let mut msg = format!("{what}: {} of {} entries out of tolerance (rtol {rtol:e}, atol {atol:e}; worst err/tol {worst:.3e}); first:\n", bad.len(), got.len());
        for (i, g, w, e) in bad.iter().take(8) {
            msg += &format!("  [{i}] got {g:.17e} want {w:.17e} |err| {e:.3e}\n");
        }
        panic!("{msg}");
    }
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut impl Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;

/// A built-in problem's objective on a random net with `n[t]` sampled points per term.
pub fn objective(
    problem: &str,
    widths: &[usize],
    n: &[usize],
    seed: u64,
    chunk_rows: usize,
) -> (Objective<Cpu, f64>, Vec<f64>) {
    let p = kfac_pinn::pde::problem(problem, &Default::default()).unwrap();
    let mlp = Mlp::new(widths).unwrap();
    let mut obj =
        Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), Some(chunk_rows)).unwrap();
    let mut r = rng(seed);
    for (t, &k) in n.iter().enumerate() {
        obj.set_points(t, p.sample(t, k, &mut r).unwrap()).unwrap();
    }
    (obj, mlp.init(seed))
}

/// Solve a small dense system by Gaussian elimination with partial pivoting (an
/// independent reference for the library's solvers).
pub fn gauss_solve(n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut x = b.to_vec();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap();
        for k in 0..n {
            m.swap(c * n + k, piv * n + k);
        }
        x.swap(c, piv);
        for r in c + 1..n {
            let f = m[r * n + c] / m[c * n + c];
            for k in c..n {
                m[r * n + k] -= f * m[c * n + k];
            }
            x[r] -= f * x[c];
        }
    }
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|k| m[c * n + k] * x[k]).sum();
        x[c] = (x[c] - s) / m[c * n + c];
    }
    x
}

/// Run the release binary with `args`: exit status (-1 if killed by a signal), stdout,
/// stderr.
pub fn kfac_pinn(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kfac-pinn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Output jet `[fields (m), ∂_1 fields, …, ∂_D fields, Σ_d c_d ∂_dd fields]` of `u` at
/// `x` by central differences (coordinate directions with weights `coef`; second
/// differences at a larger step for stability).
pub fn fd_jet_fields(
    u: &dyn Fn(&[f64], &mut [f64]),
    m: usize,
    x: &[f64],
    coef: &[f64],
) -> Vec<f64> {
    let (h1, h2) = (1e-6, 1e-4);
    let at = |a: usize, h: f64| {
        let mut p = x.to_vec();
        p[a] += h;
        let mut o = vec![0.0; m];
        u(&p, &mut o);
        o
    };
    let mut u0 = vec![0.0; m];
    u(x, &mut u0);
    let mut y = u0.clone();
    let mut lap = vec![0.0; m];
    assert_eq!(coef.len(), x.len());
    for (a, &c) in coef.iter().enumerate() {
        let (p, q) = (at(a, h1), at(a, -h1));
        y.extend((0..m).map(|f| (p[f] - q[f]) / (2.0 * h1)));
        let (p, q) = (at(a, h2), at(a, -h2));
        for f in 0..m {
            lap[f] += c * (p[f] - 2.0 * u0[f] + q[f]) / (h2 * h2);
        }
    }
    y.extend(lap);
    y
}

/// Output jet `[fields (m), ∂_{v_1} fields, …, ∂_{v_K} fields, L_1 fields, …, L_J fields]`
/// of `u` at `x` by central differences, for directions `dirs` (K × D) and operators
/// `L_j = Σ_ab C_ab ∂_ab` given by their matrices (`mats`, D × D each): the Hessian
/// entries by central differences at a larger step, independent of how a jet factorises
/// the operators.
pub fn fd_jet_set(
    u: &dyn Fn(&[f64], &mut [f64]),
    m: usize,
    x: &[f64],
    dirs: &[f64],
    mats: &[Vec<f64>],
) -> Vec<f64> {
    let d = x.len();
    let (h1, h2) = (1e-6, 1e-4);
    let at = |shift: &[(usize, f64)]| {
        let mut p = x.to_vec();
        for &(a, h) in shift {
            p[a] += h;
        }
        let mut o = vec![0.0; m];
        u(&p, &mut o);
        o
    };
    let mut y = at(&[]);
    let u0 = y.clone();
    for v in dirs.chunks(d) {
        let shift = |s: f64| {
            v.iter()
                .enumerate()
                .map(|(a, &c)| (a, s * c * h1))
                .collect::<Vec<_>>()
        };
        let (p, q) = (at(&shift(1.0)), at(&shift(-1.0)));
        y.extend((0..m).map(|f| (p[f] - q[f]) / (2.0 * h1)));
    }
    // the Hessian of every field, D × D
    let mut hess = vec![vec![0.0; d * d]; m];
    for a in 0..d {
        for b in a..d {
            for f in 0..m {
                let v = if a == b {
                    (at(&[(a, h2)])[f] - 2.0 * u0[f] + at(&[(a, -h2)])[f]) / (h2 * h2)
                } else {
                    (at(&[(a, h2), (b, h2)])[f]
                        - at(&[(a, h2), (b, -h2)])[f]
                        - at(&[(a, -h2), (b, h2)])[f]
                        + at(&[(a, -h2), (b, -h2)])[f])
                        / (4.0 * h2 * h2)
                };
                hess[f][a * d + b] = v;
                hess[f][b * d + a] = v;
            }
        }
    }
    for c in mats {
        assert_eq!(c.len(), d * d);
        y.extend((0..m).map(|f| c.iter().zip(&hess[f]).map(|(a, b)| a * b).sum::<f64>()));
    }
    y
}

/// Every term's residuals scaled by `1/√N_t` (the rows of the library's Jacobian).
pub fn scaled_residuals(obj: &mut Objective<Cpu, f64>, q: &Vec<f64>) -> Vec<f64> {
    let mut all = vec![];
    for t in 0..obj.num_terms() {
        let c = (1.0 / obj.term_points(t) as f64).sqrt();
        all.extend(obj.residuals(q, t).unwrap().iter().map(|v| v * c));
    }
    all
}

/// The residual Jacobian `jac` (rows × columns, row-major) at `p` against central
/// differences of [`scaled_residuals`], column by column.
pub fn assert_jacobian_is_fd(
    what: &str,
    obj: &mut Objective<Cpu, f64>,
    p: &[f64],
    jac: &[f64],
    rtol: f64,
    atol: f64,
) {
    let rows = scaled_residuals(obj, &p.to_vec()).len();
    assert_eq!(jac.len(), rows * p.len(), "{what}: Jacobian shape");
    let h = 1e-6;
    for col in 0..p.len() {
        let mut q = p.to_vec();
        q[col] += h;
        let rp = scaled_residuals(obj, &q);
        q[col] -= 2.0 * h;
        let rm = scaled_residuals(obj, &q);
        let fd: Vec<f64> = rp
            .iter()
            .zip(&rm)
            .map(|(a, b)| (a - b) / (2.0 * h))
            .collect();
        let got: Vec<f64> = (0..rows).map(|r| jac[r * p.len() + col]).collect();
        assert_close(&format!("{what} column {col}"), &got, &fd, rtol, atol);
    }
}

/// Every term of `p`, at `samples` of its own points and random output jets: the
/// Gauss–Newton seeds `∂r/∂y` against central differences of the residual in the jet; a
/// residual that says it is linear has seeds independent of the jet; a quadratic form,
/// where given, reproduces the residual.
pub fn assert_seeds_are_fd(
    what: &str,
    p: &dyn kfac_pinn::pde::Problem,
    samples: usize,
    r: &mut rand_chacha::ChaCha8Rng,
) {
    let (d, m) = (p.dim(), p.out_dim());
    for (t, term) in p.terms().iter().enumerate() {
        let sm = term.kind.s() * m;
        let nr = term.residual.n_res();
        let x = p.sample(t, samples, r).unwrap();
        for pt in x.chunks(d) {
            let y = uniform(r, sm, -1.5, 1.5);
            let mut jac = vec![0.0; nr * sm];
            let mut r0 = vec![0.0; nr];
            term.residual.eval(pt, &y, &mut r0, Some(&mut jac));
            let mut fd = vec![0.0; nr * sm];
            let h = 1e-6;
            for c in 0..sm {
                let (mut yp, mut ym) = (y.clone(), y.clone());
                yp[c] += h;
                ym[c] -= h;
                let (mut rp, mut rm) = (vec![0.0; nr], vec![0.0; nr]);
                term.residual.eval(pt, &yp, &mut rp, None);
                term.residual.eval(pt, &ym, &mut rm, None);
                for q in 0..nr {
                    fd[q * sm + c] = (rp[q] - rm[q]) / (2.0 * h);
                }
            }
            assert_close(
                &format!("{what} {} seeds", term.name),
                &jac,
                &fd,
                1e-6,
                1e-7,
            );
            if term.residual.is_linear() {
                let y2 = uniform(r, sm, -1.5, 1.5);
                let mut jac2 = vec![0.0; nr * sm];
                let mut r2 = vec![0.0; nr];
                term.residual.eval(pt, &y2, &mut r2, Some(&mut jac2));
                assert_eq!(jac, jac2, "{what} {}: linear residual", term.name);
            }
            let (mut a, mut b) = (vec![0.0; sm], vec![0.0; sm]);
            if let Some(c0) = term.residual.quad_form(pt, &mut a, &mut b) {
                let want = c0 + (0..sm).map(|c| (a[c] + b[c] * y[c]) * y[c]).sum::<f64>();
                assert_close(
                    &format!("{what} {} quad form", term.name),
                    &r0,
                    &[want],
                    1e-12,
                    1e-12,
                );
            }
        }
    }
}

//! Half-inverse gradients and Gauss–Newton (issue 4) against independent truth: the
//! SVD backend op against a naive reconstruction, the step direction against a dense
//! `V Σ^{−κ} Uᵀ` built from known factors, κ = 1 against the normal equations, the
//! truncation on a matrix with known singular values; the book's problems (toy
//! residuals, the oscillator simulator's Jacobian against finite differences and the
//! closed form of RK4 on a linear ODE), neuron statistics against a direct computation,
//! loss decrease on the toy (λ = 1 and 0.01) and a PINN, and every validation error.

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::{Backend, Lay};
use kfac_pinn::curvature::jacobian;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::stats::neuron_stats;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{
    build, validate, Hig, Optimizer, OptimizerConfig, SvdDirection, OPTIMIZER_NAMES,
};
use kfac_pinn::pde::{builtin, problem, Problem, ProblemOptions};
use kfac_pinn::train::{TrainOptions, Trainer};
use kfac_pinn::Error;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

// ---- small dense helpers (row-major) -------------------------------------------------

fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for l in 0..k {
            let x = a[i * k + l];
            for j in 0..n {
                c[i * n + j] += x * b[l * n + j];
            }
        }
    }
    c
}

fn transpose(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut t = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            t[j * m + i] = a[i * n + j];
        }
    }
    t
}

/// `m × k` matrix with orthonormal columns (Gram–Schmidt, twice, on random columns).
fn orthonormal(m: usize, k: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < k {
        let mut v = uniform(&mut r, m, -1.0, 1.0);
        for _ in 0..2 {
            for c in &cols {
                let d: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(c).for_each(|(a, b)| *a -= d * b);
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-3 {
            cols.push(v.iter().map(|x| x / n).collect());
        }
    }
    let mut q = vec![0.0; m * k];
    for (j, c) in cols.iter().enumerate() {
        for i in 0..m {
            q[i * k + j] = c[i];
        }
    }
    q
}

/// `J = Q1 diag(σ) Q2ᵀ` (m × p) with known factors; also returns Q1 (m × k), Q2 (p × k).
fn with_singular_values(
    m: usize,
    p: usize,
    sigma: &[f64],
    seed: u64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let k = sigma.len();
    let q1 = orthonormal(m, k, seed);
    let q2 = orthonormal(p, k, seed + 1000);
    let mut q1s = q1.clone();
    for i in 0..m {
        for j in 0..k {
            q1s[i * k + j] *= sigma[j];
        }
    }
    let j = matmul(&q1s, &transpose(&q2, p, k), m, k, p);
    (j, q1, q2)
}

/// `−Q2 diag(σ^{−κ}, kept only) Q1ᵀ r`, densely: the expected direction.
#[allow(clippy::too_many_arguments)]
fn dense_direction(
    q1: &[f64],
    q2: &[f64],
    sigma: &[f64],
    keep: &[bool],
    kappa: f64,
    r: &[f64],
    m: usize,
    p: usize,
) -> Vec<f64> {
    let k = sigma.len();
    // the P × M matrix Q2 Σ^{-κ} Q1ᵀ, built explicitly (the optimizer never forms it)
    let mut q2s = q2.to_vec();
    for i in 0..p {
        for j in 0..k {
            q2s[i * k + j] *= if keep[j] { sigma[j].powf(-kappa) } else { 0.0 };
        }
    }
    let pinv = matmul(&q2s, &transpose(q1, m, k), p, k, m);
    matmul(&pinv, r, p, m, 1).iter().map(|v| -v).collect()
}

/// Solve `A x = b` (n × n) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for j in 0..n {
            a.swap(c * n + j, piv * n + j);
        }
        b.swap(c, piv);
        for i in c + 1..n {
            let f = a[i * n + c] / a[c * n + c];
            for j in c..n {
                a[i * n + j] -= f * a[c * n + j];
            }
            b[i] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i * n + j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i * n + i];
    }
    x
}

fn direction(
    j: &[f64],
    m: usize,
    p: usize,
    r: &[f64],
    kappa: f64,
    tau: f64,
) -> (Vec<f64>, kfac_pinn::optim::SvdInfo) {
    let mut ws = SvdDirection::new(&Cpu).unwrap();
    let mut d = vec![0.0; p];
    let info = ws
        .compute(
            &Cpu,
            &j.to_vec(),
            m,
            p,
            &r.to_vec(),
            kappa,
            tau,
            1.0,
            &mut d,
        )
        .unwrap();
    (d, info)
}

fn cfg() -> OptimizerConfig {
    OptimizerConfig::default()
}

// ---- the backend op --------------------------------------------------------------------

#[test]
fn thin_svd_reconstructs_with_orthonormal_factors() {
    let mut r = rng(1);
    // shapes: tall, wide, square, a row, a column; views with offset and padding
    for (m, n, off, pad) in [
        (7, 3, 0, 0),
        (3, 8, 5, 2),
        (6, 6, 1, 3),
        (1, 5, 0, 0),
        (9, 1, 2, 1),
        (40, 13, 0, 4),
    ] {
        let ld = n + pad;
        let buf = uniform(&mut r, off + m * ld, -1.0, 1.0);
        let la = Lay {
            off,
            rows: m,
            cols: n,
            ld,
        };
        let k = m.min(n);
        let (mut u, mut s, mut vt) = (vec![0.0; m * k], vec![0.0; k], vec![0.0; k * n]);
        Cpu.thin_svd(&buf, la, &mut u, &mut s, &mut vt).unwrap();
        let a: Vec<f64> = (0..m * n)
            .map(|i| buf[off + (i / n) * ld + i % n])
            .collect();
        // naive U diag(s) Vᵀ
        let mut us = u.clone();
        for i in 0..m {
            for c in 0..k {
                us[i * k + c] *= s[c];
            }
        }
        let rec = matmul(&us, &vt, m, k, n);
        assert_close(&format!("{m}×{n} U S Vᵀ"), &rec, &a, 1e-12, 1e-13);
        let eye: Vec<f64> = (0..k * k)
            .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
            .collect();
        assert_close(
            "UᵀU",
            &matmul(&transpose(&u, m, k), &u, k, m, k),
            &eye,
            0.0,
            1e-13,
        );
        assert_close(
            "VᵀV",
            &matmul(&vt, &transpose(&vt, k, n), k, n, k),
            &eye,
            0.0,
            1e-13,
        );
        assert!(
            s.windows(2).all(|w| w[0] >= w[1]) && s[k - 1] >= 0.0,
            "{s:?}"
        );
    }
    // f32 input, computed in f64
    let a32: Vec<f32> = uniform(&mut r, 12, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let (mut u, mut s, mut vt) = (vec![0.0; 12], vec![0.0; 3], vec![0.0; 9]);
    Cpu.thin_svd(&a32, Lay::dense(4, 3), &mut u, &mut s, &mut vt)
        .unwrap();
    let mut us = u.clone();
    (0..12).for_each(|i| us[i] *= s[i % 3]);
    let a64: Vec<f64> = a32.iter().map(|&v| v as f64).collect();
    assert_close("f32 input", &matmul(&us, &vt, 4, 3, 3), &a64, 1e-12, 1e-13);
}

#[test]
fn thin_svd_finds_known_singular_values_and_rejects_bad_input() {
    let sigma = [5.0, 2.0, 0.5, 1e-3, 1e-9];
    let (j, _, _) = with_singular_values(11, 6, &sigma, 7);
    let (mut u, mut s, mut vt) = (vec![0.0; 66], vec![0.0; 6], vec![0.0; 36]);
    Cpu.thin_svd(&j, Lay::dense(11, 6), &mut u, &mut s, &mut vt)
        .unwrap();
    assert_close("σ", &s[..5], &sigma, 1e-10, 1e-14);
    assert!(
        s[5].abs() < 1e-14,
        "rank-5 matrix has a sixth σ of {}",
        s[5]
    );
    // non-finite input and short buffers are errors, not garbage
    let mut bad = j.clone();
    bad[17] = f64::NAN;
    let e = Cpu
        .thin_svd(&bad, Lay::dense(11, 6), &mut u, &mut s, &mut vt)
        .unwrap_err();
    assert!(
        matches!(e, Error::NonFinite(_)) && e.to_string().contains("(2, 5)"),
        "{e}"
    );
    let e = Cpu
        .thin_svd(&j, Lay::dense(11, 6), &mut vec![0.0; 5], &mut s, &mut vt)
        .unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e}");
}

// ---- the step direction -----------------------------------------------------------------

#[test]
fn direction_equals_dense_v_sigma_kappa_u_transpose() {
    let mut r = rng(3);
    // tall (M > P) and wide (M < P) Jacobians, several exponents
    for (m, p, seed) in [(12, 5, 11), (4, 9, 12)] {
        let k = m.min(p);
        let sigma: Vec<f64> = (0..k).map(|i| 3.0 * 0.4f64.powi(i as i32)).collect();
        let (j, q1, q2) = with_singular_values(m, p, &sigma, seed);
        let res = uniform(&mut r, m, -1.0, 1.0);
        for kappa in [0.5, 0.25, 1.0] {
            let (d, info) = direction(&j, m, p, &res, kappa, 1e-10);
            let want = dense_direction(&q1, &q2, &sigma, &vec![true; k], kappa, &res, m, p);
            assert_close(&format!("{m}×{p} κ={kappa}"), &d, &want, 1e-10, 1e-12);
            assert_eq!(info.rank, k);
            assert!((info.sigma_max - 3.0).abs() < 1e-12);
        }
    }
}

#[test]
fn kappa_one_is_the_least_squares_gauss_newton_step() {
    let mut r = rng(5);
    // full column rank: J⁺r = (JᵀJ)⁻¹Jᵀr (normal equations)
    let (m, p) = (15, 6);
    let j = uniform(&mut r, m * p, -1.0, 1.0);
    let res = uniform(&mut r, m, -1.0, 1.0);
    let jt = transpose(&j, m, p);
    let want: Vec<f64> = solve(matmul(&jt, &j, p, m, p), matmul(&jt, &res, p, m, 1), p)
        .iter()
        .map(|v| -v)
        .collect();
    let (d, _) = direction(&j, m, p, &res, 1.0, 1e-12);
    assert_close("tall J⁺r", &d, &want, 1e-9, 1e-12);
    // full row rank: the minimum-norm solution Jᵀ(JJᵀ)⁻¹r
    let (m, p) = (5, 11);
    let j = uniform(&mut r, m * p, -1.0, 1.0);
    let res = uniform(&mut r, m, -1.0, 1.0);
    let jt = transpose(&j, m, p);
    let y = solve(matmul(&j, &jt, m, p, m), res.clone(), m);
    let want: Vec<f64> = matmul(&jt, &y, p, m, 1).iter().map(|v| -v).collect();
    let (d, _) = direction(&j, m, p, &res, 1.0, 1e-12);
    assert_close("wide J⁺r", &d, &want, 1e-9, 1e-12);
    // and the step solves the linearised problem: J d = −r
    let jd = matmul(&j, &d, m, p, 1);
    let neg: Vec<f64> = res.iter().map(|v| -v).collect();
    assert_close("J d = −r", &jd, &neg, 1e-9, 1e-12);
}

#[test]
fn truncation_removes_exactly_the_directions_below_tau() {
    let (m, p) = (10, 7);
    let tau = 1e-4;
    // relative to σ_max = 10: kept above 1e-3, dropped at or below
    let sigma = [10.0, 2.0, 0.05, 2.5e-3, 5e-4, 1e-7, 1e-12];
    let keep: Vec<bool> = sigma.iter().map(|&s| s > tau * 10.0).collect();
    assert_eq!(keep.iter().filter(|&&k| k).count(), 4);
    let (j, q1, q2) = with_singular_values(m, p, &sigma, 21);
    let res = uniform(&mut rng(8), m, -1.0, 1.0);
    for kappa in [0.5, 1.0] {
        let (d, info) = direction(&j, m, p, &res, kappa, tau);
        assert_eq!(info.rank, 4);
        assert!((info.sigma_min_kept - 2.5e-3).abs() < 1e-12);
        let want = dense_direction(&q1, &q2, &sigma, &keep, kappa, &res, m, p);
        assert_close(&format!("truncated κ={kappa}"), &d, &want, 1e-9, 1e-12);
        // nothing along the dropped right singular vectors
        for c in 4..7 {
            let along: f64 = (0..p).map(|i| q2[i * 7 + c] * d[i]).sum();
            assert!(
                along.abs() < 1e-9,
                "component {along} along dropped direction {c}"
            );
        }
        // the untruncated step would be dominated by the dropped directions
        let (full, _) = direction(&j, m, p, &res, kappa, 1e-15);
        let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(n(&full) > 100.0 * n(&d));
    }
    // a zero Jacobian keeps nothing and steps nowhere
    let (d, info) = direction(&[0.0; 12], 3, 4, &[1.0, 2.0, 3.0], 0.5, 1e-10);
    assert_eq!(info.rank, 0);
    assert!(d.iter().all(|&v| v == 0.0));
}

// ---- the book's problems ---------------------------------------------------------------

fn toy(lambda: f64) -> Arc<dyn Problem> {
    problem(
        "toy-regression",
        &ProblemOptions {
            lambda: Some(lambda),
        },
    )
    .unwrap()
}

fn oscillators() -> Arc<dyn Problem> {
    problem("oscillators", &ProblemOptions::default()).unwrap()
}

#[test]
fn toy_residuals_follow_the_book_loss() {
    let p = toy(0.01);
    assert_eq!((p.dim(), p.out_dim()), (1, 2));
    let t = &p.terms()[0];
    assert_eq!(t.residual.n_res(), 2);
    let (x, y) = (0.3, [0.7, -20.0]);
    let mut r = [0.0; 2];
    let mut jac = [0.0; 4];
    t.residual.eval(&[x], &y, &mut r, Some(&mut jac));
    assert_close(
        "r",
        &r,
        &[0.7 - (1.8f64).sin(), 0.01 * -20.0 - (2.7f64).cos()],
        1e-15,
        0.0,
    );
    assert_close("∂r/∂y", &jac, &[1.0, 0.0, 0.0, 0.01], 0.0, 0.0);
    // the objective is ½‖r‖² averaged over the batch
    let mlp = Mlp::new(&[1, 7, 2]).unwrap();
    let w = mlp.init::<f64>(2);
    let x = p.sample(0, 9, &mut rng(2)).unwrap();
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    obj.set_points(0, x.clone()).unwrap();
    let want: f64 = x
        .iter()
        .map(|&xi| {
            let y = mlp.eval_host(&w, &[xi]);
            0.5 * ((y[0] - (6.0 * xi).sin()).powi(2) + (0.01 * y[1] - (9.0 * xi).cos()).powi(2))
        })
        .sum::<f64>()
        / 9.0;
    let got = obj.loss(&w).unwrap();
    assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    let mut o = [0.0; 2];
    assert!(!p.exact(&[0.1], &mut o));
}

/// RK4 on `s' = A s + b u` with u constant over a step is `s ← M s + N b u` with
/// `M = Σ_{i≤4} (hA)^i/i!` and `N = h(I + hA/2 + (hA)²/6 + (hA)³/24)`.
fn rk4_closed_form(x0: &[f64], u: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (h, c) = (0.5, 0.2);
    // state (x1, x2, v1, v2): x' = v, v' = −x + c·L x + u e_2
    let a = [
        0.0,
        0.0,
        1.0,
        0.0, //
        0.0,
        0.0,
        0.0,
        1.0, //
        -1.0 - c,
        c,
        0.0,
        0.0, //
        c,
        -1.0 - c,
        0.0,
        0.0,
    ];
    let b = [0.0, 0.0, 0.0, 1.0];
    let eye: Vec<f64> = (0..16)
        .map(|i| if i / 4 == i % 4 { 1.0 } else { 0.0 })
        .collect();
    let ha: Vec<f64> = a.iter().map(|v| h * v).collect();
    let ha2 = matmul(&ha, &ha, 4, 4, 4);
    let ha3 = matmul(&ha2, &ha, 4, 4, 4);
    let ha4 = matmul(&ha3, &ha, 4, 4, 4);
    let mm: Vec<f64> = (0..16)
        .map(|i| eye[i] + ha[i] + ha2[i] / 2.0 + ha3[i] / 6.0 + ha4[i] / 24.0)
        .collect();
    let nn: Vec<f64> = (0..16)
        .map(|i| h * (eye[i] + ha[i] / 2.0 + ha2[i] / 6.0 + ha3[i] / 24.0))
        .collect();
    let nb = matmul(&nn, &b, 4, 4, 1);
    let mut s = x0.to_vec();
    let mut jac = vec![0.0; 4 * 24];
    // column k: M^{23−k} N b
    for k in (0..24).rev() {
        let mut col = nb.clone();
        for _ in 0..(23 - k) {
            col = matmul(&mm, &col, 4, 4, 1);
        }
        for i in 0..4 {
            jac[i * 24 + k] = col[i];
        }
    }
    for &uk in u {
        s = matmul(&mm, &s, 4, 4, 1);
        s.iter_mut().zip(&nb).for_each(|(s, n)| *s += n * uk);
    }
    (s, jac)
}

#[test]
fn oscillator_simulator_jacobian_matches_finite_differences_and_closed_form() {
    let p = oscillators();
    assert_eq!((p.dim(), p.out_dim()), (4, 24));
    let t = &p.terms()[0];
    assert_eq!(t.residual.n_res(), 4);
    let mut r = rng(9);
    for trial in 0..3 {
        let x0 = uniform(&mut r, 4, 0.0, 1.0);
        let u: Vec<f64> = uniform(&mut r, 24, -1.0, 1.0)
            .iter()
            .map(|v| v * (trial as f64 + 0.5))
            .collect();
        let mut res = vec![0.0; 4];
        let mut jac = vec![0.0; 4 * 24];
        t.residual.eval(&x0, &u, &mut res, Some(&mut jac));
        // central differences of the residual in every control
        let h = 1e-5;
        let mut fd = vec![0.0; 4 * 24];
        for k in 0..24 {
            let (mut up, mut um) = (u.clone(), u.clone());
            up[k] += h;
            um[k] -= h;
            let (mut rp, mut rm) = (vec![0.0; 4], vec![0.0; 4]);
            t.residual.eval(&x0, &up, &mut rp, None);
            t.residual.eval(&x0, &um, &mut rm, None);
            for i in 0..4 {
                fd[i * 24 + k] = (rp[i] - rm[i]) / (2.0 * h);
            }
        }
        assert_close("∂final/∂u vs FD", &jac, &fd, 1e-7, 1e-9);
        // and the closed form of RK4 on this linear ODE
        let (fin, jac_cf) = rk4_closed_form(&x0, &u);
        let want: Vec<f64> = fin.iter().zip(&x0).map(|(f, x)| f - x).collect();
        assert_close("residual vs closed form", &res, &want, 1e-12, 1e-12);
        assert_close("∂final/∂u vs closed form", &jac, &jac_cf, 1e-12, 1e-13);
    }
}

#[test]
fn oscillator_batches_come_from_the_fixed_training_set() {
    let p = oscillators();
    let all = p.sample(0, 4096, &mut rng(1)).unwrap();
    let mut set: Vec<[u64; 4]> = all
        .chunks(4)
        .map(|c| {
            [
                c[0].to_bits(),
                c[1].to_bits(),
                c[2].to_bits(),
                c[3].to_bits(),
            ]
        })
        .collect();
    assert!(all.iter().all(|v| (0.0..1.0).contains(v)));
    set.sort();
    set.dedup();
    assert_eq!(set.len(), 4096, "4096 distinct start states");
    let batch = p.sample(0, 32, &mut rng(2)).unwrap();
    let mut b: Vec<[u64; 4]> = batch
        .chunks(4)
        .map(|c| {
            [
                c[0].to_bits(),
                c[1].to_bits(),
                c[2].to_bits(),
                c[3].to_bits(),
            ]
        })
        .collect();
    assert!(b.iter().all(|s| set.binary_search(s).is_ok()));
    b.sort();
    b.dedup();
    assert_eq!(b.len(), 32, "no repeats within a batch");
    // another problem instance holds the same set
    let again = oscillators().sample(0, 4096, &mut rng(1)).unwrap();
    assert_eq!(all, again);
    let e = p.sample(0, 4097, &mut rng(1)).unwrap_err().to_string();
    assert!(e.contains("4096"), "{e}");
}

#[test]
fn non_finite_simulation_is_a_clear_error() {
    let p = oscillators();
    let t = &p.terms()[0];
    let mut r = vec![0.0; 4];
    t.residual.eval(&[0.5; 4], &[f64::MAX; 24], &mut r, None);
    assert!(r.iter().all(|v| v.is_nan()), "{r:?}");
    // controls that overflow the simulation: the loss, its gradient and a HIG step all
    // name the simulator term instead of training on NaN
    let mlp = Mlp::new(&[4, 20, 20, 20, 24]).unwrap();
    let mut w = mlp.init::<f64>(1);
    let last = mlp.layer(3);
    w[last.b_off..last.b_off + 24]
        .iter_mut()
        .for_each(|b| *b = 1e308);
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    obj.set_points(0, p.sample(0, 8, &mut rng(3)).unwrap())
        .unwrap();
    let e = obj.loss(&w).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite(_)) && e.to_string().contains("oscillator-simulator"),
        "{e}"
    );
    let mut g = vec![0.0; w.len()];
    let e = obj.loss_grad(&w, &mut g).unwrap_err();
    assert!(e.to_string().contains("oscillator-simulator"), "{e}");
    let mut opt = Hig::<Cpu, f64>::new(&Cpu, w.len(), &cfg()).unwrap();
    let e = opt.step(&mut obj, &mut w).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite(_)) && e.to_string().contains("oscillator-simulator"),
        "{e}"
    );
}

// ---- neuron statistics ---------------------------------------------------------------------

#[test]
fn neuron_stats_match_a_direct_computation() {
    let mlp = Mlp::new(&[3, 5, 4, 2]).unwrap();
    let w = mlp.init::<f64>(4);
    let pts = uniform(&mut rng(4), 3 * 50, -2.0, 2.0);
    let stats = neuron_stats(&mlp, &w, &pts).unwrap();
    assert_eq!(stats.len(), 2);
    for (l, st) in stats.iter().enumerate() {
        // the network cut after linear layer l is z_{l+1}; its tanh is the activation
        let sub = Mlp::new(&mlp.widths()[..l + 2]).unwrap();
        let n_sub = sub.num_params();
        let acts: Vec<Vec<f64>> = pts
            .chunks(3)
            .map(|x| {
                sub.eval_host(&w[..n_sub], x)
                    .iter()
                    .map(|z| z.tanh())
                    .collect()
            })
            .collect();
        let flat: Vec<f64> = acts.concat();
        let n = flat.len() as f64;
        let mean = flat.iter().sum::<f64>() / n;
        let std = (flat.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n).sqrt();
        let width = acts[0].len();
        let input_std = (0..width)
            .map(|j| {
                let col: Vec<f64> = acts.iter().map(|a| a[j]).collect();
                let m = col.iter().sum::<f64>() / 50.0;
                (col.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 50.0).sqrt()
            })
            .sum::<f64>()
            / width as f64;
        let sat = flat.iter().filter(|a| a.abs() > 0.99).count() as f64 / n;
        assert_eq!((st.layer, st.width), (l + 1, width));
        assert_close(
            &format!("layer {} stats", l + 1),
            &[st.mean, st.std, st.input_std, st.saturated],
            &[mean, std, input_std, sat],
            1e-12,
            1e-14,
        );
    }
    // saturated network: huge first-layer weights push every neuron to ±1
    let mut big = w.clone();
    let l0 = mlp.layer(0);
    big[l0.w_off..l0.b_off].iter_mut().for_each(|v| *v *= 1e4);
    let st = &neuron_stats(&mlp, &big, &pts).unwrap()[0];
    assert!(st.saturated > 0.95, "{st:?}");
    assert!(neuron_stats(&mlp, &w, &[]).is_err());
    assert!(neuron_stats(&mlp, &w, &[1.0, 2.0]).is_err());
    assert!(neuron_stats(&mlp, &w[1..], &pts).is_err());
}

// ---- the optimizers ----------------------------------------------------------------------

fn toy_objective(lambda: f64, n: usize, seed: u64) -> (Objective<Cpu, f64>, Vec<f64>) {
    let p = toy(lambda);
    let mlp = Mlp::new(&[1, 7, 2]).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    obj.set_points(0, p.sample(0, n, &mut rng(seed)).unwrap())
        .unwrap();
    (obj, mlp.init(seed))
}

#[test]
fn gn_step_through_the_objective_is_the_normal_equations_step() {
    // a small PINN whose Jacobian is well conditioned (σ_max/σ_min ≈ 1e5), so that
    // the normal equations are an accurate reference
    let p = builtin("poisson2d").unwrap();
    let mlp = Mlp::new(&[2, 4, 1]).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    obj.set_points(0, p.sample(0, 30, &mut rng(1)).unwrap())
        .unwrap();
    obj.set_points(1, p.sample(1, 10, &mut rng(2)).unwrap())
        .unwrap();
    let w0 = mlp.init::<f64>(6);
    let jac = jacobian(&mut obj, &w0).unwrap();
    let (m, p) = (jac.rows, jac.cols);
    assert_eq!((m, p), (40, 17));
    let jt = transpose(&jac.j, m, p);
    let dx = solve(
        matmul(&jt, &jac.j, p, m, p),
        matmul(&jt, &jac.r_host(&Cpu).unwrap(), p, m, 1),
        p,
    );
    let eta = 0.3;
    let want: Vec<f64> = w0.iter().zip(&dx).map(|(w, d)| w - eta * d).collect();
    let c = OptimizerConfig {
        lr: Some(eta),
        tau: Some(1e-13),
        ..cfg()
    };
    let mut opt = build("gn", &c, &obj).unwrap();
    let mut w = w0.clone();
    let info = opt.step(&mut obj, &mut w).unwrap();
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    // the normal equations square the condition number (≈ 1e10 here), so the reference
    // itself is only good to about 1e-6
    assert_close("GN update", &w, &want, 1e-5, 1e-6 * scale);
    assert!((info.loss - obj.loss(&w0).unwrap()).abs() < 1e-12 * info.loss);
    assert_eq!(info.lr, Some(eta));
    assert_eq!(info.extra[0], ("rank", 17.0));
}

#[test]
fn hig_lowers_the_toy_loss_for_both_lambdas() {
    for lambda in [1.0, 0.01] {
        // a cautious setting (τ = 1e-3 keeps only the well-determined directions):
        // the loss falls within a few steps
        let (mut obj, mut w) = toy_objective(lambda, 256, 1);
        let l0 = obj.loss(&w).unwrap();
        let c = OptimizerConfig {
            lr: Some(0.1),
            tau: Some(1e-3),
            ..cfg()
        };
        let mut opt = build("hig", &c, &obj).unwrap();
        for _ in 0..20 {
            opt.step(&mut obj, &mut w).unwrap();
        }
        let l20 = obj.loss(&w).unwrap();
        assert!(
            l20 < 0.8 * l0,
            "λ = {lambda}: loss {l0} → {l20} after 20 HIG steps (τ = 1e-3)"
        );
        // with the fixed step of docs/hig-results.md the first steps jump (as in the
        // book's figures), then the loss falls well below the start
        let (mut obj, mut w) = toy_objective(lambda, 256, 1);
        let c = OptimizerConfig {
            lr: Some(0.1),
            tau: Some(1e-6),
            ..cfg()
        };
        let mut opt = build("hig", &c, &obj).unwrap();
        for _ in 0..200 {
            opt.step(&mut obj, &mut w).unwrap();
        }
        let l200 = obj.loss(&w).unwrap();
        assert!(
            l200 < 0.2 * l0,
            "λ = {lambda}: loss {l0} → {l200} after 200 HIG steps with η = 0.1"
        );
    }
}

#[test]
fn hig_and_gn_with_line_search_train_a_pinn() {
    let p = builtin("poisson2d").unwrap();
    let mlp = Mlp::new(&[2, 16, 1]).unwrap();
    // (optimizer, τ, steps, required loss ratio): HIG with its defaults; Gauss–Newton
    // with τ = 1e-4, because with the default 1e-10 its pseudo-inverse step is so long
    // along tiny singular directions that even η = 2^-30 does not lower the loss from
    // this initialisation (measured: it stalls at step 2; see docs/hig-results.md)
    for (name, tau, steps, ratio) in [("hig", None, 12, 1e-2), ("gn", Some(1e-4), 12, 0.7)] {
        let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
        obj.set_points(0, p.sample(0, 100, &mut rng(1)).unwrap())
            .unwrap();
        obj.set_points(1, p.sample(1, 40, &mut rng(2)).unwrap())
            .unwrap();
        let mut w = mlp.init::<f64>(3);
        let l0 = obj.loss(&w).unwrap();
        let c = OptimizerConfig { tau, ..cfg() };
        let mut opt = build(name, &c, &obj).unwrap();
        assert_eq!(opt.name(), name);
        let mut last = l0;
        for _ in 0..steps {
            let info = opt.step(&mut obj, &mut w).unwrap();
            assert!(
                (info.loss - last).abs() <= 1e-12 * last,
                "reported loss is the pre-step loss"
            );
            last = obj.loss(&w).unwrap();
            assert!(last <= info.loss, "line search never increases the loss");
        }
        assert!(last < ratio * l0, "{name}: loss {l0} → {last}");
        // stateless: state round-trips as nothing
        assert!(opt.state(&Cpu).unwrap().is_empty());
        opt.load_state(&Cpu, &vec![]).unwrap();
        assert!(opt
            .load_state(&Cpu, &vec![("m".into(), vec![1.0])])
            .is_err());
    }
}

#[test]
fn hig_and_gn_step_on_every_pinn_problem() {
    for name in kfac_pinn::pde::builtin_names() {
        let p = builtin(name).unwrap();
        let mlp = Mlp::new(&[p.dim(), 5, 1]).unwrap();
        for opt_name in ["hig", "gn"] {
            let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
            obj.set_points(0, p.sample(0, 10, &mut rng(1)).unwrap())
                .unwrap();
            obj.set_points(1, p.sample(1, 6, &mut rng(2)).unwrap())
                .unwrap();
            let mut w = mlp.init::<f64>(4);
            let mut opt = build(opt_name, &cfg(), &obj).unwrap();
            let info = opt.step(&mut obj, &mut w).unwrap();
            let after = obj.loss(&w).unwrap();
            assert!(
                after <= info.loss,
                "{name}/{opt_name}: {} → {after}",
                info.loss
            );
            assert!(
                info.extra[0].1 >= 1.0,
                "{name}/{opt_name}: rank {:?}",
                info.extra
            );
        }
    }
}

#[test]
fn hig_trains_the_toy_through_the_trainer() {
    let p = toy(1.0);
    let mlp = Mlp::new(&p.setup().widths).unwrap();
    let w = mlp.init::<f64>(5);
    let c = OptimizerConfig {
        lr: Some(0.1),
        tau: Some(1e-6),
        ..cfg()
    };
    let opt = |obj: &Objective<Cpu, f64>| build("hig", &c, obj);
    let s = p.setup();
    let opts = TrainOptions {
        max_steps: Some(30),
        max_seconds: None,
        log_every: 10,
        resample: s.resample,
        points: s.points.clone(),
        point_kind: Default::default(),
        eval_points: s.eval_points,
        data_seed: 1,
        chunk_rows: None,
        progress: false,
        checkpoint: None,
        checkpoint_every: 0,
        checkpoint_seconds: None,
        neuron_log: None,
    };
    let mut tr = Trainer::new(Cpu, p, mlp, &w, opt, opts).unwrap();
    let l0 = tr.obj.loss(&tr.params).unwrap();
    let sum = tr.run(None, &AtomicBool::new(false)).unwrap();
    assert_eq!(sum.steps, 30);
    assert!(sum.loss < 0.5 * l0, "{l0} → {}", sum.loss);
    assert!(sum.l2_abs.is_nan(), "no exact solution: L2 is NaN");
}

#[test]
fn bad_settings_and_empty_batches_are_clear_errors() {
    assert!(OPTIMIZER_NAMES.contains(&"hig") && OPTIMIZER_NAMES.contains(&"gn"));
    // building refuses them, and so does validation alone (the same checks)
    let net = Mlp::new(&[1, 3, 2]).unwrap();
    let small = Objective::<Cpu, f64>::new(Cpu, net, toy(1.0).terms(), None).unwrap();
    let bad = |name: &str, c: OptimizerConfig, field: &str| {
        let built = build(name, &c, &small).err().map(|e| e.to_string());
        let validated = validate(name, &c).err().map(|e| e.to_string());
        for e in [built, validated] {
            let e = e.expect("must fail");
            assert!(e.contains(field), "{name}: `{e}` should name `{field}`");
        }
    };
    for tau in [0.0, -1e-3, 1.0, 2.0, f64::NAN] {
        bad(
            "hig",
            OptimizerConfig {
                tau: Some(tau),
                ..cfg()
            },
            "tau",
        );
        bad(
            "gn",
            OptimizerConfig {
                tau: Some(tau),
                ..cfg()
            },
            "tau",
        );
    }
    for kappa in [0.0, -0.5, 1.5, f64::INFINITY] {
        bad(
            "hig",
            OptimizerConfig {
                kappa: Some(kappa),
                ..cfg()
            },
            "kappa",
        );
    }
    for lr in [0.0, -1.0, f64::NAN] {
        bad(
            "hig",
            OptimizerConfig {
                lr: Some(lr),
                ..cfg()
            },
            "lr",
        );
    }
    // fields the optimizers do not use
    bad(
        "gn",
        OptimizerConfig {
            kappa: Some(0.5),
            ..cfg()
        },
        "kappa",
    );
    bad(
        "hig",
        OptimizerConfig {
            damping: Some(1e-3),
            ..cfg()
        },
        "damping",
    );
    // κ = 1 is allowed for hig (it is then Gauss–Newton)
    assert!(Hig::<Cpu, f64>::new(
        &Cpu,
        10,
        &OptimizerConfig {
            kappa: Some(1.0),
            ..cfg()
        }
    )
    .is_ok());
    // empty batch
    let p = toy(1.0);
    let mlp = Mlp::new(&[1, 7, 2]).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    let mut w = mlp.init::<f64>(1);
    for name in ["hig", "gn"] {
        let mut opt = build(name, &cfg(), &obj).unwrap();
        let e = opt.step(&mut obj, &mut w).unwrap_err().to_string();
        assert!(e.contains("batch") && e.contains("empty"), "{e}");
    }
    let mut ws = SvdDirection::new(&Cpu).unwrap();
    let mut d = vec![0.0f64; 5];
    assert!(ws
        .compute(
            &Cpu,
            &vec![0.0f64; 0],
            0,
            5,
            &vec![],
            0.5,
            1e-10,
            1.0,
            &mut d
        )
        .is_err());
    let mut d = vec![0.0f64; 3];
    assert!(ws
        .compute(
            &Cpu,
            &vec![0.0f64; 6],
            2,
            3,
            &vec![1.0],
            0.5,
            1e-10,
            1.0,
            &mut d
        )
        .is_err());
    // a scaled direction is the scaled unit-step direction
    let j = vec![2.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let r = vec![1.0, -1.0];
    let (d1, _) = direction(&j, 2, 3, &r, 1.0, 1e-10);
    let mut d3 = vec![0.0; 3];
    ws.compute(&Cpu, &j, 2, 3, &r, 1.0, 1e-10, 3.0, &mut d3)
        .unwrap();
    assert_eq!(d3, d1.iter().map(|v| 3.0 * v).collect::<Vec<_>>());
    assert_eq!(d1, vec![-0.5, 1.0, 0.0]);
    // problem options
    for l in [0.0, f64::NAN, f64::INFINITY] {
        let e = problem("toy-regression", &ProblemOptions { lambda: Some(l) })
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("lambda"), "{e}");
    }
    let e = problem("oscillators", &ProblemOptions { lambda: Some(0.5) })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lambda"), "{e}");
    assert!(kfac_pinn::pde::problem_names().contains(&"oscillators"));
}

#[test]
fn hig_runs_in_f32_with_an_f64_svd() {
    // default truncation follows the Jacobian's precision
    assert_eq!(Hig::<Cpu, f32>::new(&Cpu, 3, &cfg()).unwrap().tau(), 1e-6);
    assert_eq!(Hig::<Cpu, f64>::new(&Cpu, 3, &cfg()).unwrap().tau(), 1e-10);
    let p = toy(1.0);
    let mlp = Mlp::new(&[1, 7, 2]).unwrap();
    let mut obj = Objective::<Cpu, f32>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    obj.set_points(0, p.sample(0, 256, &mut rng(1)).unwrap())
        .unwrap();
    let mut w: Vec<f32> = mlp.init(1);
    let l0 = obj.loss(&w).unwrap();
    let c = OptimizerConfig {
        lr: Some(0.1),
        tau: Some(1e-3),
        ..cfg()
    };
    let mut opt = build("hig", &c, &obj).unwrap();
    for _ in 0..20 {
        opt.step(&mut obj, &mut w).unwrap();
    }
    let l20 = obj.loss(&w).unwrap();
    assert!(l20 < 0.8 * l0, "f32: loss {l0} → {l20}");
}

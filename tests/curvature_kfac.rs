//! Curvature for the second-order optimizers against independent truth: the tangent
//! pass against central differences of the output jet; matrix-free `J v`, `Jᵀ w`, `G v`
//! against the dense Jacobian; Gramians (full, blocks, diagonal) against `JᵀJ`; KFAC
//! factors against a naive host computation and, for one sample of a value-only term,
//! against the exact Gramian block; the Kronecker-sum inverse against a dense solve; the
//! stored pass's products against the dense Jacobian, and the gradient-only pass
//! (`GradStorePass`) against the KFAC pass. A term whose residual reads several operator
//! rows of one jet (an operator set): its factors against the naive computation, and for
//! one sample the bound `G_l ⪯ |R|·S·(A ⊗ B)` of the exact Gramian block (design §6).

mod common;

use common::objective;

use common::gauss_solve;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::curvature::{
    gvp, jacobian, jvp, jvp_gram, vjp, DeviceFactors, GradStorePass, Gramian, GramianKind,
    KfacFactors, KfacInverse, KfacPass,
};
use kfac_pinn::jet::{JetEngine, JetKind, Operator, OperatorSet};
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::pde::builtin;
use rand::Rng;

/// Dense `J` (rows × cols, row-major) of an objective.
fn dense_j(obj: &mut Objective<Cpu, f64>, p: &[f64]) -> (usize, usize, Vec<f64>) {
    let j = jacobian(obj, &p.to_vec()).unwrap();
    (j.rows, j.cols, j.j)
}

fn jtj(m: usize, p: usize, j: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; p * p];
    for r in 0..m {
        let row = &j[r * p..(r + 1) * p];
        for a in 0..p {
            if row[a] != 0.0 {
                for b in 0..p {
                    g[a * p + b] += row[a] * row[b];
                }
            }
        }
    }
    g
}

fn matvec(rows: usize, cols: usize, a: &[f64], x: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|r| (0..cols).map(|c| a[r * cols + c] * x[c]).sum())
        .collect()
}

fn tmatvec(rows: usize, cols: usize, a: &[f64], x: &[f64]) -> Vec<f64> {
    (0..cols)
        .map(|c| (0..rows).map(|r| a[r * cols + c] * x[r]).sum())
        .collect()
}

/// Dense solve by Gaussian elimination with partial pivoting (independent of the
/// library's eigendecompositions).

#[test]
fn tangent_matches_central_differences_of_the_output_jet() {
    let general =
        Operator::from_matrix(3, &[2.0, 0.5, 0.0, 0.5, 1.0, -0.3, 0.0, -0.3, 0.7]).unwrap();
    let cases: Vec<(Vec<usize>, JetKind)> = vec![
        (vec![2, 6, 5, 1], JetKind::Full(Operator::laplacian(2))),
        (vec![3, 4, 3, 2], JetKind::Full(general)),
        (
            vec![2, 5, 1],
            JetKind::Full(Operator::weighted(vec![0.0, 1.0]).unwrap()),
        ),
        (vec![3, 5, 4, 1], JetKind::Value),
        (vec![3, 2], JetKind::Full(Operator::laplacian(3))), // linear model
        (vec![2, 5, 4, 2], JetKind::Set(lap_mixed())),
        (
            vec![3, 6, 3, 1],
            JetKind::Set(
                OperatorSet::from_matrices(
                    3,
                    &[
                        vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                        vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                        vec![1.0, 0.3, -0.2, 0.3, 2.0, 0.1, -0.2, 0.1, 0.5],
                    ],
                )
                .unwrap(),
            ),
        ),
    ];
    for (seed, (widths, kind)) in cases.into_iter().enumerate() {
        let mlp = Mlp::new(&widths).unwrap();
        let d = mlp.input_dim();
        let n = 6;
        let p: Vec<f64> = mlp.init(seed as u64);
        let mut r = rng(seed as u64 + 10);
        let v = uniform(&mut r, p.len(), -1.0, 1.0);
        let x = uniform(&mut r, n * d, -1.0, 1.0);
        let mut eng = JetEngine::<Cpu, f64>::new(Cpu, mlp.clone(), kind.clone(), None).unwrap();
        eng.forward_chunk(&p, &x, 0, n, true).unwrap();
        let got = eng.tangent(&p, &v).unwrap();
        let h = 1e-6;
        let shifted = |eng: &mut JetEngine<Cpu, f64>, s: f64| {
            let q: Vec<f64> = p.iter().zip(&v).map(|(a, b)| a + s * h * b).collect();
            eng.forward(&q, &x, n).unwrap()
        };
        let (yp, ym) = (shifted(&mut eng, 1.0), shifted(&mut eng, -1.0));
        let fd: Vec<f64> = yp
            .iter()
            .zip(&ym)
            .map(|(a, b)| (a - b) / (2.0 * h))
            .collect();
        assert_close(
            &format!("tangent {widths:?} {kind:?}"),
            &got,
            &fd,
            1e-6,
            1e-8,
        );
    }
    // without stored jets the tangent pass is refused
    let mlp = Mlp::new(&[2, 3, 1]).unwrap();
    let p: Vec<f64> = mlp.init(0);
    let mut eng = JetEngine::<Cpu, f64>::new(Cpu, mlp, JetKind::Value, None).unwrap();
    eng.forward_chunk(&p, &vec![0.1, 0.2], 0, 1, false).unwrap();
    assert!(eng.tangent(&p, &p).is_err());
}

#[test]
fn matrix_free_products_match_the_dense_jacobian() {
    for (problem, widths, n) in [
        ("poisson2d", vec![2, 7, 5, 1], vec![13, 6]),
        ("heat1d", vec![2, 5, 4, 1], vec![11, 5]),
        ("log-fokker-planck9d", vec![10, 6, 1], vec![9, 4]),
    ] {
        // small chunks: several chunks per term
        let (mut obj, p) = objective(problem, &widths, &n, 5, 24);
        let (m, np, j) = dense_j(&mut obj, &p);
        let mut r = rng(17);
        let v = uniform(&mut r, np, -1.0, 1.0);
        let v2 = uniform(&mut r, np, -1.0, 1.0);
        let w = uniform(&mut r, m, -1.0, 1.0);
        let jv = jvp(&mut obj, &p, &v).unwrap();
        assert_close(
            &format!("{problem} J v"),
            &jv,
            &matvec(m, np, &j, &v),
            1e-10,
            1e-12,
        );
        let mut out = vec![0.0; np];
        vjp(&mut obj, &p, &w, &mut out).unwrap();
        assert_close(
            &format!("{problem} Jᵀ w"),
            &out,
            &tmatvec(m, np, &j, &w),
            1e-10,
            1e-12,
        );
        let g = jtj(m, np, &j);
        gvp(&mut obj, &p, &v, &mut out).unwrap();
        assert_close(
            &format!("{problem} G v"),
            &out,
            &matvec(np, np, &g, &v),
            1e-10,
            1e-12,
        );
        let gram = jvp_gram(&mut obj, &p, &[&v, &v2]).unwrap();
        let gv2 = matvec(np, np, &g, &v2);
        let gv = matvec(np, np, &g, &v);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let want = [dot(&v, &gv), dot(&v, &gv2), dot(&v2, &gv), dot(&v2, &gv2)];
        assert_close(&format!("{problem} Gram"), &gram, &want, 1e-10, 1e-12);
        assert!(vjp(&mut obj, &p, &w[1..], &mut out).is_err());
        // the same products with the residuals evaluated on the host
        obj.set_backend_residuals(false).unwrap();
        gvp(&mut obj, &p, &v, &mut out).unwrap();
        assert_close(
            &format!("{problem} G v (host residuals)"),
            &out,
            &gv,
            1e-10,
            1e-12,
        );
        let gram = jvp_gram(&mut obj, &p, &[&v, &v2]).unwrap();
        assert_close(
            &format!("{problem} Gram (host residuals)"),
            &gram,
            &want,
            1e-10,
            1e-12,
        );
    }
}

#[test]
fn gramians_match_jtj_and_give_the_gradient() {
    // a scalar PDE, and a system with several fields, residual components and terms
    for (name, w, n) in [
        ("heat1d", vec![2, 6, 4, 1], vec![14, 6]),
        ("kovasznay", vec![2, 5, 4, 3], vec![9, 6, 3]),
    ] {
        gramian_case(name, &w, &n);
    }
}

fn gramian_case(name: &str, w: &[usize], n: &[usize]) {
    let (mut obj, p) = objective(name, w, n, 3, 30);
    let (m, np, j) = dense_j(&mut obj, &p);
    let g = jtj(m, np, &j);
    let mut grad_ref = vec![0.0; np];
    let loss_ref = obj.loss_grad(&p, &mut grad_ref).unwrap();
    let mlp = obj.mlp().clone();
    for kind in [GramianKind::Full, GramianKind::Layer, GramianKind::Diagonal] {
        let mut gram = Gramian::<Cpu, f64>::new(&Cpu, &mlp, kind, true).unwrap();
        let mut grad = vec![0.0; np];
        let loss = gram.update(&mut obj, &p, 0.0, &mut grad).unwrap();
        assert!((loss - loss_ref).abs() <= 1e-12 * loss_ref);
        assert_close(
            &format!("{name} {kind:?} gradient"),
            &grad,
            &grad_ref,
            1e-11,
            1e-14,
        );
        // the kept part of JᵀJ
        let mut want = vec![0.0; np * np];
        for a in 0..np {
            for b in 0..np {
                let keep = match kind {
                    GramianKind::Full => true,
                    GramianKind::Diagonal => a == b,
                    GramianKind::Layer => mlp.layers().iter().any(|l| {
                        (l.off()..l.off() + l.len()).contains(&a)
                            && (l.off()..l.off() + l.len()).contains(&b)
                    }),
                };
                if keep {
                    want[a * np + b] = g[a * np + b];
                }
            }
        }
        assert_close(
            &format!("{name} {kind:?} Gramian"),
            &gram.to_dense(&Cpu).unwrap(),
            &want,
            1e-11,
            1e-14,
        );
        // EMA from the identity: 0.25 I + 0.75 JᵀJ
        let mut ema = Gramian::<Cpu, f64>::new(&Cpu, &mlp, kind, true).unwrap();
        ema.update(&mut obj, &p, 0.25, &mut grad).unwrap();
        let want_ema: Vec<f64> = (0..np * np)
            .map(|i| 0.75 * want[i] + if i % (np + 1) == 0 { 0.25 } else { 0.0 })
            .collect();
        assert_close(
            &format!("{kind:?} EMA"),
            &ema.to_dense(&Cpu).unwrap(),
            &want_ema,
            1e-11,
            1e-14,
        );
    }
}

/// Naive KFAC factors on the host from the layer views of a sweep, per factor group:
/// the first term alone, the further terms pooled (`A` the mean of `z̃ z̃ᵀ` over all the
/// group's jet rows, `B` the sum of the terms' `w/N Σ g gᵀ`).
fn naive_factors(obj: &mut Objective<Cpu, f64>, p: &[f64]) -> Vec<Vec<(Vec<f64>, Vec<f64>)>> {
    let mlp = obj.mlp().clone();
    let nt = obj.num_terms();
    let group = |t: usize| usize::from(t > 0);
    let n_groups = nt.min(2);
    let mut rows = vec![0.0; n_groups];
    for t in 0..nt {
        rows[group(t)] += (obj.term_points(t) * obj.term_spec(t).kind.s()) as f64;
    }
    let mut out: Vec<Vec<(Vec<f64>, Vec<f64>)>> = (0..n_groups)
        .map(|_| {
            mlp.layers()
                .iter()
                .map(|l| {
                    (
                        vec![0.0; (l.fan_in + 1).pow(2)],
                        vec![0.0; l.fan_out.pow(2)],
                    )
                })
                .collect()
        })
        .collect();
    for t in 0..nt {
        let n_t = obj.term_points(t) as f64;
        let spec = obj.term_spec(t).clone();
        let rows_g = rows[group(t)];
        let nr = spec.residual.n_res();
        let fac = &mut out[group(t)];
        obj.sweep(&p.to_vec(), t, |pass| {
            for q in 0..nr {
                let seeds = pass.component_seeds(q, |_| 1.0)?;
                pass.backward(&seeds, |be, v| {
                    let a = be.download(v.a())?;
                    let g = be.download(v.g)?;
                    let (fi, fo) = (v.layout.fan_in, v.layout.fan_out);
                    let na = fi + 1;
                    let (fa, fb) = &mut fac[v.index];
                    for r in 0..v.rows() {
                        let mut z: Vec<f64> = a[r * fi..(r + 1) * fi].to_vec();
                        z.push(if r < v.shape.n { 1.0 } else { 0.0 });
                        if q == 0 {
                            for i in 0..na {
                                for k in 0..na {
                                    fa[i * na + k] += z[i] * z[k] / rows_g;
                                }
                            }
                        }
                        for o in 0..fo {
                            for k in 0..fo {
                                fb[o * fo + k] += spec.weight * g[r * fo + o] * g[r * fo + k] / n_t;
                            }
                        }
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })
        .unwrap();
    }
    out
}

#[test]
fn kfac_factors_match_a_naive_computation_and_the_pass_gives_the_gradient() {
    for (problem, widths, n) in [
        ("poisson2d", vec![2, 5, 4, 1], vec![17, 9]),
        ("log-fokker-planck9d", vec![10, 4, 1], vec![8, 5]),
        // several fields and residual components; five terms in two pooled groups
        ("kovasznay", vec![2, 5, 4, 3], vec![9, 6, 3]),
        ("poisson-mixed-bc", vec![2, 5, 1], vec![7, 3, 4, 2, 3]),
    ] {
        let (mut obj, p) = objective(problem, &widths, &n, 9, 30);
        let nt = obj.num_terms();
        let mlp = obj.mlp().clone();
        // the naive reference visits the chunks one by one (Objective::sweep)
        let naive = naive_factors(&mut obj, &p);
        obj.set_workers(Some(1)).unwrap();
        let mut grad_one = vec![0.0; p.len()];
        obj.loss_grad(&p, &mut grad_one).unwrap();
        // one sweep worker, and three (uneven shares of the chunks, also on one core)
        for workers in [1, 3] {
            obj.set_workers(Some(workers)).unwrap();
            let mut pass = KfacPass::<Cpu, f64>::new(&mlp, nt).unwrap();
            let mut fd = DeviceFactors::new(&Cpu, &mlp, nt, false).unwrap();
            let mut grad = vec![0.0; p.len()];
            let loss = pass
                .run(&mut obj, &p, &mut grad, Some(&mut fd), None)
                .unwrap();
            let f = fd.download(&Cpu).unwrap();
            let mut grad_ref = vec![0.0; p.len()];
            let loss_ref = obj.loss_grad(&p, &mut grad_ref).unwrap();
            assert!((loss - loss_ref).abs() <= 1e-12 * loss_ref);
            // the value-only pass gives the same loss
            let loss_value = obj.loss(&p).unwrap();
            assert!((loss_value - loss_ref).abs() <= 1e-12 * loss_ref);
            assert_close("gradient, one worker", &grad_ref, &grad_one, 1e-12, 1e-15);
            assert_close(
                &format!("{problem} gradient"),
                &grad,
                &grad_ref,
                1e-11,
                1e-14,
            );
            for (t, nt) in naive.iter().enumerate() {
                for (l, (na, nb)) in nt.iter().enumerate() {
                    assert_close(
                        &format!("{problem} A[{t}][{l}]"),
                        f.a(t, l),
                        na,
                        1e-11,
                        1e-14,
                    );
                    assert_close(
                        &format!("{problem} B[{t}][{l}]"),
                        f.b(t, l),
                        nb,
                        1e-11,
                        1e-14,
                    );
                }
            }
            // the gradient alone (no factors) is the same
            let mut g2 = vec![0.0; p.len()];
            pass.run(&mut obj, &p, &mut g2, None, None).unwrap();
            assert_close("gradient without factors", &g2, &grad_ref, 1e-11, 1e-14);
        }
    }
}

#[test]
fn kfac_equals_the_exact_gramian_block_for_one_sample() {
    // a boundary term alone (value-only, S = 1) with one point: one field, and a system's
    // velocity data (two fields, two residual components: B sums their cotangents)
    for (name, widths) in [
        ("poisson2d", vec![2, 5, 3, 1]),
        ("kovasznay", vec![2, 5, 3, 3]),
    ] {
        one_sample_case(name, &widths);
    }
}

fn one_sample_case(name: &str, widths: &[usize]) {
    let prob = kfac_pinn::pde::problem(name, &Default::default()).unwrap();
    let mlp = Mlp::new(widths).unwrap();
    let terms = vec![prob.terms()[1].clone()];
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), terms, None).unwrap();
    obj.set_points(0, vec![0.3, 0.0]).unwrap();
    let p: Vec<f64> = mlp.init(4);
    let (m, np, j) = dense_j(&mut obj, &p);
    let g = jtj(m, np, &j);
    let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 1).unwrap();
    let mut f = DeviceFactors::new(&Cpu, &mlp, 1, false).unwrap();
    let mut grad = vec![0.0; np];
    pass.run(&mut obj, &p, &mut grad, Some(&mut f), None)
        .unwrap();
    let dense = f.download(&Cpu).unwrap().to_dense(0.0);
    // compare the layer blocks of the exact Gramian
    let mut want = vec![0.0; np * np];
    for l in mlp.layers() {
        for a in l.off()..l.off() + l.len() {
            for b in l.off()..l.off() + l.len() {
                want[a * np + b] = g[a * np + b];
            }
        }
    }
    assert_close(
        &format!("{name}: KFAC vs exact block (one sample)"),
        &dense,
        &want,
        1e-12,
        1e-15,
    );
}

fn random_spd(n: usize, r: &mut impl Rng, shift: f64) -> Vec<f64> {
    let x: Vec<f64> = (0..n * (n + 2))
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let k = n + 2;
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..k).map(|c| x[i * k + c] * x[j * k + c]).sum::<f64>() / k as f64
                + if i == j { shift } else { 0.0 };
        }
    }
    a
}

#[test]
fn kronecker_sum_inverse_matches_the_dense_inverse() {
    let mlp = Mlp::new(&[3, 4, 2]).unwrap();
    let np = mlp.num_params();
    let mut r = rng(23);
    for n_terms in [2, 1] {
        let mut f = KfacFactors::new(&mlp, n_terms, false).unwrap();
        for t in 0..n_terms {
            for (li, l) in mlp.layers().iter().enumerate() {
                // the second term's factors only semi-definite (like a boundary B)
                let shift = if t == 0 { 0.05 } else { 0.0 };
                let a = random_spd(l.fan_in + 1, &mut r, shift);
                let b = random_spd(l.fan_out, &mut r, shift);
                f.set(t, li, a, b).unwrap();
            }
        }
        let damping = 1e-3;
        let mut inv = KfacInverse::<Cpu, f64>::new(&Cpu, &mlp).unwrap();
        let fd = DeviceFactors::upload(&Cpu, &f).unwrap();
        let clamped = inv.update(&Cpu, &fd, damping).unwrap();
        assert_eq!(clamped, 0);
        let k = f.to_dense(damping);
        let g = uniform(&mut r, np, -1.0, 1.0);
        let mut x = vec![0.0; np];
        inv.apply(&Cpu, &g, &mut x, 1.0).unwrap();
        let want = gauss_solve(np, &k, &g);
        assert_close(&format!("{n_terms} terms: K⁻¹ g"), &x, &want, 1e-8, 1e-10);
        // alpha scales, and the dense inverse agrees
        let mut x2 = vec![0.0; np];
        inv.apply(&Cpu, &g, &mut x2, -2.0).unwrap();
        let m2: Vec<f64> = want.iter().map(|v| -2.0 * v).collect();
        assert_close("−2 K⁻¹ g", &x2, &m2, 1e-8, 1e-10);
        let dense_inv = inv.to_dense(&Cpu).unwrap();
        assert_close(
            "dense inverse · g",
            &matvec(np, np, &dense_inv, &g),
            &want,
            1e-8,
            1e-10,
        );
    }
    // more terms pool into two groups; no terms is an error
    assert_eq!(KfacFactors::new(&mlp, 5, true).unwrap().num_groups(), 2);
    assert!(KfacFactors::new(&mlp, 0, true).is_err());
}

#[test]
fn non_finite_factors_are_reported_not_propagated() {
    let mlp = Mlp::new(&[2, 3, 1]).unwrap();
    let mut f = KfacFactors::new(&mlp, 2, true).unwrap();
    let mut a = f.a(0, 0).to_vec();
    a[0] = f64::NAN;
    let b = f.b(0, 0).to_vec();
    f.set(0, 0, a, b).unwrap();
    let mut inv = KfacInverse::<Cpu, f64>::new(&Cpu, &mlp).unwrap();
    let e = inv
        .update(&Cpu, &DeviceFactors::upload(&Cpu, &f).unwrap(), 1e-6)
        .unwrap_err();
    assert!(matches!(e, kfac_pinn::Error::NonFinite(_)), "{e}");
    // wrong sizes are refused
    assert!(f.set(0, 0, vec![1.0; 4], vec![1.0; 9]).is_err());
    let _ = Cpu.len(&vec![0.0f64; 1]);
}

#[test]
fn stored_pass_products_match_the_dense_jacobian() {
    use kfac_pinn::curvature::JacobianStore;
    for (problem, widths, n) in [
        ("heat1d", vec![2, 6, 5, 1], vec![19, 7]),
        ("poisson2d", vec![2, 4, 1], vec![9, 5]),
    ] {
        let (mut obj, p) = objective(problem, &widths, &n, 12, 30);
        let (m, np, j) = dense_j(&mut obj, &p);
        let mlp = obj.mlp().clone();
        // the store's pieces (one per sweep worker) come out in sample order
        for workers in [1, 3] {
            obj.set_workers(Some(workers)).unwrap();
            let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 2).unwrap();
            let mut store = JacobianStore::<Cpu, f64>::new(&Cpu, 1 << 30).unwrap();
            let mut grad = vec![0.0; np];
            let loss = pass
                .run(&mut obj, &p, &mut grad, None, Some(&mut store))
                .unwrap();
            assert!(store.is_valid());
            let mut r = rng(3);
            let v = uniform(&mut r, np, -1.0, 1.0);
            let v2 = uniform(&mut r, np, -1.0, 1.0);
            let jv = store.jvp(&Cpu, &v).unwrap();
            // the gradient-only pass (Hessian-free's) is the same sweep: the same loss,
            // gradient and kept jets, to the bit
            let mut grad_only = GradStorePass::<Cpu, f64>::default();
            let mut store2 = JacobianStore::<Cpu, f64>::new(&Cpu, 1 << 30).unwrap();
            let mut grad2 = vec![0.0; np];
            let loss2 = grad_only
                .run(&mut obj, &p, &mut grad2, &mut store2)
                .unwrap();
            assert_eq!(
                (loss2, &grad2),
                (loss, &grad),
                "{problem}: gradient-only pass"
            );
            assert_eq!(store2.jvp(&Cpu, &v).unwrap(), jv, "{problem}: its J v");
            assert_close(
                &format!("{problem} stored J v"),
                &jv,
                &matvec(m, np, &j, &v),
                1e-10,
                1e-12,
            );
            // G v = Jᵀ(J v) from the kept jets, against the dense product and the
            // forward/tangent/backward one
            let mut gv = vec![f64::NAN; np];
            store.gvp(&Cpu, &v, &mut gv).unwrap();
            let jtjv: Vec<f64> = (0..np)
                .map(|c| (0..m).map(|r| j[r * np + c] * jv[r]).sum())
                .collect();
            assert_close(&format!("{problem} stored G v"), &gv, &jtjv, 1e-10, 1e-12);
            let mut want = vec![0.0; np];
            gvp(&mut obj, &p, &v, &mut want).unwrap();
            assert_close(
                &format!("{problem} stored vs passes G v"),
                &gv,
                &want,
                1e-10,
                1e-12,
            );
            // vectors of another length are refused
            assert!(store.gvp(&Cpu, &v[1..].to_vec(), &mut gv).is_err());
            assert!(store.gvp(&Cpu, &v, &mut vec![0.0; np + 1]).is_err());
            let gram = store.jvp_gram(&Cpu, &[&v, &v2]).unwrap();
            let want = jvp_gram(&mut obj, &p, &[&v, &v2]).unwrap();
            assert_close(
                &format!("{problem} stored Gram"),
                &gram,
                &want,
                1e-10,
                1e-12,
            );
        }
    }
    // f32: the stored products against the f64 dense ones (the Gram entries are summed in
    // f64 on the backend from the f32 per-sample values)
    {
        let (widths, n) = ([2, 6, 5, 1], [19, 7]);
        let (mut obj, p) = objective("heat1d", &widths, &n, 12, 30);
        let (m, np, j) = dense_j(&mut obj, &p);
        let prob = builtin("heat1d").unwrap();
        let mlp = Mlp::new(&widths).unwrap();
        let mut obj32 =
            Objective::<Cpu, f32>::new(Cpu, mlp.clone(), prob.terms(), Some(30)).unwrap();
        // the same points as `objective`'s (same seed, same draws in order)
        let mut r = rng(12);
        for (t, &k) in n.iter().enumerate() {
            obj32
                .set_points(t, prob.sample(t, k, &mut r).unwrap())
                .unwrap();
        }
        obj32.set_workers(Some(2)).unwrap();
        let p32: Vec<f32> = p.iter().map(|&x| x as f32).collect();
        let mut pass = KfacPass::<Cpu, f32>::new(&mlp, 2).unwrap();
        let mut store = JacobianStore::<Cpu, f32>::new(&Cpu, 1 << 30).unwrap();
        let mut grad = vec![0.0f32; np];
        pass.run(&mut obj32, &p32, &mut grad, None, Some(&mut store))
            .unwrap();
        let mut r = rng(4);
        let v = uniform(&mut r, np, -1.0, 1.0);
        let v2 = uniform(&mut r, np, -1.0, 1.0);
        let (v32, v232): (Vec<f32>, Vec<f32>) = (
            v.iter().map(|&x| x as f32).collect(),
            v2.iter().map(|&x| x as f32).collect(),
        );
        let jv = matvec(m, np, &j, &v);
        let jv2 = matvec(m, np, &j, &v2);
        let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
        let want = [
            dot(&jv, &jv),
            dot(&jv, &jv2),
            dot(&jv2, &jv),
            dot(&jv2, &jv2),
        ];
        let gram = store.jvp_gram(&Cpu, &[&v32, &v232]).unwrap();
        assert_close("f32 stored Gram", &gram, &want, 1e-4, 1e-6);
        let got = store.jvp(&Cpu, &v32).unwrap();
        assert_close("f32 stored J v", &got, &jv, 1e-4, 1e-5);
    }
    // too little memory: nothing is stored
    let (mut obj, p) = objective("poisson2d", &[2, 4, 1], &[9, 5], 1, 30);
    let mlp = obj.mlp().clone();
    let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 2).unwrap();
    let mut store = JacobianStore::<Cpu, f64>::new(&Cpu, 100).unwrap();
    let mut grad = vec![0.0; p.len()];
    pass.run(&mut obj, &p, &mut grad, None, Some(&mut store))
        .unwrap();
    assert!(!store.is_valid());
    assert!(store.jvp(&Cpu, &p).is_err());
    assert!(store.gvp(&Cpu, &p, &mut vec![0.0; p.len()]).is_err());
}

// ---- a residual that reads several operator rows ------------------------------------------------

/// The Laplacian and the mixed `∂_0∂_1` on one jet in D = 2 (K = 3: e_0, e_1, e_0 + e_1).
fn lap_mixed() -> OperatorSet {
    OperatorSet::from_matrices(2, &[vec![1.0, 0.0, 0.0, 1.0], vec![0.0, 1.0, 1.0, 0.0]]).unwrap()
}

/// `r = Σ_c a_c y_c − f` over a few entries `c` of the output jet (an affine residual that
/// reads the operator rows, and optionally more), with its quadratic form.
struct Rows {
    a: Vec<(usize, f64)>,
    f: f64,
}

impl kfac_pinn::pde::Residual for Rows {
    fn eval(&self, _x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        r[0] = self.a.iter().map(|&(c, a)| a * y[c]).sum::<f64>() - self.f;
        if let Some(j) = jac {
            j.fill(0.0);
            for &(c, a) in &self.a {
                j[c] = a;
            }
        }
    }
    fn quad_form(&self, _x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        for &(c, v) in &self.a {
            a[c] = v;
        }
        Some(-self.f)
    }
}

/// An objective of one term on the set `lap_mixed` whose residual reads the given jet
/// entries (sample layout `[u, ∂_0 u, ∂_1 u, ∂_{0+1} u, Δu, ∂_0∂_1 u]`).
fn set_objective(widths: &[usize], rows: Vec<(usize, f64)>, x: Vec<f64>) -> Objective<Cpu, f64> {
    let term = kfac_pinn::pde::TermSpec {
        name: "interior".into(),
        kind: JetKind::Set(lap_mixed()),
        residual: std::sync::Arc::new(Rows { a: rows, f: 0.4 }),
        weight: 1.0,
    };
    let mlp = Mlp::new(widths).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp, vec![term], Some(30)).unwrap();
    obj.set_points(0, x).unwrap();
    obj
}

#[test]
fn kfac_factors_of_a_residual_on_several_operator_rows() {
    // r = Δu + 2 ∂_0∂_1 u − 0.4 (two operator rows) and the same plus ∂_1 u: the factors
    // are the naive ones over all S = 6 rows, and the pass's gradient is the loss gradient
    for rows in [vec![(4, 1.0), (5, 2.0)], vec![(2, 0.5), (4, 1.0), (5, 2.0)]] {
        let x = uniform(&mut rng(3), 2 * 13, -1.0, 1.0);
        let mut obj = set_objective(&[2, 5, 4, 1], rows.clone(), x);
        let mlp = obj.mlp().clone();
        let p: Vec<f64> = mlp.init(8);
        let naive = naive_factors(&mut obj, &p);
        let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 1).unwrap();
        let mut fd = DeviceFactors::new(&Cpu, &mlp, 1, false).unwrap();
        let mut grad = vec![0.0; p.len()];
        pass.run(&mut obj, &p, &mut grad, Some(&mut fd), None)
            .unwrap();
        let f = fd.download(&Cpu).unwrap();
        for (l, (na, nb)) in naive[0].iter().enumerate() {
            assert_close(&format!("{rows:?} A[{l}]"), f.a(0, l), na, 1e-11, 1e-14);
            assert_close(&format!("{rows:?} B[{l}]"), f.b(0, l), nb, 1e-11, 1e-14);
        }
        // the gradient against central differences of the loss
        let h = 1e-6;
        let fdg: Vec<f64> = (0..p.len())
            .map(|q| {
                let mut pp = p.clone();
                pp[q] += h;
                let lp = obj.loss(&pp).unwrap();
                pp[q] -= 2.0 * h;
                let lm = obj.loss(&pp).unwrap();
                (lp - lm) / (2.0 * h)
            })
            .collect();
        assert_close(&format!("{rows:?} gradient"), &grad, &fdg, 1e-6, 1e-9);
        // the residual Jacobian against differences of the residuals, and the stored
        // pass's J v (KFAC*'s products) against it
        let (m, np, j) = dense_j(&mut obj, &p);
        common::assert_jacobian_is_fd(&format!("{rows:?} J"), &mut obj, &p, &j, 1e-6, 1e-8);
        let mut store =
            kfac_pinn::curvature::JacobianStore::<Cpu, f64>::new(&Cpu, 1 << 30).unwrap();
        pass.run(&mut obj, &p, &mut grad, None, Some(&mut store))
            .unwrap();
        let v = uniform(&mut rng(5), np, -1.0, 1.0);
        let jv = store.jvp(&Cpu, &v).unwrap();
        assert_close(
            &format!("{rows:?} stored J v"),
            &jv,
            &matvec(m, np, &j, &v),
            1e-10,
            1e-12,
        );
        assert_close(
            &format!("{rows:?} J v by the tangent pass"),
            &jvp(&mut obj, &p, &v).unwrap(),
            &jv,
            1e-10,
            1e-12,
        );
    }
}

#[test]
fn kfac_bounds_the_exact_block_of_a_residual_on_several_operator_rows() {
    // One sample, r = Δu + 2 ∂_0∂_1 u − 0.4. Per layer the exact block is G = j jᵀ with
    // j = vec(Σ_s g_s z̃_sᵀ) over the S jet rows, and KFAC's is K = (1/S Σ_s z̃ z̃ᵀ) ⊗
    // (Σ_s g gᵀ). By Cauchy–Schwarz over the |R| rows with non-zero cotangent,
    // G ⪯ |R|·S·K, i.e. jᵀ K⁺ j ≤ |R|·S (j lies in the range of K). |R| = 2 at the output
    // layer (the two operator rows), up to S below it. The blocks are not equal: weight
    // sharing over S > 1 rows is an approximation even for one sample.
    let widths = [2usize, 5, 3, 1];
    let mut obj = set_objective(&widths, vec![(4, 1.0), (5, 2.0)], vec![0.3, -0.2]);
    let mlp = obj.mlp().clone();
    let p: Vec<f64> = mlp.init(4);
    let (m, np, j) = dense_j(&mut obj, &p);
    assert_eq!(m, 1);
    let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 1).unwrap();
    let mut f = DeviceFactors::new(&Cpu, &mlp, 1, false).unwrap();
    let mut grad = vec![0.0; np];
    pass.run(&mut obj, &p, &mut grad, Some(&mut f), None)
        .unwrap();
    let dense = f.download(&Cpu).unwrap().to_dense(0.0);
    let s = obj.term_spec(0).kind.s();
    assert_eq!(s, 6);
    let layers = mlp.layers();
    for (li, l) in layers.iter().enumerate() {
        let (o, n) = (l.off(), l.len());
        let kb: Vec<f64> = (0..n * n)
            .map(|e| dense[(o + e / n) * np + o + e % n])
            .collect();
        let jl = &j[o..o + n];
        // jᵀ (K + εI)⁻¹ j ≤ jᵀ K⁺ j for j in the range of K: a one-sided check
        let scale = (0..n).map(|a| kb[a * n + a]).fold(0.0f64, f64::max);
        let mut reg = kb.clone();
        for a in 0..n {
            reg[a * n + a] += 1e-10 * scale;
        }
        let y = common::gauss_solve(n, &reg, jl);
        let ratio: f64 = jl.iter().zip(&y).map(|(a, b)| a * b).sum();
        let r_rows = if li + 1 == layers.len() {
            2.0
        } else {
            s as f64
        };
        let bound = r_rows * s as f64;
        assert!(
            ratio <= bound * (1.0 + 1e-6),
            "layer {li}: jᵀK⁺j = {ratio} exceeds |R|·S = {bound}"
        );
        // and on random directions v: (vᵀj)² ≤ |R|·S·vᵀKv
        let mut r = rng(li as u64);
        for _ in 0..20 {
            let v = uniform(&mut r, n, -1.0, 1.0);
            let vj: f64 = v.iter().zip(jl).map(|(a, b)| a * b).sum();
            let vkv: f64 = (0..n)
                .map(|a| v[a] * (0..n).map(|b| kb[a * n + b] * v[b]).sum::<f64>())
                .sum();
            assert!(vj * vj <= bound * vkv * (1.0 + 1e-9) + 1e-14, "layer {li}");
        }
        // not exact: the block differs from j jᵀ
        let diff: f64 = (0..n * n)
            .map(|e| (kb[e] - jl[e / n] * jl[e % n]).abs())
            .fold(0.0, f64::max);
        let size: f64 = jl.iter().map(|a| a * a).sum();
        assert!(
            diff > 1e-3 * size,
            "layer {li}: KFAC block equals the exact block"
        );
    }
}

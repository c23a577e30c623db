//! Forward Laplacian (jet) against the autodiff baseline (relative 1e-10 in f64) and
//! against finite differences of the plain network (looser), on random nets: D = 1,
//! widths of 1, several layers, a linear model, vector outputs, weighted and general
//! operators, f32, and chunked evaluation. Operator sets (J = 2 and 3 operators on one
//! jet, mixed terms, D = 2 and 3): every row against autodiff and finite differences,
//! the reverse mode against finite differences of a loss of all rows, and one-operator
//! sets against the single-operator jet.

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::autodiff::Autodiff;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::jet::{accumulate_grad, JetEngine, JetKind, Operator, OperatorSet};
use kfac_pinn::model::Mlp;
use kfac_pinn::scalar::{convert, Real};

/// Forward-Laplacian output split into (u, grad, op) as sample-major arrays.
fn jet_eval<T: Real>(
    mlp: &Mlp,
    params: &[f64],
    x: &[f64],
    op: &Operator,
    chunk_rows: Option<usize>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let be = Cpu;
    let d = mlp.input_dim();
    let m = mlp.output_dim();
    let n = x.len() / d;
    let mut eng =
        JetEngine::<Cpu, T>::new(be, mlp.clone(), JetKind::Full(op.clone()), chunk_rows).unwrap();
    let p = be.upload(&convert::<f64, T>(params)).unwrap();
    let xb = be.upload(&convert::<f64, T>(x)).unwrap();
    let y = eng.forward(&p, &xb, n).unwrap();
    let s = d + 2;
    let (mut u, mut g, mut l) = (vec![], vec![], vec![]);
    for i in 0..n {
        for j in 0..m {
            u.push(y[(i * s) * m + j]);
            for a in 0..d {
                g.push(y[(i * s + 1 + a) * m + j]);
            }
            l.push(y[(i * s + 1 + d) * m + j]);
        }
    }
    (u, g, l)
}

fn check_against_autodiff(widths: &[usize], op: Operator, seed: u64) {
    let mlp = Mlp::new(widths).unwrap();
    let params: Vec<f64> = mlp.init(seed);
    let d = mlp.input_dim();
    let n = 7;
    let x = uniform(&mut rng(seed + 100), n * d, -1.0, 1.0);
    let (u, g, l) = jet_eval::<f64>(&mlp, &params, &x, &op, None);
    let mut ad = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone()).unwrap();
    let der = ad.derivatives(&params, &x, n).unwrap();
    let what = format!("{widths:?}");
    assert_close(&format!("{what} u"), &u, &der.u, 1e-12, 1e-14);
    assert_close(&format!("{what} grad"), &g, &der.grad, 1e-10, 1e-13);
    assert_close(
        &format!("{what} operator"),
        &l,
        &der.operator(&op.matrix()),
        1e-10,
        1e-13,
    );
}

#[test]
fn forward_laplacian_matches_autodiff() {
    check_against_autodiff(&[2, 16, 1], Operator::laplacian(2), 1);
    check_against_autodiff(&[1, 5, 1], Operator::laplacian(1), 2);
    check_against_autodiff(&[3, 1, 1], Operator::laplacian(3), 3);
    check_against_autodiff(&[3, 1, 4, 1, 1], Operator::laplacian(3), 4);
    check_against_autodiff(&[5, 12, 9, 7, 6, 1], Operator::laplacian(5), 5);
    check_against_autodiff(&[4, 3], Operator::laplacian(4), 6); // linear model: Δu = 0
    check_against_autodiff(&[3, 8, 8, 2], Operator::laplacian(3), 7); // vector output
}

#[test]
fn weighted_and_general_operators_match_autodiff() {
    // heat: no second-order term in time
    check_against_autodiff(
        &[3, 10, 10, 1],
        Operator::weighted(vec![0.0, 0.25, 0.25]).unwrap(),
        11,
    );
    let c = [1.0, 0.3, -0.2, 0.3, 2.0, 0.1, -0.2, 0.1, 0.5];
    check_against_autodiff(&[3, 10, 6, 1], Operator::from_matrix(3, &c).unwrap(), 12);
    // indefinite coefficients
    let c = [1.0, 0.9, 0.9, -1.0];
    check_against_autodiff(&[2, 7, 2], Operator::from_matrix(2, &c).unwrap(), 13);
}

/// Central differences of the plain host forward pass.
fn fd_derivs(mlp: &Mlp, p: &[f64], x: &[f64], h: f64) -> (Vec<f64>, Vec<f64>) {
    let d = x.len();
    let f = |x: &[f64]| mlp.eval_host(p, x)[0];
    let f0 = f(x);
    let mut g = vec![0.0; d];
    let mut lap = 0.0;
    for a in 0..d {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[a] += h;
        xm[a] -= h;
        let (fp, fm) = (f(&xp), f(&xm));
        g[a] = (fp - fm) / (2.0 * h);
        lap += (fp - 2.0 * f0 + fm) / (h * h);
    }
    (g, vec![lap])
}

#[test]
fn forward_laplacian_matches_finite_differences() {
    for (k, widths) in [vec![2usize, 20, 1], vec![1, 4, 4, 1], vec![4, 9, 7, 1]]
        .into_iter()
        .enumerate()
    {
        let mlp = Mlp::new(&widths).unwrap();
        let p: Vec<f64> = mlp.init(20 + k as u64);
        let d = mlp.input_dim();
        let x = uniform(&mut rng(30 + k as u64), 3 * d, -1.0, 1.0);
        let (_, g, l) = jet_eval::<f64>(&mlp, &p, &x, &Operator::laplacian(d), None);
        for i in 0..3 {
            let (gf, lf) = fd_derivs(&mlp, &p, &x[i * d..(i + 1) * d], 1e-4);
            assert_close("fd grad", &g[i * d..(i + 1) * d], &gf, 1e-6, 1e-8);
            assert_close("fd laplacian", &l[i..i + 1], &lf, 1e-4, 1e-5);
        }
    }
}

#[test]
fn f32_matches_f64() {
    let mlp = Mlp::new(&[3, 16, 16, 1]).unwrap();
    let p: Vec<f64> = mlp.init(3);
    // parameters representable in f32, so the only difference is arithmetic precision
    let p: Vec<f64> = p.iter().map(|&v| v as f32 as f64).collect();
    let x: Vec<f64> = uniform(&mut rng(4), 10 * 3, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32 as f64)
        .collect();
    let op = Operator::laplacian(3);
    let (u64_, g64, l64) = jet_eval::<f64>(&mlp, &p, &x, &op, None);
    let (u32_, g32, l32) = jet_eval::<f32>(&mlp, &p, &x, &op, None);
    assert_close("f32 u", &u32_, &u64_, 1e-5, 1e-6);
    assert_close("f32 grad", &g32, &g64, 1e-4, 1e-5);
    assert_close("f32 laplacian", &l32, &l64, 1e-4, 1e-5);
}

#[test]
fn chunking_does_not_change_results() {
    let mlp = Mlp::new(&[4, 11, 6, 1]).unwrap();
    let p: Vec<f64> = mlp.init(9);
    let x = uniform(&mut rng(10), 37 * 4, 0.0, 1.0);
    let op = Operator::laplacian(4);
    let whole = jet_eval::<f64>(&mlp, &p, &x, &op, Some(10_000));
    // 6 rows per sample: chunks of 1, 3 and 5 samples (37 is not a multiple of any)
    for rows in [6, 18, 30] {
        let part = jet_eval::<f64>(&mlp, &p, &x, &op, Some(rows));
        assert_close("chunked u", &part.0, &whole.0, 1e-14, 0.0);
        assert_close("chunked grad", &part.1, &whole.1, 1e-14, 1e-16);
        assert_close("chunked laplacian", &part.2, &whole.2, 1e-13, 1e-15);
    }
}

#[test]
fn stored_and_in_place_forward_agree() {
    let be = Cpu;
    let mlp = Mlp::new(&[3, 9, 5, 1]).unwrap();
    let p = be.upload(&mlp.init::<f64>(1)).unwrap();
    let x = be.upload(&uniform(&mut rng(2), 8 * 3, -1.0, 1.0)).unwrap();
    let mut eng =
        JetEngine::<Cpu, f64>::new(be, mlp, JetKind::Full(Operator::laplacian(3)), None).unwrap();
    eng.forward_chunk(&p, &x, 2, 5, true).unwrap();
    let a = eng.output().unwrap();
    eng.forward_chunk(&p, &x, 2, 5, false).unwrap();
    let b = eng.output().unwrap();
    assert_close("stored vs in place", &a, &b, 1e-15, 0.0);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let be = Cpu;
    let mlp = Mlp::new(&[3, 4, 1]).unwrap();
    assert!(JetEngine::<Cpu, f64>::new(
        be,
        mlp.clone(),
        JetKind::Full(Operator::laplacian(2)),
        None
    )
    .is_err());
    let mut eng = JetEngine::<Cpu, f64>::new(be, mlp.clone(), JetKind::Value, None).unwrap();
    let p = be.upload(&[0.0; 5]).unwrap();
    let x = be.upload(&[0.0; 6]).unwrap();
    assert!(eng.forward(&p, &x, 2).is_err(), "wrong parameter count");
    let p = be.upload(&mlp.init::<f64>(0)).unwrap();
    assert!(eng.forward(&p, &x, 3).is_err(), "too few points");
}

#[test]
fn a_taken_input_jet_ends_the_stored_chunk() {
    // swap_input hands over the very input jet the backward pass saw (no copy), refuses a
    // buffer of another length, and a further backward pass of the chunk is refused
    let be = Cpu;
    let mlp = Mlp::new(&[3, 6, 4, 1]).unwrap();
    let p = be.upload(&mlp.init::<f64>(3)).unwrap();
    let x = be.upload(&uniform(&mut rng(5), 6 * 3, -1.0, 1.0)).unwrap();
    let mut eng =
        JetEngine::<Cpu, f64>::new(be, mlp, JetKind::Full(Operator::laplacian(3)), None).unwrap();
    eng.forward_chunk(&p, &x, 0, 6, true).unwrap();
    let seeds = vec![0.5; 6 * 5];
    // the input jets as the visitor sees them, without taking them
    let mut seen = vec![];
    eng.backward(&p, &seeds, |be, v| {
        seen.push(be.download(v.a())?);
        Ok(())
    })
    .unwrap();
    let mut taken = vec![];
    eng.backward(&p, &seeds, |be, mut v| {
        let mut wrong = be.alloc(be.len(v.a()) + 1)?;
        assert!(v.swap_input(&mut wrong, be).is_err(), "length mismatch");
        let mut into = be.alloc(be.len(v.a()))?;
        v.swap_input(&mut into, be)?;
        taken.push(be.download(&into)?);
        assert!(
            v.a().iter().all(|&e| e == 0.0),
            "the engine holds the new buffer"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(taken.len(), 3);
    for (l, (t, s)) in taken.iter().zip(&seen).enumerate() {
        assert_eq!(t, s, "layer {} input jet", 2 - l);
    }
    let again = eng.backward(&p, &seeds, |_, _| Ok(()));
    assert!(again.is_err(), "backward after the input jets were taken");
    // a new forward pass stores again
    eng.forward_chunk(&p, &x, 0, 6, true).unwrap();
    eng.backward(&p, &seeds, |_, _| Ok(())).unwrap();
}

// ---- operator sets: several second-order rows on one jet ----------------------------------------

/// Operator matrices (D × D, row-major) of the set cases: D = 2 with the Laplacian and the
/// mixed `∂_0∂_1` (grad-div's cross term); D = 2 with three operators, one indefinite;
/// D = 3 with the full and a spatial Laplacian and a general symmetric matrix coupling
/// every pair.
fn set_cases() -> Vec<(usize, Vec<Vec<f64>>)> {
    vec![
        (2, vec![vec![1.0, 0.0, 0.0, 1.0], vec![0.0, 1.0, 1.0, 0.0]]),
        (
            2,
            vec![
                vec![2.0, 0.0, 0.0, 1.0],
                vec![0.0, 0.5, 0.5, 0.0],
                vec![1.0, 0.9, 0.9, -1.0],
            ],
        ),
        (
            3,
            vec![
                vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                vec![1.0, 0.3, -0.2, 0.3, 2.0, 0.1, -0.2, 0.1, 0.5],
            ],
        ),
    ]
}

/// The output jet of `kind` at `x` (sample-major, `S·m` per sample).
fn kind_eval<T: Real>(
    mlp: &Mlp,
    params: &[f64],
    x: &[f64],
    kind: &JetKind,
    rows: Option<usize>,
) -> Vec<f64> {
    let be = Cpu;
    let n = x.len() / mlp.input_dim();
    let mut eng = JetEngine::<Cpu, T>::new(be, mlp.clone(), kind.clone(), rows).unwrap();
    let p = be.upload(&convert::<f64, T>(params)).unwrap();
    let xb = be.upload(&convert::<f64, T>(x)).unwrap();
    eng.forward(&p, &xb, n).unwrap()
}

#[test]
fn operator_set_rows_match_autodiff_and_finite_differences() {
    for (ci, (d, mats)) in set_cases().into_iter().enumerate() {
        let set = OperatorSet::from_matrices(d, &mats).unwrap();
        let (k, nj) = (set.k(), mats.len());
        assert_eq!(set.ops(), nj);
        let s = 1 + k + nj;
        for widths in [vec![d, 9, 7, 2], vec![d, 5, 1], vec![d, 12, 3, 6, 1]] {
            let mlp = Mlp::new(&widths).unwrap();
            let m = mlp.output_dim();
            let params: Vec<f64> = mlp.init(40 + ci as u64);
            let n = 6;
            let x = uniform(&mut rng(50 + ci as u64), n * d, -1.0, 1.0);
            // chunks of 4 samples: a ragged last chunk
            let y = kind_eval::<f64>(&mlp, &params, &x, &JetKind::Set(set.clone()), Some(4 * s));
            assert_eq!(y.len(), n * s * m);
            let what = format!("case {ci} {widths:?}");
            // autodiff: values, the gradient (first D directions) and every operator row
            let mut ad = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone()).unwrap();
            let der = ad.derivatives(&params, &x, n).unwrap();
            let row = |r: usize| -> Vec<f64> {
                (0..n)
                    .flat_map(|i| (0..m).map(move |f| (i, f)))
                    .map(|(i, f)| y[(i * s + r) * m + f])
                    .collect()
            };
            assert_close(&format!("{what} u"), &row(0), &der.u, 1e-12, 1e-14);
            for a in 0..d {
                let want: Vec<f64> = (0..n * m).map(|e| der.grad[e * d + a]).collect();
                assert_close(&format!("{what} ∂_{a}"), &row(1 + a), &want, 1e-10, 1e-13);
            }
            for (j, c) in mats.iter().enumerate() {
                let want = der.operator(c);
                assert_close(
                    &format!("{what} L_{j}"),
                    &row(1 + k + j),
                    &want,
                    1e-10,
                    1e-13,
                );
            }
            // finite differences of the plain network: every entry, pair directions included
            let u = |p: &[f64], o: &mut [f64]| o.copy_from_slice(&mlp.eval_host(&params, p));
            for i in 0..n {
                let fd = common::fd_jet_set(&u, m, &x[i * d..(i + 1) * d], set.dirs(), &mats);
                let got = &y[i * s * m..(i + 1) * s * m];
                assert_close(&format!("{what} sample {i} vs fd"), got, &fd, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn operator_set_f32_and_chunks_agree_with_f64() {
    let (d, mats) = set_cases().remove(2);
    let kind = JetKind::Set(OperatorSet::from_matrices(d, &mats).unwrap());
    let mlp = Mlp::new(&[3, 16, 16, 2]).unwrap();
    let p: Vec<f64> = mlp
        .init::<f64>(3)
        .iter()
        .map(|&v| v as f32 as f64)
        .collect();
    let x: Vec<f64> = uniform(&mut rng(4), 11 * 3, -1.0, 1.0)
        .iter()
        .map(|&v| v as f32 as f64)
        .collect();
    let whole = kind_eval::<f64>(&mlp, &p, &x, &kind, None);
    let f32_ = kind_eval::<f32>(&mlp, &p, &x, &kind, None);
    assert_close("set f32", &f32_, &whole, 1e-4, 1e-4);
    // S = 1 + 6 + 3 = 10 rows per sample: chunks of 1 and 3 samples
    for rows in [10, 30] {
        let part = kind_eval::<f64>(&mlp, &p, &x, &kind, Some(rows));
        assert_close("set chunked", &part, &whole, 1e-13, 1e-15);
    }
}

/// `½ Σ_i Σ_e b_e y_ie² + Σ_i Σ_e a_e y_ie` over every entry of the output jet (all
/// operator rows) and its gradient by the engine's reverse mode.
fn set_loss_and_grad(
    mlp: &Mlp,
    kind: &JetKind,
    params: &[f64],
    x: &[f64],
    ab: &(Vec<f64>, Vec<f64>),
) -> (f64, Vec<f64>) {
    let be = Cpu;
    let n = x.len() / mlp.input_dim();
    let mut eng = JetEngine::<Cpu, f64>::new(be, mlp.clone(), kind.clone(), None).unwrap();
    let p = be.upload(params).unwrap();
    let xb = be.upload(x).unwrap();
    eng.forward_chunk(&p, &xb, 0, n, true).unwrap();
    let y = eng.output().unwrap();
    let (a, b) = ab;
    let c = a.len();
    let mut loss = 0.0;
    let mut seeds = vec![0.0; y.len()];
    for (e, (&v, sd)) in y.iter().zip(&mut seeds).enumerate() {
        loss += 0.5 * b[e % c] * v * v + a[e % c] * v;
        *sd = b[e % c] * v + a[e % c];
    }
    let mut grad = be.alloc::<f64>(params.len()).unwrap();
    eng.backward(&p, &seeds, |be, v| accumulate_grad(be, &v, 1.0, &mut grad))
        .unwrap();
    (loss, grad)
}

#[test]
fn operator_set_reverse_mode_matches_finite_differences() {
    for (ci, (d, mats)) in set_cases().into_iter().enumerate() {
        let kind = JetKind::Set(OperatorSet::from_matrices(d, &mats).unwrap());
        let mlp = Mlp::new(&[d, 6, 5, 2]).unwrap();
        let params: Vec<f64> = mlp.init(60 + ci as u64);
        let n = 5;
        let x = uniform(&mut rng(70 + ci as u64), n * d, -1.0, 1.0);
        let c = kind.s() * mlp.output_dim();
        let ab = (
            uniform(&mut rng(80 + ci as u64), c, -1.0, 1.0),
            uniform(&mut rng(90 + ci as u64), c, 0.2, 1.0),
        );
        let (_, grad) = set_loss_and_grad(&mlp, &kind, &params, &x, &ab);
        let h = 1e-6;
        let fd: Vec<f64> = (0..params.len())
            .map(|q| {
                let mut pp = params.clone();
                pp[q] += h;
                let lp = set_loss_and_grad(&mlp, &kind, &pp, &x, &ab).0;
                pp[q] -= 2.0 * h;
                let lm = set_loss_and_grad(&mlp, &kind, &pp, &x, &ab).0;
                (lp - lm) / (2.0 * h)
            })
            .collect();
        assert_close(&format!("set case {ci} gradient"), &grad, &fd, 1e-6, 1e-7);
    }
}

#[test]
fn one_operator_sets_are_the_single_operator_jet() {
    let mlp = Mlp::new(&[3, 8, 6, 2]).unwrap();
    let params: Vec<f64> = mlp.init(5);
    let n = 9;
    let x = uniform(&mut rng(6), n * 3, -1.0, 1.0);
    // diagonal: the same directions and weights, hence the same numbers bit for bit, in the
    // forward pass (both paths) and in the reverse mode
    let w = vec![0.0, 0.25, 0.25];
    let op = JetKind::Full(Operator::weighted(w.clone()).unwrap());
    let set = JetKind::Set(OperatorSet::diagonal(3, &[w]).unwrap());
    assert_eq!((set.k(), set.ops(), set.s()), (op.k(), op.ops(), op.s()));
    assert_eq!(
        kind_eval::<f64>(&mlp, &params, &x, &set, None),
        kind_eval::<f64>(&mlp, &params, &x, &op, None)
    );
    assert_eq!(
        kind_eval::<f32>(&mlp, &params, &x, &set, None),
        kind_eval::<f32>(&mlp, &params, &x, &op, None)
    );
    let c = op.s() * 2;
    let ab = (
        uniform(&mut rng(7), c, -1.0, 1.0),
        uniform(&mut rng(8), c, 0.2, 1.0),
    );
    let (ls, gs) = set_loss_and_grad(&mlp, &set, &params, &x, &ab);
    let (lo, go) = set_loss_and_grad(&mlp, &op, &params, &x, &ab);
    assert_eq!((ls, gs), (lo, go));
    // a general matrix: the single operator takes eigen-directions, the set coordinate
    // axes and pairs; the value, the gradient and the operator row agree
    let cm = vec![1.0, 0.3, -0.2, 0.3, 2.0, 0.1, -0.2, 0.1, 0.5];
    let op = JetKind::Full(Operator::from_matrix(3, &cm).unwrap());
    let set = JetKind::Set(OperatorSet::from_matrices(3, &[cm]).unwrap());
    let (yo, ys) = (
        kind_eval::<f64>(&mlp, &params, &x, &op, None),
        kind_eval::<f64>(&mlp, &params, &x, &set, None),
    );
    let (so, ss, m) = (op.s(), set.s(), 2);
    for i in 0..n {
        let pick = |y: &[f64], s: usize, rows: &[usize]| -> Vec<f64> {
            rows.iter()
                .flat_map(|&r| (0..m).map(move |f| (r, f)))
                .map(|(r, f)| y[(i * s + r) * m + f])
                .collect()
        };
        assert_close(
            "general single operator as a set",
            &pick(&ys, ss, &[0, 1, 2, 3, ss - 1]),
            &pick(&yo, so, &[0, 1, 2, 3, so - 1]),
            1e-10,
            1e-12,
        );
    }
}

#[test]
fn operator_set_of_another_dimension_is_refused() {
    let mlp = Mlp::new(&[3, 4, 1]).unwrap();
    let set = OperatorSet::diagonal(2, &[vec![1.0, 1.0], vec![0.0, 1.0]]).unwrap();
    let e = JetEngine::<Cpu, f64>::new(Cpu, mlp, JetKind::Set(set), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("operator acts on 2 input dimensions"), "{e}");
}

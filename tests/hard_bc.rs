//! Exact (hard) boundary conditions (issue 19): distance functions vanish on their pieces
//! and are positive inside; their forward-mode derivatives match finite differences; the
//! wrapped residual sees the jet of `u = g + φN` (against central differences of `g +
//! φ·N` with `N` the network itself, for a Laplacian, a heat operator and rotated
//! directions); the conditions hold exactly on the dropped terms' points; the reported
//! L2 error of a hard-BC run is that of `g + φN` computed by hand.

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::geometry::distance::{named_pieces_phi, with_line};
use kfac_pinn::geometry::{
    pieces_phi, Ball, BoxShape, Difference, Dual2, Ellipsoid, Intersection, Phi, Polygon, Prefixed,
    ShapeRef, Shell, Simplex, TimeProduct, Union,
};
use kfac_pinn::jet::{JetEngine, JetKind, Operator};
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::hard::{HardBc, HardField};
use kfac_pinn::pde::{hard_names, problem, system, Problem, Residual};
use kfac_pinn::train::{TrainOptions, Trainer};
use rand::Rng;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn lshape() -> ShapeRef {
    Arc::new(
        Polygon::new(vec![
            [-1.0, -1.0],
            [0.0, -1.0],
            [0.0, 0.0],
            [1.0, 0.0],
            [1.0, 1.0],
            [-1.0, 1.0],
        ])
        .unwrap(),
    )
}

fn plate() -> ShapeRef {
    let sq: ShapeRef = Arc::new(BoxShape::new(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap());
    let hole: ShapeRef =
        Arc::new(Prefixed::new(Arc::new(Ball::new(vec![0.5, 0.5], 0.2).unwrap()), "hole").unwrap());
    Arc::new(Difference::new(sq, hole).unwrap())
}

/// Shapes whose every piece has a distance function.
fn shapes() -> Vec<(&'static str, ShapeRef)> {
    let b3: ShapeRef = Arc::new(BoxShape::new(vec![0.0, -1.0, 0.5], vec![1.0, 1.0, 2.0]).unwrap());
    let ball: ShapeRef = Arc::new(Ball::new(vec![0.0, 0.3], 1.0).unwrap());
    let cap: ShapeRef = Arc::new(
        Intersection::new(
            Arc::new(BoxShape::new(vec![-1.0, -1.0], vec![1.0, 0.4]).unwrap()),
            Arc::new(
                Prefixed::new(Arc::new(Ball::new(vec![0.0, 0.0], 0.9).unwrap()), "b").unwrap(),
            ),
        )
        .unwrap(),
    );
    vec![
        ("box3", b3),
        ("ball5", Arc::new(Ball::new(vec![0.1; 5], 1.5).unwrap())),
        (
            "shell2",
            Arc::new(Shell::new(vec![0.0, 0.0], 0.5, 1.0).unwrap()),
        ),
        ("lshape", lshape()),
        ("plate", plate()),
        ("cap", cap),
        (
            "simplex3",
            Arc::new(
                Simplex::new(vec![
                    vec![0.0, 0.0, 0.0],
                    vec![1.0, 0.0, 0.0],
                    vec![0.0, 1.0, 0.0],
                    vec![0.0, 0.0, 1.0],
                ])
                .unwrap(),
            ),
        ),
        (
            "ball-time",
            Arc::new(TimeProduct::new(ball, 0.0, 2.0).unwrap()),
        ),
    ]
}

#[test]
fn phi_vanishes_on_its_pieces_and_is_positive_inside() {
    let mut r = rng(1);
    for (name, s) in shapes() {
        let d = s.dim();
        let np = s.pieces().len();
        let all: Vec<usize> = (0..np).collect();
        let phi_all = pieces_phi(s.as_ref(), &all).unwrap();
        // interior: every piece's φ and their combination are positive
        let mut x = vec![0.0; 500 * d];
        s.sample_interior(&mut r, &mut x).unwrap();
        for pt in x.chunks(d) {
            // points within rounding of the boundary are not "inside"
            if s.sdf(pt) > -1e-9 {
                continue;
            }
            for p in 0..np {
                let v = s.piece_phi(p).unwrap().value(pt);
                assert!(v > 0.0, "{name} piece {p}: φ = {v} at {pt:?}");
            }
            let v = phi_all.value(pt);
            assert!(v > 0.0, "{name}: combined φ = {v} at {pt:?}");
        }
        // on each piece: its own φ and the combination vanish
        for p in 0..np {
            if s.piece_measure(p) <= 0.0 {
                continue;
            }
            let (mut x, mut n) = (vec![0.0; 200 * d], vec![0.0; 200 * d]);
            s.sample_piece(p, &mut r, &mut x, &mut n).unwrap();
            let own = s.piece_phi(p).unwrap();
            for pt in x.chunks(d) {
                assert!(own.value(pt).abs() < 1e-12, "{name} piece {p} at {pt:?}");
                assert!(phi_all.value(pt).abs() < 1e-12, "{name} all at {pt:?}");
            }
            // the other pieces' φ alone is not zero there (it is a different piece):
            // checked through the combination of the others at the piece's middle points
            if np > 1 {
                let others: Vec<usize> = (0..np).filter(|&q| q != p).collect();
                let phi_o = pieces_phi(s.as_ref(), &others).unwrap();
                let pos = x.chunks(d).filter(|pt| phi_o.value(pt) > 1e-6).count();
                assert!(pos > 150, "{name} piece {p}: other pieces vanish at {pos}");
            }
        }
    }
}

/// Value, slope and curvature of `f` along `v` by central differences.
fn fd_line(f: &dyn Fn(&[f64]) -> f64, x: &[f64], v: &[f64]) -> [f64; 3] {
    let at = |h: f64| {
        let p: Vec<f64> = x.iter().zip(v).map(|(a, b)| a + h * b).collect();
        f(&p)
    };
    let (h1, h2) = (1e-6, 1e-4);
    let f0 = at(0.0);
    [
        f0,
        (at(h1) - at(-h1)) / (2.0 * h1),
        (at(h2) - 2.0 * f0 + at(-h2)) / (h2 * h2),
    ]
}

fn dual_line(f: &dyn Fn(&[Dual2]) -> Dual2, x: &[f64], v: &[f64]) -> [f64; 3] {
    let j = with_line(x, Some(v), f);
    [j.v, j.d, j.dd]
}

#[test]
fn dual_derivatives_match_finite_differences() {
    let mut r = rng(2);
    let pts: Vec<[f64; 2]> = (0..20)
        .map(|_| [r.random_range(0.2..1.0), r.random_range(-1.0..1.0)])
        .collect();
    let mut check = |what: &str, f: &dyn Fn(&[Dual2]) -> Dual2, x: &[f64]| {
        let v = uniform(&mut r, x.len(), -1.0, 1.0);
        let plain = |p: &[f64]| with_line(p, None, f).v;
        let want = fd_line(&plain, x, &v);
        let got = dual_line(f, x, &v);
        assert_close(what, &got, &want, 1e-5, 1e-6);
    };
    // the elementary functions, composed
    let expr = |x: &[Dual2]| {
        let a = x[0].sin() * x[1].exp() + (x[0] * x[1]).cos();
        let b = (x[0].sq() + 1.5).sqrt().ln() / (x[1] + 3.0);
        let c = x[1].atan2(x[0] - 2.0) * (x[0] + 2.0).powf(2.0 / 3.0);
        a - b + c + x[0].recip() * 0.1
    };
    for x in &pts {
        check("expression", &expr, x);
    }
    for (name, s) in shapes() {
        let d = s.dim();
        let all: Vec<usize> = (0..s.pieces().len()).collect();
        let phi = pieces_phi(s.as_ref(), &all).unwrap();
        let mut x = vec![0.0; 20 * d];
        s.sample_interior(&mut rng(5), &mut x).unwrap();
        for pt in x.chunks(d) {
            check(name, &|p| phi.eval(p), pt);
        }
    }
}

#[test]
fn pieces_without_a_distance_function_are_refused_by_name() {
    let e: ShapeRef = Arc::new(Ellipsoid::new(vec![0.0, 0.0], vec![1.0, 2.0]).unwrap());
    let msg = pieces_phi(e.as_ref(), &[0]).unwrap_err().to_string();
    assert!(
        msg.contains("surface") && msg.contains("distance function"),
        "{msg}"
    );
    let u: ShapeRef = Arc::new(
        Union::new(
            Arc::new(Ball::new(vec![0.0, 0.0], 1.0).unwrap()),
            Arc::new(
                Prefixed::new(Arc::new(Ball::new(vec![1.0, 0.0], 1.0).unwrap()), "b").unwrap(),
            ),
        )
        .unwrap(),
    );
    let msg = pieces_phi(u.as_ref(), &[1]).unwrap_err().to_string();
    assert!(
        msg.contains("distance function") && msg.contains("Got b."),
        "{msg}"
    );
    let msg = pieces_phi(lshape().as_ref(), &[6]).unwrap_err().to_string();
    assert!(msg.contains('6') && msg.contains("edge5"), "{msg}");
    let msg = named_pieces_phi(lshape().as_ref(), &["edge9"])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("edge9") && msg.contains("edge0"), "{msg}");
    let msg = pieces_phi(lshape().as_ref(), &[]).unwrap_err().to_string();
    assert!(msg.contains("at least one"), "{msg}");
}

/// Returns the jet it is given (`r = y`): wrapped, it exposes the jet of `u`.
struct Echo(usize);

impl Residual for Echo {
    fn n_res(&self) -> usize {
        self.0
    }
    fn eval(&self, _x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        r.copy_from_slice(y);
        if let Some(j) = jac {
            j.fill(0.0);
            for i in 0..self.0 {
                j[i * self.0 + i] = 1.0;
            }
        }
    }
}

/// The wrapped [`Echo`] on the network's jet against central differences of
/// `g + φ·N(x)` (N the network's value at shifted points), for directions and operators
/// given by `kind`; also the seeds against central differences in the jet.
fn check_transform(what: &str, hard: HardBc, kind: JetKind, x: &[f64], d: usize) {
    let m = hard.m;
    let mlp = Mlp::new(&[d, 6, 5, m]).unwrap();
    let params = Cpu.upload(&mlp.init::<f64>(7)).unwrap();
    let n = x.len() / d;
    let mut eng = JetEngine::<Cpu, f64>::new(Cpu, mlp.clone(), kind.clone(), None).unwrap();
    let yn = eng.forward(&params, &Cpu.upload(x).unwrap(), n).unwrap();
    let val = JetEngine::<Cpu, f64>::new(Cpu, mlp, JetKind::Value, None).unwrap();
    let hard = Arc::new(hard);
    let sm = kind.s() * m;
    let wrapped = hard.wrap(&kind, Arc::new(Echo(sm)));
    assert_eq!(wrapped.n_res(), sm);
    assert!(wrapped.is_linear());
    let val = std::cell::RefCell::new(val);
    let u = |p: &[f64], o: &mut [f64]| {
        let net = val
            .borrow_mut()
            .forward(&params, &Cpu.upload(p).unwrap(), 1)
            .unwrap();
        o.copy_from_slice(&net);
        hard.apply(p, o);
    };
    let (dirs, mats) = match &kind {
        // an eigen-factorised operator's derivative rows are the gradient (the jet
        // rotates them back to the axes)
        JetKind::Full(op) if !op.is_identity() => {
            let mut eye = vec![0.0; d * d];
            (0..d).for_each(|i| eye[i * d + i] = 1.0);
            (eye, vec![op.matrix()])
        }
        JetKind::Full(op) => (op.dirs().to_vec(), vec![op.matrix()]),
        JetKind::Set(s) => (
            s.dirs().to_vec(),
            (0..s.ops()).map(|j| s.matrix(j)).collect(),
        ),
        JetKind::Value => (vec![], vec![]),
    };
    let mut worst = 0.0f64;
    for (i, pt) in x.chunks(d).enumerate() {
        let y = &yn[i * sm..(i + 1) * sm];
        let mut got = vec![0.0; sm];
        let mut jac = vec![0.0; sm * sm];
        wrapped.eval(pt, y, &mut got, Some(&mut jac));
        let want = common::fd_jet_set(&u, m, pt, &dirs, &mats);
        assert_close(&format!("{what} point {i}"), &got, &want, 1e-5, 1e-5);
        // seeds: the map's matrix, against differences of the wrapped residual in y
        for c in 0..sm {
            let (mut yp, mut ym) = (y.to_vec(), y.to_vec());
            yp[c] += 1e-6;
            ym[c] -= 1e-6;
            let (mut rp, mut rm) = (vec![0.0; sm], vec![0.0; sm]);
            wrapped.eval(pt, &yp, &mut rp, None);
            wrapped.eval(pt, &ym, &mut rm, None);
            for q in 0..sm {
                let fd = (rp[q] - rm[q]) / 2e-6;
                worst = worst.max((fd - jac[q * sm + c]).abs());
            }
        }
    }
    assert!(worst < 1e-7, "{what}: seeds off by {worst:e}");
}

#[test]
fn wrapped_jet_is_the_jet_of_g_plus_phi_n() {
    // the L-shape problem's own φ and g under the Laplacian (2-d)
    let p = system("poisson-lshape-hard").unwrap();
    let hard = (*p.hard_bc().unwrap()).clone();
    // points 0.1 away from the edges: near the trimmed segments' end points φ has large
    // fourth derivatives, the error of the second differences the test compares with
    let shape = p.domain().unwrap().clone();
    let x: Vec<f64> = p
        .sample(0, 40, &mut rng(11))
        .unwrap()
        .chunks(2)
        .filter(|q| shape.sdf(q) < -0.1)
        .take(6)
        .flatten()
        .copied()
        .collect();
    assert_eq!(x.len(), 12);
    check_transform(
        "lshape Laplacian",
        hard.clone(),
        JetKind::Full(Operator::laplacian(2)),
        &x,
        2,
    );
    // rotated directions: an operator with a mixed term (eigen-directions)
    let op = Operator::from_matrix(2, &[1.0, 0.4, 0.4, 2.0]).unwrap();
    assert!(!op.is_identity());
    check_transform("lshape rotated", hard, JetKind::Full(op), &x, 2);
    // heat: time first, an exact initial value (t − t0) and Dirichlet data on a disk,
    // two fields of which only the second is constrained
    let disk: ShapeRef = Arc::new(Ball::new(vec![0.0, 0.0], 1.0).unwrap());
    let cyl: ShapeRef = Arc::new(TimeProduct::new(disk, 0.0, 1.0).unwrap());
    let phi = pieces_phi(cyl.as_ref(), &[0, 2]).unwrap();
    let g = Arc::new(|x: &[Dual2]| (x[1] * 2.0).sin() * x[2].exp() + x[0] * x[2]);
    let hard = HardBc {
        m: 2,
        fields: vec![HardField {
            field: 1,
            phi: Arc::new(phi),
            g: Some(g),
        }],
        note: "test".into(),
    };
    let mut x = vec![0.0; 6 * 3];
    cyl.sample_interior(&mut rng(12), &mut x).unwrap();
    let heat = JetKind::Full(Operator::weighted(vec![0.0, 1.0, 1.0]).unwrap());
    check_transform("heat", hard.clone(), heat, &x, 3);
    // a set of operators (a full and a spatial Laplacian with a mixed term)
    let set = kfac_pinn::jet::OperatorSet::from_matrices(
        3,
        &[
            vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.3, 0.0, 0.3, 1.0],
        ],
    )
    .unwrap();
    check_transform("operator set", hard.clone(), JetKind::Set(set), &x, 3);
    check_transform("values", hard, JetKind::Value, &x, 3);
}

#[test]
fn hard_problems_meet_their_conditions_exactly() {
    // every hard problem: on the dropped Dirichlet term's points, g + φN is the data
    // whatever N; its remaining terms' seeds match differences and quadratic forms hold
    for name in hard_names() {
        let hp = system(name).unwrap();
        let soft = system(name.trim_end_matches("-hard")).unwrap();
        let hard = hp.hard_bc().unwrap();
        let d = hp.dim();
        let kept: Vec<String> = hp.terms().iter().map(|t| t.name.clone()).collect();
        assert_eq!(hp.terms().len(), hp.setup().points.len(), "{name}");
        let mut r = rng(13);
        for (t, term) in soft.terms().iter().enumerate() {
            if kept.contains(&term.name) {
                continue;
            }
            let x = soft.sample(t, 200, &mut r).unwrap();
            for pt in x.chunks(d) {
                let mut u = [r.random_range(-5.0..5.0)];
                hard.apply(pt, &mut u);
                let mut want = [0.0];
                assert!(soft.exact(pt, &mut want));
                assert!(
                    (u[0] - want[0]).abs() < 1e-9 * (1.0 + want[0].abs()),
                    "{name} {}: {} vs {} at {pt:?}",
                    term.name,
                    u[0],
                    want[0]
                );
            }
        }
        // g is not the solution inside (N = 0 must not solve the problem)
        let x = hp.sample(0, 200, &mut r).unwrap();
        let mut dev = 0.0f64;
        for pt in x.chunks(d) {
            let mut u = [0.0];
            hard.apply(pt, &mut u);
            let mut want = [0.0];
            assert!(soft.exact(pt, &mut want));
            dev = dev.max((u[0] - want[0]).abs());
        }
        assert!(dev > 1e-2, "{name}: g is the solution inside ({dev:e})");
        common::assert_seeds_are_fd(name, &hp, 3, &mut r);
    }
}

#[test]
fn hard_run_reports_the_error_of_g_plus_phi_n() {
    // ball5d-hard: φ = (1 − |x|²)/2, g = |x|²(Σ sin(π x_i/2) + 1/10), written out here
    let p = problem("poisson-ball5d-hard", &Default::default()).unwrap();
    let mlp = Mlp::new(&[5, 8, 1]).unwrap();
    let params: Vec<f64> = mlp.init(3);
    let cfg = OptimizerConfig {
        lr: Some(1e-2),
        ..Default::default()
    };
    let opts = TrainOptions {
        max_steps: Some(5),
        max_seconds: None,
        log_every: 500,
        resample: 0,
        points: vec![64],
        point_kind: Default::default(),
        eval_points: 300,
        data_seed: 4,
        chunk_rows: None,
        progress: false,
        checkpoint: None,
        checkpoint_every: 0,
        checkpoint_seconds: None,
        neuron_log: None,
    };
    let opt = |obj: &Objective<Cpu, f64>| optim::build("adam", &cfg, obj);
    let mut t = Trainer::new(Cpu, p.clone(), mlp.clone(), &params, opt, opts).unwrap();
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    assert_eq!(s.steps, 5);
    // the evaluation points as the trainer draws them
    let mut er = rand_chacha::ChaCha8Rng::seed_from_u64(4 ^ 0x5eed_e7a1);
    let ex = p.sample_eval(300, &mut er).unwrap();
    let theta = t.params_host().unwrap();
    let mut eng = JetEngine::<Cpu, f64>::new(Cpu, mlp, JetKind::Value, None).unwrap();
    let net = eng
        .forward(&Cpu.upload(&theta).unwrap(), &Cpu.upload(&ex).unwrap(), 300)
        .unwrap();
    let (mut se, mut sr, mut se_n) = (0.0, 0.0, 0.0);
    for (pt, nv) in ex.chunks(5).zip(&net) {
        let r2: f64 = pt.iter().map(|v| v * v).sum();
        let sum: f64 = pt
            .iter()
            .map(|v| (std::f64::consts::PI * v / 2.0).sin())
            .sum();
        let u = r2 * (sum + 0.1) + (1.0 - r2) / 2.0 * nv;
        let ustar = sum + r2 / 10.0;
        se += (u - ustar).powi(2);
        sr += ustar * ustar;
        se_n += (nv - ustar).powi(2);
    }
    let rel = (se / sr).sqrt();
    assert!(
        (s.l2_rel - rel).abs() <= 1e-10 * rel,
        "reported {} vs g + φN {rel}",
        s.l2_rel
    );
    // and not the error of N itself
    assert!(((se_n / sr).sqrt() - rel).abs() > 1e-3 * rel);
    assert!((t.l2().unwrap().rel - rel).abs() <= 1e-10 * rel);
}

#[test]
fn transfinite_g_interpolates_plane_data() {
    // on a box, g of affine data on every face is that data on each face
    let b: ShapeRef = Arc::new(BoxShape::new(vec![0.0, 0.0], vec![2.0, 1.0]).unwrap());
    let phis: Vec<Phi> = (0..4).map(|p| b.piece_phi(p).unwrap()).collect();
    let data = |x: &[Dual2]| x[0] * x[1] + x[0].sin();
    let g = kfac_pinn::pde::hard::transfinite(
        phis,
        (0..4).map(|_| Some(Arc::new(data) as _)).collect(),
    )
    .unwrap();
    let mut r = rng(21);
    for p in 0..4 {
        let (mut x, mut n) = (vec![0.0; 40], vec![0.0; 40]);
        b.sample_piece(p, &mut r, &mut x, &mut n).unwrap();
        for q in x.chunks(2) {
            let got = with_line(q, None, |y| g(y)).v;
            let want = with_line(q, None, data).v;
            assert!(
                (got - want).abs() < 1e-12,
                "face {p} at {q:?}: {got} vs {want}"
            );
        }
    }
    let bad = kfac_pinn::pde::hard::transfinite(vec![Phi::All(vec![])], vec![None]);
    let msg = bad.err().expect("refused").to_string();
    assert!(msg.contains("plane, segment or sphere"), "{msg}");
}

use rand::SeedableRng;

#[test]
fn hard_bc_flag_picks_the_hard_problem_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("kfac-pinn-hardflag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.safetensors");
    let (code, out, err) = common::kfac_pinn(&[
        "train",
        "--preset",
        "plate-hole",
        "--hard-bc",
        "--optimizer",
        "kfac-star",
        "--points",
        "50,10",
        "--eval-points",
        "200",
        "--steps",
        "3",
        "--device",
        "cpu",
        "--quiet",
        "--json",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"problem\":\"plate-hole-hard\""), "{out}");
    // the saved file says its network is N of u = g + φN (eval/export/plot apply it)
    let file = kfac_pinn::model::io::load(&model).unwrap();
    assert_eq!(
        file.metadata.get("problem").map(String::as_str),
        Some("plate-hole-hard")
    );
    assert_eq!(
        file.metadata
            .get(kfac_pinn::cli::source::HARD_BC_KEY)
            .map(String::as_str),
        Some("true")
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // the soft preset's three counts do not fit the two remaining terms
    let (code, _, err) = common::kfac_pinn(&[
        "train",
        "--problem",
        "plate-hole",
        "--hard-bc",
        "--points",
        "50,10,10",
        "--steps",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("interior, hole") && err.contains("3 counts"),
        "{err}"
    );
    let (code, _, err) = common::kfac_pinn(&[
        "train",
        "--problem",
        "poisson2d",
        "--hard-bc",
        "--steps",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("poisson2d") && err.contains("poisson-annulus"),
        "{err}"
    );
}

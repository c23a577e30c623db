//! Inverse problems with unknown scalar coefficients (design §7), against independent
//! truth: `∂r/∂κ` of `inverse-heat` and the loss gradient (coefficient entries included)
//! against finite differences; the Gramian (full, per-layer), KFAC's coefficient block
//! and the matrix-free products against `JᵀJ` of a finite-difference Jacobian; recovery
//! of κ by ENGD and KFAC*; the warning for a coefficient without observations; the
//! coefficients through model files and training logs.

mod common;

use common::{assert_close, rng, scaled_residuals, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::curvature::{gvp, jacobian, jvp_gram, Gramian, GramianKind, KfacPass};
use kfac_pinn::jet::JetKind;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::{Coefficient, Problem, Setup, TermSpec};
use kfac_pinn::train::{coefficient_warnings, CsvLog, TrainOptions, Trainer};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn inverse_heat() -> Arc<dyn Problem> {
    kfac_pinn::pde::problem("inverse-heat", &Default::default()).unwrap()
}

/// The inverse-heat objective on a small random net with κ = 0.7 (not the truth, so that
/// every term has residuals), `n[t]` points per term.
fn objective(widths: &[usize], n: &[usize], seed: u64) -> (Objective<Cpu, f64>, Vec<f64>) {
    let p = inverse_heat();
    let mlp = Mlp::new(widths).unwrap().with_coefficients(1);
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), Some(40)).unwrap();
    let mut r = rng(seed);
    for (t, &k) in n.iter().enumerate() {
        obj.set_points(t, p.sample(t, k, &mut r).unwrap()).unwrap();
    }
    let mut params: Vec<f64> = mlp.init(seed);
    *params.last_mut().unwrap() = 0.7;
    (obj, params)
}

#[test]
fn residual_coefficient_derivative_matches_finite_differences() {
    let p = inverse_heat();
    let terms = p.terms();
    assert_eq!(terms.len(), 3);
    assert_eq!(p.observation_terms(), [2]);
    let pde = &terms[0].residual;
    assert_eq!(pde.n_coef(), 1);
    assert!(terms[1..].iter().all(|t| t.residual.n_coef() == 0));
    let mut r = rng(3);
    for _ in 0..20 {
        let x = uniform(&mut r, 2, 0.0, 1.0);
        let y = uniform(&mut r, 4, -2.0, 2.0);
        let kappa = uniform(&mut r, 1, 0.1, 2.0)[0];
        let (mut res, mut d) = ([0.0], [0.0]);
        pde.eval_coef(&x, &y, &[kappa], &mut res, None, Some(&mut d));
        let h = 1e-6;
        let at = |k: f64| {
            let mut v = [0.0];
            pde.eval_coef(&x, &y, &[k], &mut v, None, None);
            v[0]
        };
        let fd = (at(kappa + h) - at(kappa - h)) / (2.0 * h);
        assert_close("∂r/∂κ", &d, &[fd], 1e-8, 1e-9);
        // and the residual itself: u_t − κ u_xx
        assert_close("r", &res, &[y[1] - kappa * y[3]], 1e-15, 1e-15);
    }
}

#[test]
fn exact_solution_satisfies_the_residuals_at_the_true_coefficient() {
    let p = inverse_heat();
    let truth = p.coefficients()[0].truth.unwrap();
    let mut r = rng(5);
    let u = |x: &[f64], o: &mut [f64]| {
        assert!(p.exact(x, o));
    };
    for (t, term) in p.terms().iter().enumerate() {
        for pt in p.sample(t, 30, &mut r).unwrap().chunks(2) {
            let y = match &term.kind {
                JetKind::Full(op) => common::fd_jet_fields(&u, 1, pt, op.coef()),
                JetKind::Value => {
                    let mut o = [0.0];
                    u(pt, &mut o);
                    o.to_vec()
                }
                JetKind::Set(_) => unreachable!("inverse-heat has one operator per jet"),
            };
            let mut res = [0.0];
            term.residual
                .eval_coef(pt, &y, &[truth], &mut res, None, None);
            assert!(res[0].abs() < 1e-5, "term {}: {}", term.name, res[0]);
            // at another κ the PDE residual is not zero
            if t == 0 && pt[1] > 0.1 && pt[1] < 0.9 {
                term.residual
                    .eval_coef(pt, &y, &[2.0 * truth], &mut res, None, None);
                assert!(res[0].abs() > 1e-3, "{}", res[0]);
            }
        }
    }
}

fn fd_grad(obj: &mut Objective<Cpu, f64>, p: &[f64], h: f64) -> Vec<f64> {
    (0..p.len())
        .map(|i| {
            let mut q = p.to_vec();
            q[i] += h;
            let lp = obj.loss(&q).unwrap();
            q[i] -= 2.0 * h;
            let lm = obj.loss(&q).unwrap();
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

#[test]
fn loss_gradient_with_the_coefficient_matches_finite_differences() {
    for workers in [1, 3] {
        let (mut obj, p) = objective(&[2, 5, 4, 1], &[37, 11, 13], 4);
        obj.set_workers(Some(workers)).unwrap();
        let mut g = vec![0.0; p.len()];
        let l = obj.loss_grad(&p, &mut g).unwrap();
        assert!((l - obj.loss(&p).unwrap()).abs() <= 1e-13 * l.abs());
        let fd = fd_grad(&mut obj, &p, 1e-6);
        let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close("gradient", &g, &fd, 1e-6, 1e-8 * scale);
        // κ's entry on its own scale (not lost among the network's)
        let (gk, fk) = (g[p.len() - 1], fd[p.len() - 1]);
        assert!(fk.abs() > 1e-4, "κ's gradient is not trivial: {fk:e}");
        assert_close("∂L/∂κ", &[gk], &[fk], 1e-6, 1e-10);
        // the KFAC pass's gradient is the same
        let mut g2 = vec![0.0; p.len()];
        let mut pass = KfacPass::new(obj.mlp(), 3).unwrap();
        let l2 = pass.run(&mut obj, &p, &mut g2, None, None).unwrap();
        assert!((l2 - l).abs() <= 1e-13 * l);
        assert_close("KFAC pass gradient", &g2, &g, 1e-12, 1e-14 * scale);
    }
}

/// The scaled residual Jacobian by central differences (rows × P, row-major).
fn fd_jacobian(obj: &mut Objective<Cpu, f64>, p: &[f64]) -> (usize, Vec<f64>) {
    let rows = scaled_residuals(obj, &p.to_vec()).len();
    let np = p.len();
    let mut j = vec![0.0; rows * np];
    let h = 1e-6;
    for c in 0..np {
        let mut q = p.to_vec();
        q[c] += h;
        let rp = scaled_residuals(obj, &q);
        q[c] -= 2.0 * h;
        let rm = scaled_residuals(obj, &q);
        for r in 0..rows {
            j[r * np + c] = (rp[r] - rm[r]) / (2.0 * h);
        }
    }
    (rows, j)
}

fn gram_of(rows: usize, np: usize, j: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; np * np];
    for r in 0..rows {
        let row = &j[r * np..(r + 1) * np];
        for a in 0..np {
            for b in 0..np {
                g[a * np + b] += row[a] * row[b];
            }
        }
    }
    g
}

#[test]
fn gramians_and_products_with_coefficient_columns_match_finite_differences() {
    let (mut obj, p) = objective(&[2, 4, 3, 1], &[17, 9, 8], 9);
    let np = p.len();
    let (rows, jfd) = fd_jacobian(&mut obj, &p);
    let want = gram_of(rows, np, &jfd);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // the library's Jacobian, coefficient column included
    let jac = jacobian(&mut obj, &p).unwrap();
    assert_eq!((jac.rows, jac.cols), (rows, np));
    assert_close("Jacobian", &jac.j, &jfd, 1e-5, 1e-7);
    // full Gramian (ENGD)
    let mut grad = vec![0.0; np];
    let mut full = Gramian::new(&Cpu, obj.mlp(), GramianKind::Full, false).unwrap();
    full.update(&mut obj, &p, 0.0, &mut grad).unwrap();
    assert_close(
        "full Gramian",
        &full.to_dense(&Cpu).unwrap(),
        &want,
        1e-5,
        1e-7 * scale,
    );
    // per-layer Gramian: the layers' blocks and the coefficient's dense block
    let mut layer = Gramian::new(&Cpu, obj.mlp(), GramianKind::Layer, false).unwrap();
    layer.update(&mut obj, &p, 0.0, &mut grad).unwrap();
    let blocks = layer.blocks().to_vec();
    assert_eq!(
        *blocks.last().unwrap(),
        (np - 1, 1),
        "coefficient block last"
    );
    let mut masked = vec![0.0; np * np];
    for &(off, n) in &blocks {
        for a in off..off + n {
            for b in off..off + n {
                masked[a * np + b] = want[a * np + b];
            }
        }
    }
    assert_close(
        "per-layer Gramian",
        &layer.to_dense(&Cpu).unwrap(),
        &masked,
        1e-5,
        1e-7 * scale,
    );
    // KFAC's dense coefficient block: J_κᵀ J_κ
    let kk = want[np * np - 1];
    assert!(kk > 1e-6, "the coefficient block is not trivial: {kk}");
    let mut pass = KfacPass::new(obj.mlp(), 3).unwrap();
    pass.run(&mut obj, &p, &mut grad, None, None).unwrap();
    assert_close(
        "KFAC coefficient block",
        pass.coef_block(),
        &[kk],
        1e-5,
        1e-9,
    );
    // G v and vᵀ G w with the coefficient entries
    let mut r = rng(2);
    let v = uniform(&mut r, np, -1.0, 1.0);
    let w = uniform(&mut r, np, -1.0, 1.0);
    let gv_want: Vec<f64> = (0..np)
        .map(|a| (0..np).map(|b| want[a * np + b] * v[b]).sum())
        .collect();
    let mut gv = vec![0.0; np];
    gvp(&mut obj, &p, &v, &mut gv).unwrap();
    let gscale = gv_want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert_close("G v", &gv, &gv_want, 1e-5, 1e-7 * gscale);
    let gram = jvp_gram(&mut obj, &p, &[&v, &w]).unwrap();
    let vgw: f64 = (0..np).map(|a| w[a] * gv_want[a]).sum();
    let vgv: f64 = (0..np).map(|a| v[a] * gv_want[a]).sum();
    assert_close(
        "vᵀGv, vᵀGw",
        &[gram[0], gram[1]],
        &[vgv, vgw],
        1e-5,
        1e-7 * gscale,
    );
}

fn train(optimizer: &str, cfg: OptimizerConfig, steps: u64) -> kfac_pinn::train::Summary {
    let prob = inverse_heat();
    let mlp = Mlp::new(&[2, 16, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let opts = TrainOptions {
        max_steps: Some(steps),
        log_every: steps,
        points: vec![200, 60, 100],
        eval_points: 500,
        ..Default::default()
    };
    let build = |obj: &Objective<Cpu, f64>| optim::build(optimizer, &cfg, obj);
    let mut t = Trainer::new(Cpu, prob, mlp, &params, build, opts).unwrap();
    assert_eq!(t.coefficient_values().unwrap(), [1.0], "starts at κ0");
    t.run(None, &AtomicBool::new(false)).unwrap()
}

#[test]
fn engd_recovers_kappa() {
    let cfg = OptimizerConfig {
        damping: Some(1e-6),
        ..Default::default()
    };
    let s = train("engd", cfg, 300);
    let k = &s.coefficients["kappa"];
    assert_eq!(k.truth, Some(0.25));
    let err = k.rel_error.unwrap();
    assert!(err < 1e-4, "κ = {} (relative error {err:e})", k.value);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["coefficients"]["kappa"]["true"], 0.25);
    assert!(json["coefficients"]["kappa"]["rel_error"].as_f64().unwrap() < 1e-4);
}

#[test]
fn kfac_star_recovers_kappa() {
    let cfg = OptimizerConfig {
        damping: Some(1e-10),
        ..Default::default()
    };
    let s = train("kfac-star", cfg, 600);
    let k = &s.coefficients["kappa"];
    let err = k.rel_error.unwrap();
    assert!(err < 1e-2, "κ = {} (relative error {err:e})", k.value);
}

/// inverse-heat without its observation term.
struct Unobserved(Arc<dyn Problem>);

impl Problem for Unobserved {
    fn name(&self) -> &str {
        "inverse-heat-unobserved"
    }
    fn summary(&self) -> String {
        self.0.summary()
    }
    fn dim(&self) -> usize {
        2
    }
    fn terms(&self) -> Vec<TermSpec> {
        self.0.terms()[..2].to_vec()
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> kfac_pinn::Result<Vec<f64>> {
        self.0.sample(term, n, rng)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        self.0.exact(x, out)
    }
    fn setup(&self) -> Setup {
        self.0.setup()
    }
    fn coefficients(&self) -> Vec<Coefficient> {
        self.0.coefficients()
    }
}

#[test]
fn a_coefficient_without_observations_warns() {
    assert!(coefficient_warnings(inverse_heat().as_ref()).is_empty());
    let prob: Arc<dyn Problem> = Arc::new(Unobserved(inverse_heat()));
    let w = coefficient_warnings(prob.as_ref());
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("kappa") && w[0].contains("observation"),
        "{w:?}"
    );
    // and the run reports it
    let mlp = Mlp::new(&[2, 4, 1]).unwrap();
    let params: Vec<f64> = mlp.init(2);
    let opts = TrainOptions {
        max_steps: Some(2),
        points: vec![20, 10],
        eval_points: 50,
        ..Default::default()
    };
    let cfg = OptimizerConfig::default();
    let build = |obj: &Objective<Cpu, f64>| optim::build("adam", &cfg, obj);
    let mut t = Trainer::new(Cpu, prob, mlp, &params, build, opts).unwrap();
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    assert!(
        s.warnings.iter().any(|x| x.contains("kappa")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn coefficients_round_trip_through_model_files_and_logs() {
    let mlp = Mlp::new(&[2, 3, 1]).unwrap().with_coefficients(2);
    let mut params: Vec<f64> = mlp.init(4);
    let n = params.len();
    params[n - 2] = 0.1 + 1e-17; // not a short decimal
    params[n - 1] = std::f64::consts::PI / 7.0;
    let names = ("kfac_pinn.coefficient_names", "kappa,nu".to_string());
    for f32 in [false, true] {
        let bytes =
            kfac_pinn::model::io::to_bytes(&mlp, &params, f32, &[(names.0, names.1.clone())])
                .unwrap();
        let m = kfac_pinn::model::io::from_bytes(std::path::Path::new("mem"), &bytes).unwrap();
        assert_eq!(m.mlp, mlp.network());
        assert_eq!(m.params.len(), mlp.num_net_params());
        // bit-exact in either dtype
        assert_eq!(
            m.coefficients,
            [
                ("kappa".to_string(), params[n - 2]),
                ("nu".to_string(), params[n - 1])
            ]
        );
    }
    // a plain network's file has none
    let plain = Mlp::new(&[2, 3, 1]).unwrap();
    let bytes = kfac_pinn::model::io::to_bytes(&plain, &plain.init::<f64>(1), false, &[]).unwrap();
    let m = kfac_pinn::model::io::from_bytes(std::path::Path::new("mem"), &bytes).unwrap();
    assert!(m.coefficients.is_empty());

    // the training log's coefficient column
    let dir = std::env::temp_dir().join(format!("kfac-inverse-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.csv");
    let mut log = CsvLog::create_with(&path, &["kappa".into()]).unwrap();
    let prob = inverse_heat();
    let net = Mlp::new(&[2, 4, 1]).unwrap();
    let opts = TrainOptions {
        max_steps: Some(4),
        log_every: 2,
        points: vec![20, 10, 10],
        eval_points: 50,
        ..Default::default()
    };
    let cfg = OptimizerConfig::default();
    let build = |obj: &Objective<Cpu, f64>| optim::build("adam", &cfg, obj);
    let mut t = Trainer::new(Cpu, prob, net.clone(), &net.init::<f64>(3), build, opts).unwrap();
    t.run(Some(&mut log), &AtomicBool::new(false)).unwrap();
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("step,seconds,loss,l2_abs,l2_rel,lr,coef:kappa\n"),
        "{text}"
    );
    let rows = kfac_pinn::train::read_log(&path).unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 2, 4]);
    assert_eq!(rows[0].coefs, [1.0], "κ0 at step 0");
    assert_eq!(rows[2].coefs, t.coefficient_values().unwrap());
    assert_ne!(rows[2].coefs, [1.0], "κ moved");
    // a resume keeps the column
    kfac_pinn::train::truncate_log(&path, 2, 2).unwrap();
    let rows = kfac_pinn::train::read_log(&path).unwrap();
    assert_eq!(rows.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reports_and_saves_the_coefficient() {
    let dir = std::env::temp_dir().join(format!("kfac-inverse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.safetensors");
    let (code, out, err) = common::kfac_pinn(&[
        "train",
        "--preset",
        "inverse-heat",
        "--optimizer",
        "kfac-star",
        "--steps",
        "5",
        "--device",
        "cpu",
        "--json",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let k = &j["coefficients"]["kappa"];
    assert_eq!(k["true"], 0.25);
    let v = k["value"].as_f64().unwrap();
    assert!(v.is_finite() && v != 1.0, "κ moved from its start: {v}");
    let m = kfac_pinn::model::io::load(&model).unwrap();
    assert_eq!(m.coefficients, [("kappa".to_string(), v)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

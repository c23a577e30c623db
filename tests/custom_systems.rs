//! Custom systems from TOML (`pde = "system"`, `kfac_pinn::pde::custom`): custom specs
//! written as expressions reproduce every built-in system's residuals, Gauss–Newton seeds,
//! linearity, regions and exact solution (the built-ins are themselves checked against
//! finite differences in tests/systems.rs); each condition kind and the equations against
//! finite differences of a test function; data derived from a manufactured solution make
//! every term vanish; seeds against finite differences of the residual in the jet; a
//! custom Stokes system trains exactly like the built-in one, and a mixed-condition
//! Poisson system trains to a small error; the example config runs through the CLI and
//! round-trips; every malformed spec is rejected naming its key.

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::jet::{JetKind, OperatorSet};
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::custom::{from_toml_table, parse_spec, CustomSpec};
use kfac_pinn::pde::system::{Face, Region};
use kfac_pinn::pde::{system, Problem, TermSpec};
use kfac_pinn::train::{TrainOptions, Trainer};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn build(text: &str) -> Arc<dyn Problem> {
    parse_spec(text).unwrap().build().unwrap()
}

/// The error message of a spec that must be rejected (at parsing or building).
fn error(text: &str) -> String {
    match parse_spec(text) {
        Err(e) => e.to_string(),
        Ok(s) => match s.build() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("spec was accepted:\n{text}"),
        },
    }
}

/// The jet a term needs of `u`, by finite differences.
fn term_jet(kind: &JetKind, u: &dyn Fn(&[f64], &mut [f64]), m: usize, x: &[f64]) -> Vec<f64> {
    match kind {
        JetKind::Full(op) => {
            assert!(op.is_identity(), "coordinate directions expected");
            common::fd_jet_fields(u, m, x, op.coef())
        }
        JetKind::Value => {
            let mut o = vec![0.0; m];
            u(x, &mut o);
            o
        }
        JetKind::Set(set) => {
            let mats: Vec<_> = (0..set.ops()).map(|j| set.matrix(j)).collect();
            common::fd_jet_set(u, m, x, set.dirs(), &mats)
        }
    }
}

fn on_region(region: &Region, x: &[f64], lo: &[f64], hi: &[f64]) -> bool {
    let inside = (0..x.len()).all(|i| x[i] >= lo[i] && x[i] <= hi[i]);
    inside
        && match region {
            Region::Interior => true,
            Region::Initial => x[0] == lo[0],
            Region::Point(q) => x == &q[..],
            Region::Observed(o) => o.find(x).is_some(),
            Region::Pieces(_) => false, // custom systems live on boxes
            Region::Faces(fs) => fs
                .iter()
                .any(|f: &Face| x[f.coord] == if f.upper { hi[f.coord] } else { lo[f.coord] }),
        }
}

// ---------------------------------------------------------------------------------
// the built-in systems as custom specs

/// Kovasznay flow at Re = 20, λ = 10 − √(100 + 4π²).
const KOVASZNAY: &str = r#"
name = "kovasznay-custom"
dim = 2
domain = [[-0.5, 1.0], [-0.5, 1.5]]
pde = "system"
fields = ["u", "v", "p"]
equations = [
    "u*u_x0 + v*u_x1 + p_x0 - 0.05*lap(u)",
    "u*v_x0 + v*v_x1 + p_x1 - 0.05*lap(v)",
    "u_x0 + v_x1",
]
error-group = { name = "velocity", fields = ["u", "v"] }
[solution]
u = "1 - exp((10 - sqrt(100 + 4*pi^2))*x0)*cos(2*pi*x1)"
v = "(10 - sqrt(100 + 4*pi^2))/(2*pi)*exp((10 - sqrt(100 + 4*pi^2))*x0)*sin(2*pi*x1)"
p = "0.5*(1 - exp(2*(10 - sqrt(100 + 4*pi^2))*x0))"
[[conditions]]
name = "velocity-faces"
on = "faces"
kind = "dirichlet"
fields = ["u", "v"]
[[conditions]]
name = "outlet-pressure"
on = "x0=max"
kind = "dirichlet"
fields = ["p"]
"#;

/// Stokes with the sources derived from the manufactured solution.
const STOKES: &str = r#"
dim = 2
pde = "system"
fields = ["u", "v", "p"]
equations = ["-lap(u) + p_x0", "-lap(v) + p_x1", "u_x0 + v_x1"]
solution = { u = "pi*sin(pi*x0)^2*sin(2*pi*x1)", v = "0 - pi*sin(2*pi*x0)*sin(pi*x1)^2", p = "cos(pi*x0)*cos(pi*x1)" }
derive-sources = true
error-group = { name = "velocity", fields = ["u", "v"] }
[[conditions]]
on = "faces"
kind = "dirichlet"
fields = ["u", "v"]
[[conditions]]
on = "point"
at = [0.5, 0.5]
kind = "dirichlet"
fields = ["p"]
points = 8
"#;

const TAYLOR_GREEN: &str = r#"
dim = 3
time = true
domain = [[0, 1], [0, 6.283185307179586], [0, 6.283185307179586]]
pde = "system"
fields = ["u", "v", "p"]
equations = [
    "u_t + u*u_x1 + v*u_x2 + p_x1 - 0.1*lap(u)",
    "v_t + u*v_x1 + v*v_x2 + p_x2 - 0.1*lap(v)",
    "u_x1 + v_x2",
]
error-group = { name = "velocity", fields = ["u", "v"] }
solution = { u = "0 - cos(x1)*sin(x2)*exp(-0.2*t)", v = "sin(x1)*cos(x2)*exp(-0.2*t)", p = "-0.25*(cos(2*x1) + cos(2*x2))*exp(-0.4*t)" }
[[conditions]]
on = "initial"
kind = "dirichlet"
fields = ["u", "v"]
[[conditions]]
on = "faces"
kind = "dirichlet"
"#;

const WAVE: &str = r#"
dim = 2
time = true
pde = "system"
coefficients = [[1, 0], [0, -1]]
fields = ["u"]
equations = ["lap(u)"]
solution = "sin(pi*x1)*cos(pi*t) + 0.5*sin(3*pi*x1)*cos(3*pi*t)"
[[conditions]]
on = "faces"
kind = "dirichlet"
[[conditions]]
on = "initial"
kind = "dirichlet"
[[conditions]]
on = "initial"
kind = "initial-rate"
"#;

const POISSON_MIXED: &str = r#"
dim = 2
pde = "system"
fields = ["u"]
equations = ["-lap(u)"]
derive-sources = true
solution = "sin(pi*x0)*sin(pi*x1) + x0^2 + x1"
[[conditions]]
on = "x0=min"
kind = "dirichlet"
[[conditions]]
on = "x0=max"
kind = "neumann"
[[conditions]]
on = "x1=min"
kind = "robin"
alpha = 1.0
beta = 1.0
[[conditions]]
on = "x1 = max"
kind = "robin"
alpha = 2.0
beta = 1.0
"#;

/// Elasticity (Navier–Cauchy, λ = 1.5, μ = 1) with named operators: `μ lap(u) + (λ+μ)
/// ∇(∇·u)`, the grad-div term from `∂_xx`, `∂_yy` and the mixed `∂_x∂_y`.
const ELASTICITY: &str = r#"
dim = 2
pde = "system"
fields = ["u1", "u2"]
operators = { xx = [[1, 0], [0, 0]], yy = [[0, 0], [0, 1]], xy = [[0, 0.5], [0.5, 0]] }
equations = [
    "lap(u1) + 2.5*(op(xx, u1) + op(xy, u2))",
    "lap(u2) + 2.5*(op(xy, u1) + op(yy, u2))",
]
derive-sources = true
solution = { u1 = "sin(pi*x0)*cos(pi*x1)", u2 = "sin(2*pi*x0)*sin(pi*x1)" }
[[conditions]]
on = "faces"
kind = "dirichlet"
"#;

/// A point's jet of an operator set from the value `u` (m), gradient `g` (D × m) and
/// Hessian `h` (D × D × m) of the fields: `[u, v_k · g, tr(C_j h)]`.
fn set_jet(set: &OperatorSet, m: usize, u: &[f64], g: &[f64], h: &[f64]) -> Vec<f64> {
    let d = set.dim();
    let mut y = u.to_vec();
    for v in set.dirs().chunks(d) {
        y.extend((0..m).map(|f| (0..d).map(|a| v[a] * g[a * m + f]).sum::<f64>()));
    }
    for j in 0..set.ops() {
        let c = set.matrix(j);
        y.extend((0..m).map(|f| (0..d * d).map(|ab| c[ab] * h[ab * m + f]).sum::<f64>()));
    }
    y
}

/// Seeds `∂r/∂y` (one residual, one point) of an operator set's jet pulled back to the
/// value, gradient and Hessian of the fields (the chain rule through [`set_jet`]): equal
/// for two layouts exactly when the Gauss–Newton terms are, whatever the layouts.
fn pull_back(set: &OperatorSet, m: usize, seeds: &[f64]) -> Vec<f64> {
    let (d, k) = (set.dim(), set.k());
    let mut out = seeds[..m].to_vec();
    for a in 0..d {
        out.extend((0..m).map(|f| {
            (0..k)
                .map(|kk| seeds[(1 + kk) * m + f] * set.dirs()[kk * d + a])
                .sum::<f64>()
        }));
    }
    let mats: Vec<_> = (0..set.ops()).map(|j| set.matrix(j)).collect();
    for ab in 0..d * d {
        out.extend((0..m).map(|f| {
            mats.iter()
                .enumerate()
                .map(|(j, c)| seeds[(1 + k + j) * m + f] * c[ab])
                .sum::<f64>()
        }));
    }
    out
}

/// A term on an operator set against a built-in one on another set (the operators and
/// their order may differ): residuals at the jets of random values, gradients and
/// (symmetric) Hessians, and the seeds pulled back to them.
fn same_on_sets(what: &str, c: &TermSpec, b: &TermSpec, m: usize, x: &[f64], r: &mut ChaCha8Rng) {
    let (JetKind::Set(cs), JetKind::Set(bs)) = (&c.kind, &b.kind) else {
        panic!(
            "{what}: operator sets expected, got {:?} and {:?}",
            c.kind, b.kind
        );
    };
    let d = bs.dim();
    assert_eq!(cs.dim(), d, "{what}: dimension");
    let nr = b.residual.n_res();
    let (mut rc, mut rb, mut jc, mut jb) = (vec![], vec![], vec![], vec![]);
    for pt in x.chunks(d) {
        let (u, g) = (uniform(r, m, -1.5, 1.5), uniform(r, d * m, -1.5, 1.5));
        let mut h = uniform(r, d * d * m, -1.5, 1.5);
        for a in 0..d {
            for bb in 0..a {
                for f in 0..m {
                    h[(a * d + bb) * m + f] = h[(bb * d + a) * m + f];
                }
            }
        }
        for (set, term, res, jac) in [(cs, c, &mut rc, &mut jc), (bs, b, &mut rb, &mut jb)] {
            let y = set_jet(set, m, &u, &g, &h);
            let mut v = vec![0.0; nr];
            let mut j = vec![f64::NAN; nr * y.len()];
            term.residual.eval(pt, &y, &mut v, Some(&mut j));
            res.extend(v);
            for row in j.chunks(y.len()) {
                jac.extend(pull_back(set, m, row));
            }
        }
    }
    assert_close(&format!("{what} residuals"), &rc, &rb, 1e-10, 1e-10);
    assert_close(&format!("{what} seeds"), &jc, &jb, 1e-12, 1e-12);
}

/// A custom system against a built-in one: same fields, box, error group, terms (jets,
/// residual counts, linearity), residuals and seeds at random jets on the built-in's
/// points, the custom sampler on the built-in's regions, and the same exact solution.
fn same_as_builtin(custom: &dyn Problem, name: &str, seed: u64) {
    let b = system(name).unwrap();
    let (d, m) = (b.dim(), b.out_dim());
    assert_eq!(custom.dim(), d, "{name}");
    assert_eq!(custom.field_names(), b.field_names(), "{name}");
    assert_eq!(custom.bounds(), b.bounds(), "{name}");
    assert_eq!(custom.error_group(), b.error_group(), "{name}");
    let (lo, hi) = b.bounds().unwrap();
    let (ct, bt) = (custom.terms(), b.terms());
    assert_eq!(ct.len(), bt.len(), "{name}: terms");
    let mut r = rng(seed);
    for (t, (c, bb)) in ct.iter().zip(&bt).enumerate() {
        let what = format!("{name} term {t} ({})", bb.name);
        if !matches!(bb.kind, JetKind::Set(_)) {
            assert_eq!(c.kind, bb.kind, "{what}: jet");
        }
        assert_eq!(c.weight, bb.weight, "{what}: weight");
        let nr = bb.residual.n_res();
        assert_eq!(c.residual.n_res(), nr, "{what}: residuals");
        assert_eq!(
            c.residual.is_linear(),
            bb.residual.is_linear(),
            "{what}: linearity"
        );
        let sm = bb.kind.s() * m;
        let x = b.sample(t, 25, &mut r).unwrap();
        if matches!(bb.kind, JetKind::Set(_)) {
            same_on_sets(&what, c, bb, m, &x, &mut r);
        } else {
            let (mut rc, mut rb, mut jc, mut jb) = (vec![], vec![], vec![], vec![]);
            for pt in x.chunks(d) {
                let y = uniform(&mut r, sm, -1.5, 1.5);
                let (mut v1, mut v2) = (vec![0.0; nr], vec![0.0; nr]);
                let (mut j1, mut j2) = (vec![f64::NAN; nr * sm], vec![f64::NAN; nr * sm]);
                c.residual.eval(pt, &y, &mut v1, Some(&mut j1));
                bb.residual.eval(pt, &y, &mut v2, Some(&mut j2));
                rc.extend(v1);
                rb.extend(v2);
                jc.extend(j1);
                jb.extend(j2);
            }
            assert_close(&format!("{what} residuals"), &rc, &rb, 1e-10, 1e-10);
            assert_close(&format!("{what} seeds"), &jc, &jb, 1e-12, 1e-12);
        }
        let region = &b.system_terms()[t].region;
        let xc = custom.sample(t, 60, &mut r).unwrap();
        for pt in xc.chunks(d) {
            assert!(
                on_region(region, pt, &lo, &hi),
                "{what}: {pt:?} off {region:?}"
            );
        }
    }
    let x = b.sample_eval(50, &mut r).unwrap();
    let (mut got, mut want) = (vec![], vec![]);
    for pt in x.chunks(d) {
        let (mut o1, mut o2) = (vec![0.0; m], vec![0.0; m]);
        assert!(custom.exact(pt, &mut o1) && b.exact(pt, &mut o2));
        got.extend(o1);
        want.extend(o2);
    }
    assert_close(&format!("{name} exact solution"), &got, &want, 1e-12, 1e-12);
}

#[test]
fn custom_specs_reproduce_the_builtin_systems() {
    for (text, name) in [
        (KOVASZNAY, "kovasznay"),
        (STOKES, "stokes"),
        (TAYLOR_GREEN, "taylor-green"),
        (WAVE, "wave1d"),
        (POISSON_MIXED, "poisson-mixed-bc"),
        (ELASTICITY, "elasticity"),
    ] {
        same_as_builtin(build(text).as_ref(), name, 11);
    }
    let k = build(KOVASZNAY);
    assert_eq!(k.name(), "kovasznay-custom");
    assert!(
        k.summary().contains("u*u_x0 + v*u_x1") && k.summary().contains("dirichlet p on x0=max"),
        "{}",
        k.summary()
    );
}

// ---------------------------------------------------------------------------------
// conditions and equations against finite differences

/// A two-field system with explicit data: every condition kind, several faces at once,
/// a point, and named sources.
const KINDS: &str = r#"
dim = 2
domain = [[0, 1], [-1, 2]]
pde = "system"
fields = ["a", "b"]
equations = ["-lap(a) + b - f", "-lap(b) + a*b_x0 + sin(a_x1)"]
sources = { f = "x0*exp(x1)" }
[[conditions]]
on = "x0=min"
kind = "dirichlet"
value = { a = "sin(x1)", b = "x1^2" }
[[conditions]]
on = ["x0=max", "x1=min"]
kind = "neumann"
fields = ["b"]
value = "x0*x1 + 1"
[[conditions]]
on = "x1=max"
kind = "robin"
fields = ["a"]
alpha = 2.0
beta = -0.5
value = "cos(x0)"
[[conditions]]
on = "point"
at = [0.25, 0.5]
kind = "dirichlet"
fields = ["b"]
value = "3"
"#;

/// The test function pushed through [`KINDS`].
fn w(x: &[f64], o: &mut [f64]) {
    o[0] = (2.0 * x[0]).sin() * x[1].cos() + x[1];
    o[1] = (0.5 * x[0]).exp() * x[1] * x[1] - x[0] * x[1];
}

#[test]
fn every_condition_kind_matches_finite_differences() {
    let p = build(KINDS);
    let (d, m) = (2, 2);
    let terms = p.terms();
    assert_eq!(terms.len(), 5);
    let mut r = rng(4);
    for (t, term) in terms.iter().enumerate() {
        let x = p.sample(t, 40, &mut r).unwrap();
        let (mut got, mut want) = (vec![], vec![]);
        for pt in x.chunks(d) {
            let y = term_jet(&term.kind, &w, m, pt);
            let nr = term.residual.n_res();
            let mut res = vec![0.0; nr];
            term.residual.eval(pt, &y, &mut res, None);
            got.extend(res);
            // the same from the jet's meaning: [a, b, a_x0, b_x0, a_x1, b_x1, La, Lb]
            let (x0, x1) = (pt[0], pt[1]);
            match t {
                0 => {
                    want.push(-y[6] + y[1] - x0 * x1.exp());
                    want.push(-y[7] + y[0] * y[3] + y[4].sin());
                }
                1 => {
                    assert_eq!(x0, 0.0);
                    want.push(y[0] - x1.sin());
                    want.push(y[1] - x1 * x1);
                }
                2 => {
                    // outward normal +e0 on x0 = 1, −e1 on x1 = −1
                    let dn = if x0 == 1.0 {
                        y[3]
                    } else {
                        assert_eq!(x1, -1.0);
                        -y[5]
                    };
                    want.push(dn - (x0 * x1 + 1.0));
                }
                3 => {
                    assert_eq!(x1, 2.0);
                    want.push(2.0 * y[0] - 0.5 * y[4] - x0.cos());
                }
                _ => {
                    assert_eq!(pt, &[0.25, 0.5]);
                    want.push(y[1] - 3.0);
                }
            }
        }
        // first differences at h = 1e-6, second at 1e-4
        assert_close(&format!("term {}", term.name), &got, &want, 1e-6, 1e-6);
    }
    // both faces of the two-face Neumann condition are sampled
    let x = p.sample(2, 200, &mut r).unwrap();
    let on_x0 = x.chunks(2).filter(|q| q[0] == 1.0).count();
    assert!(on_x0 > 20 && on_x0 < 180, "{on_x0} of 200 on x0 = max");
}

#[test]
fn initial_value_and_rate_match_finite_differences() {
    let p = build(
        r#"
        dim = 2
        time = true
        domain = [[0.5, 1.5], [0, 1]]
        pde = "system"
        fields = ["u"]
        equations = ["u_t - lap(u)"]
        [[conditions]]
        on = "initial"
        kind = "dirichlet"
        value = "sin(pi*x1)"
        [[conditions]]
        on = "initial"
        kind = "initial-rate"
        value = "x1 - t"
        [[conditions]]
        on = "faces"
        kind = "dirichlet"
        value = "0"
        "#,
    );
    let u = |x: &[f64], o: &mut [f64]| o[0] = (x[0] * x[1]).sin() + x[0] * x[0];
    let mut r = rng(5);
    let terms = p.terms();
    for t in [1, 2] {
        let x = p.sample(t, 30, &mut r).unwrap();
        for pt in x.chunks(2) {
            assert_eq!(pt[0], 0.5, "initial points at t = t_min");
            let y = term_jet(&terms[t].kind, &u, 1, pt);
            let mut res = [0.0];
            terms[t].residual.eval(pt, &y, &mut res, None);
            let want = if t == 1 {
                y[0] - (std::f64::consts::PI * pt[1]).sin()
            } else {
                // u_t = x1 cos(t x1) + 2t
                pt[1] * (pt[0] * pt[1]).cos() + 2.0 * pt[0] - (pt[1] - pt[0])
            };
            assert!(
                (res[0] - want).abs() < 1e-7,
                "term {t} at {pt:?}: {} vs {want}",
                res[0]
            );
        }
    }
}

/// Data derived from a manufactured solution (Robin and Neumann on several faces, the
/// initial rate, derived sources of a nonlinear coupled system): the solution, with
/// derivatives by finite differences, makes every term vanish.
#[test]
fn manufactured_solution_makes_every_term_vanish() {
    let p = build(
        r#"
        dim = 3
        time = true
        domain = [[0, 1], [-1, 1], [0, 2]]
        pde = "system"
        fields = ["u", "v"]
        equations = ["u_t - lap(u) + v", "v_t - 0.5*lap(v) + u*u_x1 - exp(v_x2)"]
        derive-sources = true
        solution = { u = "exp(-t)*sin(x1)*cos(x2) + t*x2", v = "t^2 + x1*x2/3" }
        [[conditions]]
        on = "initial"
        kind = "dirichlet"
        [[conditions]]
        on = "initial"
        kind = "initial-rate"
        fields = ["u"]
        [[conditions]]
        on = ["x1=min", "x1=max"]
        kind = "robin"
        fields = ["u"]
        alpha = 1.5
        beta = 2.0
        [[conditions]]
        on = ["x2=min", "x2=max"]
        kind = "neumann"
        fields = ["u"]
        [[conditions]]
        on = "faces"
        kind = "dirichlet"
        fields = ["v"]
        "#,
    );
    let (d, m) = (3, 2);
    let exact = |x: &[f64], o: &mut [f64]| assert!(p.exact(x, o));
    let mut r = rng(6);
    for (t, term) in p.terms().iter().enumerate() {
        let x = p.sample(t, 40, &mut r).unwrap();
        let (mut worst, mut scale) = (0.0f64, 1.0f64);
        for pt in x.chunks(d) {
            let y = term_jet(&term.kind, &exact, m, pt);
            scale = scale.max(y.iter().fold(0.0f64, |a, v| a.max(v.abs())));
            let mut res = vec![0.0; term.residual.n_res()];
            term.residual.eval(pt, &y, &mut res, None);
            worst = res.iter().fold(worst, |a, v| a.max(v.abs()));
        }
        assert!(
            worst < 1e-5 * scale,
            "term {}: residual {worst:e} (scale {scale:e})",
            term.name
        );
    }
    assert!(!p.terms()[0].residual.is_linear());
}

/// Named operators with time and a non-diagonal `lap` (pairs from both), nonlinear in
/// the operator rows, with derived sources.
const OPERATORS: &str = r#"
dim = 3
time = true
domain = [[0, 1], [-1, 1], [0, 2]]
pde = "system"
fields = ["u", "v"]
coefficients = [[0, 0, 0], [0, 1, 0.3], [0, 0.3, 0.5]]
operators = { dtx = [[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]], spatial = [[0, 0, 0], [0, 1, 0], [0, 0, 1]] }
equations = [
    "u_t - lap(u) + v*op(dtx, v)",
    "v_t - op(spatial, v) + u*u_x1 - exp(v_x2) + op( dtx , u )^2 + 0.1*op(spatial, u)",
]
derive-sources = true
solution = { u = "exp(-t)*sin(x1)*cos(x2) + t*x2", v = "t^2*x1 + x1*x2/3" }
[[conditions]]
on = "initial"
kind = "dirichlet"
[[conditions]]
on = "faces"
kind = "dirichlet"
"#;

#[test]
fn manufactured_solution_with_operators_makes_every_term_vanish() {
    for (text, d) in [(OPERATORS, 3), (ELASTICITY, 2)] {
        let p = build(text);
        let m = 2;
        let exact = |x: &[f64], o: &mut [f64]| assert!(p.exact(x, o));
        let mut r = rng(7);
        for (t, term) in p.terms().iter().enumerate() {
            let x = p.sample(t, 40, &mut r).unwrap();
            let (mut worst, mut scale) = (0.0f64, 1.0f64);
            for pt in x.chunks(d) {
                let y = term_jet(&term.kind, &exact, m, pt);
                scale = scale.max(y.iter().fold(0.0f64, |a, v| a.max(v.abs())));
                let mut res = vec![0.0; term.residual.n_res()];
                term.residual.eval(pt, &y, &mut res, None);
                worst = res.iter().fold(worst, |a, v| a.max(v.abs()));
            }
            assert!(
                worst < 1e-5 * scale,
                "term {}: residual {worst:e} (scale {scale:e})",
                term.name
            );
        }
    }
    // the interior jet: lap, then the operators by name; directions x0…x2, then the
    // pairs that some matrix couples (t–x1 from dtx, x1–x2 from lap)
    let p = build(OPERATORS);
    let JetKind::Set(set) = &p.terms()[0].kind else {
        panic!("an operator set expected: {:?}", p.terms()[0].kind);
    };
    assert_eq!(set.ops(), 3);
    assert_eq!(set.pairs(), &[(0, 1), (1, 2)]);
    assert!(!p.terms()[0].residual.is_linear());
    assert!(p.summary().contains("op(dtx, ·)"), "{}", p.summary());
}

#[test]
fn seeds_match_finite_differences_of_the_residual() {
    let mut r = rng(9);
    for text in [
        KINDS,
        KOVASZNAY,
        TAYLOR_GREEN,
        POISSON_MIXED,
        OPERATORS,
        ELASTICITY,
    ] {
        let p = build(text);
        common::assert_seeds_are_fd(p.name(), p.as_ref(), 4, &mut r);
    }
}

// ---------------------------------------------------------------------------------
// training

fn train(
    problem: Arc<dyn Problem>,
    widths: &[usize],
    points: Vec<usize>,
    steps: u64,
) -> (f64, f64, f64) {
    let mlp = Mlp::new(widths).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let cfg = OptimizerConfig {
        damping: Some(1e-3),
        ..Default::default()
    };
    let opt = |obj: &Objective<Cpu, f64>| optim::build("engd", &cfg, obj);
    let opts = TrainOptions {
        max_steps: Some(steps),
        log_every: steps,
        points,
        eval_points: 2000,
        ..Default::default()
    };
    let mut t = Trainer::new(Cpu, problem, mlp, &params, opt, opts).unwrap();
    let start = t.l2().unwrap().abs;
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    eprintln!(
        "L2 {start:e} -> {:e}, loss {:e} in {} steps, {:.1} s",
        s.l2_abs, s.loss, s.steps, s.seconds
    );
    (start, s.l2_abs, s.loss)
}

/// The custom Stokes system and the built-in one, on the same points from the same
/// start, take the same ENGD steps (the residuals agree to rounding).
#[test]
fn custom_stokes_trains_like_the_builtin() {
    let (w, n) = (vec![2, 12, 12, 3], vec![150, 60, 8]);
    let (_, l2c, lc) = train(build(STOKES), &w, n.clone(), 15);
    let (_, l2b, lb) = train(Arc::new(system("stokes").unwrap()), &w, n, 15);
    assert!(
        (lc - lb).abs() <= 1e-6 * lb,
        "loss {lc:e} vs built-in {lb:e}"
    );
    assert!(
        (l2c - l2b).abs() <= 1e-6 * l2b,
        "L2 {l2c:e} vs built-in {l2b:e}"
    );
}

/// Measured (init seed 1): L2 about 0.8 → 5e-5 in 300 ENGD steps (about 6 s).
#[test]
fn manufactured_mixed_condition_system_trains_to_a_small_error() {
    let (start, l2, _) = train(
        build(POISSON_MIXED),
        &[2, 32, 1],
        vec![400, 40, 40, 40, 40],
        300,
    );
    assert!(
        start > 0.1,
        "the run must start far from the solution: {start:e}"
    );
    assert!(l2 < 1e-3, "L2 {l2:e} after 300 steps");
}

// ---------------------------------------------------------------------------------
// the example config

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/custom-stokes.toml");

#[test]
fn example_runs_through_the_cli_and_round_trips() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let spec = parse_spec(&text).unwrap();
    // written back (as a run directory's config.toml) and read again: the same spec
    let bare = toml::to_string(&spec).unwrap();
    assert_eq!(parse_spec(&bare).unwrap(), spec, "{bare}");
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        custom: &'a CustomSpec,
    }
    let wrapped = toml::to_string(&Doc { custom: &spec }).unwrap();
    assert_eq!(parse_spec(&wrapped).unwrap(), spec, "{wrapped}");
    let table: toml::Table = toml::from_str(&text).unwrap();
    let p = from_toml_table(&table["custom"]).unwrap();
    assert_eq!(p.name(), "stokes-custom");
    assert_eq!(p.field_names(), ["u", "v", "p"]);
    assert_eq!(p.setup().points, vec![1000, 200, 8]);
    same_as_builtin(p.as_ref(), "stokes", 12);

    let dir = std::env::temp_dir().join(format!("kfac-custom-sys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let (code, stdout, err) = common::kfac_pinn(&[
        "train",
        "--config",
        EXAMPLE,
        "--steps",
        "2",
        "--points",
        "100,40,8",
        "--eval-points",
        "200",
        "--device",
        "cpu",
        "--json",
        "--quiet",
        "--out",
        out,
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["problem"], "stokes-custom");
    assert!(v["l2_abs"].as_f64().unwrap().is_finite(), "{v}");
    // the run's resolved config carries the same system, and resumes
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert_eq!(parse_spec(&cfg).unwrap(), spec, "{cfg}");
    let (code, _, err) = common::kfac_pinn(&["train", "--resume", out, "--steps", "1", "--quiet"]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------
// errors

const BASE: &str = r#"
dim = 2
pde = "system"
fields = ["u", "v"]
"#;
const EQS: &str = "equations = [\"-lap(u) + v\", \"-lap(v) + u\"]\n";
const WALLS: &str = "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"\nvalue = \"0\"\n";

/// A spec from the base, extra top-level keys and condition tables.
fn spec(keys: &str, conditions: &str) -> String {
    format!("{BASE}{keys}\n{conditions}")
}

/// Every malformed system is rejected with a message naming the key and the culprit.
#[test]
fn errors_name_the_key_and_the_culprit() {
    let cond = |body: &str| format!("{WALLS}[[conditions]]\n{body}\n");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown field in an equation",
            spec("equations = [\"-lap(u) + v\", \"-lap(v) + w\"]", WALLS),
            vec!["`custom.equations[1]`", "`w`", "u, v"],
        ),
        (
            "unknown derivative",
            spec("equations = [\"-lap(u) + v_x2\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "`v_x2`", "u_x0"],
        ),
        (
            "time derivative without time",
            spec("equations = [\"u_t - lap(u)\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "`u_t`"],
        ),
        (
            "lap of an unknown field",
            spec("equations = [\"-lap(q)\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "lap(q)"],
        ),
        (
            "lap of an expression",
            spec("equations = [\"-lap(2*u)\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "one field name", "lap(2*u"],
        ),
        (
            "bare lap",
            spec("equations = [\"-lap\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "`lap`", "lap(u)"],
        ),
        (
            "unknown operator",
            spec(
                "operators = { dxy = [[0, 0.5], [0.5, 0]] }\nequations = [\"op(dyx, u)\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.equations[0]`", "`dyx`", "dxy"],
        ),
        (
            "operator without operators",
            spec("equations = [\"op(dxy, u)\", \"v\"]", WALLS),
            vec!["`custom.equations[0]`", "`dxy`", "custom.operators"],
        ),
        (
            "operator of an unknown field",
            spec(
                "operators = { dxy = [[0, 0.5], [0.5, 0]] }\nequations = [\"u\", \"op(dxy, w)\"]",
                WALLS,
            ),
            vec!["`custom.equations[1]`", "`w`", "u, v"],
        ),
        (
            "operator with one argument",
            spec(
                "operators = { dxy = [[0, 0.5], [0.5, 0]] }\nequations = [\"op(u)\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.equations[0]`", "op(dxy, u)", "op(u"],
        ),
        (
            "operator not symmetric",
            spec(
                "operators = { dxy = [[0, 0.5], [0.4, 0]] }\nequations = [\"op(dxy, u)\", \"v\"]",
                WALLS,
            ),
            vec!["custom.operators.dxy[0][1]", "symmetric"],
        ),
        (
            "operator of the wrong size",
            spec(
                "operators = { dxy = [[0, 0.5, 0], [0.5, 0, 0]] }\nequations = [\"op(dxy, u)\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.operators.dxy`", "2x2"],
        ),
        (
            "operator named like a field",
            spec(
                "operators = { v = [[1, 0], [0, 1]] }\nequations = [\"op(v, u)\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.operators.v`", "also a field"],
        ),
        (
            "operator named like a source",
            spec(
                "operators = { f = [[1, 0], [0, 1]] }\nsources = { f = \"1\" }\nequations = [\"op(f, u) + f\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.operators.f`", "also a source"],
        ),
        (
            "operator named lap",
            spec(
                "operators = { lap = [[1, 0], [0, 1]] }\nequations = [\"op(lap, u)\", \"v\"]",
                WALLS,
            ),
            vec!["`custom.operators.lap`", "reserved"],
        ),
        (
            "face the box does not have",
            spec(EQS, &cond("on = \"x2=min\"\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].on`", "x2=min", "dim` = 2"],
        ),
        (
            "face syntax",
            spec(EQS, &cond("on = \"left\"\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].on`", "`left`", "x{i}=min"],
        ),
        (
            "face listed twice",
            spec(EQS, &cond("on = [\"x0=min\", \"x0 = min\"]\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].on`", "twice"],
        ),
        (
            "field used twice",
            "dim = 2\npde = \"system\"\nfields = [\"u\", \"v\", \"u\"]\nequations = [\"u\"]\n".into(),
            vec!["`custom.fields[2]`", "`u`", "fields[0]"],
        ),
        (
            "field not an identifier",
            "dim = 2\npde = \"system\"\nfields = [\"u_1\"]\nequations = [\"u\"]\n".into(),
            vec!["`custom.fields[0]`", "`u_1`", "not a valid name"],
        ),
        (
            "field named like a coordinate",
            "dim = 2\npde = \"system\"\nfields = [\"u\", \"x3\"]\nequations = [\"u\"]\n".into(),
            vec!["`custom.fields[1]`", "`x3`", "reserved"],
        ),
        (
            "field named like a function",
            "dim = 2\npde = \"system\"\nfields = [\"sin\"]\nequations = [\"u\"]\n".into(),
            vec!["`custom.fields[0]`", "`sin`", "reserved"],
        ),
        (
            "neumann with several fields",
            spec(
                EQS,
                &cond("on = \"x0=min\"\nkind = \"neumann\"\nfields = [\"u\", \"v\"]\nvalue = \"0\""),
            ),
            vec!["`custom.conditions[1].fields`", "exactly one field", "u, v"],
        ),
        (
            "neumann without fields on a system",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"neumann\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].fields`", "exactly one field", "fields = [\"u\"]"],
        ),
        (
            "initial without time",
            spec(EQS, &cond("on = \"initial\"\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].on`", "time = true"],
        ),
        (
            "initial rate on a face",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"initial-rate\"\nfields = [\"u\"]\nvalue = \"0\"")),
            vec!["`custom.conditions[1].kind`", "initial-rate"],
        ),
        (
            "neumann on a point",
            spec(EQS, &cond("on = \"point\"\nat = [0.5, 0.5]\nkind = \"neumann\"\nfields = [\"u\"]\nvalue = \"0\"")),
            vec!["`custom.conditions[1].kind`", "`neumann` needs faces"],
        ),
        (
            "missing value without solution",
            spec(EQS, "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"\nfields = [\"u\", \"v\"]\nvalue = { u = \"0\" }"),
            vec!["`custom.conditions[0].value`", "missing", "`v`", "solution"],
        ),
        (
            "value for a field the condition does not hold",
            spec(EQS, "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"\nfields = [\"u\"]\nvalue = { v = \"0\" }"),
            vec!["`custom.conditions[0].value.v`", "not one of this condition's fields"],
        ),
        (
            "robin without alpha",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"robin\"\nfields = [\"u\"]\nbeta = 1\nvalue = \"0\"")),
            vec!["`custom.conditions[1].alpha`", "missing"],
        ),
        (
            "robin with beta = 0",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"robin\"\nfields = [\"u\"]\nalpha = 1\nbeta = 0\nvalue = \"0\"")),
            vec!["custom.conditions[1].beta", "dirichlet"],
        ),
        (
            "alpha on a dirichlet condition",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"dirichlet\"\nalpha = 1\nvalue = \"0\"")),
            vec!["`custom.conditions[1].alpha`", "robin"],
        ),
        (
            "point without at",
            spec(EQS, &cond("on = \"point\"\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].at`", "missing"],
        ),
        (
            "point outside the box",
            spec(EQS, &cond("on = \"point\"\nat = [0.5, 1.5]\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["custom.conditions[1].at", "inside the box"],
        ),
        (
            "at without a point",
            spec(EQS, &cond("on = \"x0=min\"\nat = [0, 0.5]\nkind = \"dirichlet\"\nvalue = \"0\"")),
            vec!["`custom.conditions[1].at`", "only for on = \"point\""],
        ),
        (
            "unknown condition key",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"dirichlet\"\nvalue = \"0\"\nvalues = \"1\"")),
            vec!["values"],
        ),
        (
            "unknown kind",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"periodic\"")),
            vec!["periodic", "dirichlet"],
        ),
        (
            "bad condition value",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"dirichlet\"\nvalue = \"u + 1\"")),
            vec!["`custom.conditions[1].value`", "`u`"],
        ),
        (
            "a face without a condition",
            spec(EQS, "[[conditions]]\non = [\"x0=min\", \"x0=max\", \"x1=min\"]\nkind = \"dirichlet\"\nvalue = \"0\""),
            vec!["`custom.conditions`", "x1=max", "free-faces"],
        ),
        (
            "a free face with a condition",
            spec(&format!("{EQS}free-faces = [\"x1=max\"]"), WALLS),
            vec!["`custom.free-faces`", "x1=max", "conditions[0]"],
        ),
        (
            "time without an initial condition",
            "dim = 2\ntime = true\npde = \"system\"\nfields = [\"u\"]\nequations = [\"u_t - lap(u)\"]\n[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"\nvalue = \"0\"".into(),
            vec!["`custom.conditions`", "initial", "free-faces"],
        ),
        (
            "time face on a time problem",
            "dim = 2\ntime = true\npde = \"system\"\nfields = [\"u\"]\nequations = [\"u_t - lap(u)\"]\n[[conditions]]\non = \"x0=max\"\nkind = \"dirichlet\"\nvalue = \"0\"".into(),
            vec!["`custom.conditions[0].on`", "time t"],
        ),
        (
            "no conditions",
            spec(EQS, ""),
            vec!["`custom.conditions`", "missing"],
        ),
        ("no equations", spec("", WALLS), vec!["`custom.equations`", "missing"]),
        (
            "no fields",
            format!("dim = 2\npde = \"system\"\n{EQS}"),
            vec!["`custom.fields`", "missing"],
        ),
        (
            "derive-sources without solution",
            spec(&format!("{EQS}derive-sources = true"), WALLS),
            vec!["`custom.derive-sources`", "solution"],
        ),
        (
            "derive-sources with sources",
            spec(&format!("{EQS}derive-sources = true\nsources = {{ f = \"1\" }}\nsolution = {{ u = \"0\", v = \"0\" }}"), WALLS),
            vec!["`custom.sources`", "derive-sources"],
        ),
        (
            "source named like a field",
            spec(&format!("{EQS}sources = {{ u = \"1\" }}"), WALLS),
            vec!["`custom.sources.u`", "also a field"],
        ),
        (
            "source with a jet variable",
            spec("equations = [\"-lap(u) + f\", \"v\"]\nsources = { f = \"u + x0\" }", WALLS),
            vec!["`custom.sources.f`", "`u`"],
        ),
        (
            "solution missing a field",
            spec(&format!("{EQS}solution = {{ u = \"x0\" }}"), WALLS),
            vec!["`custom.solution`", "missing field `v`"],
        ),
        (
            "solution of an unknown field",
            spec(&format!("{EQS}solution = {{ u = \"x0\", v = \"0\", w = \"1\" }}"), WALLS),
            vec!["`custom.solution.w`", "not a field"],
        ),
        (
            "one solution for two fields",
            spec(&format!("{EQS}solution = \"x0\""), WALLS),
            vec!["`custom.solution`", "one expression per field"],
        ),
        (
            "non-differentiable solution for derived sources",
            spec(&format!("{EQS}derive-sources = true\nsolution = {{ u = \"abs(x0)\", v = \"0\" }}"), WALLS),
            vec!["`custom.solution.u`", "cannot differentiate", "sources"],
        ),
        (
            "widths ending wrong",
            spec(&format!("{EQS}widths = [2, 16, 1]"), WALLS),
            vec!["custom.widths", "[2, 16, 1]", "number of fields, 2"],
        ),
        (
            "unknown error field",
            spec(
                &format!("{EQS}error-group = {{ name = \"velocity\", fields = [\"p\"] }}"),
                WALLS,
            ),
            vec!["`custom.error-group.fields`", "`p`"],
        ),
        (
            "error group name",
            spec(
                &format!("{EQS}error-group = {{ name = \"a b\", fields = [\"u\"] }}"),
                WALLS,
            ),
            vec!["`custom.error-group.name`", "`a b`"],
        ),
        (
            "zero points",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"dirichlet\"\nvalue = \"0\"\npoints = 0")),
            vec!["custom.conditions[1].points"],
        ),
        (
            "negative weight",
            spec(EQS, &cond("on = \"x0=min\"\nkind = \"dirichlet\"\nvalue = \"0\"\nweight = -1")),
            vec!["custom.conditions[1].weight", "-1"],
        ),
    ];
    let mut keys_for_system = vec![];
    for (key, val, hint) in [
        ("kappa", "1", "equations"),
        ("rhs", "\"1\"", "derive-sources"),
        ("boundary", "\"0\"", "conditions"),
        ("residual", "\"lap\"", "equations"),
        ("data-on", "\"faces\"", "on"),
        ("points", "[10, 10]", "interior-points"),
    ] {
        keys_for_system.push((key, spec(&format!("{EQS}{key} = {val}"), WALLS), hint));
    }
    for (what, text, needles) in &cases {
        let e = error(text);
        for n in needles {
            assert!(e.contains(n), "{what}: `{n}` not in the message: {e}");
        }
    }
    for (key, text, hint) in &keys_for_system {
        let e = error(text);
        assert!(
            e.contains(&format!("`custom.{key}`"))
                && e.contains("pde = \"system\"")
                && e.contains(hint),
            "{key}: {e}"
        );
    }
    // system keys on the scalar pdes
    let scalar = "dim = 2\npde = \"poisson\"\nsolution = \"x0\"\n";
    for extra in [
        "fields = [\"u\"]",
        "equations = [\"u\"]",
        "sources = { f = \"1\" }",
        "operators = { dxy = [[0, 0.5], [0.5, 0]] }",
        "derive-sources = true",
        "interior-points = 10",
        "free-faces = [\"x0=min\"]",
        "error-group = { name = \"g\", fields = [\"u\"] }",
        "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"",
    ] {
        let e = error(&format!("{scalar}{extra}"));
        let key = extra
            .trim_start_matches("[[")
            .split([' ', ']'])
            .next()
            .unwrap();
        assert!(
            e.contains(&format!("`custom.{key}`")) && e.contains("only by \"system\""),
            "{key}: {e}"
        );
    }
    let e = error("dim = 2\npde = \"poisson\"\nsolution = { u = \"x0\" }");
    assert!(
        e.contains("`custom.solution`") && e.contains("system"),
        "{e}"
    );
}

#[test]
fn non_finite_data_name_the_key_and_the_point() {
    let first_x = |e: &str| -> Vec<f64> {
        let inside = e.split("x = [").nth(1).unwrap().split(']').next().unwrap();
        inside
            .split(',')
            .map(|v| v.trim().parse().unwrap())
            .collect()
    };
    // a condition's value on its points
    let p = build(&spec(
        EQS,
        "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"\nvalue = \"ln(x1 - 0.5)\"",
    ));
    let e = p.sample(1, 400, &mut rng(1)).err().unwrap().to_string();
    assert!(
        e.contains("`custom.conditions[0].value`") && e.contains("NaN"),
        "{e}"
    );
    assert!(first_x(&e)[1] < 0.5, "{e}");
    // a named source on the interior points
    let p = build(&spec(
        "equations = [\"-lap(u) + f\", \"v\"]\nsources = { f = \"sqrt(x0 - 0.5)\" }",
        WALLS,
    ));
    let e = p.sample(0, 200, &mut rng(1)).err().unwrap().to_string();
    assert!(e.contains("`custom.sources.f`") && e.contains("NaN"), "{e}");
    assert!(first_x(&e)[0] < 0.5, "{e}");
    // a derived source, data derived from the solution, the solution itself
    let p = build(&spec(
        &format!("{EQS}derive-sources = true\nsolution = {{ u = \"ln(x0 - 0.5)\", v = \"0\" }}"),
        "[[conditions]]\non = \"faces\"\nkind = \"dirichlet\"",
    ));
    let e = p.sample(0, 200, &mut rng(1)).err().unwrap().to_string();
    // −lap(u*) + v* is finite (ln's derivatives are rational); −lap(v*) + u* is not
    assert!(
        e.contains("`custom.equations[1]`") && e.contains("derived"),
        "{e}"
    );
    let e = p.sample(1, 400, &mut rng(1)).err().unwrap().to_string();
    assert!(
        e.contains("`custom.conditions[0]`") && e.contains("`custom.solution.u`"),
        "{e}"
    );
    let e = p.sample_eval(200, &mut rng(1)).err().unwrap().to_string();
    assert!(
        e.contains("`custom.solution.u`") && e.contains("NaN"),
        "{e}"
    );
    // one field, one expression: the key is `solution` itself
    let p = build(
        "dim = 1\npde = \"system\"\nfields = [\"u\"]\nequations = [\"lap(u)\"]\n\
         solution = \"sqrt(x0 - 0.5)\"\n[[conditions]]\non = \"faces\"\nkind = \"neumann\"",
    );
    let e = p.sample(1, 100, &mut rng(1)).err().unwrap().to_string();
    assert!(
        e.contains("(from `custom.solution`)") && e.contains("x = [0.0]"),
        "{e}"
    );
}

/// The operator-set example (elasticity written with `op(…)`) trains through the CLI:
/// 60 ENGD steps take the displacement from a random net to a small error (measured
/// 2.4e-4), which needs the custom set's jet rows, seeds and Gramian to be right.
#[test]
fn example_with_operators_trains() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/custom-elasticity.toml"
    );
    let (code, out, err) = common::kfac_pinn(&["train", "--config", path, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let rel = v["l2_rel"].as_f64().unwrap();
    assert!(rel < 1e-2, "relative L2 {rel} after 60 ENGD steps");
    for f in ["u1", "u2"] {
        let r = v["l2_fields"][f]["rel"].as_f64().unwrap();
        assert!(r < 1e-2, "{f}: {r}");
    }
}

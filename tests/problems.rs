//! Every built-in problem: its exact solution, with derivatives taken by finite
//! differences (independent of the network code), makes both residuals ≈ 0 on points
//! from the problem's own samplers; samplers respect the domain and the face rule.

mod common;

use common::rng;
use kfac_pinn::jet::JetKind;
use kfac_pinn::pde::{builtin, builtin_names};

/// Output jet `[u, ∂_1 u..∂_D u, Σ c_d ∂_dd u]` of the exact solution by central
/// differences (second differences use a larger step for stability).
fn fd_jet(u: &dyn Fn(&[f64]) -> f64, x: &[f64], coef: &[f64]) -> Vec<f64> {
    let d = x.len();
    let (h1, h2) = (1e-6, 1e-4);
    let u0 = u(x);
    let mut y = vec![u0];
    let mut lap = 0.0;
    for a in 0..d {
        let at = |h: f64| {
            let mut p = x.to_vec();
            p[a] += h;
            u(&p)
        };
        y.push((at(h1) - at(-h1)) / (2.0 * h1));
        lap += coef[a] * (at(h2) - 2.0 * u0 + at(-h2)) / (h2 * h2);
    }
    y.push(lap);
    y
}

#[test]
fn exact_solutions_satisfy_their_residuals() {
    for name in builtin_names() {
        let p = builtin(name).unwrap();
        let d = p.dim();
        let terms = p.terms();
        let exact = |x: &[f64]| {
            let mut o = [0.0];
            assert!(p.exact(x, &mut o));
            o[0]
        };
        let mut r = rng(5);
        for (t, term) in terms.iter().enumerate() {
            let x = p.sample(t, 40, &mut r).unwrap();
            let mut worst = 0.0f64;
            let mut scale = 1.0f64;
            for pt in x.chunks(d) {
                let y = match &term.kind {
                    JetKind::Full(op) => fd_jet(&exact, pt, op.coef()),
                    JetKind::Value => vec![exact(pt)],
                    JetKind::Set(_) => panic!("scalar problems have one operator"),
                };
                scale = scale.max(y.iter().fold(0.0f64, |m, v| m.max(v.abs())));
                let mut res = [0.0];
                term.residual.eval(pt, &y, &mut res, None);
                worst = worst.max(res[0].abs());
            }
            // second differences at h = 1e-4 carry ~1e-7 relative error
            assert!(
                worst < 1e-5 * scale,
                "{name} term {} residual {worst:e} (scale {scale:e})",
                term.name
            );
        }
    }
}

#[test]
fn samplers_respect_domains_and_faces() {
    for name in builtin_names() {
        let p = builtin(name).unwrap();
        let d = p.dim();
        let mut r = rng(1);
        let x = p.sample(0, 200, &mut r).unwrap();
        assert_eq!(x.len(), 200 * d);
        let fp = name.contains("fokker");
        for pt in x.chunks(d) {
            for (i, v) in pt.iter().enumerate() {
                let (lo, hi) = if fp && i > 0 { (-5.0, 5.0) } else { (0.0, 1.0) };
                assert!(*v >= lo && *v <= hi, "{name}: coordinate {i} = {v}");
            }
        }
        let b = p.sample(1, 200, &mut r).unwrap();
        let time = name.starts_with("heat") || fp;
        for (k, pt) in b.chunks(d).enumerate() {
            let on_face = pt
                .iter()
                .enumerate()
                .skip(usize::from(time))
                .any(|(_, v)| *v == 0.0 || *v == 1.0);
            let initial = time && pt[0] == 0.0;
            if fp {
                assert!(initial, "{name}: data point {k} not at t = 0");
            } else if name.starts_with("heat") {
                assert!(
                    if k < 100 { on_face } else { initial },
                    "{name}: point {k} {pt:?}"
                );
            } else {
                assert!(on_face, "{name}: boundary point {k} not on a face: {pt:?}");
            }
        }
    }
    // same seed, same points
    let p = builtin("heat4d").unwrap();
    assert_eq!(
        p.sample(1, 10, &mut rng(3)).unwrap(),
        p.sample(1, 10, &mut rng(3)).unwrap()
    );
}

#[test]
fn unknown_problem_lists_choices() {
    let e = builtin("poisson3d").err().unwrap().to_string();
    assert!(e.contains("poisson3d") && e.contains("heat4d"), "{e}");
}

/// Every built-in residual (and the custom poisson one) has a quadratic form in the output
/// jet, and the form reproduces `eval`'s residual and Jacobian at random points and jets.
#[test]
fn quadratic_forms_reproduce_the_residuals() {
    use rand::Rng;
    let doc: toml::Value = toml::from_str(include_str!("../examples/custom-poisson.toml")).unwrap();
    let custom = kfac_pinn::pde::custom::from_toml_table(&doc["custom"]).unwrap();
    let mut problems: Vec<(String, std::sync::Arc<dyn kfac_pinn::pde::Problem>)> = builtin_names()
        .iter()
        .map(|n| (n.to_string(), builtin(n).unwrap()))
        .collect();
    problems.push(("custom-poisson.toml".into(), custom));
    let mut r = rng(11);
    for (name, p) in problems {
        for (t, term) in p.terms().iter().enumerate() {
            let c = term.kind.s();
            let x = p.sample(t, 25, &mut r).unwrap();
            for pt in x.chunks(p.dim()) {
                let (mut a, mut b) = (vec![0.0; c], vec![0.0; c]);
                let d = term
                    .residual
                    .quad_form(pt, &mut a, &mut b)
                    .unwrap_or_else(|| panic!("{name} term {} has no quadratic form", term.name));
                let y: Vec<f64> = (0..c).map(|_| r.random_range(-2.0..2.0)).collect();
                let (mut res, mut jac) = ([0.0], vec![0.0; c]);
                term.residual.eval(pt, &y, &mut res, Some(&mut jac));
                let form: f64 = d + (0..c).map(|k| (a[k] + b[k] * y[k]) * y[k]).sum::<f64>();
                let tol = 1e-12 * (1.0 + res[0].abs() + d.abs());
                assert!(
                    (form - res[0]).abs() <= tol,
                    "{name}/{}: form {form} vs eval {}",
                    term.name,
                    res[0]
                );
                for k in 0..c {
                    let want = a[k] + 2.0 * b[k] * y[k];
                    assert!(
                        (jac[k] - want).abs() <= 1e-12 * (1.0 + want.abs()),
                        "{name}/{}: ∂r/∂y[{k}]",
                        term.name
                    );
                }
            }
        }
    }
}

//! The Burgers benchmark's reference (pde/burgers.rs, Cole–Hopf by quadrature): it
//! satisfies the PDE with derivatives by finite differences (also across the shock), its
//! initial and boundary data, its analytic slope matches differences, two quadrature
//! steps agree, and it reproduces the published maximum slope at the shock,
//! `max_t |u_x(t, 0)| = 152.00516` at `t = 1.6037/π` (Basdevant et al. 1986, Computers &
//! Fluids 14). The problem itself trains through the CLI.

mod common;

use common::rng;
use kfac_pinn::pde::burgers::{ColeHopf, NU};
use kfac_pinn::pde::{system, Problem};
use rand::Rng;
use std::f64::consts::PI;

/// `|u_t + u u_x − ν u_xx|` relative to the largest of its three terms, with `u_t` and
/// `u_xx` by central differences (`u_xx` of the analytic `u_x`).
fn relative_residual(r: &ColeHopf, t: f64, x: f64) -> f64 {
    let (u, ux) = r.eval(t, x);
    let ht = 1e-5;
    let ut = (r.u(t + ht, x) - r.u(t - ht, x)) / (2.0 * ht);
    let hx = 1e-6;
    let uxx = (r.eval(t, x + hx).1 - r.eval(t, x - hx).1) / (2.0 * hx);
    let terms = [ut, u * ux, NU * uxx];
    let scale = terms.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
    (ut + u * ux - NU * uxx).abs() / scale
}

#[test]
fn reference_satisfies_the_pde() {
    let r = ColeHopf::new(NU);
    let mut g = rng(11);
    let mut worst = 0.0f64;
    for i in 0..300 {
        let t = g.random_range(0.05..1.0);
        // a third of the points in the shock layer
        let x = if i % 3 == 0 {
            g.random_range(-0.02..0.02)
        } else {
            g.random_range(-0.999..0.999)
        };
        let e = relative_residual(&r, t, x);
        assert!(e < 1e-6, "residual {e:e} at t = {t}, x = {x}");
        worst = worst.max(e);
    }
    eprintln!("worst relative residual {worst:e}");
}

#[test]
fn reference_holds_its_initial_and_boundary_data() {
    let r = ColeHopf::new(NU);
    let mut g = rng(12);
    for _ in 0..100 {
        let x = g.random_range(-1.0..1.0);
        assert_eq!(r.u(0.0, x), -(PI * x).sin());
        // continuous at t = 0 (the heat kernel's width is √(4νt) ≈ 1e-5 here)
        let early = r.u(1e-8, x);
        assert!((early + (PI * x).sin()).abs() < 1e-4, "{x}: {early}");
        let t = g.random_range(0.0..1.0);
        for side in [-1.0, 1.0] {
            let b = r.u(t, side);
            assert!(b.abs() < 1e-12, "u({t}, {side}) = {b:e}");
        }
        // odd in x
        let (a, b) = (r.u(t, x), r.u(t, -x));
        assert!((a + b).abs() < 1e-12, "{t} {x}: {a} vs {b}");
    }
}

#[test]
fn reference_slope_and_quadrature_are_consistent() {
    let (r, fine) = (ColeHopf::new(NU), ColeHopf::with_step(NU, 0.005));
    let mut g = rng(13);
    for i in 0..200 {
        let t = g.random_range(0.0..1.0);
        let x = if i % 2 == 0 {
            g.random_range(-0.05..0.05)
        } else {
            g.random_range(-1.0..1.0)
        };
        let (u, ux) = r.eval(t, x);
        let (uf, uxf) = fine.eval(t, x);
        assert!((u - uf).abs() < 1e-13, "step: u({t}, {x}) {u} vs {uf}");
        assert!(
            (ux - uxf).abs() < 1e-11 * ux.abs().max(1.0),
            "step: u_x({t}, {x}) {ux} vs {uxf}"
        );
        let h = 1e-7;
        let fd = (r.u(t, x + h) - r.u(t, x - h)) / (2.0 * h);
        assert!(
            (fd - ux).abs() < 1e-6 * ux.abs().max(1.0),
            "u_x({t}, {x}): {ux} vs differences {fd}"
        );
    }
}

/// Basdevant et al. (1986): the steepest slope at the shock, `|u_x(t, 0)|`, peaks at
/// 152.00516 at `t = 1.6037/π`. Golden-section search over `t`.
#[test]
fn reference_matches_basdevants_maximum_slope() {
    let r = ColeHopf::new(NU);
    let slope = |t: f64| -r.eval(t, 0.0).1;
    let (mut a, mut b) = (0.4, 0.6);
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    while b - a > 1e-7 {
        let (c, d) = (b - phi * (b - a), a + phi * (b - a));
        if slope(c) > slope(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let t = 0.5 * (a + b);
    let m = slope(t);
    eprintln!("max |u_x(t, 0)| = {m:.6} at t = {t:.6}");
    assert!((m - 152.00516).abs() < 1e-4, "max slope {m} at t = {t}");
    assert!((t - 1.6037 / PI).abs() < 1e-4, "at t = {t}");
    // and at the published time itself, to the table's digits
    assert!((slope(1.6037 / PI) - 152.00516).abs() < 1e-4);
}

/// The problem through the library: the reference as its exact solution, the residual
/// vanishing on the jet of the reference, and a short run through the CLI reporting a
/// finite error against it.
#[test]
fn burgers_problem_uses_the_reference_and_trains() {
    let p = system("burgers").unwrap();
    let r = ColeHopf::new(NU);
    let mut o = [0.0];
    assert!(p.exact(&[0.5, 0.01], &mut o));
    assert_eq!(o[0], r.u(0.5, 0.01));
    let terms = p.terms();
    assert!(!terms[0].residual.is_linear());
    let (code, out, err) = common::kfac_pinn(&[
        "train",
        "--device",
        "cpu",
        "--problem",
        "burgers",
        "--widths",
        "2,8,8,1",
        "--points",
        "100,20,20",
        "--eval-points",
        "500",
        "--optimizer",
        "engd",
        "--steps",
        "5",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let rel = v["l2_rel"].as_f64().unwrap();
    assert!(rel.is_finite() && rel > 0.0, "{rel}");
}

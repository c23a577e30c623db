//! Systems and boundary conditions (issue 18): every built-in system's exact solution,
//! with derivatives by finite differences of the solution (independent of the formulas
//! in pde/flows.rs), makes every term's residual ≈ 0 on its own sampler's points; every
//! residual's Gauss–Newton seeds `∂r/∂y` match central differences of the residual in
//! the jet; samplers put points on their regions; bad systems are refused by name.

mod common;

use common::{assert_close, rng};
use kfac_pinn::jet::JetKind;
use kfac_pinn::pde::system::{BoxSystem, Face, FieldData, Region, SystemTerm};
use kfac_pinn::pde::{system, system_names, Problem, Setup};
use std::sync::Arc;

#[test]
fn exact_solutions_satisfy_every_term() {
    for name in system_names() {
        let p = system(name).unwrap();
        let (d, m) = (p.dim(), p.out_dim());
        if !p.exact(&vec![0.5; d], &mut vec![0.0; m]) {
            // no closed form: compared with published values instead
            assert!(
                p.reference_data().is_some(),
                "{name}: neither exact nor reference"
            );
            continue;
        }
        let exact = |x: &[f64], o: &mut [f64]| assert!(p.exact(x, o));
        let mut r = rng(5);
        for (t, term) in p.terms().iter().enumerate() {
            let x = p.sample(t, 40, &mut r).unwrap();
            let nr = term.residual.n_res();
            let (mut worst, mut scale) = (0.0f64, 1.0f64);
            for pt in x.chunks(d) {
                let y = match &term.kind {
                    JetKind::Full(op) => {
                        assert!(op.is_identity(), "{name}: coordinate directions");
                        common::fd_jet_fields(&exact, m, pt, op.coef())
                    }
                    JetKind::Value => {
                        let mut o = vec![0.0; m];
                        exact(pt, &mut o);
                        o
                    }
                    JetKind::Set(set) => {
                        let mats: Vec<_> = (0..set.ops()).map(|j| set.matrix(j)).collect();
                        common::fd_jet_set(&exact, m, pt, set.dirs(), &mats)
                    }
                };
                scale = scale.max(y.iter().fold(0.0f64, |a, v| a.max(v.abs())));
                let mut res = vec![0.0; nr];
                term.residual.eval(pt, &y, &mut res, None);
                worst = res.iter().fold(worst, |a, v| a.max(v.abs()));
            }
            // second differences at h = 1e-4 carry ~1e-7 relative error
            assert!(
                worst < 1e-5 * scale,
                "{name} term {}: residual {worst:e} (scale {scale:e})",
                term.name
            );
        }
    }
}

#[test]
fn seeds_match_finite_differences_of_the_residual() {
    let mut r = rng(9);
    for name in system_names() {
        common::assert_seeds_are_fd(name, &system(name).unwrap(), 3, &mut r);
    }
}

#[test]
fn samplers_put_points_on_their_regions() {
    for name in system_names() {
        let p = system(name).unwrap();
        let d = p.dim();
        let (lo, hi) = p.bounds().unwrap();
        let mut r = rng(3);
        for (t, term) in p.system_terms().iter().enumerate() {
            let x = p.sample(t, 300, &mut r).unwrap();
            assert_eq!(x.len(), 300 * d);
            let mut hits = vec![0usize; 2 * d];
            for pt in x.chunks(d) {
                for i in 0..d {
                    assert!(
                        pt[i] >= lo[i] && pt[i] <= hi[i],
                        "{name} {}: {pt:?}",
                        term.name
                    );
                }
                match &term.region {
                    Region::Interior => {
                        if let Some(shape) = p.domain() {
                            assert!(shape.contains(pt), "{name}: {pt:?} outside its shape");
                        }
                    }
                    Region::Initial => assert_eq!(pt[0], lo[0]),
                    Region::Point(q) => assert_eq!(pt, &q[..]),
                    Region::Observed(o) => assert!(o.find(pt).is_some()),
                    Region::Pieces(ps) => {
                        let shape = p.domain().expect("pieces need a shape");
                        let dist = ps
                            .iter()
                            .map(|&q| shape.piece_distance(q, pt))
                            .fold(f64::INFINITY, f64::min);
                        assert!(dist < 1e-9, "{name} {}: {pt:?} off its pieces", term.name);
                    }
                    Region::Faces(fs) => {
                        let on: Vec<&Face> = fs
                            .iter()
                            .filter(|f| {
                                pt[f.coord] == if f.upper { hi[f.coord] } else { lo[f.coord] }
                            })
                            .collect();
                        assert!(
                            !on.is_empty(),
                            "{name} {}: {pt:?} on none of {fs:?}",
                            term.name
                        );
                        hits[2 * on[0].coord + usize::from(on[0].upper)] += 1;
                    }
                }
            }
            // every face of a region is sampled, in proportion to its measure
            if let Region::Faces(fs) = &term.region {
                let measure = |f: &Face| -> f64 {
                    (0..d)
                        .filter(|&i| i != f.coord)
                        .map(|i| hi[i] - lo[i])
                        .product()
                };
                let total: f64 = fs.iter().map(measure).sum();
                for f in fs {
                    let got = hits[2 * f.coord + usize::from(f.upper)] as f64 / 300.0;
                    let want = measure(f) / total;
                    assert!(
                        (got - want).abs() < 0.1,
                        "{name} {}: face {f:?} share {got} vs {want}",
                        term.name
                    );
                }
            }
        }
    }
}

fn tiny_setup(points: Vec<usize>) -> Setup {
    Setup {
        widths: vec![2, 8, 1],
        points,
        resample: 0,
        eval_points: 10,
        budget_seconds: 1.0,
    }
}

#[test]
fn bad_systems_are_refused_by_name() {
    let g: kfac_pinn::pde::system::VecFn = Arc::new(|_: &[f64], o: &mut [f64]| o.fill(0.0));
    let data = |region: Region| SystemTerm {
        name: "wall".into(),
        region,
        kind: JetKind::Value,
        residual: Arc::new(FieldData {
            fields: vec![0],
            g: g.clone(),
            m: 1,
        }),
        weight: 1.0,
    };
    let build = |terms: Vec<SystemTerm>, points: Vec<usize>| {
        BoxSystem::new(
            "t",
            "t",
            vec![0.0, 0.0],
            vec![1.0, 1.0],
            &["u"],
            terms,
            None,
            tiny_setup(points),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    let e = build(vec![data(Region::Faces(vec![Face::upper(2)]))], vec![10]);
    assert!(e.contains("wall") && e.contains("coordinate 2"), "{e}");
    let e = build(vec![data(Region::Faces(vec![]))], vec![10]);
    assert!(e.contains("wall") && e.contains("at least one face"), "{e}");
    let e = build(vec![data(Region::Point(vec![0.5, 2.0]))], vec![10]);
    assert!(e.contains("wall") && e.contains("inside the box"), "{e}");
    let e = build(vec![data(Region::Interior)], vec![10, 10]);
    assert!(e.contains("2 point counts for 1 terms"), "{e}");
    let e = BoxSystem::new(
        "t",
        "t",
        vec![0.0, 1.0],
        vec![1.0, 1.0],
        &["u"],
        vec![data(Region::Interior)],
        None,
        tiny_setup(vec![1]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("domain[1]"), "{e}");
}

/// The residual Jacobian with respect to the parameters (rows scaled by `1/√N` per term,
/// the library's convention) against central differences of the residuals, and
/// `Jᵀr = ∇L`, on systems with several fields, residual components and terms.
#[test]
fn system_jacobians_match_finite_differences() {
    use kfac_pinn::curvature::jacobian;
    for (name, w, n) in [
        ("kovasznay", vec![2, 5, 4, 3], vec![6, 5, 3]),
        ("stokes", vec![2, 5, 3], vec![6, 5, 2]),
        ("taylor-green", vec![3, 4, 3], vec![5, 4, 4]),
        ("poisson-mixed-bc", vec![2, 5, 1], vec![5, 3, 3, 3, 3]),
        ("wave1d", vec![2, 4, 1], vec![5, 3, 3, 3]),
        ("elasticity", vec![2, 5, 4, 2], vec![6, 5]),
    ] {
        let (mut obj, p) = common::objective(name, &w, &n, 3, 24);
        let jac = jacobian(&mut obj, &p).unwrap();
        let r0 = common::scaled_residuals(&mut obj, &p);
        assert_eq!(r0.len(), jac.rows, "{name}: Jacobian rows");
        common::assert_jacobian_is_fd(name, &mut obj, &p, &jac.j, 1e-5, 1e-8);
        let mut g = vec![0.0; p.len()];
        let loss = obj.loss_grad(&p, &mut g).unwrap();
        let jt_r: Vec<f64> = (0..jac.cols)
            .map(|c| (0..jac.rows).map(|r| jac.j[r * jac.cols + c] * r0[r]).sum())
            .collect();
        assert_close(&format!("{name} Jᵀr"), &jt_r, &g, 1e-9, 1e-12);
        let half_r2: f64 = 0.5 * r0.iter().map(|v| v * v).sum::<f64>();
        assert!(
            (half_r2 - loss).abs() <= 1e-10 * loss,
            "{name}: loss {loss} vs ½‖r‖² {half_r2}"
        );
    }
}

#[test]
fn cavity_carries_ghias_table() {
    let p = system("cavity-re100").unwrap();
    let r = p.reference_data().unwrap();
    assert!(r.source.contains("Ghia"));
    // Tables I and II at Re = 100: 17 values of u on x = ½, 17 of v on y = ½
    assert_eq!(r.len(), 34);
    assert_eq!(r.field.iter().filter(|&&f| f == 0).count(), 17);
    for (i, pt) in r.x.chunks(2).enumerate() {
        let on_line = if r.field[i] == 0 {
            pt[0] == 0.5
        } else {
            pt[1] == 0.5
        };
        assert!(
            on_line && pt.iter().all(|v| (0.0..=1.0).contains(v)),
            "{pt:?}"
        );
    }
    // the lid's value, the walls' zeros, the extreme of u on the centre line
    let u_at = |y: f64| {
        r.value[(0..34)
            .find(|&i| r.field[i] == 0 && r.x[2 * i + 1] == y)
            .unwrap()]
    };
    assert_eq!((u_at(1.0), u_at(0.0), u_at(0.4531)), (1.0, 0.0, -0.2109));
    // the error measure: the table itself has no error, a shift of 0.01 in v has 0.01
    let mut out = vec![0.0; 34 * 3];
    for i in 0..34 {
        out[i * 3 + r.field[i]] = r.value[i];
    }
    assert_eq!(r.max_abs_error(&out, 3), 0.0);
    for i in 0..34 {
        out[i * 3 + 1] += 0.01;
    }
    assert!((r.max_abs_error(&out, 3) - 0.01).abs() < 1e-15);
}

/// `train --json` on systems: the error of every field and of the velocity group (which,
/// as a pooled ratio, lies between its fields' errors), and for the cavity the deviation
/// from Ghia's table over its 34 points.
#[test]
fn json_reports_errors_per_field_and_the_reference() {
    let run = |problem: &str, points: &str| -> serde_json::Value {
        let (code, out, err) = common::kfac_pinn(&[
            "train",
            "--device",
            "cpu",
            "--problem",
            problem,
            "--widths",
            "2,6,3",
            "--points",
            points,
            "--eval-points",
            "200",
            "--optimizer",
            "adam",
            "--steps",
            "3",
            "--json",
        ]);
        assert_eq!(code, 0, "{problem}: {err}");
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let s = run("stokes", "30,12,2");
    let f = &s["l2_fields"];
    let rel = |k: &str| f[k]["rel"].as_f64().unwrap_or_else(|| panic!("{k}: {f}"));
    let (u, v, vel) = (rel("u"), rel("v"), rel("velocity"));
    assert!(rel("p").is_finite() && u.is_finite() && v.is_finite());
    assert!(
        vel >= u.min(v) - 1e-12 && vel <= u.max(v) + 1e-12,
        "{u} {v} {vel}"
    );
    assert!(s.get("reference").is_none());
    let c = run("cavity-re100", "30,12,2");
    assert_eq!(c["reference"]["points"], 34);
    let dev = c["reference"]["max_abs_error"].as_f64().unwrap();
    // the lid's u = 1 is in the table: an untrained net cannot be within 1e-3 of all
    assert!(dev.is_finite() && dev > 1e-3, "{dev}");
    assert!(c["reference"]["source"].as_str().unwrap().contains("Ghia"));
}

/// Systems on shapes: box faces are refused, bad piece indices and points outside are
/// named, pieces on a plain box system are refused, and quasi-random points say they
/// need a box.
#[test]
fn shape_systems_check_their_regions() {
    use kfac_pinn::geometry::{Ball, PointKind, ShapeRef};
    let shape: ShapeRef = Arc::new(Ball::new(vec![0.0, 0.0], 1.0).unwrap());
    let data = |region: Region| SystemTerm {
        name: "data".into(),
        region,
        kind: JetKind::Value,
        residual: Arc::new(FieldData {
            fields: vec![0],
            g: Arc::new(|_: &[f64], o: &mut [f64]| o[0] = 0.0),
            m: 1,
        }),
        weight: 1.0,
    };
    let setup = Setup {
        widths: vec![2, 4, 1],
        points: vec![10],
        resample: 0,
        eval_points: 10,
        budget_seconds: 1.0,
    };
    let on = |r: Region| {
        BoxSystem::on_shape(
            "s",
            "",
            shape.clone(),
            &["u"],
            vec![data(r)],
            None,
            setup.clone(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = on(Region::Faces(vec![Face::lower(0)]));
    assert!(e.contains("sphere"), "{e}");
    let e = on(Region::Pieces(vec![3]));
    assert!(e.contains("[3]") && e.contains("sphere"), "{e}");
    let e = on(Region::Point(vec![2.0, 0.0]));
    assert!(e.contains("point of the shape"), "{e}");
    let e = BoxSystem::new(
        "s",
        "",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u"],
        vec![data(Region::Pieces(vec![0]))],
        None,
        setup,
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("on_shape"), "{e}");
    let p = system("plate-hole").unwrap();
    let e = p
        .sample_kind(0, 8, PointKind::Sobol, &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sobol") && e.contains("boxes"), "{e}");
}

/// Elasticity's interior residual reads three operator rows of one jet (`∂_xx`, `∂_yy`,
/// `∂_x∂_y`): ENGD (the exact Gauss–Newton step) fits the manufactured displacement on a
/// small net within a few dozen steps, which needs the jet's rows, their reverse mode and
/// the Gramian to be right.
#[test]
fn elasticity_trains_to_its_manufactured_solution() {
    let (code, out, err) = common::kfac_pinn(&[
        "train",
        "--device",
        "cpu",
        "--problem",
        "elasticity",
        "--widths",
        "2,16,16,2",
        "--points",
        "300,100",
        "--eval-points",
        "2000",
        "--optimizer",
        "engd",
        "--steps",
        "60",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let rel = v["l2_rel"].as_f64().unwrap();
    assert!(
        rel < 1e-2,
        "elasticity: relative L2 error {rel} after 60 ENGD steps"
    );
    for f in ["u1", "u2"] {
        let r = v["l2_fields"][f]["rel"].as_f64().unwrap();
        assert!(r < 1e-2, "elasticity {f}: {r}");
    }
}

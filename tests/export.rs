//! `kfac-pinn export` (VTK for ParaView) and the masked `plot-solution`: files written by
//! the binary, read back, and compared with independent truth: the network evaluated by
//! a hand-written forward pass, its gradient and Laplacian by finite differences, the
//! problem's source term written out here, the exact solution, and shape membership.

mod common;

use common::kfac_pinn as run;
use kfac_pinn::geometry::{Shape, Shell};
use kfac_pinn::io::vtk::{self, Mesh};
use kfac_pinn::model::{io as model_io, Mlp};
use std::f64::consts::PI;
use std::path::PathBuf;

/// A fresh directory per file (tests run in parallel; nothing is shared between them).
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kfac-pinn-export-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A random tanh net saved with the problem's name in its metadata.
fn model(widths: &[usize], problem: &str, name: &str) -> (PathBuf, Mlp, Vec<f64>) {
    let mlp = Mlp::new(widths).unwrap();
    let params: Vec<f64> = mlp.init(7);
    let path = tmp(name);
    model_io::save(
        &path,
        &mlp,
        &params,
        false,
        &[("problem", problem.into())],
        true,
    )
    .unwrap();
    (path, mlp, params)
}

/// The tanh MLP by hand (independent of the jet engine).
fn forward(mlp: &Mlp, p: &[f64], x: &[f64]) -> f64 {
    let mut h = x.to_vec();
    let layers = mlp.layers();
    for (l, lay) in layers.iter().enumerate() {
        let mut o = vec![0.0; lay.fan_out];
        for (i, oi) in o.iter_mut().enumerate() {
            let w = &p[lay.w_off + i * lay.fan_in..lay.w_off + (i + 1) * lay.fan_in];
            *oi = p[lay.b_off + i] + w.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>();
            if l + 1 < layers.len() {
                *oi = oi.tanh();
            }
        }
        h = o;
    }
    h[0]
}

fn read(path: &PathBuf) -> vtk::VtkFile {
    vtk::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn vtu_on_the_annulus_matches_the_model_and_the_pde() {
    let (m, mlp, p) = model(&[2, 12, 12, 1], "poisson-annulus", "annulus.safetensors");
    let out = tmp("annulus.vtu");
    let (code, _, err) = run(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "41",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = read(&out);
    let Mesh::Unstructured { points, cells } = &f.mesh else {
        panic!("a .vtu holds an unstructured grid");
    };
    let shell = Shell::new(vec![0.0, 0.0], 0.5, 1.0).unwrap();
    // cells: quads with every corner in the annulus, covering about its area
    let h = 2.0 / 40.0;
    assert!(cells
        .iter()
        .all(|(t, ids)| *t == vtk::VTK_QUAD && ids.len() == 4));
    for (_, ids) in cells {
        for &i in ids {
            let q = points[i];
            assert!(shell.contains(&q[..2]), "corner {q:?} outside the annulus");
        }
    }
    let area = cells.len() as f64 * h * h;
    let exact_area = PI * (1.0 - 0.25);
    assert!(
        area < exact_area && area > 0.8 * exact_area,
        "cells cover {area}, the annulus {exact_area}"
    );
    let u = f.field("u").unwrap();
    let grad = f.field("grad_u").unwrap();
    let res = f.field("residual_interior").unwrap();
    let exact = f.field("exact_u").unwrap();
    let error = f.field("error_u").unwrap();
    assert_eq!(grad.components, 2);
    let fd = 1e-4;
    for (i, q) in points.iter().enumerate().step_by(37) {
        let x = [q[0], q[1]];
        let ux = forward(&mlp, &p, &x);
        assert!(
            (u.data[i] - ux).abs() < 1e-12,
            "u at {x:?}: {} vs {ux}",
            u.data[i]
        );
        let mut lap = 0.0;
        for a in 0..2 {
            let (mut xp, mut xm) = (x, x);
            xp[a] += fd;
            xm[a] -= fd;
            let (up, um) = (forward(&mlp, &p, &xp), forward(&mlp, &p, &xm));
            let g = (up - um) / (2.0 * fd);
            assert!((grad.data[2 * i + a] - g).abs() < 1e-6, "∂{a}u at {x:?}");
            lap += (up - 2.0 * ux + um) / (fd * fd);
        }
        // −Δu − f with f = −(eˣ sin(πy)(1 − π²) + 2) (tests/systems.rs checks f)
        let src = -(x[0].exp() * (PI * x[1]).sin() * (1.0 - PI * PI) + 2.0);
        assert!(
            (res.data[i] - (-lap - src)).abs() < 1e-4 * (1.0 + lap.abs()),
            "residual at {x:?}: {} vs {}",
            res.data[i],
            -lap - src
        );
        let ue = x[0].exp() * (PI * x[1]).sin() + x[0] * x[0];
        assert!((exact.data[i] - ue).abs() < 1e-14);
        assert!((error.data[i] - (ux - ue)).abs() < 1e-12);
    }
}

#[test]
fn vti_has_the_whole_box_and_an_inside_mask() {
    let (m, mlp, p) = model(&[2, 8, 1], "plate-hole", "plate.safetensors");
    let out = tmp("plate.vti");
    let (code, _, err) = run(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--format",
        "vti",
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "21",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = read(&out);
    let Mesh::Image {
        origin,
        spacing,
        dims,
    } = f.mesh
    else {
        panic!("a .vti holds image data");
    };
    assert_eq!(dims, [21, 21, 1]);
    assert_eq!(origin, [0.0, 0.0, 0.0]);
    assert!((spacing[0] - 0.05).abs() < 1e-15 && (spacing[1] - 0.05).abs() < 1e-15);
    let inside = f.field("inside").unwrap();
    let u = f.field("u").unwrap();
    let mut holes = 0;
    for j in 0..21 {
        for i in 0..21 {
            let k = j * 21 + i;
            let x = [i as f64 * spacing[0], j as f64 * spacing[1]];
            let r = ((x[0] - 0.5).powi(2) + (x[1] - 0.5).powi(2)).sqrt();
            if (r - 0.2).abs() > 1e-9 {
                assert_eq!(inside.data[k], if r > 0.2 { 1.0 } else { 0.0 }, "at {x:?}");
            }
            holes += (inside.data[k] == 0.0) as usize;
            assert!((u.data[k] - forward(&mlp, &p, &x)).abs() < 1e-12);
        }
    }
    assert!(holes > 0, "the hole is masked");
}

#[test]
fn slices_of_a_5d_ball_are_hexahedra_inside_it() {
    let (m, _, _) = model(&[5, 8, 1], "poisson-ball5d", "ball.safetensors");
    let out = tmp("ball.vtu");
    let (code, _, err) = run(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--axes",
        "0,2,4",
        "--at",
        "0,0.3,0,0,0",
        "--resolution",
        "9",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = read(&out);
    let Mesh::Unstructured { points, cells } = &f.mesh else {
        panic!()
    };
    assert!(!cells.is_empty());
    assert!(cells
        .iter()
        .all(|(t, ids)| *t == vtk::VTK_HEXAHEDRON && ids.len() == 8));
    // the slice x1 = 0.3 of the unit ball is a ball of radius sqrt(0.91) in (x0, x2, x4)
    for q in points {
        let r2: f64 = q.iter().map(|v| v * v).sum();
        assert!(r2 <= 0.91 + 1e-9, "{q:?}");
    }
    assert_eq!(f.field("grad_u").unwrap().components, 5);
}

#[test]
fn bad_exports_are_refused_with_clear_messages() {
    let (m, _, _) = model(&[5, 4, 1], "poisson-ball5d", "bad.safetensors");
    let ms = m.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--out", "/tmp/x.vtk"], "must end in .vtu or .vti"),
        (
            vec!["--out", "/tmp/x.vtu", "--format", "vtp"],
            "`--format` must be vtu or vti",
        ),
        (vec!["--out", "/tmp/x.vtu"], "give `--axes`"),
        (
            vec!["--out", "/tmp/x.vtu", "--axes", "0,0"],
            "1 to 3 different coordinates",
        ),
        (
            vec![
                "--out",
                "/tmp/x.vtu",
                "--axes",
                "0,1",
                "--resolution",
                "5000",
            ],
            "`--resolution`",
        ),
        (
            vec!["--out", "/tmp/x.vtu", "--axes", "0,1", "--at", "1,2"],
            "`--at` needs 5 values",
        ),
        (
            vec!["--out", "/tmp/x.vtu", "--problem", "poisson2d"],
            "does not fit problem",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["export", "--model", ms.as_str()];
        args.extend(extra.iter());
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn plot_solution_masks_the_outside_and_draws_the_boundary() {
    let (m, _, _) = model(&[2, 8, 1], "poisson-lshape", "lshape.safetensors");
    let out = tmp("lshape.svg");
    let (code, _, err) = run(&[
        "plot-solution",
        "--model",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--resolution",
        "20",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&out).unwrap();
    // three panels of 20×20 cells minus the cut-out quarter, plus the outline's paths
    let rects = svg.matches("<rect").count();
    assert!((3 * 300..3 * 400).contains(&rects), "{rects} cells drawn");
    assert!(
        svg.matches("<polyline").count() >= 3 * 6,
        "boundary segments drawn"
    );
}

#[test]
fn the_contour_of_a_circle_lies_on_it() {
    let segs =
        kfac_pinn::plot::zero_contour(60, 60, (-1.0, 1.0, -1.0, 1.0), |x, y| x.hypot(y) - 0.7);
    assert!(segs.len() > 50);
    let mut length = 0.0;
    for s in &segs {
        for p in s {
            assert!((p.0.hypot(p.1) - 0.7).abs() < 2e-3, "{p:?}");
        }
        length += (s[1].0 - s[0].0).hypot(s[1].1 - s[0].1);
    }
    assert!(
        (length - 2.0 * PI * 0.7).abs() < 0.01 * 2.0 * PI * 0.7,
        "{length}"
    );
}

/// A model trained with exact conditions (`poisson-annulus-hard`: `u = g + φN`, φ = 0 on
/// the outer circle) is read as the solution by `eval`, `export` and `plot-solution`:
/// on the outer circle `u` is the exact solution whatever the network; inside it is
/// `g + φN` with `N` evaluated by hand, and eval's ∇u, Δu are finite differences of it.
#[test]
fn hard_bc_models_are_read_as_g_plus_phi_n() {
    let mlp = Mlp::new(&[2, 10, 10, 1]).unwrap();
    let p: Vec<f64> = mlp.init(11);
    let m = tmp("hard.safetensors");
    model_io::save(
        &m,
        &mlp,
        &p,
        false,
        &[
            ("problem", "poisson-annulus-hard".into()),
            ("kfac_pinn.hard_bc", "true".into()),
        ],
        true,
    )
    .unwrap();
    let prob = kfac_pinn::pde::problem("poisson-annulus-hard", &Default::default()).unwrap();
    let hard = prob.hard_bc().unwrap();
    let u_hand = |x: &[f64]| {
        let (g, phi) = hard.values(&hard.fields[0], x);
        g + phi * forward(&mlp, &p, x)
    };
    // points on the outer circle, then inside with their ±h stencils
    let fd = 1e-4;
    let mut pts = Vec::new();
    for k in 0..8 {
        let a = 0.3 + k as f64 * 0.7;
        pts.extend([a.cos(), a.sin()]);
    }
    let inner = [[0.7, 0.1], [-0.2, 0.6], [0.0, -0.8], [0.55, 0.55]];
    for x in inner {
        pts.extend(x);
        for a in 0..2 {
            for s in [1.0, -1.0] {
                let mut y = x;
                y[a] += s * fd;
                pts.extend(y);
            }
        }
    }
    let n = pts.len() / 2;
    let xin = tmp("hard-points.npy");
    std::fs::write(&xin, kfac_pinn::io::npy::encode(n, 2, &pts)).unwrap();
    let eval = |extra: &[&str], name: &str| {
        let out = tmp(name);
        let mut args = vec![
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--points",
            xin.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--force",
        ];
        args.extend(extra);
        let (code, _, err) = run(&args);
        (code, err, out)
    };
    let (code, err, out) = eval(&[], "hard-eval.npy");
    assert_eq!(code, 0, "{err}");
    let y = kfac_pinn::io::npy::read(&out).unwrap();
    assert_eq!((y.rows, y.cols), (n, 4));
    let col = |i: usize, c: usize| y.data[i * 4 + c];
    let mut exact = [0.0];
    for i in 0..8 {
        let x = &pts[2 * i..2 * i + 2];
        assert!(prob.exact(x, &mut exact));
        assert!(
            (col(i, 0) - exact[0]).abs() < 1e-12,
            "u on the outer circle at {x:?}: {} vs exact {}",
            col(i, 0),
            exact[0]
        );
    }
    for (q, x) in inner.iter().enumerate() {
        let i = 8 + 5 * q;
        assert!((col(i, 0) - u_hand(x)).abs() < 1e-12, "u at {x:?}");
        let mut lap = 0.0;
        for a in 0..2 {
            let (up, um) = (col(i + 1 + 2 * a, 0), col(i + 2 + 2 * a, 0));
            let g = (up - um) / (2.0 * fd);
            assert!(
                (col(i, 1 + a) - g).abs() < 1e-6,
                "∂{a}u at {x:?}: {} vs {g}",
                col(i, 1 + a)
            );
            lap += (up - 2.0 * col(i, 0) + um) / (fd * fd);
        }
        assert!(
            (col(i, 3) - lap).abs() < 1e-4 * (1.0 + lap.abs()),
            "Δu at {x:?}: {} vs {lap}",
            col(i, 3)
        );
    }
    // --network-output: the bare network
    let (code, err, out) = eval(&["--network-output"], "hard-raw.npy");
    assert_eq!(code, 0, "{err}");
    let raw = kfac_pinn::io::npy::read(&out).unwrap();
    for i in 0..n {
        let x = &pts[2 * i..2 * i + 2];
        assert!((raw.data[i * 4] - forward(&mlp, &p, x)).abs() < 1e-12);
    }
    // against a problem without exact conditions: refused, naming the reason
    let (code, err, _) = eval(&["--problem", "poisson-annulus"], "hard-bad.npy");
    assert_ne!(code, 0);
    assert!(err.contains("exact boundary conditions"), "{err}");

    // export: u and the residual are those of g + φN
    let vtu = tmp("hard.vtu");
    let (code, _, err) = run(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--out",
        vtu.to_str().unwrap(),
        "--resolution",
        "21",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = read(&vtu);
    let Mesh::Unstructured { points, .. } = &f.mesh else {
        panic!("a .vtu holds an unstructured grid");
    };
    let (u, res) = (f.field("u").unwrap(), f.field("residual_interior").unwrap());
    for (i, q) in points.iter().enumerate().step_by(7) {
        let x = [q[0], q[1]];
        assert!(
            (u.data[i] - u_hand(&x)).abs() < 1e-12,
            "exported u at {x:?}"
        );
        let mut lap = 0.0;
        for a in 0..2 {
            let (mut xp, mut xm) = (x, x);
            xp[a] += fd;
            xm[a] -= fd;
            lap += (u_hand(&xp) - 2.0 * u_hand(&x) + u_hand(&xm)) / (fd * fd);
        }
        let src = -(x[0].exp() * (PI * x[1]).sin() * (1.0 - PI * PI) + 2.0);
        assert!(
            (res.data[i] - (-lap - src)).abs() < 1e-4 * (1.0 + lap.abs()),
            "exported residual at {x:?}: {} vs {}",
            res.data[i],
            -lap - src
        );
    }
    // export and plot-solution refuse the soft problem for this model
    let (code, _, err) = run(&[
        "export",
        "--model",
        m.to_str().unwrap(),
        "--problem",
        "poisson-annulus",
        "--out",
        vtu.to_str().unwrap(),
        "--force",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("exact boundary conditions"), "{err}");
    let png = tmp("hard.png");
    let (code, _, err) = run(&[
        "plot-solution",
        "--model",
        m.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--resolution",
        "30",
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
}

//! Shapes (`kfac_pinn::geometry`): volumes by Monte Carlo membership against closed forms
//! and against each shape's own `volume()`; boundary measures against closed forms
//! (circle, sphere, 5-ball, ellipse by quadrature, simplex facets, L-shape, plate with a
//! hole, lens and union of two disks); sampled points inside the shape and on the
//! boundary; normals against finite differences of the signed distance; uniformity of
//! interior and boundary samplers; every bad input as a clear error.

mod common;

use common::rng;
use kfac_pinn::geometry::{
    measure_of, piece_index, sample_pieces, unit_ball_volume, Ball, BoxShape, Difference,
    Ellipsoid, Intersection, Polygon, Prefixed, Shape, ShapeRef, Shell, Simplex, TimeProduct,
    Union,
};
use rand::Rng;
use std::f64::consts::PI;
use std::sync::Arc;

fn lshape() -> Polygon {
    // [0,2]² without [1,2]², clockwise on purpose (edge numbering must follow the input)
    Polygon::new(vec![
        [0.0, 0.0],
        [0.0, 2.0],
        [1.0, 2.0],
        [1.0, 1.0],
        [2.0, 1.0],
        [2.0, 0.0],
    ])
    .unwrap()
}

fn plate() -> ShapeRef {
    let b: ShapeRef = Arc::new(BoxShape::new(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap());
    let hole: ShapeRef =
        Arc::new(Prefixed::new(Arc::new(Ball::new(vec![0.5, 0.5], 0.2).unwrap()), "hole").unwrap());
    Arc::new(Difference::new(b, hole).unwrap())
}

fn disks() -> (ShapeRef, ShapeRef) {
    let a: ShapeRef =
        Arc::new(Prefixed::new(Arc::new(Ball::new(vec![0.0, 0.0], 1.0).unwrap()), "left").unwrap());
    let b: ShapeRef = Arc::new(
        Prefixed::new(Arc::new(Ball::new(vec![1.0, 0.0], 1.0).unwrap()), "right").unwrap(),
    );
    (a, b)
}

/// Every shape under test, with its closed-form volume and piece measures.
fn shapes() -> Vec<(&'static str, ShapeRef, f64, Vec<f64>)> {
    let lens = 2.0 * PI / 3.0 - 3f64.sqrt() / 2.0;
    let (a, b) = disks();
    let simplex3 = Simplex::new(vec![
        vec![0.0, 0.0, 0.0],
        vec![1.0, 0.0, 0.0],
        vec![0.0, 2.0, 0.0],
        vec![0.0, 0.0, 3.0],
    ])
    .unwrap();
    // facets of the 3-simplex: opposite vertex 0 the slanted one, |(1,0,0)x(0,2,0)...|
    let slanted =
        0.5 * ((2.0f64 * 3.0).powi(2) + (1.0f64 * 3.0).powi(2) + (1.0f64 * 2.0).powi(2)).sqrt();
    let ellipse_perimeter = {
        // quadrature of ds = sqrt(a² sin²θ + b² cos²θ) dθ, a = 2, b = 0.5
        let m = 200_000;
        (0..m)
            .map(|k| {
                let t = (k as f64 + 0.5) / m as f64 * 2.0 * PI;
                (4.0 * t.sin().powi(2) + 0.25 * t.cos().powi(2)).sqrt()
            })
            .sum::<f64>()
            * 2.0
            * PI
            / m as f64
    };
    let disk: ShapeRef = Arc::new(Ball::new(vec![0.0, 0.0], 1.0).unwrap());
    vec![
        (
            "box3",
            Arc::new(BoxShape::new(vec![0.0, -1.0, 0.0], vec![1.0, 1.0, 3.0]).unwrap()),
            6.0,
            vec![6.0, 6.0, 3.0, 3.0, 2.0, 2.0],
        ),
        (
            "disk",
            Arc::new(Ball::new(vec![0.5, -0.5], 0.7).unwrap()),
            PI * 0.49,
            vec![2.0 * PI * 0.7],
        ),
        (
            "ball3",
            Arc::new(Ball::new(vec![0.0, 0.0, 0.0], 2.0).unwrap()),
            4.0 / 3.0 * PI * 8.0,
            vec![4.0 * PI * 4.0],
        ),
        (
            "ball5",
            Arc::new(Ball::new(vec![0.0; 5], 1.0).unwrap()),
            8.0 * PI * PI / 15.0,
            vec![8.0 * PI * PI / 3.0],
        ),
        (
            "annulus",
            Arc::new(Shell::new(vec![0.0, 0.0], 0.5, 1.0).unwrap()),
            PI * 0.75,
            vec![PI, 2.0 * PI],
        ),
        (
            "shell3",
            Arc::new(Shell::new(vec![1.0, 1.0, 1.0], 1.0, 2.0).unwrap()),
            4.0 / 3.0 * PI * 7.0,
            vec![4.0 * PI, 16.0 * PI],
        ),
        (
            "ellipse",
            Arc::new(Ellipsoid::new(vec![0.0, 0.0], vec![2.0, 0.5]).unwrap()),
            PI,
            vec![ellipse_perimeter],
        ),
        (
            "triangle",
            Arc::new(Simplex::new(vec![vec![0.0, 0.0], vec![2.0, 0.0], vec![0.0, 1.0]]).unwrap()),
            1.0,
            vec![5f64.sqrt(), 1.0, 2.0],
        ),
        (
            "simplex3",
            Arc::new(simplex3),
            1.0,
            vec![slanted, 3.0, 1.5, 1.0],
        ),
        (
            "lshape",
            Arc::new(lshape()),
            3.0,
            vec![2.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        ),
        (
            "plate",
            plate(),
            1.0 - PI * 0.04,
            vec![1.0, 1.0, 1.0, 1.0, 2.0 * PI * 0.2],
        ),
        (
            "lens",
            Arc::new(Intersection::new(a.clone(), b.clone()).unwrap()),
            lens,
            vec![2.0 * PI / 3.0, 2.0 * PI / 3.0],
        ),
        (
            "union",
            Arc::new(Union::new(a, b).unwrap()),
            2.0 * PI - lens,
            vec![4.0 * PI / 3.0, 4.0 * PI / 3.0],
        ),
        (
            "disk x time",
            Arc::new(TimeProduct::new(disk, 0.0, 2.0).unwrap()),
            2.0 * PI,
            vec![PI, PI, 4.0 * PI],
        ),
    ]
}

#[test]
fn closed_form_volumes_and_measures() {
    assert!((unit_ball_volume(2) - PI).abs() < 1e-15);
    assert!((unit_ball_volume(3) - 4.0 / 3.0 * PI).abs() < 1e-14);
    for (name, s, vol, measures) in shapes() {
        // set operations and the ellipse's surface are Monte Carlo estimates (< 1%)
        let tol = if name == "plate" || name == "lens" || name == "union" || name == "ellipse" {
            1e-2
        } else {
            1e-12
        };
        assert!(
            (s.volume() - vol).abs() <= tol * vol,
            "{name}: volume {} vs {vol}",
            s.volume()
        );
        assert_eq!(s.pieces().len(), measures.len(), "{name}: {:?}", s.pieces());
        for (p, m) in measures.iter().enumerate() {
            let got = s.piece_measure(p);
            assert!(
                (got - m).abs() <= tol * m,
                "{name} piece {} : measure {got} vs {m}",
                s.pieces()[p]
            );
        }
    }
}

/// The fraction of uniform points of the bounding box that the membership test accepts,
/// times the box's volume, is the shape's volume (4 standard errors).
#[test]
fn monte_carlo_membership_matches_the_volume() {
    let mut r = rng(1);
    for (name, s, vol, _) in shapes() {
        let (lo, hi) = s.bounds();
        let d = s.dim();
        let bbox: f64 = lo.iter().zip(&hi).map(|(a, b)| b - a).product();
        let n = 200_000;
        let mut p = vec![0.0; d];
        let mut inside = 0;
        for _ in 0..n {
            for i in 0..d {
                p[i] = r.random_range(lo[i]..hi[i]);
            }
            inside += usize::from(s.contains(&p));
        }
        let f = inside as f64 / n as f64;
        let se = (f * (1.0 - f) / n as f64).sqrt() * bbox;
        assert!(
            (f * bbox - vol).abs() <= 4.0 * se + 1e-3 * vol,
            "{name}: Monte Carlo volume {} vs {vol} (se {se})",
            f * bbox
        );
    }
}

/// Central differences of the signed distance, normalised; None where the one-sided
/// differences disagree (a kink of the distance: corners, seams of set operations).
fn sdf_normal(s: &dyn Shape, x: &[f64]) -> Option<Vec<f64>> {
    let h = 1e-6;
    let d = x.len();
    let mut g = vec![0.0; d];
    for i in 0..d {
        let (mut p, mut m) = (x.to_vec(), x.to_vec());
        p[i] += h;
        m[i] -= h;
        let (f0, fp, fm) = (s.sdf(x), s.sdf(&p), s.sdf(&m));
        let (fwd, bwd) = ((fp - f0) / h, (f0 - fm) / h);
        if (fwd - bwd).abs() > 1e-3 * (1.0 + fwd.abs()) {
            return None;
        }
        g[i] = (fp - fm) / (2.0 * h);
    }
    let n = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    Some(g.iter().map(|v| v / n).collect())
}

#[test]
fn samples_lie_in_the_shape_and_on_its_boundary_with_fd_normals() {
    let mut r = rng(2);
    for (name, s, _, _) in shapes() {
        let d = s.dim();
        let n = 2000;
        let mut x = vec![0.0; n * d];
        s.sample_interior(&mut r, &mut x).unwrap();
        for p in x.chunks(d) {
            assert!(s.contains(p), "{name}: interior sample {p:?} outside");
        }
        for (pi, piece) in s.pieces().iter().enumerate() {
            let (mut bx, mut bn) = (vec![0.0; 500 * d], vec![0.0; 500 * d]);
            s.sample_piece(pi, &mut r, &mut bx, &mut bn).unwrap();
            let mut checked = 0;
            for (p, nr) in bx.chunks(d).zip(bn.chunks(d)) {
                assert!(
                    s.sdf(p).abs() < 1e-9,
                    "{name} {piece}: {p:?} off the boundary ({})",
                    s.sdf(p)
                );
                let len: f64 = nr.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!((len - 1.0).abs() < 1e-12, "{name} {piece}: |n| = {len}");
                if let Some(g) = sdf_normal(s.as_ref(), p) {
                    let dot: f64 = g.iter().zip(nr).map(|(a, b)| a * b).sum();
                    assert!(
                        dot > 1.0 - 1e-6,
                        "{name} {piece} at {p:?}: normal {nr:?} vs FD {g:?}"
                    );
                    checked += 1;
                }
            }
            assert!(
                checked > 400,
                "{name} {piece}: only {checked} of 500 normals checked"
            );
        }
    }
}

#[test]
fn samplers_are_uniform() {
    let mut r = rng(3);
    let n = 100_000;
    // ball in 3d: the inner half radius holds 1/8 of the volume
    let b = Ball::new(vec![0.0; 3], 1.0).unwrap();
    let mut x = vec![0.0; n * 3];
    b.sample_interior(&mut r, &mut x).unwrap();
    let f = x
        .chunks(3)
        .filter(|p| p.iter().map(|v| v * v).sum::<f64>() < 0.25)
        .count() as f64
        / n as f64;
    assert!(
        (f - 0.125).abs() < 4.0 * (0.125 * 0.875 / n as f64).sqrt(),
        "ball: {f}"
    );
    // L-shape: each of its three unit squares holds 1/3
    let l = lshape();
    let mut x = vec![0.0; n * 2];
    l.sample_interior(&mut r, &mut x).unwrap();
    let f = x.chunks(2).filter(|p| p[0] < 1.0 && p[1] > 1.0).count() as f64 / n as f64;
    assert!(
        (f - 1.0 / 3.0).abs() < 4.0 * (2.0 / 9.0 / n as f64).sqrt(),
        "lshape: {f}"
    );
    // ellipse boundary: mean |y| against the arc-length average by quadrature
    let e = Ellipsoid::new(vec![0.0, 0.0], vec![2.0, 0.5]).unwrap();
    let (mut bx, mut bn) = (vec![0.0; n * 2], vec![0.0; n * 2]);
    e.sample_piece(0, &mut r, &mut bx, &mut bn).unwrap();
    let mean = bx.chunks(2).map(|p| p[1].abs()).sum::<f64>() / n as f64;
    let m = 100_000;
    let (mut num, mut den) = (0.0, 0.0);
    for k in 0..m {
        let t = (k as f64 + 0.5) / m as f64 * 2.0 * PI;
        let ds = (4.0 * t.sin().powi(2) + 0.25 * t.cos().powi(2)).sqrt();
        num += (0.5 * t.sin()).abs() * ds;
        den += ds;
    }
    assert!(
        (mean - num / den).abs() < 2e-3,
        "ellipse: mean |y| {mean} vs {}",
        num / den
    );
    // several pieces by their measure: the plate's hole gets 2π·0.2/(4 + 2π·0.2)
    let p = plate();
    let all: Vec<usize> = (0..5).collect();
    let (mut bx, mut bn) = (vec![0.0; 20_000 * 2], vec![0.0; 20_000 * 2]);
    sample_pieces(p.as_ref(), &all, &mut r, &mut bx, &mut bn).unwrap();
    let hole = bx
        .chunks(2)
        .filter(|q| ((q[0] - 0.5).powi(2) + (q[1] - 0.5).powi(2)).sqrt() < 0.21)
        .count() as f64
        / 20_000.0;
    let want = p.piece_measure(4) / measure_of(p.as_ref(), &all);
    assert!(
        (hole - want).abs() < 0.015,
        "plate: hole share {hole} vs {want}"
    );
    assert_eq!(piece_index(p.as_ref(), "hole").unwrap(), 4);
    // the hole's normal points into the hole (out of the plate)
    let h = piece_index(p.as_ref(), "hole").unwrap();
    p.sample_piece(h, &mut r, &mut bx[..20], &mut bn[..20])
        .unwrap();
    for (q, nr) in bx[..20].chunks(2).zip(bn[..20].chunks(2)) {
        let towards_centre = (0.5 - q[0]) * nr[0] + (0.5 - q[1]) * nr[1];
        assert!(towards_centre > 0.0, "{q:?} {nr:?}");
    }
}

#[test]
fn bad_shapes_are_clear_errors() {
    let err = |r: kfac_pinn::error::Result<Polygon>| r.unwrap_err().to_string();
    let e = err(Polygon::new(vec![
        [0.0, 0.0],
        [1.0, 1.0],
        [1.0, 0.0],
        [0.0, 1.0],
    ]));
    assert!(e.contains("simple polygon") && e.contains("cross"), "{e}");
    let e = err(Polygon::new(vec![[0.0, 0.0], [1.0, 0.0]]));
    assert!(e.contains("at least 3"), "{e}");
    let e = err(Polygon::new(vec![
        [0.0, 0.0],
        [1.0, 0.0],
        [0.0, 0.0],
        [0.0, 1.0],
    ]));
    assert!(e.contains("vertex 2") && e.contains("repeated"), "{e}");
    let e = err(Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [f64::NAN, 1.0]]));
    assert!(e.contains("vertex 2") && e.contains("finite"), "{e}");
    let e = Shell::new(vec![0.0, 0.0], 1.0, 0.5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inner radius") && e.contains("0.5"), "{e}");
    let e = Ball::new(vec![0.0], -1.0).unwrap_err().to_string();
    assert!(e.contains("radius") && e.contains("-1"), "{e}");
    let e = Simplex::new(vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.0]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("general position"), "{e}");
    let e = TimeProduct::new(Arc::new(Ball::new(vec![0.0], 1.0).unwrap()), 1.0, 0.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 0]"), "{e}");
    // an empty difference
    let small: ShapeRef = Arc::new(Ball::new(vec![0.0, 0.0], 0.5).unwrap());
    let big: ShapeRef = Arc::new(BoxShape::new(vec![-1.0, -1.0], vec![1.0, 1.0]).unwrap());
    let e = Difference::new(small.clone(), big.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("positive volume") && e.contains("empty"), "{e}");
    // colliding piece names
    let other: ShapeRef = Arc::new(Ball::new(vec![0.2, 0.0], 0.5).unwrap());
    let e = Union::new(small, other).unwrap_err().to_string();
    assert!(e.contains("sphere") && e.contains("Prefixed"), "{e}");
    // a piece of measure zero: a hole outside the plate
    let far: ShapeRef = Arc::new(Ball::new(vec![5.0, 5.0], 0.5).unwrap());
    let d = Difference::new(big, far).unwrap();
    let s = piece_index(&d, "sphere").unwrap();
    assert_eq!(d.piece_measure(s), 0.0);
    let mut r = rng(0);
    let e = d
        .sample_piece(s, &mut r, &mut [0.0; 4], &mut [0.0; 4])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sphere") && e.contains("positive measure"),
        "{e}"
    );
    let e = sample_pieces(&d, &[s], &mut r, &mut [0.0; 4], &mut [0.0; 4])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sphere") && e.contains("positive measure"),
        "{e}"
    );
    let e = piece_index(&d, "edge9").unwrap_err().to_string();
    assert!(e.contains("edge9") && e.contains("x0=min"), "{e}");
}

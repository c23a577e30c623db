//! Built-in problems on shapes other than boxes (issue 19), each with an exact or
//! manufactured solution: Poisson on an L-shaped domain (the re-entrant corner's
//! singular solution `r^{2/3} sin(2θ/3)`), Poisson on an annulus (Dirichlet outside,
//! Neumann inside), a plate with a circular hole (Dirichlet on the plate's edges, Neumann
//! on the hole), and Poisson in the 5-d unit ball. Conditions are soft (least-squares
//! terms on the boundary pieces).
//!
//! Checked by `tests/systems.rs` with every other system: each exact solution, with
//! derivatives by finite differences, makes every term vanish on its sampler's points;
//! seeds against finite differences; points on their regions.

use super::flows::{setup, sf, term, vf};
use super::problems::{DataResidual, LinearResidual, ScalarFn};
use super::system::{gradient_jet, BoxSystem, JetIdx, NormalCondition, Region};
use crate::error::Result;
use crate::geometry::{
    piece_index, Ball, BoxShape, Difference, Polygon, Prefixed, ShapeRef, Shell,
};
use crate::jet::{JetKind, Operator};
use std::f64::consts::PI;
use std::sync::Arc;

/// Names of the built-in problems on shapes.
pub const NAMES: &[&str] = &[
    "poisson-lshape",
    "poisson-annulus",
    "plate-hole",
    "poisson-ball5d",
];

/// A built-in problem on a shape by name, or None if `name` is not one.
pub fn build(name: &str) -> Option<Result<BoxSystem>> {
    Some(match name {
        "poisson-lshape" => lshape(),
        "poisson-annulus" => annulus(),
        "plate-hole" => plate_hole(),
        "poisson-ball5d" => ball5d(),
        _ => return None,
    })
}

/// `−Δu = f` in the interior (the Laplacian's jet).
fn poisson_interior(d: usize, f: ScalarFn) -> super::system::SystemTerm {
    term(
        "interior",
        Region::Interior,
        JetKind::Full(Operator::laplacian(d)),
        Arc::new(LinearResidual {
            time: None,
            op_coef: 1.0,
            k: d,
            f,
        }),
    )
}

fn dirichlet(name: &str, pieces: Vec<usize>, u: &ScalarFn) -> super::system::SystemTerm {
    term(
        name,
        Region::Pieces(pieces),
        JetKind::Value,
        Arc::new(DataResidual { g: u.clone() }),
    )
}

/// `∂u/∂n = ∂u*/∂n` on `pieces` of `shape` (the solution's gradient `grad`).
fn neumann(
    name: &str,
    shape: &ShapeRef,
    pieces: Vec<usize>,
    grad: impl Fn(&[f64], &mut [f64]) + Send + Sync + 'static,
) -> super::system::SystemTerm {
    let d = shape.dim();
    let (sh, ps) = (shape.clone(), pieces.clone());
    let g = sf(move |x| {
        let (mut gr, mut n) = (vec![0.0; d], vec![0.0; d]);
        grad(x, &mut gr);
        let p = crate::geometry::nearest_piece(sh.as_ref(), &ps, x);
        sh.normal(p, x, &mut n);
        gr.iter().zip(&n).map(|(a, b)| a * b).sum()
    });
    term(
        name,
        Region::Pieces(pieces.clone()),
        gradient_jet(d),
        Arc::new(NormalCondition {
            field: 0,
            alpha: 0.0,
            beta: 1.0,
            g,
            idx: JetIdx { m: 1, k: d },
            shape: shape.clone(),
            pieces,
        }),
    )
}

fn all_pieces(shape: &ShapeRef) -> Vec<usize> {
    (0..shape.pieces().len()).collect()
}

/// `Ω = (−1, 1)² ∖ [0, 1] × [−1, 0]`, `−Δu = 0`, `u = r^{2/3} sin(2θ/3)` with `θ ∈ [0,
/// 3π/2]` from the positive x axis: zero on the two edges at the corner, singular
/// gradient there.
fn lshape() -> Result<BoxSystem> {
    let shape: ShapeRef = Arc::new(Polygon::new(vec![
        [-1.0, -1.0],
        [0.0, -1.0],
        [0.0, 0.0],
        [1.0, 0.0],
        [1.0, 1.0],
        [-1.0, 1.0],
    ])?);
    let u = sf(|x| {
        let r = x[0].hypot(x[1]);
        let mut t = x[1].atan2(x[0]);
        if t < 0.0 {
            t += 2.0 * PI;
        }
        r.powf(2.0 / 3.0) * (2.0 * t / 3.0).sin()
    });
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    BoxSystem::on_shape(
        "poisson-lshape",
        "−Δu = 0 on the L-shape (−1,1)² ∖ [0,1]×[−1,0], u = r^(2/3) sin(2θ/3) (singular at the re-entrant corner); Dirichlet on every edge",
        shape.clone(),
        &["u"],
        vec![
            poisson_interior(2, sf(|_| 0.0)),
            dirichlet("edges", all_pieces(&shape), &u),
        ],
        Some(exact),
        setup(&[2, 32, 32, 1], &[2000, 400], 20000, 600.0),
    )
}

/// Annulus `0.5 ≤ r ≤ 1`, `u = eˣ sin(πy) + x²`: Dirichlet on the outer circle, Neumann
/// on the inner one (normal towards the centre).
fn annulus() -> Result<BoxSystem> {
    let shape: ShapeRef = Arc::new(Shell::new(vec![0.0, 0.0], 0.5, 1.0)?);
    let u = sf(|x| x[0].exp() * (PI * x[1]).sin() + x[0] * x[0]);
    let f = sf(|x| -(x[0].exp() * (PI * x[1]).sin() * (1.0 - PI * PI) + 2.0));
    let grad = |x: &[f64], g: &mut [f64]| {
        g[0] = x[0].exp() * (PI * x[1]).sin() + 2.0 * x[0];
        g[1] = PI * x[0].exp() * (PI * x[1]).cos();
    };
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    let (inner, outer) = (
        piece_index(shape.as_ref(), "inner")?,
        piece_index(shape.as_ref(), "outer")?,
    );
    BoxSystem::on_shape(
        "poisson-annulus",
        "−Δu = f on the annulus 0.5 ≤ r ≤ 1, u = eˣ sin(πy) + x²; Dirichlet on r = 1, Neumann on r = 0.5",
        shape.clone(),
        &["u"],
        vec![
            poisson_interior(2, f),
            dirichlet("outer", vec![outer], &u),
            neumann("inner", &shape, vec![inner], grad),
        ],
        Some(exact),
        setup(&[2, 32, 32, 1], &[2000, 300, 150], 20000, 600.0),
    )
}

/// The unit square minus the disk of radius 0.2 at its centre, `u = cos(πx) sin(πy) +
/// xy`: Dirichlet on the square's edges, Neumann on the hole.
fn plate_hole() -> Result<BoxSystem> {
    let plate: ShapeRef = Arc::new(BoxShape::new(vec![0.0, 0.0], vec![1.0, 1.0])?);
    let hole: ShapeRef = Arc::new(Prefixed::new(
        Arc::new(Ball::new(vec![0.5, 0.5], 0.2)?),
        "hole",
    )?);
    let shape: ShapeRef = Arc::new(Difference::new(plate, hole)?);
    let u = sf(|x| (PI * x[0]).cos() * (PI * x[1]).sin() + x[0] * x[1]);
    let f = sf(|x| 2.0 * PI * PI * (PI * x[0]).cos() * (PI * x[1]).sin());
    let grad = |x: &[f64], g: &mut [f64]| {
        g[0] = -PI * (PI * x[0]).sin() * (PI * x[1]).sin() + x[1];
        g[1] = PI * (PI * x[0]).cos() * (PI * x[1]).cos() + x[0];
    };
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    let h = piece_index(shape.as_ref(), "hole")?;
    let edges: Vec<usize> = (0..shape.pieces().len()).filter(|&p| p != h).collect();
    BoxSystem::on_shape(
        "plate-hole",
        "−Δu = f on [0,1]² minus the disk |x − (0.5, 0.5)| ≤ 0.2, u = cos(πx) sin(πy) + xy; Dirichlet on the square's edges, Neumann on the hole",
        shape.clone(),
        &["u"],
        vec![
            poisson_interior(2, f),
            dirichlet("edges", edges, &u),
            neumann("hole", &shape, vec![h], grad),
        ],
        Some(exact),
        setup(&[2, 32, 32, 1], &[2000, 400, 100], 20000, 600.0),
    )
}

/// The unit ball in 5 dimensions, `u = Σ_i sin(π x_i / 2) + |x|²/10`, Dirichlet on the
/// sphere.
fn ball5d() -> Result<BoxSystem> {
    let d = 5;
    let shape: ShapeRef = Arc::new(Ball::new(vec![0.0; d], 1.0)?);
    let u = sf(|x| {
        x.iter().map(|v| (PI * v / 2.0).sin()).sum::<f64>()
            + x.iter().map(|v| v * v).sum::<f64>() / 10.0
    });
    let f = sf(move |x| {
        x.iter()
            .map(|v| PI * PI / 4.0 * (PI * v / 2.0).sin())
            .sum::<f64>()
            - 2.0 * d as f64 / 10.0
    });
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    BoxSystem::on_shape(
        "poisson-ball5d",
        "−Δu = f in the unit ball of R⁵, u = Σ sin(π x_i/2) + |x|²/10; Dirichlet on the sphere",
        shape.clone(),
        &["u"],
        vec![
            poisson_interior(d, f),
            dirichlet("sphere", all_pieces(&shape), &u),
        ],
        Some(exact),
        setup(&[5, 64, 64, 1], &[3000, 500], 20000, 600.0),
    )
}

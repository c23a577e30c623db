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
use super::hard::{transfinite, HardBc, HardField};
use super::problems::{DataResidual, LinearResidual, ScalarFn};
use super::system::{gradient_jet, BoxSystem, JetIdx, NormalCondition, Region};
use crate::error::Result;
use crate::geometry::{
    piece_index, pieces_phi, Ball, BoxShape, Difference, Dual2, DualFn, Phi, Polygon, Prefixed,
    ShapeRef, Shell,
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

/// The same problems with exact Dirichlet conditions (`u = g + φN`, [`super::hard`]):
/// the Dirichlet terms are dropped, the Neumann terms stay soft.
pub const HARD_NAMES: &[&str] = &[
    "poisson-lshape-hard",
    "poisson-annulus-hard",
    "plate-hole-hard",
    "poisson-ball5d-hard",
];

/// A built-in problem on a shape by name, or None if `name` is not one.
pub fn build(name: &str) -> Option<Result<BoxSystem>> {
    Some(match name {
        "poisson-lshape" => lshape(),
        "poisson-annulus" => annulus(),
        "plate-hole" => plate_hole(),
        "poisson-ball5d" => ball5d(),
        "poisson-lshape-hard" => lshape().and_then(lshape_hard),
        "poisson-annulus-hard" => annulus().and_then(annulus_hard),
        "plate-hole-hard" => plate_hole().and_then(plate_hole_hard),
        "poisson-ball5d-hard" => ball5d().and_then(ball5d_hard),
        _ => return None,
    })
}

fn dfn(f: impl Fn(&[Dual2]) -> Dual2 + Send + Sync + 'static) -> DualFn {
    Arc::new(f)
}

/// One scalar field with φ of `pieces` and data `g`.
fn one_field(shape: &ShapeRef, pieces: &[usize], g: DualFn, note: &str) -> Result<HardBc> {
    Ok(HardBc {
        m: 1,
        fields: vec![HardField {
            field: 0,
            phi: Arc::new(pieces_phi(shape.as_ref(), pieces)?),
            g: Some(g),
        }],
        note: note.into(),
    })
}

/// `r^{2/3} sin(2θ/3)` at `p` with `θ` from `atan2` in `(−π, π]`, shifted by 2π below
/// the x axis when `wrap` (the L-shape's branch, cut along the positive x axis).
fn lshape_u(p: &[Dual2], wrap: bool) -> Dual2 {
    let r = (p[0].sq() + p[1].sq()).sqrt();
    let mut t = p[1].atan2(p[0]);
    if wrap && t.v < 0.0 {
        t = t + 2.0 * PI;
    }
    r.powf(2.0 / 3.0) * (t * (2.0 / 3.0)).sin()
}

/// Exact conditions on every edge: φ the R-equivalence of the six trimmed-segment
/// functions; `g` the transfinite interpolation of the edge data, each edge's data
/// `r^{2/3} sin(2θ/3)` continued along its carrier line with the branch of θ that is
/// smooth there (zero on the two edges at the re-entrant corner).
fn lshape_hard(sys: BoxSystem) -> Result<BoxSystem> {
    let shape = sys.domain().expect("a shape").clone();
    let n = shape.pieces().len();
    let phis: Vec<Phi> = (0..n)
        .map(|p| shape.piece_phi(p).expect("polygon edges have φ"))
        .collect();
    // edges 1 (x = 0, y ≤ 0) and 2 (y = 0, x ≥ 0) carry zero data; edge 3 (x = 1) needs
    // θ ∈ (−π, π] to be smooth across y = 0, the others θ ∈ [0, 2π)
    let data: Vec<Option<DualFn>> = (0..n)
        .map(|p| match p {
            1 | 2 => None,
            3 => Some(dfn(|q| lshape_u(q, false))),
            _ => Some(dfn(|q| lshape_u(q, true))),
        })
        .collect();
    let g = transfinite(phis, data)?;
    let all: Vec<usize> = (0..n).collect();
    let hard = one_field(
        &shape,
        &all,
        g,
        "u = g + φN on every edge (φ: R-equivalence of trimmed segments; g: transfinite interpolation of the edge data)",
    )?;
    sys.with_hard_bc(hard, &["edges"])
}

/// Exact conditions on the outer circle: φ = (1 − r²)/2, `g(x) = u*(x/|x|)` (the data
/// continued radially; the centre is outside the annulus). The inner Neumann term stays.
fn annulus_hard(sys: BoxSystem) -> Result<BoxSystem> {
    let shape = sys.domain().expect("a shape").clone();
    let outer = piece_index(shape.as_ref(), "outer")?;
    let g = dfn(|x| {
        let r = (x[0].sq() + x[1].sq()).sqrt();
        let (p0, p1) = (x[0] / r, x[1] / r);
        p0.exp() * (p1 * PI).sin() + p0.sq()
    });
    let hard = one_field(
        &shape,
        &[outer],
        g,
        "u = g + φN on r = 1 (φ = (1 − r²)/2; g = u*(x/|x|))",
    )?;
    sys.with_hard_bc(hard, &["outer"])
}

/// Exact conditions on the square's edges: φ the R-equivalence of the four face
/// distances, `g` the transfinite interpolation of `u*` projected onto each face's
/// line. The hole's Neumann term stays.
fn plate_hole_hard(sys: BoxSystem) -> Result<BoxSystem> {
    let shape = sys.domain().expect("a shape").clone();
    let h = piece_index(shape.as_ref(), "hole")?;
    let edges: Vec<usize> = (0..shape.pieces().len()).filter(|&p| p != h).collect();
    let phis: Vec<Phi> = edges
        .iter()
        .map(|&p| shape.piece_phi(p).expect("box faces have φ"))
        .collect();
    let u = dfn(|x| (x[0] * PI).cos() * (x[1] * PI).sin() + x[0] * x[1]);
    let g = transfinite(phis, vec![Some(u); edges.len()])?;
    let hard = one_field(
        &shape,
        &edges,
        g,
        "u = g + φN on the square's edges (φ: R-equivalence of face distances; g: transfinite interpolation of the face data)",
    )?;
    sys.with_hard_bc(hard, &["edges"])
}

/// Exact conditions on the sphere: φ = (1 − |x|²)/2 and `g = |x|²·(Σ sin(π x_i/2) +
/// 1/10)`, the data's expression on the sphere (where `|x|² = 1`) faded towards the
/// centre; then `u* − g = φ·2Σ sin(π x_i/2)`, so the network has a non-trivial `N`.
fn ball5d_hard(sys: BoxSystem) -> Result<BoxSystem> {
    let shape = sys.domain().expect("a shape").clone();
    let g = dfn(|x| {
        let mut s = Dual2::c(0.1);
        let mut r2 = Dual2::c(0.0);
        for xi in x {
            s = s + (*xi * (PI / 2.0)).sin();
            r2 = r2 + xi.sq();
        }
        r2 * s
    });
    let hard = one_field(
        &shape,
        &[0],
        g,
        "u = g + φN on the sphere (φ = (1 − |x|²)/2; g = |x|²(Σ sin(πx_i/2) + 1/10))",
    )?;
    sys.with_hard_bc(hard, &["sphere"])
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

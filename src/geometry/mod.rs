//! Shapes: the regions problems live on, in any dimension (issue 19). Each shape samples
//! its interior uniformly in volume and each named piece of its boundary uniformly in
//! surface measure, with the outward unit normal at every boundary point; it knows its
//! volume and the measure of each piece (so a loss term is a consistent mean over its
//! region), a signed distance (negative inside) and a membership test.
//!
//! Primitives (`primitives.rs`, `polygon.rs`): box, ball, spherical shell (annulus),
//! axis-aligned ellipsoid, simplex, simple polygon (2d, non-convex allowed). Set
//! operations (`ops.rs`): union, intersection, difference, and the product with a time
//! interval (time first, as everywhere in this crate). Measures are closed forms for the
//! primitives (the ellipsoid's surface by a fixed-seed Monte Carlo estimate) and fixed-seed
//! Monte Carlo estimates of the primitives' parts for set operations.
//!
//! Checked by `tests/geometry.rs`: Monte Carlo volumes and surface measures against
//! closed forms, normals against finite differences of the signed distance, samples in
//! the shape and on its boundary, uniformity, and every bad input as a clear error.

pub mod distance;
mod ops;
mod polygon;
mod primitives;
pub mod qmc;

pub use distance::{pieces_phi, Dual2, DualFn, Phi};
pub use ops::{Difference, Intersection, Prefixed, SetOp, TimeProduct, Union};
pub use polygon::Polygon;
pub use primitives::{Ball, BoxShape, Ellipsoid, Shell, Simplex};
pub use qmc::PointKind;

use crate::error::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Distance within which a point counts as on the boundary (relative to the shape's size
/// for the membership of set operations).
pub const ON_BOUNDARY: f64 = 1e-9;

/// A region of `R^d` with a piecewise smooth boundary.
pub trait Shape: Send + Sync + std::fmt::Debug {
    fn dim(&self) -> usize;
    /// An axis-aligned box that contains the shape.
    fn bounds(&self) -> (Vec<f64>, Vec<f64>);
    /// Signed distance to the boundary, negative inside: exact for the box, ball, shell
    /// and polygon; for the other shapes a function with the same sign and zero set.
    fn sdf(&self, x: &[f64]) -> f64;
    /// The closed shape's membership.
    fn contains(&self, x: &[f64]) -> bool {
        self.sdf(x) <= ON_BOUNDARY
    }
    fn volume(&self) -> f64;
    /// Names of the boundary pieces (e.g. `x0=min`, `outer`, `edge2`).
    fn pieces(&self) -> Vec<String>;
    /// Surface measure of piece `p`.
    fn piece_measure(&self, p: usize) -> f64;
    /// Distance from `x` to piece `p` (0 on it; used to tell which piece a boundary
    /// point lies on).
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64;
    /// The outward unit normal of piece `p` at its point `x`.
    fn normal(&self, p: usize, x: &[f64], out: &mut [f64]);
    /// A distance function of piece `p` for exact boundary conditions: zero on the
    /// piece, positive inside the shape ([`distance`]); None if the shape has none.
    fn piece_phi(&self, _p: usize) -> Option<Phi> {
        None
    }
    /// `n` points uniform in the shape (`out`: `n × dim`).
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()>;
    /// `n` points uniform on piece `p` and their outward unit normals (`n × dim` each).
    fn sample_piece(
        &self,
        p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()>;
}

/// A shared shape.
pub type ShapeRef = Arc<dyn Shape>;

/// The index of the piece named `name`, or an error listing the pieces.
pub fn piece_index(shape: &dyn Shape, name: &str) -> Result<usize> {
    let names = shape.pieces();
    names.iter().position(|n| n == name).ok_or_else(|| {
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        Error::unknown("boundary piece", name, &list)
    })
}

/// The piece among `ps` that `x` lies on (the nearest one).
pub fn nearest_piece(shape: &dyn Shape, ps: &[usize], x: &[f64]) -> usize {
    let mut best = (f64::INFINITY, ps[0]);
    for &p in ps {
        let dist = shape.piece_distance(p, x);
        if dist < best.0 {
            best = (dist, p);
        }
    }
    best.1
}

/// Boundary measure of the pieces `ps` together.
pub fn measure_of(shape: &dyn Shape, ps: &[usize]) -> f64 {
    ps.iter().map(|&p| shape.piece_measure(p)).sum()
}

/// `n` points uniform on the union of pieces `ps` (each piece by its measure) and their
/// outward normals; a piece of measure zero is never drawn, and a union of measure zero
/// is an error naming the pieces.
pub fn sample_pieces(
    shape: &dyn Shape,
    ps: &[usize],
    rng: &mut ChaCha8Rng,
    x: &mut [f64],
    normal: &mut [f64],
) -> Result<()> {
    let d = shape.dim();
    let n = x.len() / d;
    let w: Vec<f64> = ps.iter().map(|&p| shape.piece_measure(p)).collect();
    let total: f64 = w.iter().sum();
    if total.is_nan() || total <= 0.0 {
        let names = shape.pieces();
        let list: Vec<&str> = ps.iter().map(|&p| names[p].as_str()).collect();
        return Err(Error::invalid(
            "boundary pieces",
            list.join(", "),
            "pieces of positive measure (these lie inside the other operand of a set \
             operation, or are empty)",
        ));
    }
    // how many points each piece gets: a multinomial draw, then one batch per piece
    let mut count = vec![0usize; ps.len()];
    for _ in 0..n {
        let mut u = rng.random_range(0.0..total);
        let mut k = ps.len() - 1;
        for (i, wi) in w.iter().enumerate() {
            if u < *wi {
                k = i;
                break;
            }
            u -= wi;
        }
        count[k] += 1;
    }
    let mut at = 0;
    for (i, &c) in count.iter().enumerate() {
        if c == 0 {
            continue;
        }
        shape.sample_piece(
            ps[i],
            rng,
            &mut x[at * d..(at + c) * d],
            &mut normal[at * d..(at + c) * d],
        )?;
        at += c;
    }
    // interleave the pieces' points (a chunked pass must not see them sorted by piece)
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        if i != j {
            for k in 0..d {
                x.swap(i * d + k, j * d + k);
                normal.swap(i * d + k, j * d + k);
            }
        }
    }
    Ok(())
}

/// A uniform point on the unit sphere `S^{d-1}`.
pub(crate) fn unit_vector(rng: &mut ChaCha8Rng, out: &mut [f64]) {
    loop {
        for o in out.iter_mut() {
            *o = crate::rng::gaussian(rng);
        }
        let r = out.iter().map(|v| v * v).sum::<f64>().sqrt();
        if r > 1e-300 {
            out.iter_mut().for_each(|v| *v /= r);
            return;
        }
    }
}

pub(crate) fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Volume of the unit ball in `d` dimensions, `π^{d/2} / Γ(d/2 + 1)` (by the recursion
/// `V_d = 2π/d · V_{d−2}`).
pub fn unit_ball_volume(d: usize) -> f64 {
    match d {
        0 => 1.0,
        1 => 2.0,
        _ => std::f64::consts::TAU / d as f64 * unit_ball_volume(d - 2),
    }
}

/// Checks shared by the constructors: finite values, a dimension ≥ 1.
pub(crate) fn check_point(what: &str, p: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(Error::invalid(what, "[]", "at least one coordinate"));
    }
    if let Some(v) = p.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            what,
            format!("{p:?}"),
            format!("finite coordinates (not {v})"),
        ));
    }
    Ok(())
}

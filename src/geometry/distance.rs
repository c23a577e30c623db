//! Distance functions for exact (hard) boundary conditions (issue 19): a smooth `φ ≥ 0`
//! that vanishes exactly on chosen boundary pieces of a shape and is positive inside, so
//! that `u = g + φ·N` meets Dirichlet data `g` on those pieces whatever the network `N`.
//!
//! - Primitives ([`Phi`]): a plane `n·x − b` (box faces, simplex facets, the initial time
//!   `t − t_0`), a sphere by its normalised quadratic `±(r² − |x − c|²)/(2r)` (smooth also
//!   at the centre; its gradient has unit length on the sphere), a polygon edge by the
//!   trimmed-segment function of Sukumar & Srivastava (zero on the segment only, smooth
//!   away from its end points).
//! - Several pieces together by the R-equivalence `1/φ = Σ_i 1/φ_i`, evaluated as
//!   `Π φ_i / Σ_k Π_{j≠k} φ_j` (finite on the pieces); set operations orient an operand's
//!   piece so that it is positive inside the result ([`super::Shape::piece_phi`]).
//! - A user expression ([`Phi::Custom`]): any function of [`Dual2`] numbers.
//!
//! Derivatives come from [`Dual2`], a second-order forward-mode number along one line
//! `x + s v`: value, `∂_v φ` and `∂²_v φ` in one evaluation, exact to rounding. The
//! output jet of a sample needs these along each of its directions `v_k`.
//!
//! Checked by `tests/hard_bc.rs`: φ vanishes on its pieces' sampled points and is
//! positive on interior points of every supported shape, the [`Dual2`] derivatives match
//! central finite differences, and a piece without a distance function is a clear error.

use super::Shape;
use crate::error::{Error, Result};
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::sync::Arc;

/// A number with its first and second derivative along a line: `f(x + s v)` at `s = 0`
/// as `(f, f', f'')`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dual2 {
    pub v: f64,
    pub d: f64,
    pub dd: f64,
}

impl Dual2 {
    /// A constant (zero derivatives).
    pub const fn c(v: f64) -> Self {
        Dual2 { v, d: 0.0, dd: 0.0 }
    }
    /// The coordinate `x_i + s v_i`: value `x_i`, slope `v_i`.
    pub const fn var(x: f64, v: f64) -> Self {
        Dual2 {
            v: x,
            d: v,
            dd: 0.0,
        }
    }
    /// `F(self)` given `F`, `F'` and `F''` at the value (the chain rule to second order).
    #[inline]
    pub fn chain(self, f: f64, f1: f64, f2: f64) -> Self {
        Dual2 {
            v: f,
            d: f1 * self.d,
            dd: f2 * self.d * self.d + f1 * self.dd,
        }
    }
    pub fn sqrt(self) -> Self {
        let s = self.v.sqrt();
        self.chain(s, 0.5 / s, -0.25 / (s * self.v))
    }
    pub fn sin(self) -> Self {
        let (s, c) = self.v.sin_cos();
        self.chain(s, c, -s)
    }
    pub fn cos(self) -> Self {
        let (s, c) = self.v.sin_cos();
        self.chain(c, -s, -c)
    }
    pub fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e, e)
    }
    pub fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v, -1.0 / (self.v * self.v))
    }
    /// `self^p` for a positive base (any real `p`).
    pub fn powf(self, p: f64) -> Self {
        let f = self.v.powf(p);
        self.chain(
            f,
            p * self.v.powf(p - 1.0),
            p * (p - 1.0) * self.v.powf(p - 2.0),
        )
    }
    pub fn sq(self) -> Self {
        self * self
    }
    pub fn recip(self) -> Self {
        let r = 1.0 / self.v;
        self.chain(r, -r * r, 2.0 * r * r * r)
    }
    /// `atan2(self, x)`: the angle of `(x, self)`, in `(−π, π]`.
    pub fn atan2(self, x: Dual2) -> Self {
        // θ = atan(y/x) up to a constant: θ' = (x y' − y x')/(x² + y²)
        let y = self;
        let r2 = x * x + y * y;
        let t1 = (x.v * y.d - y.v * x.d) / r2.v;
        // θ'' = (x y'' − y x'')/r² − θ'·(r²)'/r²
        let t2 = (x.v * y.dd - y.v * x.dd) / r2.v - t1 * r2.d / r2.v;
        Dual2 {
            v: y.v.atan2(x.v),
            d: t1,
            dd: t2,
        }
    }
}

impl Add for Dual2 {
    type Output = Dual2;
    #[inline]
    fn add(self, o: Dual2) -> Dual2 {
        Dual2 {
            v: self.v + o.v,
            d: self.d + o.d,
            dd: self.dd + o.dd,
        }
    }
}
impl Sub for Dual2 {
    type Output = Dual2;
    #[inline]
    fn sub(self, o: Dual2) -> Dual2 {
        Dual2 {
            v: self.v - o.v,
            d: self.d - o.d,
            dd: self.dd - o.dd,
        }
    }
}
impl Mul for Dual2 {
    type Output = Dual2;
    #[inline]
    fn mul(self, o: Dual2) -> Dual2 {
        Dual2 {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
            dd: self.dd * o.v + 2.0 * self.d * o.d + self.v * o.dd,
        }
    }
}
impl Div for Dual2 {
    type Output = Dual2;
    #[inline]
    fn div(self, o: Dual2) -> Dual2 {
        // q = a/b: q' = (a' − q b')/b, q'' = (a'' − 2 q' b' − q b'')/b
        let v = self.v / o.v;
        let d = (self.d - v * o.d) / o.v;
        let dd = (self.dd - 2.0 * d * o.d - v * o.dd) / o.v;
        Dual2 { v, d, dd }
    }
}
impl Neg for Dual2 {
    type Output = Dual2;
    #[inline]
    fn neg(self) -> Dual2 {
        Dual2 {
            v: -self.v,
            d: -self.d,
            dd: -self.dd,
        }
    }
}
impl Add<f64> for Dual2 {
    type Output = Dual2;
    #[inline]
    fn add(self, o: f64) -> Dual2 {
        Dual2 {
            v: self.v + o,
            ..self
        }
    }
}
impl Sub<f64> for Dual2 {
    type Output = Dual2;
    #[inline]
    fn sub(self, o: f64) -> Dual2 {
        Dual2 {
            v: self.v - o,
            ..self
        }
    }
}
impl Mul<f64> for Dual2 {
    type Output = Dual2;
    #[inline]
    fn mul(self, o: f64) -> Dual2 {
        Dual2 {
            v: self.v * o,
            d: self.d * o,
            dd: self.dd * o,
        }
    }
}
impl Div<f64> for Dual2 {
    type Output = Dual2;
    #[inline]
    fn div(self, o: f64) -> Dual2 {
        Dual2 {
            v: self.v / o,
            d: self.d / o,
            dd: self.dd / o,
        }
    }
}
impl Add<Dual2> for f64 {
    type Output = Dual2;
    #[inline]
    fn add(self, o: Dual2) -> Dual2 {
        o + self
    }
}
impl Sub<Dual2> for f64 {
    type Output = Dual2;
    #[inline]
    fn sub(self, o: Dual2) -> Dual2 {
        -o + self
    }
}
impl Mul<Dual2> for f64 {
    type Output = Dual2;
    #[inline]
    fn mul(self, o: Dual2) -> Dual2 {
        o * self
    }
}

/// A scalar function of a point in [`Dual2`] numbers (boundary data, a user's φ).
pub type DualFn = Arc<dyn Fn(&[Dual2]) -> Dual2 + Send + Sync>;

/// Most points' coordinates a [`Phi`] or data function is evaluated at without a heap
/// allocation (larger dimensions allocate).
pub const STACK_DIM: usize = 32;

/// Most pieces an R-equivalence node combines directly; more are grouped into a tree
/// (the equivalence is associative: `1/φ = Σ 1/φ_i` over groups of groups).
const GROUP: usize = 16;

/// A distance-like function of boundary pieces: zero on them, positive inside the shape.
#[derive(Clone)]
pub enum Phi {
    /// `n·x − b` (positive on the side `n` points to).
    Plane { n: Vec<f64>, b: f64 },
    /// `(r² − |x − c|²)/(2r)`, negated when `inside` is false (positive outside).
    Sphere { c: Vec<f64>, r: f64, inside: bool },
    /// The trimmed distance to the segment from `a` to `b` (2-d), positive off it.
    Segment { a: [f64; 2], b: [f64; 2] },
    /// `inner` applied to the coordinates from `offset` on (a shape's space inside a
    /// time product).
    Shift { offset: usize, inner: Box<Phi> },
    /// The R-equivalence of several: zero where any of them is zero (at most
    /// [`GROUP`] entries; [`Phi::all`] builds the tree).
    All(Vec<Phi>),
    /// A user expression.
    Custom(DualFn),
}

impl std::fmt::Debug for Phi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phi::Plane { n, b } => write!(f, "Plane({n:?}, {b})"),
            Phi::Sphere { c, r, inside } => write!(f, "Sphere({c:?}, {r}, inside={inside})"),
            Phi::Segment { a, b } => write!(f, "Segment({a:?}, {b:?})"),
            Phi::Shift { offset, inner } => write!(f, "Shift({offset}, {inner:?})"),
            Phi::All(v) => f.debug_list().entries(v).finish(),
            Phi::Custom(_) => write!(f, "Custom"),
        }
    }
}

impl Phi {
    /// The R-equivalence of `parts` (one part is itself), grouped so that no node has
    /// more than [`GROUP`] entries.
    pub fn all(mut parts: Vec<Phi>) -> Phi {
        while parts.len() > GROUP {
            parts = parts
                .chunks(GROUP)
                .map(|c| {
                    if c.len() == 1 {
                        c[0].clone()
                    } else {
                        Phi::All(c.to_vec())
                    }
                })
                .collect();
        }
        if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Phi::All(parts)
        }
    }

    /// The value at `x` with its first and second derivative along the line that `x`'s
    /// slopes describe.
    pub fn eval(&self, x: &[Dual2]) -> Dual2 {
        match self {
            Phi::Plane { n, b } => {
                let mut s = Dual2::c(-b);
                for (xi, ni) in x.iter().zip(n) {
                    s = s + *xi * *ni;
                }
                s
            }
            Phi::Sphere { c, r, inside } => {
                let mut s = Dual2::c(r * r);
                for (xi, ci) in x.iter().zip(c) {
                    s = s - (*xi - *ci).sq();
                }
                let v = s / (2.0 * r);
                if *inside {
                    v
                } else {
                    -v
                }
            }
            Phi::Segment { a, b } => segment(x, *a, *b),
            Phi::Shift { offset, inner } => inner.eval(&x[*offset..]),
            Phi::All(parts) => {
                // Π φ_i / Σ_k Π_{j≠k} φ_j, finite where one φ_i is zero
                let mut v = [Dual2::c(0.0); GROUP];
                for (vi, p) in v.iter_mut().zip(parts) {
                    *vi = p.eval(x);
                }
                let v = &v[..parts.len()];
                let mut num = Dual2::c(1.0);
                let mut den = Dual2::c(0.0);
                for (k, vk) in v.iter().enumerate() {
                    num = num * *vk;
                    let mut p = Dual2::c(1.0);
                    for (j, vj) in v.iter().enumerate() {
                        if j != k {
                            p = p * *vj;
                        }
                    }
                    den = den + p;
                }
                num / den
            }
            Phi::Custom(f) => f(x),
        }
    }

    /// The plain value at `x`.
    pub fn value(&self, x: &[f64]) -> f64 {
        with_line(x, None, |xs| self.eval(xs)).v
    }
}

/// Sukumar & Srivastava's trimmed segment function: with `f` the signed distance to the
/// carrier line and `t = ((L/2)² − |x − x_c|²)/L` (positive inside the circle on the
/// segment), `φ = sqrt(f² + ((sqrt(t² + f⁴) − t)/2)²)`: zero exactly on the segment,
/// `≈ |f|` near its middle.
fn segment(x: &[Dual2], a: [f64; 2], b: [f64; 2]) -> Dual2 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let l = dx.hypot(dy);
    let f = ((x[0] - a[0]) * dy - (x[1] - a[1]) * dx) / l;
    let (cx, cy) = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0);
    let t = (Dual2::c(l * l / 4.0) - (x[0] - cx).sq() - (x[1] - cy).sq()) / l;
    let f2 = f.sq();
    let varphi = (t.sq() + f2.sq()).sqrt();
    (f2 + ((varphi - t) * 0.5).sq()).sqrt()
}

/// Run `f` on the [`Dual2`] coordinates of the line `x + s·dir` (a constant point when
/// `dir` is None), on the stack for up to [`STACK_DIM`] coordinates.
#[inline]
pub fn with_line<R>(x: &[f64], dir: Option<&[f64]>, f: impl FnOnce(&[Dual2]) -> R) -> R {
    let fill = |buf: &mut [Dual2]| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = Dual2::var(x[i], dir.map_or(0.0, |d| d[i]));
        }
    };
    if x.len() <= STACK_DIM {
        let mut buf = [Dual2::c(0.0); STACK_DIM];
        fill(&mut buf[..x.len()]);
        f(&buf[..x.len()])
    } else {
        let mut buf = vec![Dual2::c(0.0); x.len()];
        fill(&mut buf);
        f(&buf)
    }
}

/// φ of the pieces `pieces` of `shape` together: zero on each of them, positive inside.
/// A piece index out of range, or a piece without a distance function, is an error
/// naming it.
pub fn pieces_phi(shape: &dyn Shape, pieces: &[usize]) -> Result<Phi> {
    let names = shape.pieces();
    if pieces.is_empty() {
        return Err(Error::invalid(
            "exact-condition pieces",
            "[]",
            format!("at least one of the pieces {}", names.join(", ")),
        ));
    }
    let mut parts = vec![];
    for &p in pieces {
        if p >= names.len() {
            return Err(Error::invalid(
                "exact-condition piece",
                p,
                format!("an index of the pieces {}", names.join(", ")),
            ));
        }
        parts.push(shape.piece_phi(p).ok_or_else(|| {
            Error::invalid(
                "exact-condition piece",
                &names[p],
                "a piece with a distance function (box faces, balls, shells, polygon edges, \
                 simplex facets and the time ends of a time product have one, also inside \
                 differences and intersections; ellipsoids and the pieces of a union do not)",
            )
        })?);
    }
    Ok(Phi::all(parts))
}

/// φ of the pieces named `names` of `shape` (see [`pieces_phi`]).
pub fn named_pieces_phi(shape: &dyn Shape, names: &[&str]) -> Result<Phi> {
    let idx = names
        .iter()
        .map(|n| super::piece_index(shape, n))
        .collect::<Result<Vec<_>>>()?;
    pieces_phi(shape, &idx)
}

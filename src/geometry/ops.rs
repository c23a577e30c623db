//! Set operations on shapes (union, intersection, difference), renamed pieces, and the
//! product with a time interval.
//!
//! A set operation samples by rejection from its operands (uniform on the result) and
//! keeps, of each operand's boundary piece, the part that lies on the result's boundary:
//! for `A ∪ B` the part of A's boundary outside B (and B's outside A), for `A ∩ B` the
//! part inside the other operand, for `A ∖ B` A's boundary outside B and B's boundary
//! inside A, the latter with its normal reversed. Volumes and piece measures are
//! fixed-seed Monte Carlo estimates of these fractions times the operands' closed forms,
//! made once at construction; a result of zero volume is an error, a piece of measure
//! zero an error only when it is sampled. Rejection loops are capped: a region too small
//! to sample in reasonable time is an error saying so. Checked by `tests/geometry.rs`.

use super::{Phi, Shape, ShapeRef};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Monte Carlo samples per estimate (volume fraction, each piece's fraction): relative
/// standard error about `sqrt((1 − p)/(p·M))`, 0.3% at p = 1/2.
const MC_SAMPLES: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Union,
    Intersection,
    Difference,
}

/// A set operation on two shapes of the same dimension.
#[derive(Debug)]
pub struct SetOp {
    op: Op,
    a: ShapeRef,
    b: ShapeRef,
    volume: f64,
    /// Fraction of the volume sampled from `a` (union) or the acceptance rate.
    accept: f64,
    /// Measures of a's pieces, then b's.
    measures: Vec<f64>,
    /// Acceptance rate of each piece's sampler.
    piece_accept: Vec<f64>,
    /// Number of a's pieces (b's follow).
    na: usize,
}

/// `A ∪ B`.
pub struct Union;
/// `A ∩ B`.
pub struct Intersection;
/// `A ∖ B` (A minus B: a plate with a hole is `Difference::new(plate, hole)`).
pub struct Difference;

impl Union {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(a: ShapeRef, b: ShapeRef) -> Result<SetOp> {
        SetOp::new(Op::Union, a, b)
    }
}
impl Intersection {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(a: ShapeRef, b: ShapeRef) -> Result<SetOp> {
        SetOp::new(Op::Intersection, a, b)
    }
}
impl Difference {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(a: ShapeRef, b: ShapeRef) -> Result<SetOp> {
        SetOp::new(Op::Difference, a, b)
    }
}

impl SetOp {
    fn new(op: Op, a: ShapeRef, b: ShapeRef) -> Result<Self> {
        if a.dim() != b.dim() {
            return Err(Error::Shape(format!(
                "set operation on shapes of dimension {} and {}",
                a.dim(),
                b.dim()
            )));
        }
        let (pa, pb) = (a.pieces(), b.pieces());
        if let Some(n) = pa.iter().find(|n| pb.contains(n)) {
            return Err(Error::invalid(
                "boundary piece names",
                n,
                "names used by one operand only (rename one operand's pieces with \
                 `Prefixed`, e.g. \"hole\")",
            ));
        }
        let mut s = SetOp {
            op,
            a,
            b,
            volume: 0.0,
            accept: 1.0,
            measures: vec![],
            piece_accept: vec![],
            na: pa.len(),
        };
        let d = s.a.dim();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5e7_0b5);
        // fraction of A's volume inside B
        let mut x = vec![0.0; MC_SAMPLES * d];
        s.a.sample_interior(&mut rng, &mut x)?;
        let in_b = x.chunks(d).filter(|p| s.b.sdf(p) < 0.0).count() as f64 / MC_SAMPLES as f64;
        let (va, vb) = (s.a.volume(), s.b.volume());
        (s.volume, s.accept) = match op {
            Op::Union => (va + vb - in_b * va, va / (va + vb)),
            Op::Intersection => (in_b * va, in_b),
            Op::Difference => ((1.0 - in_b) * va, 1.0 - in_b),
        };
        if s.volume.is_nan() || s.volume <= 0.0 {
            return Err(Error::invalid(
                "shape",
                format!("{:?} of two shapes", op),
                "a region of positive volume (this one is empty: no sampled point of the \
                 first operand lies in it)",
            ));
        }
        let mut n = vec![0.0; MC_SAMPLES * d];
        for p in 0..pa.len() + pb.len() {
            let (owner, q) = s.operand(p);
            let owner = owner.clone();
            owner.sample_piece(q, &mut rng, &mut x, &mut n)?;
            let kept = x.chunks(d).filter(|pt| s.keeps(p, pt)).count() as f64 / MC_SAMPLES as f64;
            s.piece_accept.push(kept);
            s.measures.push(kept * owner.piece_measure(q));
        }
        Ok(s)
    }

    /// The operand that owns piece `p`, and the piece's index there.
    fn operand(&self, p: usize) -> (&ShapeRef, usize) {
        let na = self.na;
        if p < na {
            (&self.a, p)
        } else {
            (&self.b, p - na)
        }
    }

    /// Whether a point of piece `p` (on its operand's boundary) is on the result's.
    fn keeps(&self, p: usize, x: &[f64]) -> bool {
        let from_a = p < self.na;
        let other = if from_a { &self.b } else { &self.a };
        let s = other.sdf(x);
        match (self.op, from_a) {
            (Op::Union, _) => s >= 0.0,
            (Op::Intersection, _) => s <= 0.0,
            (Op::Difference, true) => s >= 0.0,
            (Op::Difference, false) => s <= 0.0,
        }
    }

    /// Most attempts a rejection loop makes for `n` points at acceptance `rate`.
    fn cap(n: usize, rate: f64) -> usize {
        ((n as f64 / rate.max(1e-12)) * 20.0) as usize + 10_000
    }
}

fn too_slow(what: &str, rate: f64) -> Error {
    Error::invalid(
        what,
        format!("an acceptance rate of {rate:.2e}"),
        "a region that rejection sampling reaches (the region is too small a part of its \
         operand; sampling stopped instead of looping)",
    )
}

impl Shape for SetOp {
    fn dim(&self) -> usize {
        self.a.dim()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        let ((la, ha), (lb, hb)) = (self.a.bounds(), self.b.bounds());
        match self.op {
            Op::Union => (
                la.iter().zip(&lb).map(|(x, y)| x.min(*y)).collect(),
                ha.iter().zip(&hb).map(|(x, y)| x.max(*y)).collect(),
            ),
            Op::Intersection => (
                la.iter().zip(&lb).map(|(x, y)| x.max(*y)).collect(),
                ha.iter().zip(&hb).map(|(x, y)| x.min(*y)).collect(),
            ),
            Op::Difference => (la, ha),
        }
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        let (sa, sb) = (self.a.sdf(x), self.b.sdf(x));
        match self.op {
            Op::Union => sa.min(sb),
            Op::Intersection => sa.max(sb),
            Op::Difference => sa.max(-sb),
        }
    }
    fn volume(&self) -> f64 {
        self.volume
    }
    fn pieces(&self) -> Vec<String> {
        let mut p = self.a.pieces();
        p.extend(self.b.pieces());
        p
    }
    fn piece_measure(&self, p: usize) -> f64 {
        self.measures[p]
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        let (owner, q) = self.operand(p);
        owner.piece_distance(q, x)
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        let (owner, q) = self.operand(p);
        let phi = owner.piece_phi(q)?;
        match self.op {
            // an operand's φ is positive inside it, hence inside an intersection
            Op::Intersection => Some(phi),
            // A's pieces as they are; B's turned to be positive outside B
            Op::Difference if p < self.na => Some(phi),
            Op::Difference => flipped(phi),
            // A's φ vanishes on A's boundary inside B, which is inside the union
            Op::Union => None,
        }
    }
    fn normal(&self, p: usize, x: &[f64], out: &mut [f64]) {
        let (owner, q) = self.operand(p);
        owner.normal(q, x, out);
        if self.op == Op::Difference && p >= self.na {
            out.iter_mut().for_each(|v| *v = -*v);
        }
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        let n = out.len() / d;
        let mut pt = vec![0.0; d];
        let (mut got, mut tries) = (0, 0);
        let cap = Self::cap(
            n,
            if self.op == Op::Union {
                0.5
            } else {
                self.accept
            },
        );
        while got < n {
            tries += 1;
            if tries > cap {
                return Err(too_slow("interior of the shape", self.accept));
            }
            let ok = match self.op {
                Op::Union => {
                    // from A or B by volume; a point in both is kept half the time
                    let from_a = rng.random_range(0.0..1.0) < self.accept;
                    let (own, other) = if from_a {
                        (&self.a, &self.b)
                    } else {
                        (&self.b, &self.a)
                    };
                    own.sample_interior(rng, &mut pt)?;
                    other.sdf(&pt) >= 0.0 || rng.random_range(0.0..1.0) < 0.5
                }
                Op::Intersection => {
                    self.a.sample_interior(rng, &mut pt)?;
                    self.b.sdf(&pt) <= 0.0
                }
                Op::Difference => {
                    self.a.sample_interior(rng, &mut pt)?;
                    self.b.sdf(&pt) > 0.0
                }
            };
            if ok {
                out[got * d..(got + 1) * d].copy_from_slice(&pt);
                got += 1;
            }
        }
        Ok(())
    }
    fn sample_piece(
        &self,
        p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()> {
        let d = self.dim();
        let n = x.len() / d;
        let rate = self.piece_accept[p];
        if rate == 0.0 {
            return Err(Error::invalid(
                "boundary piece",
                &self.pieces()[p],
                "a piece of positive measure (this one lies inside the other operand)",
            ));
        }
        let (owner, q) = self.operand(p);
        let flip = self.op == Op::Difference && p >= self.na;
        // batches from the operand's piece, keeping the points on the result's boundary
        let batch = ((n as f64 / rate) * 1.2) as usize + 16;
        let (mut bx, mut bn) = (vec![0.0; batch * d], vec![0.0; batch * d]);
        let (mut got, mut tries) = (0, 0);
        let cap = Self::cap(n, rate);
        while got < n {
            owner.sample_piece(q, rng, &mut bx, &mut bn)?;
            tries += batch;
            for (pt, nr) in bx.chunks(d).zip(bn.chunks(d)) {
                if got < n && self.keeps(p, pt) {
                    x[got * d..(got + 1) * d].copy_from_slice(pt);
                    let o = &mut normal[got * d..(got + 1) * d];
                    o.copy_from_slice(nr);
                    if flip {
                        o.iter_mut().for_each(|v| *v = -*v);
                    }
                    got += 1;
                }
            }
            if got < n && tries > cap {
                return Err(too_slow(
                    &format!("boundary piece `{}`", self.pieces()[p]),
                    rate,
                ));
            }
        }
        Ok(())
    }
}

/// A shape whose pieces are renamed `{prefix}.{name}`, or `{prefix}` for a shape with one
/// piece (a hole's circle becomes `hole`).
#[derive(Debug)]
pub struct Prefixed {
    inner: ShapeRef,
    prefix: String,
}

impl Prefixed {
    pub fn new(inner: ShapeRef, prefix: &str) -> Result<Self> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if prefix.is_empty() || !prefix.chars().all(ok) {
            return Err(Error::invalid(
                "piece prefix",
                prefix,
                "letters, digits, `-` and `_`",
            ));
        }
        Ok(Prefixed {
            inner,
            prefix: prefix.into(),
        })
    }
}

impl Shape for Prefixed {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        self.inner.bounds()
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        self.inner.sdf(x)
    }
    fn volume(&self) -> f64 {
        self.inner.volume()
    }
    fn pieces(&self) -> Vec<String> {
        let p = self.inner.pieces();
        if p.len() == 1 {
            return vec![self.prefix.clone()];
        }
        p.iter().map(|n| format!("{}.{n}", self.prefix)).collect()
    }
    fn piece_measure(&self, p: usize) -> f64 {
        self.inner.piece_measure(p)
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        self.inner.piece_distance(p, x)
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        self.inner.piece_phi(p)
    }
    fn normal(&self, p: usize, x: &[f64], out: &mut [f64]) {
        self.inner.normal(p, x, out)
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        self.inner.sample_interior(rng, out)
    }
    fn sample_piece(
        &self,
        p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()> {
        self.inner.sample_piece(p, rng, x, normal)
    }
}

/// `[t0, t1] × shape`, time the first coordinate; pieces `initial` (t = t0), `final`
/// (t = t1), then the shape's pieces (× the interval).
#[derive(Debug)]
pub struct TimeProduct {
    inner: ShapeRef,
    t0: f64,
    t1: f64,
}

impl TimeProduct {
    pub fn new(inner: ShapeRef, t0: f64, t1: f64) -> Result<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 < t1) {
            return Err(Error::invalid(
                "time interval",
                format!("[{t0}, {t1}]"),
                "a finite interval with t0 < t1",
            ));
        }
        Ok(TimeProduct { inner, t0, t1 })
    }
}

impl Shape for TimeProduct {
    fn dim(&self) -> usize {
        self.inner.dim() + 1
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        let (mut lo, mut hi) = self.inner.bounds();
        lo.insert(0, self.t0);
        hi.insert(0, self.t1);
        (lo, hi)
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        self.inner
            .sdf(&x[1..])
            .max(self.t0 - x[0])
            .max(x[0] - self.t1)
    }
    fn volume(&self) -> f64 {
        (self.t1 - self.t0) * self.inner.volume()
    }
    fn pieces(&self) -> Vec<String> {
        let mut p = vec!["initial".to_string(), "final".to_string()];
        p.extend(self.inner.pieces());
        p
    }
    fn piece_measure(&self, p: usize) -> f64 {
        if p < 2 {
            self.inner.volume()
        } else {
            (self.t1 - self.t0) * self.inner.piece_measure(p - 2)
        }
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        match p {
            0 => (x[0] - self.t0).abs(),
            1 => (x[0] - self.t1).abs(),
            _ => self.inner.piece_distance(p - 2, &x[1..]),
        }
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        let d = self.dim();
        let mut n = vec![0.0; d];
        match p {
            // t − t0 (an exact initial value), t1 − t
            0 => {
                n[0] = 1.0;
                Some(Phi::Plane { n, b: self.t0 })
            }
            1 => {
                n[0] = -1.0;
                Some(Phi::Plane { n, b: -self.t1 })
            }
            _ => Some(Phi::Shift {
                offset: 1,
                inner: Box::new(self.inner.piece_phi(p - 2)?),
            }),
        }
    }
    fn normal(&self, p: usize, x: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        match p {
            0 => out[0] = -1.0,
            1 => out[0] = 1.0,
            _ => self.inner.normal(p - 2, &x[1..], &mut out[1..]),
        }
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        let n = out.len() / d;
        let mut space = vec![0.0; n * (d - 1)];
        self.inner.sample_interior(rng, &mut space)?;
        for (o, s) in out.chunks_mut(d).zip(space.chunks(d - 1)) {
            o[0] = rng.random_range(self.t0..self.t1);
            o[1..].copy_from_slice(s);
        }
        Ok(())
    }
    fn sample_piece(
        &self,
        p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()> {
        let d = self.dim();
        let n = x.len() / d;
        let (mut sx, mut sn) = (vec![0.0; n * (d - 1)], vec![0.0; n * (d - 1)]);
        if p < 2 {
            self.inner.sample_interior(rng, &mut sx)?;
        } else {
            self.inner.sample_piece(p - 2, rng, &mut sx, &mut sn)?;
        }
        for i in 0..n {
            let (o, m) = (&mut x[i * d..(i + 1) * d], &mut normal[i * d..(i + 1) * d]);
            o[1..].copy_from_slice(&sx[i * (d - 1)..(i + 1) * (d - 1)]);
            m[1..].copy_from_slice(&sn[i * (d - 1)..(i + 1) * (d - 1)]);
            (o[0], m[0]) = match p {
                0 => (self.t0, -1.0),
                1 => (self.t1, 1.0),
                _ => (rng.random_range(self.t0..self.t1), 0.0),
            };
        }
        Ok(())
    }
}

/// `phi` turned to be positive on the other side of its piece, where that is a sign
/// change (planes, spheres, shifted ones); the trimmed segment is positive on both sides
/// already. None for combinations and user expressions.
fn flipped(phi: Phi) -> Option<Phi> {
    Some(match phi {
        Phi::Plane { n, b } => Phi::Plane {
            n: n.iter().map(|v| -v).collect(),
            b: -b,
        },
        Phi::Sphere { c, r, inside } => Phi::Sphere {
            c,
            r,
            inside: !inside,
        },
        s @ Phi::Segment { .. } => s,
        Phi::Shift { offset, inner } => Phi::Shift {
            offset,
            inner: Box::new(flipped(*inner)?),
        },
        Phi::All(_) | Phi::Custom(_) => return None,
    })
}

//! The primitive shapes: box, ball, spherical shell, axis-aligned ellipsoid, simplex.
//! Interior and boundary samplers are exact transformations of uniform variates (no
//! rejection) except the ellipsoid's surface, which thins sphere points by the area
//! element. Checked by `tests/geometry.rs`.

// Coordinates index the point, the centre and the axes at once: index loops read best.
#![allow(clippy::needless_range_loop)]

use super::{check_point, norm, unit_ball_volume, unit_vector, Phi, Shape};
use crate::error::{Error, Result};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// ---- box --------------------------------------------------------------------------------

/// An axis-aligned box; pieces `x{i}=min`, `x{i}=max`.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxShape {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl BoxShape {
    pub fn new(lo: Vec<f64>, hi: Vec<f64>) -> Result<Self> {
        crate::pde::system::check_box(&lo, &hi)?;
        Ok(BoxShape { lo, hi })
    }
    fn face(&self, p: usize) -> (usize, bool) {
        (p / 2, p % 2 == 1)
    }
}

impl Shape for BoxShape {
    fn dim(&self) -> usize {
        self.lo.len()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        (self.lo.clone(), self.hi.clone())
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        // distance outside from the clamped excess; inside the largest (negative) margin
        let (mut out, mut inside) = (0.0f64, f64::NEG_INFINITY);
        for i in 0..x.len() {
            let e = (self.lo[i] - x[i]).max(x[i] - self.hi[i]);
            out += e.max(0.0).powi(2);
            inside = inside.max(e);
        }
        if out > 0.0 {
            out.sqrt()
        } else {
            inside
        }
    }
    fn volume(&self) -> f64 {
        self.lo.iter().zip(&self.hi).map(|(a, b)| b - a).product()
    }
    fn pieces(&self) -> Vec<String> {
        (0..2 * self.dim())
            .map(|p| {
                let (c, up) = self.face(p);
                format!("x{c}={}", if up { "max" } else { "min" })
            })
            .collect()
    }
    fn piece_measure(&self, p: usize) -> f64 {
        let (c, _) = self.face(p);
        (0..self.dim())
            .filter(|&i| i != c)
            .map(|i| self.hi[i] - self.lo[i])
            .product()
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        let (c, up) = self.face(p);
        (x[c] - if up { self.hi[c] } else { self.lo[c] }).abs()
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        let (c, up) = self.face(p);
        let mut n = vec![0.0; self.dim()];
        // x_c − lo_c on the lower face, hi_c − x_c on the upper one
        n[c] = if up { -1.0 } else { 1.0 };
        let b = if up { -self.hi[c] } else { self.lo[c] };
        Some(Phi::Plane { n, b })
    }
    fn normal(&self, p: usize, _x: &[f64], out: &mut [f64]) {
        let (c, up) = self.face(p);
        out.fill(0.0);
        out[c] = if up { 1.0 } else { -1.0 };
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        for p in out.chunks_mut(d) {
            for i in 0..d {
                p[i] = rng.random_range(self.lo[i]..self.hi[i]);
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
        let (c, up) = self.face(p);
        self.sample_interior(rng, x)?;
        for (q, n) in x.chunks_mut(d).zip(normal.chunks_mut(d)) {
            q[c] = if up { self.hi[c] } else { self.lo[c] };
            n.fill(0.0);
            n[c] = if up { 1.0 } else { -1.0 };
        }
        Ok(())
    }
}

// ---- ball and shell ------------------------------------------------------------------

fn check_radius(what: &str, r: f64) -> Result<f64> {
    crate::error::check::positive(what, r)
}

/// A ball `|x − c| ≤ r`; one piece, `sphere`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ball {
    c: Vec<f64>,
    r: f64,
}

impl Ball {
    pub fn new(center: Vec<f64>, radius: f64) -> Result<Self> {
        check_point("ball center", &center)?;
        check_radius("ball radius", radius)?;
        Ok(Ball {
            c: center,
            r: radius,
        })
    }
}

/// The box `c ± r` around a ball or shell.
fn cube_around(c: &[f64], r: f64) -> (Vec<f64>, Vec<f64>) {
    (
        c.iter().map(|v| v - r).collect(),
        c.iter().map(|v| v + r).collect(),
    )
}

/// `|x − c|`.
fn dist(c: &[f64], x: &[f64]) -> f64 {
    x.iter()
        .zip(c)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt()
}

/// `sign · (x − c)/|x − c|`.
fn radial_normal(c: &[f64], x: &[f64], sign: f64, out: &mut [f64]) {
    for i in 0..c.len() {
        out[i] = x[i] - c[i];
    }
    let r = norm(out);
    out.iter_mut().for_each(|v| *v *= sign / r);
}

/// Point `c + ρ u` for a uniform direction `u`; writes the direction into `dir`.
fn radial(c: &[f64], rho: f64, rng: &mut ChaCha8Rng, p: &mut [f64], dir: &mut [f64]) {
    unit_vector(rng, dir);
    for i in 0..c.len() {
        p[i] = c[i] + rho * dir[i];
    }
}

impl Shape for Ball {
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        cube_around(&self.c, self.r)
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        dist(&self.c, x) - self.r
    }
    fn volume(&self) -> f64 {
        unit_ball_volume(self.dim()) * self.r.powi(self.dim() as i32)
    }
    fn pieces(&self) -> Vec<String> {
        vec!["sphere".into()]
    }
    fn piece_measure(&self, _p: usize) -> f64 {
        self.dim() as f64 * self.volume() / self.r
    }
    fn piece_distance(&self, _p: usize, x: &[f64]) -> f64 {
        self.sdf(x).abs()
    }
    fn piece_phi(&self, _p: usize) -> Option<Phi> {
        Some(Phi::Sphere {
            c: self.c.clone(),
            r: self.r,
            inside: true,
        })
    }
    fn normal(&self, _p: usize, x: &[f64], out: &mut [f64]) {
        radial_normal(&self.c, x, 1.0, out)
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        let mut dir = vec![0.0; d];
        for p in out.chunks_mut(d) {
            // radius with density ∝ ρ^{d−1}
            let rho = self.r * rng.random_range(0.0f64..1.0).powf(1.0 / d as f64);
            radial(&self.c, rho, rng, p, &mut dir);
        }
        Ok(())
    }
    fn sample_piece(
        &self,
        _p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()> {
        let d = self.dim();
        for (p, n) in x.chunks_mut(d).zip(normal.chunks_mut(d)) {
            radial(&self.c, self.r, rng, p, n);
        }
        Ok(())
    }
}

/// A spherical shell `r_in ≤ |x − c| ≤ r_out` (an annulus in 2d); pieces `inner`,
/// `outer` (the inner normal points towards the centre, out of the shell).
#[derive(Clone, Debug, PartialEq)]
pub struct Shell {
    c: Vec<f64>,
    r_in: f64,
    r_out: f64,
}

impl Shell {
    pub fn new(center: Vec<f64>, r_in: f64, r_out: f64) -> Result<Self> {
        check_point("shell center", &center)?;
        check_radius("shell inner radius", r_in)?;
        check_radius("shell outer radius", r_out)?;
        if r_in >= r_out {
            return Err(Error::invalid(
                "shell inner radius",
                r_in,
                format!("less than the outer radius {r_out}"),
            ));
        }
        Ok(Shell {
            c: center,
            r_in,
            r_out,
        })
    }
}

impl Shape for Shell {
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        cube_around(&self.c, self.r_out)
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        let rho = dist(&self.c, x);
        (rho - self.r_out).max(self.r_in - rho)
    }
    fn volume(&self) -> f64 {
        let d = self.dim() as i32;
        unit_ball_volume(self.dim()) * (self.r_out.powi(d) - self.r_in.powi(d))
    }
    fn pieces(&self) -> Vec<String> {
        vec!["inner".into(), "outer".into()]
    }
    fn piece_measure(&self, p: usize) -> f64 {
        let d = self.dim();
        let r = if p == 0 { self.r_in } else { self.r_out };
        d as f64 * unit_ball_volume(d) * r.powi(d as i32 - 1)
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        (dist(&self.c, x) - if p == 0 { self.r_in } else { self.r_out }).abs()
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        // positive outside the inner sphere and inside the outer one
        Some(Phi::Sphere {
            c: self.c.clone(),
            r: if p == 0 { self.r_in } else { self.r_out },
            inside: p == 1,
        })
    }
    fn normal(&self, p: usize, x: &[f64], out: &mut [f64]) {
        radial_normal(&self.c, x, if p == 0 { -1.0 } else { 1.0 }, out)
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        let (a, b) = (self.r_in.powi(d as i32), self.r_out.powi(d as i32));
        let mut dir = vec![0.0; d];
        for p in out.chunks_mut(d) {
            // inverse CDF of the radius, density ∝ ρ^{d−1} on [r_in, r_out]
            let rho = (a + rng.random_range(0.0..1.0) * (b - a)).powf(1.0 / d as f64);
            radial(&self.c, rho, rng, p, &mut dir);
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
        let (r, sign) = if p == 0 {
            (self.r_in, -1.0)
        } else {
            (self.r_out, 1.0)
        };
        for (q, n) in x.chunks_mut(d).zip(normal.chunks_mut(d)) {
            radial(&self.c, r, rng, q, n);
            n.iter_mut().for_each(|v| *v *= sign);
        }
        Ok(())
    }
}

// ---- ellipsoid ------------------------------------------------------------------------

/// An axis-aligned ellipsoid `Σ ((x_i − c_i)/a_i)² ≤ 1`; one piece, `surface`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ellipsoid {
    c: Vec<f64>,
    a: Vec<f64>,
    /// Surface measure (fixed-seed Monte Carlo estimate; exact for a ball).
    area: f64,
    /// Largest area element over the unit sphere (for thinning).
    max_element: f64,
}

impl Ellipsoid {
    /// Samples of the Monte Carlo surface estimate (standard error ≈ 1e-3 relative or
    /// better, since the area element varies by at most the axis ratio).
    const AREA_SAMPLES: usize = 400_000;

    pub fn new(center: Vec<f64>, semi_axes: Vec<f64>) -> Result<Self> {
        check_point("ellipsoid center", &center)?;
        if semi_axes.len() != center.len() {
            return Err(Error::Shape(format!(
                "ellipsoid: {} semi-axes for a center with {} coordinates",
                semi_axes.len(),
                center.len()
            )));
        }
        for (i, &a) in semi_axes.iter().enumerate() {
            check_radius(&format!("ellipsoid semi-axis {i}"), a)?;
        }
        let d = center.len();
        let prod: f64 = semi_axes.iter().product();
        let max_element = prod / semi_axes.iter().cloned().fold(f64::INFINITY, f64::min);
        let mut e = Ellipsoid {
            c: center,
            a: semi_axes,
            area: 0.0,
            max_element,
        };
        e.area = if d == 1 {
            2.0
        } else if e.a.iter().all(|&v| v == e.a[0]) {
            d as f64 * unit_ball_volume(d) * e.a[0].powi(d as i32 - 1)
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(0x05ee_de11);
            let mut u = vec![0.0; d];
            let mut sum = 0.0;
            for _ in 0..Self::AREA_SAMPLES {
                unit_vector(&mut rng, &mut u);
                sum += e.element(&u);
            }
            sum / Self::AREA_SAMPLES as f64 * d as f64 * unit_ball_volume(d)
        };
        Ok(e)
    }

    /// Area element of the map `u ↦ c + a∘u` at the unit vector `u`:
    /// `Π a_i · |(u_i / a_i)_i|`.
    fn element(&self, u: &[f64]) -> f64 {
        let prod: f64 = self.a.iter().product();
        let q: f64 = u.iter().zip(&self.a).map(|(v, a)| (v / a).powi(2)).sum();
        prod * q.sqrt()
    }
}

impl Shape for Ellipsoid {
    fn dim(&self) -> usize {
        self.c.len()
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        (
            self.c.iter().zip(&self.a).map(|(c, a)| c - a).collect(),
            self.c.iter().zip(&self.a).map(|(c, a)| c + a).collect(),
        )
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        // (|(x − c)/a| − 1)·min a: same sign and zero set as the distance
        let q: f64 = (0..x.len())
            .map(|i| ((x[i] - self.c[i]) / self.a[i]).powi(2))
            .sum();
        let amin = self.a.iter().cloned().fold(f64::INFINITY, f64::min);
        (q.sqrt() - 1.0) * amin
    }
    fn volume(&self) -> f64 {
        unit_ball_volume(self.dim()) * self.a.iter().product::<f64>()
    }
    fn pieces(&self) -> Vec<String> {
        vec!["surface".into()]
    }
    fn piece_measure(&self, _p: usize) -> f64 {
        self.area
    }
    fn piece_distance(&self, _p: usize, x: &[f64]) -> f64 {
        self.sdf(x).abs()
    }
    fn normal(&self, _p: usize, x: &[f64], out: &mut [f64]) {
        for i in 0..x.len() {
            out[i] = (x[i] - self.c[i]) / (self.a[i] * self.a[i]);
        }
        let s = norm(out);
        out.iter_mut().for_each(|v| *v /= s);
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        // an affine image of the uniform ball is uniform
        let d = self.dim();
        let ball = Ball::new(vec![0.0; d], 1.0)?;
        ball.sample_interior(rng, out)?;
        for p in out.chunks_mut(d) {
            for i in 0..d {
                p[i] = self.c[i] + self.a[i] * p[i];
            }
        }
        Ok(())
    }
    fn sample_piece(
        &self,
        _p: usize,
        rng: &mut ChaCha8Rng,
        x: &mut [f64],
        normal: &mut [f64],
    ) -> Result<()> {
        let d = self.dim();
        let mut u = vec![0.0; d];
        for (q, n) in x.chunks_mut(d).zip(normal.chunks_mut(d)) {
            // thin sphere points by the area element: uniform in surface measure (the
            // acceptance rate is at least min a / max a)
            loop {
                unit_vector(rng, &mut u);
                if rng.random_range(0.0..self.max_element) < self.element(&u) {
                    break;
                }
            }
            for i in 0..d {
                q[i] = self.c[i] + self.a[i] * u[i];
                n[i] = u[i] / self.a[i];
            }
            let s = norm(n);
            n.iter_mut().for_each(|v| *v /= s);
        }
        Ok(())
    }
}

// ---- simplex --------------------------------------------------------------------------

/// A non-degenerate simplex from `d + 1` vertices in `R^d`; pieces `facet{i}` (the facet
/// opposite vertex `i`).
#[derive(Clone, Debug, PartialEq)]
pub struct Simplex {
    d: usize,
    /// (d + 1) × d
    v: Vec<f64>,
    volume: f64,
    /// Per facet: outward unit normal and offset (`n·x ≤ off` inside), and measure.
    normals: Vec<f64>,
    offsets: Vec<f64>,
    measures: Vec<f64>,
}

/// `sqrt(det(EᵀE))` of the `k` vectors `e` (rows of length `d`): the `k`-volume of their
/// parallelotope, by Gram–Schmidt.
fn parallelotope(e: &[Vec<f64>]) -> f64 {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let mut vol = 1.0;
    for v in e {
        let mut w = v.clone();
        for b in &basis {
            let dot: f64 = w.iter().zip(b).map(|(a, c)| a * c).sum();
            w.iter_mut().zip(b).for_each(|(a, c)| *a -= dot * c);
        }
        let n = norm(&w);
        vol *= n;
        if n > 0.0 {
            w.iter_mut().for_each(|a| *a /= n);
        }
        basis.push(w);
    }
    vol
}

fn factorial(k: usize) -> f64 {
    (1..=k).map(|i| i as f64).product()
}

impl Simplex {
    pub fn new(vertices: Vec<Vec<f64>>) -> Result<Self> {
        let d = vertices.first().map_or(0, Vec::len);
        if d == 0 || vertices.len() != d + 1 || vertices.iter().any(|v| v.len() != d) {
            return Err(Error::invalid(
                "simplex vertices",
                format!("{vertices:?}"),
                "d + 1 vertices of d coordinates each (d ≥ 1)",
            ));
        }
        for (i, v) in vertices.iter().enumerate() {
            check_point(&format!("simplex vertex {i}"), v)?;
        }
        let edges: Vec<Vec<f64>> = (1..=d)
            .map(|i| (0..d).map(|k| vertices[i][k] - vertices[0][k]).collect())
            .collect();
        let size = edges.iter().map(|e| norm(e)).fold(0.0, f64::max);
        let volume = parallelotope(&edges) / factorial(d);
        if volume.is_nan() || volume <= 1e-12 * size.powi(d as i32) {
            return Err(Error::invalid(
                "simplex vertices",
                format!("{vertices:?}"),
                "vertices in general position (these span no volume)",
            ));
        }
        let (mut normals, mut offsets, mut measures) = (vec![], vec![], vec![]);
        for i in 0..=d {
            let facet: Vec<&Vec<f64>> = (0..=d).filter(|&j| j != i).map(|j| &vertices[j]).collect();
            let base = facet[0];
            let fe: Vec<Vec<f64>> = facet[1..]
                .iter()
                .map(|v| (0..d).map(|k| v[k] - base[k]).collect())
                .collect();
            measures.push(if d == 1 {
                1.0
            } else {
                parallelotope(&fe) / factorial(d - 1)
            });
            // normal: the component of (base − opposite vertex) orthogonal to the facet
            let mut n: Vec<f64> = (0..d).map(|k| base[k] - vertices[i][k]).collect();
            let mut basis: Vec<Vec<f64>> = Vec::new();
            for v in &fe {
                let mut w = v.clone();
                for b in &basis {
                    let dot: f64 = w.iter().zip(b).map(|(a, c)| a * c).sum();
                    w.iter_mut().zip(b).for_each(|(a, c)| *a -= dot * c);
                }
                let s = norm(&w);
                w.iter_mut().for_each(|a| *a /= s);
                basis.push(w);
            }
            for b in &basis {
                let dot: f64 = n.iter().zip(b).map(|(a, c)| a * c).sum();
                n.iter_mut().zip(b).for_each(|(a, c)| *a -= dot * c);
            }
            let s = norm(&n);
            n.iter_mut().for_each(|a| *a /= s);
            offsets.push(n.iter().zip(base).map(|(a, b)| a * b).sum());
            normals.extend(n);
        }
        Ok(Simplex {
            d,
            v: vertices.concat(),
            volume,
            normals,
            offsets,
            measures,
        })
    }

    /// A point with barycentric weights from `d + 1` exponentials (uniform on the simplex
    /// spanned by `vs`).
    fn barycentric(&self, vs: &[usize], rng: &mut ChaCha8Rng, p: &mut [f64]) {
        let w: Vec<f64> = vs
            .iter()
            .map(|_| -(1.0 - rng.random_range(0.0f64..1.0)).ln())
            .collect();
        let s: f64 = w.iter().sum();
        p.fill(0.0);
        for (k, &j) in vs.iter().enumerate() {
            for i in 0..self.d {
                p[i] += w[k] / s * self.v[j * self.d + i];
            }
        }
    }
}

impl Shape for Simplex {
    fn dim(&self) -> usize {
        self.d
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        let col = |i: usize| self.v.iter().skip(i).step_by(d).cloned();
        (
            (0..d)
                .map(|i| col(i).fold(f64::INFINITY, f64::min))
                .collect(),
            (0..d)
                .map(|i| col(i).fold(f64::NEG_INFINITY, f64::max))
                .collect(),
        )
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        // largest signed distance to a facet's hyperplane: exact inside, a lower bound
        // of the distance outside
        (0..=self.d)
            .map(|i| {
                let n = &self.normals[i * self.d..(i + 1) * self.d];
                n.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() - self.offsets[i]
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }
    fn volume(&self) -> f64 {
        self.volume
    }
    fn pieces(&self) -> Vec<String> {
        (0..=self.d).map(|i| format!("facet{i}")).collect()
    }
    fn piece_measure(&self, p: usize) -> f64 {
        self.measures[p]
    }
    fn piece_distance(&self, p: usize, x: &[f64]) -> f64 {
        // distance to the facet's hyperplane (the facet itself for points on the simplex)
        let n = &self.normals[p * self.d..(p + 1) * self.d];
        (n.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() - self.offsets[p]).abs()
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        // off − n·x, positive inside
        let n = &self.normals[p * self.d..(p + 1) * self.d];
        Some(Phi::Plane {
            n: n.iter().map(|v| -v).collect(),
            b: -self.offsets[p],
        })
    }
    fn normal(&self, p: usize, _x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.normals[p * self.d..(p + 1) * self.d]);
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let all: Vec<usize> = (0..=self.d).collect();
        for p in out.chunks_mut(self.d) {
            self.barycentric(&all, rng, p);
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
        let d = self.d;
        let facet: Vec<usize> = (0..=d).filter(|&j| j != p).collect();
        for (q, n) in x.chunks_mut(d).zip(normal.chunks_mut(d)) {
            self.barycentric(&facet, rng, q);
            n.copy_from_slice(&self.normals[p * d..(p + 1) * d]);
        }
        Ok(())
    }
}

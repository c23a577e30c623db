//! Simple polygons in 2d (non-convex allowed): validated (no repeated vertices, no
//! crossing edges), either orientation, triangulated by ear clipping for the
//! interior sampler; pieces `edge{i}` from vertex `i` to vertex `i + 1`. Checked by
//! `tests/geometry.rs` (an L-shape's area, perimeter, normals and membership).

use super::{Phi, Shape};
use crate::error::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct Polygon {
    /// The vertices as given (edge `i` from vertex `i` to `i + 1`).
    v: Vec<[f64; 2]>,
    /// 1 if the vertices run counter-clockwise, −1 if clockwise.
    orientation: f64,
    /// Ear-clipping triangles and their cumulative areas.
    tris: Vec<[[f64; 2]; 3]>,
    cum_area: Vec<f64>,
    area: f64,
}

fn cross(o: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Whether the closed segments `ab` and `cd` share a point.
fn segments_meet(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let (d1, d2) = (cross(c, d, a), cross(c, d, b));
    let (d3, d4) = (cross(a, b, c), cross(a, b, d));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    let on = |p: [f64; 2], q: [f64; 2], r: [f64; 2], c: f64| {
        c == 0.0
            && r[0] >= p[0].min(q[0])
            && r[0] <= p[0].max(q[0])
            && r[1] >= p[1].min(q[1])
            && r[1] <= p[1].max(q[1])
    };
    on(c, d, a, d1) || on(c, d, b, d2) || on(a, b, c, d3) || on(a, b, d, d4)
}

fn point_in_triangle(p: [f64; 2], a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> bool {
    cross(a, b, p) >= 0.0 && cross(b, c, p) >= 0.0 && cross(c, a, p) >= 0.0
}

impl Polygon {
    pub fn new(vertices: Vec<[f64; 2]>) -> Result<Self> {
        let n = vertices.len();
        if n < 3 {
            return Err(Error::invalid(
                "polygon vertices",
                format!("{vertices:?}"),
                "at least 3 vertices",
            ));
        }
        if let Some(i) = vertices
            .iter()
            .position(|p| !(p[0].is_finite() && p[1].is_finite()))
        {
            return Err(Error::invalid(
                format!("polygon vertex {i}"),
                format!("{:?}", vertices[i]),
                "finite coordinates",
            ));
        }
        for i in 0..n {
            for j in i + 1..n {
                if vertices[i] == vertices[j] {
                    return Err(Error::invalid(
                        format!("polygon vertex {j}"),
                        format!("{:?}", vertices[j]),
                        format!("a point other than vertex {i} (no repeated vertices)"),
                    ));
                }
            }
        }
        // non-adjacent edges must not meet (a simple polygon)
        for i in 0..n {
            for j in i + 1..n {
                let adjacent = j == i + 1 || (i == 0 && j == n - 1);
                if adjacent {
                    continue;
                }
                let (a, b) = (vertices[i], vertices[(i + 1) % n]);
                let (c, d) = (vertices[j], vertices[(j + 1) % n]);
                if segments_meet(a, b, c, d) {
                    return Err(Error::invalid(
                        "polygon vertices",
                        format!("{vertices:?}"),
                        format!(
                            "a simple polygon (edge {i} from {a:?} and edge {j} from {c:?} \
                             cross or touch)"
                        ),
                    ));
                }
            }
        }
        let signed: f64 = (0..n)
            .map(|i| {
                let (a, b) = (vertices[i], vertices[(i + 1) % n]);
                a[0] * b[1] - a[1] * b[0]
            })
            .sum::<f64>()
            / 2.0;
        if signed == 0.0 {
            return Err(Error::invalid(
                "polygon vertices",
                format!("{vertices:?}"),
                "a polygon with positive area",
            ));
        }
        // triangulate a counter-clockwise copy; the edges keep the user's numbering
        let mut ccw = vertices.clone();
        if signed < 0.0 {
            ccw.reverse();
        }
        let tris: Vec<[[f64; 2]; 3]> = ear_clip(&ccw)?
            .into_iter()
            .map(|t| t.map(|i| ccw[i]))
            .collect();
        let mut cum_area = Vec::with_capacity(tris.len());
        let mut acc = 0.0;
        for t in &tris {
            acc += cross(t[0], t[1], t[2]).abs() / 2.0;
            cum_area.push(acc);
        }
        Ok(Polygon {
            v: vertices,
            orientation: signed.signum(),
            tris,
            cum_area,
            area: signed.abs(),
        })
    }

    fn edge(&self, i: usize) -> ([f64; 2], [f64; 2]) {
        (self.v[i], self.v[(i + 1) % self.v.len()])
    }

    /// Outward unit normal of edge `i`.
    fn edge_normal(&self, i: usize) -> [f64; 2] {
        let (a, b) = self.edge(i);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        // counter-clockwise: the outward normal is the edge turned clockwise
        let s = self.orientation / len;
        [s * (b[1] - a[1]), -s * (b[0] - a[0])]
    }

    /// Crossing-number membership (boundary points count as inside through `sdf`).
    fn inside(&self, p: [f64; 2]) -> bool {
        let n = self.v.len();
        let mut c = false;
        for i in 0..n {
            let (a, b) = self.edge(i);
            if (a[1] > p[1]) != (b[1] > p[1]) {
                let xi = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
                if p[0] < xi {
                    c = !c;
                }
            }
        }
        c
    }
}

/// Triangles of a counter-clockwise simple polygon by ear clipping (O(n²)).
fn ear_clip(v: &[[f64; 2]]) -> Result<Vec<[usize; 3]>> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let mut tris = Vec::new();
    while idx.len() > 3 {
        let m = idx.len();
        let ear = (0..m).find(|&k| {
            let (a, b, c) = (idx[(k + m - 1) % m], idx[k], idx[(k + 1) % m]);
            cross(v[a], v[b], v[c]) > 0.0
                && idx
                    .iter()
                    .filter(|&&j| j != a && j != b && j != c)
                    .all(|&j| !point_in_triangle(v[j], v[a], v[b], v[c]))
        });
        let Some(k) = ear else {
            return Err(Error::invalid(
                "polygon vertices",
                format!("{v:?}"),
                "a simple polygon (no ear found: collinear or degenerate vertices)",
            ));
        };
        tris.push([idx[(k + m - 1) % m], idx[k], idx[(k + 1) % m]]);
        idx.remove(k);
    }
    tris.push([idx[0], idx[1], idx[2]]);
    Ok(tris)
}

impl Shape for Polygon {
    fn dim(&self) -> usize {
        2
    }
    fn bounds(&self) -> (Vec<f64>, Vec<f64>) {
        let f = |k: usize, init: f64, op: fn(f64, f64) -> f64| {
            self.v.iter().map(|p| p[k]).fold(init, op)
        };
        (
            vec![f(0, f64::INFINITY, f64::min), f(1, f64::INFINITY, f64::min)],
            vec![
                f(0, f64::NEG_INFINITY, f64::max),
                f(1, f64::NEG_INFINITY, f64::max),
            ],
        )
    }
    fn sdf(&self, x: &[f64]) -> f64 {
        let p = [x[0], x[1]];
        let best = (0..self.v.len())
            .map(|i| self.piece_distance(i, x))
            .fold(f64::INFINITY, f64::min);
        if self.inside(p) {
            -best
        } else {
            best
        }
    }
    fn volume(&self) -> f64 {
        self.area
    }
    fn pieces(&self) -> Vec<String> {
        (0..self.v.len()).map(|i| format!("edge{i}")).collect()
    }
    fn piece_measure(&self, p: usize) -> f64 {
        let (a, b) = self.edge(p);
        ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt()
    }
    fn piece_distance(&self, i: usize, x: &[f64]) -> f64 {
        let (a, b) = self.edge(i);
        let ab = [b[0] - a[0], b[1] - a[1]];
        let t = (((x[0] - a[0]) * ab[0] + (x[1] - a[1]) * ab[1]) / (ab[0] * ab[0] + ab[1] * ab[1]))
            .clamp(0.0, 1.0);
        let q = [a[0] + t * ab[0] - x[0], a[1] + t * ab[1] - x[1]];
        (q[0] * q[0] + q[1] * q[1]).sqrt()
    }
    fn piece_phi(&self, p: usize) -> Option<Phi> {
        let (a, b) = self.edge(p);
        Some(Phi::Segment { a, b })
    }
    fn normal(&self, p: usize, _x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.edge_normal(p));
    }
    fn sample_interior(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        for p in out.chunks_mut(2) {
            let u = rng.random_range(0.0..self.area);
            let t = self
                .cum_area
                .partition_point(|&c| c <= u)
                .min(self.tris.len() - 1);
            let [a, b, c] = self.tris[t];
            let (mut r1, mut r2): (f64, f64) =
                (rng.random_range(0.0..1.0), rng.random_range(0.0..1.0));
            if r1 + r2 > 1.0 {
                r1 = 1.0 - r1;
                r2 = 1.0 - r2;
            }
            for k in 0..2 {
                p[k] = a[k] + r1 * (b[k] - a[k]) + r2 * (c[k] - a[k]);
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
        let (a, b) = self.edge(p);
        let nrm = self.edge_normal(p);
        for (q, n) in x.chunks_mut(2).zip(normal.chunks_mut(2)) {
            let t: f64 = rng.random_range(0.0..1.0);
            q[0] = a[0] + t * (b[0] - a[0]);
            q[1] = a[1] + t * (b[1] - a[1]);
            n.copy_from_slice(&nrm);
        }
        Ok(())
    }
}

//! The viscous Burgers benchmark (issue 19): `u_t + u u_x = ν u_xx`, `ν = 0.01/π`, on
//! `(t, x) ∈ [0, 1] × [−1, 1]`, `u(0, x) = −sin(πx)`, `u(t, ±1) = 0` — the shock problem
//! of Raissi et al. (2019) — and its reference solution by the Cole–Hopf transformation,
//! evaluated by quadrature ([`ColeHopf`]).
//!
//! Checked by `tests/burgers.rs`: the reference satisfies the PDE (derivatives by finite
//! differences), its initial and boundary data, its analytic `u_x` against differences,
//! and the published maximum slope `max_t |u_x(t, 0)| = 152.00516` at `t ≈ 0.5105`
//! (Basdevant et al. 1986); and by `tests/systems.rs` with every other system (the
//! reference through every term, seeds against finite differences, samplers).

use super::flows::{setup, sf, term, vf};
use super::problems::DataResidual;
use super::system::{BoxSystem, Face, JetIdx, Region};
use super::Residual;
use crate::error::Result;
use crate::jet::{JetKind, Operator};
use std::f64::consts::PI;
use std::sync::Arc;

/// Names of the Burgers problems.
pub const NAMES: &[&str] = &["burgers"];

/// The Burgers problem by name, or None if `name` is not one.
pub fn build(name: &str) -> Option<Result<BoxSystem>> {
    Some(match name {
        "burgers" => burgers(),
        _ => return None,
    })
}

/// The viscosity of the benchmark.
pub const NU: f64 = 0.01 / PI;

/// The Burgers residual `u_t + u u_x − L u` of one field on a jet with coordinate
/// directions `(t, x)` whose operator row is `L u = ν u_xx` (the weights `(0, ν)`), so
/// the viscosity lives in the jet and the residual has none. Nonlinear through `u u_x`.
pub struct BurgersResidual;

impl BurgersResidual {
    const IDX: JetIdx = JetIdx { m: 1, k: 2 };
}

impl Residual for BurgersResidual {
    fn is_linear(&self) -> bool {
        false
    }
    fn eval(&self, _x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let ix = Self::IDX;
        let (u, ut, ux, lu) = (y[ix.val(0)], y[ix.d(0, 0)], y[ix.d(1, 0)], y[ix.op(0)]);
        r[0] = ut + u * ux - lu;
        if let Some(j) = jac {
            j.fill(0.0);
            j[ix.val(0)] = ux;
            j[ix.d(0, 0)] = 1.0;
            j[ix.d(1, 0)] = u;
            j[ix.op(0)] = -1.0;
        }
    }
}

/// The Cole–Hopf solution of `u_t + u u_x = ν u_xx` with `u(0, x) = −sin(πx)` on the
/// line (which is odd about `x = ±1`, so it vanishes there and solves the boundary
/// problem):
/// `u = −∫ sin(π(x−η)) f(x−η) G(η) dη / ∫ f(x−η) G(η) dη`, `f(y) = exp(−cos(πy)/(2πν))`,
/// `G(η) = exp(−η²/(4νt))`.
///
/// With `η = √(4νt)·s` both integrals have the weight `exp(E(s))`,
/// `E(s) = −cos(π(x − √(4νt) s))/(2πν) − s²`, an entire function of `s`, so the
/// trapezoid rule converges geometrically. `E` ranges over `±1/(2πν) − s²` (±50 here),
/// so the largest exponent on the grid is subtracted before exponentiating: no overflow
/// for any ν, and the dominant terms keep full precision. The grid is truncated where
/// `s² ≥ 2/(2πν) + 40`, beyond which every term is below `e^{−40}` of the largest.
#[derive(Clone, Debug)]
pub struct ColeHopf {
    nu: f64,
    /// Trapezoid nodes `s_i` over `[−L, L]` and the step.
    nodes: Vec<f64>,
}

impl ColeHopf {
    /// The reference at viscosity `nu` (> 0).
    pub fn new(nu: f64) -> Self {
        // the weight's narrowest feature in s has width ≈ 1/√(1 + π²c²/(4πν)) ≥ 0.3 for
        // the benchmark (c = √(4νt) ≤ 0.113); a step of 0.02 resolves it with a wide
        // margin (the trapezoid error of an entire integrand falls like e^{−2πd/h}, d the
        // half-width of the strip where it stays bounded)
        Self::with_step(nu, 0.02)
    }

    /// The reference with trapezoid step about `step` in `s` (tests compare steps).
    pub fn with_step(nu: f64, step: f64) -> Self {
        let big = 1.0 / (2.0 * PI * nu);
        let half = (2.0 * big + 40.0).sqrt();
        let n = (half / step).ceil() as usize;
        let h = half / n as f64;
        let nodes = (0..=2 * n).map(|i| -half + i as f64 * h).collect();
        ColeHopf { nu, nodes }
    }

    /// `(u, u_x)` at `(t, x)`; at `t ≤ 0` the initial data `−sin(πx)` and its slope.
    pub fn eval(&self, t: f64, x: f64) -> (f64, f64) {
        if t <= 0.0 {
            return (-(PI * x).sin(), -PI * (PI * x).cos());
        }
        let c = (4.0 * self.nu * t).sqrt();
        let big = 1.0 / (2.0 * PI * self.nu);
        let expo = |s: f64| -(PI * (x - c * s)).cos() * big - s * s;
        let top = self.nodes.iter().map(|&s| expo(s)).fold(f64::MIN, f64::max);
        // D = ∫w, N = ∫ sin(πy) w, and their x-derivatives: ∂w/∂x = w sin(πy)/(2ν)
        let (mut d, mut n, mut nx, mut dx) = (0.0, 0.0, 0.0, 0.0);
        for &s in &self.nodes {
            let y = x - c * s;
            let (sy, cy) = (PI * y).sin_cos();
            let w = (-cy * big - s * s - top).exp();
            d += w;
            n += sy * w;
            nx += (PI * cy + sy * sy / (2.0 * self.nu)) * w;
            dx += sy / (2.0 * self.nu) * w;
        }
        // the trapezoid's end weights are immaterial (the ends are below e^{−40})
        (-n / d, -(nx * d - n * dx) / (d * d))
    }

    /// `u(t, x)`.
    pub fn u(&self, t: f64, x: f64) -> f64 {
        self.eval(t, x).0
    }
}

/// The benchmark: the interior residual on the jet with operator weights `(0, ν)`, zero
/// data at `x = ±1`, the initial data; the Cole–Hopf reference as the exact solution.
fn burgers() -> Result<BoxSystem> {
    let reference = Arc::new(ColeHopf::new(NU));
    let exact = vf(move |x, o| o[0] = reference.u(x[0], x[1]));
    BoxSystem::new(
        "burgers",
        "viscous Burgers u_t + u u_x = ν u_xx, ν = 0.01/π, (t,x) ∈ [0,1]×[−1,1], u(0,x) = −sin(πx), u(t,±1) = 0 (shock at x = 0); reference by the Cole–Hopf transformation and quadrature",
        vec![0.0, -1.0],
        vec![1.0, 1.0],
        &["u"],
        vec![
            term(
                "interior",
                Region::Interior,
                JetKind::Full(Operator::weighted(vec![0.0, NU])?),
                Arc::new(BurgersResidual),
            ),
            term(
                "boundary",
                Region::Faces(vec![Face::lower(1), Face::upper(1)]),
                JetKind::Value,
                Arc::new(DataResidual { g: sf(|_| 0.0) }),
            ),
            term(
                "initial",
                Region::Initial,
                JetKind::Value,
                Arc::new(DataResidual { g: sf(|x| -(PI * x[1]).sin()) }),
            ),
        ],
        Some(exact),
        setup(&[2, 32, 32, 32, 1], &[2000, 200, 200], 10000, 900.0),
    )
}

//! High-dimensional Poisson problems with a closed-form solution (issue 20, design §9):
//! the two-body sum of STDE (Shi et al., 2024) on the unit ball of R^D,
//!
//! `u(x) = Σ_{i<D−1} c_i sin θ_i`, `θ_i = x_i + cos x_{i+1} + x_{i+1} cos x_i`,
//!
//! `−Δu = f` inside and Dirichlet data `u` on the sphere, with `c_i ~ N(0, 1/(D−1))` from
//! a fixed seed (so u is of order one in any D). STDE multiplies this sum by
//! `1 − |x|²` (zero data on the sphere); we leave the factor out: uniform points of a
//! high-dimensional ball lie within O(1/D) of the sphere, where the factor makes u of
//! order 1/D but its Laplacian (`−2D` times the sum) of order D, a target so badly scaled
//! that KFAC* diverged on it at D = 100 with the exact Laplacian as well (a hard boundary
//! ansatz, as STDE uses, would remove it). For one term, with
//! `a_i = ∂θ_i/∂x_i = 1 − x_{i+1} sin x_i` and `b_i = ∂θ_i/∂x_{i+1} = cos x_i − sin x_{i+1}`:
//! `Δ(sin θ_i) = −sin θ_i (a_i² + b_i²) − cos θ_i (x_{i+1} cos x_i + cos x_{i+1})`.
//! The interior residual is Poisson's ([`LinearResidual`]), so the randomized Laplacian
//! applies (`highdim-1k`, `highdim-10k` presets train with it by default).
//!
//! Points: uniform in the ball (a normal direction, radius `U^{1/D}`) and uniform on the
//! sphere. Checked by `tests/highdim.rs`: `f` against finite differences of `u` at D = 5,
//! the boundary values, the samplers' radii.

use super::problems::{DataResidual, LinearResidual, ScalarFn};
use super::{Problem, Setup, TermSpec};
use crate::error::{Error, Result};
use crate::jet::{JetKind, Operator};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// The problems by name: D = 5 (for checks), 100, 1,000 and 10,000.
pub const NAMES: &[&str] = &["highdim-5d", "highdim-100d", "highdim-1k", "highdim-10k"];

/// Seed of the coefficients `c_i`.
const COEF_SEED: u64 = 2024;

/// The two-body Poisson problem in `d` dimensions.
#[derive(Debug)]
pub struct TwoBody {
    name: String,
    d: usize,
    c: Arc<Vec<f64>>,
    setup: Setup,
}

/// The exact solution `u(x)` of the module header.
pub fn two_body_u(c: &[f64], x: &[f64]) -> f64 {
    c.iter()
        .enumerate()
        .map(|(i, ci)| ci * (x[i] + x[i + 1].cos() + x[i + 1] * x[i].cos()).sin())
        .sum()
}

/// `f = −Δu` by the closed form of the module header.
pub fn two_body_f(c: &[f64], x: &[f64]) -> f64 {
    let mut lap = 0.0;
    for (i, ci) in c.iter().enumerate() {
        let (xi, xj) = (x[i], x[i + 1]);
        let (si, cos_i) = xi.sin_cos();
        let (sj, cos_j) = xj.sin_cos();
        let (st, ct) = (xi + cos_j + xj * cos_i).sin_cos();
        let a = 1.0 - xj * si;
        let b = cos_i - sj;
        lap += ci * (-st * (a * a + b * b) - ct * (xj * cos_i + cos_j));
    }
    -lap
}

impl TwoBody {
    pub fn new(name: &str, d: usize, setup: Setup) -> Result<Self> {
        if d < 2 {
            return Err(Error::invalid(
                "two-body dimension",
                d,
                "at least 2 (the solution couples neighbouring coordinates)",
            ));
        }
        let mut c = vec![0.0; d - 1];
        crate::rng::normals(&mut ChaCha8Rng::seed_from_u64(COEF_SEED), &mut c);
        let scale = 1.0 / ((d - 1) as f64).sqrt();
        c.iter_mut().for_each(|v| *v *= scale);
        Ok(TwoBody {
            name: name.into(),
            d,
            c: Arc::new(c),
            setup,
        })
    }
    /// The coefficients `c_i` (D − 1 of them).
    pub fn coefficients_c(&self) -> &[f64] {
        &self.c
    }
}

impl Problem for TwoBody {
    fn name(&self) -> &str {
        &self.name
    }
    fn summary(&self) -> String {
        format!(
            "-Δu = f on the unit ball of R^{}, Dirichlet data on the sphere; u = Σ c_i sin(x_i + cos x_{{i+1}} + x_{{i+1}} cos x_i) (STDE's two-body sum without its factor 1-|x|², c_i ~ N(0,1/(D-1)) seeded)",
            self.d
        )
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn terms(&self) -> Vec<TermSpec> {
        let c = self.c.clone();
        let f: ScalarFn = Arc::new(move |x: &[f64]| two_body_f(&c, x));
        let c = self.c.clone();
        let u: ScalarFn = Arc::new(move |x: &[f64]| two_body_u(&c, x));
        vec![
            TermSpec {
                name: "interior".into(),
                kind: JetKind::Full(Operator::laplacian(self.d)),
                residual: Arc::new(LinearResidual {
                    time: None,
                    op_coef: 1.0,
                    k: self.d,
                    f,
                }),
                weight: 1.0,
            },
            TermSpec {
                name: "boundary".into(),
                kind: JetKind::Value,
                residual: Arc::new(DataResidual { g: u }),
                weight: 1.0,
            },
        ]
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let d = self.d;
        let mut x = vec![0.0; n * d];
        if term > 1 {
            return Err(Error::invalid("term", term, "0 (interior) or 1 (boundary)"));
        }
        for p in x.chunks_mut(d) {
            crate::rng::normals(rng, p);
            let norm = p.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300);
            let r = if term == 0 {
                rng.random::<f64>().powf(1.0 / d as f64)
            } else {
                1.0
            };
            p.iter_mut().for_each(|v| *v *= r / norm);
        }
        Ok(x)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        out[0] = two_body_u(&self.c, x);
        true
    }
    fn setup(&self) -> Setup {
        self.setup.clone()
    }
}

/// A problem by name (None if the name is not one of [`NAMES`]). Networks are sized so
/// that a randomized step is affordable on two CPU cores (design §9).
pub fn build(name: &str) -> Option<Result<TwoBody>> {
    let (d, widths): (usize, Vec<usize>) = match name {
        "highdim-5d" => (5, vec![5, 64, 64, 1]),
        "highdim-100d" => (100, vec![100, 128, 128, 1]),
        "highdim-1k" => (1000, vec![1000, 128, 128, 1]),
        "highdim-10k" => (10000, vec![10000, 64, 64, 1]),
        _ => return None,
    };
    let setup = Setup {
        widths,
        points: vec![1024, 256],
        resample: 1,
        eval_points: 2000,
        budget_seconds: 1800.0,
    };
    Some(TwoBody::new(name, d, setup))
}

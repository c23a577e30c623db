//! Inverse problems with unknown scalar coefficients (design §7): `inverse-heat`, the heat
//! equation `u_t = κ u_xx` on `(t, x) ∈ [0,1]²` with `u = e^{−π²κt} sin(πx)`, κ = 0.25
//! unknown (training starts at κ = 1), recovered from interior observations of the
//! solution together with the boundary and initial data.
//!
//! Checked by `tests/inverse.rs` (`∂r/∂κ` against finite differences, recovery of κ) and
//! `tests/problems.rs` (the exact solution through the residual at the true κ).

use super::problems::{Boundary, BoxProblem, DataResidual, ScalarFn};
use super::{Coefficient, Problem, Residual, Setup, TermSpec};
use crate::error::Result;
use crate::jet::{JetKind, Operator};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use std::sync::Arc;

/// Names of the built-in inverse problems.
pub(super) const NAMES: &[&str] = &["inverse-heat"];

/// The true diffusivity of `inverse-heat` and the value its training starts from.
const KAPPA_TRUE: f64 = 0.25;
const KAPPA_INITIAL: f64 = 1.0;

/// A built-in inverse problem by name, or None if the name is not one.
pub(super) fn build(name: &str) -> Option<Result<Arc<dyn Problem>>> {
    match name {
        "inverse-heat" => Some(inverse_heat().map(|p| Arc::new(p) as Arc<dyn Problem>)),
        _ => None,
    }
}

/// `r = u_t − κ u_xx` on the output jet `[u, u_t, u_x, u_xx]` (directions t and x, the
/// operator `diag(0, 1)`), with `∂r/∂κ = −u_xx`. Not a quadratic form of the jet with
/// constant coefficients (κ changes every step), so it runs on the host.
struct HeatCoefResidual {
    /// The value `eval` uses (the true κ: exact-solution checks).
    reference: f64,
}

impl Residual for HeatCoefResidual {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        self.eval_coef(x, y, &[self.reference], r, jac, None);
    }
    fn n_coef(&self) -> usize {
        1
    }
    fn eval_coef(
        &self,
        _x: &[f64],
        y: &[f64],
        coef: &[f64],
        r: &mut [f64],
        jac: Option<&mut [f64]>,
        dcoef: Option<&mut [f64]>,
    ) {
        let kappa = coef[0];
        r[0] = y[1] - kappa * y[3];
        if let Some(j) = jac {
            j.fill(0.0);
            j[1] = 1.0;
            j[3] = -kappa;
        }
        if let Some(d) = dcoef {
            d[0] = -y[3];
        }
    }
}

/// The heat problem with its boundary/initial data and a third term: observations of
/// the solution at uniform interior points.
struct InverseHeat {
    heat: BoxProblem,
    exact: ScalarFn,
}

fn inverse_heat() -> Result<InverseHeat> {
    let exact: ScalarFn =
        Arc::new(|x: &[f64]| (-PI * PI * KAPPA_TRUE * x[0]).exp() * (PI * x[1]).sin());
    let heat = BoxProblem::new(
        "inverse-heat",
        "u_t = κ u_xx on (t,x) ∈ [0,1]², u = e^{-π²κt} sin(πx); κ = 0.25 unknown (starts at 1), from 200 interior observations of u",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        Boundary::FacesAndInitial,
        Operator::weighted(vec![0.0, 1.0])?,
        Arc::new(HeatCoefResidual {
            reference: KAPPA_TRUE,
        }),
        Arc::new(DataResidual { g: exact.clone() }),
        Some(exact.clone()),
        Setup {
            widths: vec![2, 32, 1],
            points: vec![500, 100, 200],
            resample: 0,
            eval_points: 5000,
            budget_seconds: 60.0,
        },
    )?;
    Ok(InverseHeat { heat, exact })
}

impl Problem for InverseHeat {
    fn name(&self) -> &str {
        self.heat.name()
    }
    fn summary(&self) -> String {
        self.heat.summary()
    }
    fn dim(&self) -> usize {
        2
    }
    fn bounds(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        self.heat.bounds()
    }
    fn shape(&self) -> Option<crate::geometry::ShapeRef> {
        self.heat.shape()
    }
    fn interior_terms(&self) -> Vec<usize> {
        self.heat.interior_terms()
    }
    fn terms(&self) -> Vec<TermSpec> {
        let mut t = self.heat.terms();
        t.push(TermSpec {
            name: "observations".into(),
            kind: JetKind::Value,
            residual: Arc::new(DataResidual {
                g: self.exact.clone(),
            }),
            weight: 1.0,
        });
        t
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        match term {
            // observations: uniform in the space-time box, like the interior points
            2 => Ok((0..2 * n).map(|_| rng.random_range(0.0..1.0)).collect()),
            _ => self.heat.sample(term, n, rng),
        }
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        out[0] = (self.exact)(x);
        true
    }
    fn setup(&self) -> Setup {
        self.heat.setup()
    }
    fn coefficients(&self) -> Vec<Coefficient> {
        vec![Coefficient {
            name: "kappa".into(),
            initial: KAPPA_INITIAL,
            truth: Some(KAPPA_TRUE),
        }]
    }
    fn observation_terms(&self) -> Vec<usize> {
        vec![2]
    }
}

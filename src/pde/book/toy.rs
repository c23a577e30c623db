//! The book's toy regression: learn `ŷ(x) = (sin 6x, cos 9x)` on x ∈ [-1, 1] with a
//! 1→7→2 tanh network under the loss `½(y1 − ŷ1)² + ½(λ·y2 − ŷ2)²`, averaged over the
//! batch. λ < 1 makes the Jacobian of the second residual small relative to the first:
//! the network must grow the second output by 1/λ, which is the ill-conditioning the
//! book uses to separate Adam, Gauss–Newton and HIG.
//!
//! Sampling (the book does not state its data pipeline; our choice, see
//! docs/hig-results.md): a fresh batch of 256 uniform points every step.

use crate::error::{Error, Result};
use crate::jet::JetKind;
use crate::pde::{Problem, Residual, Setup, TermSpec};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Points per batch of the reference setup.
pub const BATCH: usize = 256;

/// `r = (y1 − sin 6x, λ·y2 − cos 9x)`; `∂r/∂y = diag(1, λ)`.
struct ToyResidual {
    lambda: f64,
}

impl Residual for ToyResidual {
    fn n_res(&self) -> usize {
        2
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        r[0] = y[0] - (6.0 * x[0]).sin();
        r[1] = self.lambda * y[1] - (9.0 * x[0]).cos();
        if let Some(j) = jac {
            // rows: residuals, columns: outputs (value-only jet, S·m = 2)
            j.copy_from_slice(&[1.0, 0.0, 0.0, self.lambda]);
        }
    }
}

pub struct ToyRegression {
    lambda: f64,
}

impl ToyRegression {
    /// λ must be finite and nonzero.
    pub fn new(lambda: f64) -> Result<Self> {
        if !(lambda.is_finite() && lambda != 0.0) {
            return Err(Error::invalid("lambda", lambda, "a finite nonzero number"));
        }
        Ok(ToyRegression { lambda })
    }
}

impl Problem for ToyRegression {
    fn name(&self) -> &str {
        "toy-regression"
    }
    fn summary(&self) -> String {
        format!(
            "fit ŷ = (sin 6x, cos 9x) on x ∈ [-1,1] with loss ½(y1-ŷ1)² + ½(λ·y2-ŷ2)², λ = {}",
            self.lambda
        )
    }
    fn dim(&self) -> usize {
        1
    }
    fn out_dim(&self) -> usize {
        2
    }
    fn terms(&self) -> Vec<TermSpec> {
        vec![TermSpec {
            name: "fit".into(),
            kind: JetKind::Value,
            residual: Arc::new(ToyResidual {
                lambda: self.lambda,
            }),
            weight: 1.0,
        }]
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        if term != 0 {
            return Err(Error::invalid("term", term, "0 (the only term)"));
        }
        Ok((0..n).map(|_| rng.random_range(-1.0..=1.0)).collect())
    }
    fn exact(&self, _x: &[f64], _out: &mut [f64]) -> bool {
        false
    }
    fn setup(&self) -> Setup {
        Setup {
            widths: vec![1, 7, 2],
            points: vec![BATCH],
            resample: 1,
            eval_points: BATCH,
            budget_seconds: 20.0,
        }
    }
}

//! The Physics-based Deep Learning book's half-inverse-gradient examples (Thuerey et
//! al., chapter "Half-Inverse Gradients" and its coupled-oscillator notebook; Schnell,
//! Holl, Thuerey, ICLR 2022): least-squares problems that are not PINNs.
//!
//! - `toy-regression` ([`toy`]): a 1→7→2 tanh network fits `(sin 6x, cos 9x)` with the
//!   second output scaled by λ inside the loss, the book's ill-conditioning knob.
//! - `oscillators` ([`oscillators`]): a 4→20→20→20→24 network predicts the controls of
//!   an RK4 simulation of two coupled oscillators so that they return to their start.
//!
//! Both have value-only jets, vector residuals and no exact solution (the trainer then
//! reports the L2 error as NaN; the loss is the figure of merit). Checked by
//! `tests/hig.rs` (the simulator's Jacobian against finite differences, residuals
//! against direct formulas, option validation).

mod oscillators;
mod toy;

use super::{Problem, ProblemOptions};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Names of the book's problems.
pub const NAMES: &[&str] = &["toy-regression", "oscillators"];

/// The problem `name`, or None if it is not one of the book's.
pub fn build(name: &str, opts: &ProblemOptions) -> Option<Result<Arc<dyn Problem>>> {
    match name {
        "toy-regression" => Some(
            toy::ToyRegression::new(opts.lambda.unwrap_or(1.0))
                .map(|p| Arc::new(p) as Arc<dyn Problem>),
        ),
        "oscillators" => Some(match opts.lambda {
            Some(l) => Err(Error::invalid(
                "lambda",
                l,
                "unset for problem `oscillators` (only toy-regression uses it)",
            )),
            None => Ok(Arc::new(oscillators::Oscillators::new()) as Arc<dyn Problem>),
        }),
        _ => None,
    }
}

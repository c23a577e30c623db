//! Small helpers shared by the second-order optimizers: finiteness checks that turn a
//! diverging step into [`Error::NonFinite`], one-time warnings, step counters in saved
//! state, and hyperparameter checks.

use super::State;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::scalar::Real;

/// `Err(NonFinite)` unless every entry of `x` is finite (checked through `‖x‖²`).
pub fn ensure_finite<B: Backend, T: Real>(be: &B, x: &B::Buf<T>, what: &str) -> Result<f64> {
    let n2 = be.dot(x, x)?;
    if n2.is_finite() {
        Ok(n2)
    } else {
        Err(Error::NonFinite(format!("{what} (squared norm {n2})")))
    }
}

/// `Err(NonFinite)` unless `v` is finite.
pub fn finite_scalar(v: f64, what: &str) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::NonFinite(format!("{what} is {v}")))
    }
}

/// Print a warning to stderr the first time only (a library cannot know the caller's
/// logger; optimizers also report the count in [`super::StepInfo::extra`]).
pub fn warn_once(flag: &mut bool, msg: impl FnOnce() -> String) {
    if !*flag {
        *flag = true;
        eprintln!("warning: {}", msg());
    }
}

/// A step counter as a state entry.
pub fn count_entry(name: &str, v: u64) -> (String, Vec<f64>) {
    (name.to_string(), vec![v as f64])
}

/// Read a step counter written by [`count_entry`].
pub fn count_get(s: &State, name: &str) -> Result<u64> {
    let v = super::state_get(s, name, 1)?[0];
    if !(v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53)) {
        return Err(Error::Format {
            path: "optimizer state".into(),
            msg: format!("`{name}` = {v} is not a step count"),
        });
    }
    Ok(v as u64)
}

/// A positive damping, or a clear error.
pub fn damping_positive(v: f64) -> Result<f64> {
    crate::error::check::positive("damping", v)
}

/// An update or inversion interval of at least 1.
pub fn interval(name: &str, v: Option<usize>) -> Result<usize> {
    crate::error::check::at_least(name, v.unwrap_or(1), 1)
}

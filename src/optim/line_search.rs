//! The grid line search of the paper's ENGD and KFAC: try `θ + η·d` for η = 2^k,
//! k = k_min..=0, on the current batch's loss (value pass only) and keep the best; if
//! none improves on η = 0, take no step.

use crate::backend::Backend;
use crate::error::Result;
use crate::loss::Objective;
use crate::scalar::Real;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineSearchResult {
    /// Chosen step size (0 if no candidate lowered the loss).
    pub eta: f64,
    /// Loss after the step.
    pub loss: f64,
}

/// Grid line search along `dir` from `params` (left at `params + η* dir` on return).
/// `loss0` is the loss at `params`; `trial` is scratch of the parameter size.
pub fn grid_line_search<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &mut B::Buf<T>,
    dir: &B::Buf<T>,
    loss0: f64,
    k_min: i32,
    trial: &mut B::Buf<T>,
) -> Result<LineSearchResult> {
    let be = obj.backend().clone();
    let n = be.len(params);
    let mut best = LineSearchResult {
        eta: 0.0,
        loss: loss0,
    };
    for k in k_min..=0 {
        let eta = 2f64.powi(k);
        be.copy(params, 0, trial, 0, n)?;
        be.axpby(T::from_f64(eta), dir, T::ONE, trial)?;
        // A non-finite trial loss is a rejected candidate, not an error.
        let l = match obj.loss(trial) {
            Ok(l) => l,
            Err(crate::Error::NonFinite(_)) => continue,
            Err(e) => return Err(e),
        };
        if l < best.loss {
            best = LineSearchResult { eta, loss: l };
        }
    }
    if best.eta > 0.0 {
        be.axpby(T::from_f64(best.eta), dir, T::ONE, params)?;
    }
    Ok(best)
}

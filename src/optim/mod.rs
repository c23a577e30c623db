//! Optimizers. Each one implements [`Optimizer`]: a step reads as a list of named stages
//! (gradient, curvature, direction, step size, update). Hyperparameters arrive in one
//! [`OptimizerConfig`] (CLI flags, TOML, presets) and are validated at construction.
//!
//! Checked by `tests/optim_second_order.rs` (every second-order step against dense
//! reconstructions, L-BFGS's line search against the strong-Wolfe conditions, state round
//! trips, validation), `tests/train.rs` (Adam on Poisson 2d), `tests/kernels.rs` (the
//! Adam and SGD update kernels against their CPU twins) and `tests/resume.rs`.

mod adam;
mod hig;
mod line_search;
mod sgd;
// issue 3: second-order optimizers
mod engd;
mod hessian_free;
mod kfac;
mod lbfgs;
mod util;

pub use adam::Adam;
pub use hig::{Hig, SvdDirection, SvdInfo};
pub use line_search::{grid_line_search, LineSearchResult};
pub use sgd::Sgd;
// issue 3
pub use engd::{Engd, EngdWoodbury};
pub use hessian_free::HessianFree;
pub use kfac::{kfac_star_coefficients, Kfac, KfacMode, KFAC_STAR_FIRST_LR, LINE_SEARCH_K_MIN};
pub use lbfgs::Lbfgs;

use crate::backend::Backend;
use crate::curvature::GramianKind;
use crate::error::{Error, Result};
use crate::loss::Objective;
use crate::scalar::Real;

/// What one step did, for logs.
#[derive(Clone, Debug, Default)]
pub struct StepInfo {
    /// Loss at the parameters before the step (on the current batch).
    pub loss: f64,
    /// Step size actually used (learning rate or line-search result), if meaningful.
    pub lr: Option<f64>,
    /// Other named figures (damping, CG iterations, α/μ of KFAC*, …).
    pub extra: Vec<(&'static str, f64)>,
}

/// Optimizer state as named host arrays, for checkpoints.
pub type State = Vec<(String, Vec<f64>)>;

pub trait Optimizer<B: Backend, T: Real>: Send {
    fn name(&self) -> &'static str;
    /// One step on the objective's current points; updates `params` in place.
    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo>;
    /// Called when the training points change (resampling).
    fn points_changed(&mut self) {}
    /// The optimizer's state (moments, factors, history, counters) for checkpoints.
    fn state(&self, be: &B) -> Result<State>;
    /// Restore what [`Optimizer::state`] returned.
    fn load_state(&mut self, be: &B, state: &State) -> Result<()>;
}

/// Hyperparameters of every optimizer; each one reads the fields it uses and rejects
/// out-of-range values. Unset fields take the optimizer's defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Learning rate (SGD, Adam, L-BFGS; fixed step for others when set).
    pub lr: Option<f64>,
    /// Momentum (SGD heavy ball, KFAC's `m = μm + Δ`).
    pub momentum: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub eps: Option<f64>,
    /// Damping λ (KFAC factors, ENGD, Hessian-free initial damping, HIG/GN).
    pub damping: Option<f64>,
    /// Exponential moving average factor of curvature estimates, in [0, 1).
    pub ema: Option<f64>,
    /// Start curvature estimates at the identity instead of zero.
    pub init_identity: Option<bool>,
    /// Recompute curvature every this many steps.
    pub update_interval: Option<usize>,
    /// Re-invert curvature every this many steps.
    pub inverse_interval: Option<usize>,
    /// Maximum conjugate-gradient iterations (Hessian-free).
    pub cg_iters: Option<usize>,
    /// L-BFGS history size.
    pub history: Option<usize>,
    /// HIG/GN: relative singular-value cut-off τ in (0, 1).
    pub tau: Option<f64>,
    /// HIG/GN: exponent κ of Σ^{-κ} in (0, 1].
    pub kappa: Option<f64>,
}

/// Names accepted by `--optimizer`.
pub const OPTIMIZER_NAMES: &[&str] = &[
    "sgd",
    "adam",
    // issue 3
    "kfac",
    "kfac-star",
    "engd",
    "engd-layer",
    "engd-diag",
    "engd-woodbury",
    "hessian-free",
    "lbfgs",
    // issue 4
    "hig",
    "gn",
];

/// Build an optimizer by name for a network with `n_params` parameters.
pub fn build<B: Backend, T: Real>(
    name: &str,
    cfg: &OptimizerConfig,
    be: &B,
    n_params: usize,
) -> Result<Box<dyn Optimizer<B, T>>> {
    Ok(match name {
        "sgd" => Box::new(Sgd::new(be, n_params, cfg)?),
        "adam" => Box::new(Adam::new(be, n_params, cfg)?),
        // issue 3
        "kfac" => Box::new(Kfac::new(cfg, KfacMode::LineSearch)?),
        "kfac-star" => Box::new(Kfac::new(cfg, KfacMode::Star)?),
        "engd" => Box::new(Engd::new(cfg, GramianKind::Full)?),
        "engd-layer" => Box::new(Engd::new(cfg, GramianKind::Layer)?),
        "engd-diag" => Box::new(Engd::new(cfg, GramianKind::Diagonal)?),
        "engd-woodbury" => Box::new(EngdWoodbury::new(be, n_params, cfg)?),
        "hessian-free" => Box::new(HessianFree::new(be, n_params, cfg)?),
        "lbfgs" => Box::new(Lbfgs::new(be, n_params, cfg)?),
        // issue 4
        "hig" => Box::new(Hig::new(be, n_params, cfg)?),
        "gn" => Box::new(Hig::gauss_newton(be, n_params, cfg)?),
        _ => return Err(Error::unknown("optimizer", name, OPTIMIZER_NAMES)),
    })
}

/// Reject configuration fields an optimizer does not use, so a typo'd preset or flag
/// does not silently do nothing.
pub(crate) fn only_fields(opt: &str, cfg: &OptimizerConfig, allowed: &[&str]) -> Result<()> {
    for (k, val) in cfg.set_fields() {
        if !allowed.contains(&k) {
            return Err(Error::invalid(
                k,
                val,
                format!(
                    "unset for optimizer `{opt}` (it uses: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Invoke the macro `$m` with the names of all [`OptimizerConfig`] fields, so that code
/// which must treat every field alike (listing the set ones, overlaying flags) cannot
/// miss one.
#[macro_export]
macro_rules! for_each_optimizer_field {
    ($m:ident) => {
        $m! {
            lr,
            momentum,
            beta1,
            beta2,
            eps,
            damping,
            ema,
            init_identity,
            update_interval,
            inverse_interval,
            cg_iters,
            history,
            tau,
            kappa
        }
    };
}

/// The names of the [`OptimizerConfig`] fields as constants, generated from
/// [`for_each_optimizer_field!`], so an optimizer's list of the fields it uses
/// ([`only_fields`]) cannot name a field that does not exist.
#[allow(non_upper_case_globals)]
pub mod field {
    macro_rules! names {
        ($($f:ident),*) => { $( pub const $f: &str = stringify!($f); )* };
    }
    crate::for_each_optimizer_field!(names);
}

impl OptimizerConfig {
    /// The fields that are set, with their values as text (NaN included: a set NaN is
    /// still set and must be reported, not silently dropped).
    pub fn set_fields(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        macro_rules! push {
            ($($f:ident),*) => { $( if let Some(x) = &self.$f { v.push((stringify!($f), format!("{x}"))); } )* };
        }
        crate::for_each_optimizer_field!(push);
        v
    }
}

/// Read one named array of a saved state.
pub(crate) fn state_get<'a>(state: &'a State, name: &str, len: usize) -> Result<&'a [f64]> {
    let v = state
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
        .ok_or_else(|| Error::Format {
            path: "optimizer state".into(),
            msg: format!("missing `{name}`"),
        })?;
    if v.len() != len {
        return Err(Error::Format {
            path: "optimizer state".into(),
            msg: format!("`{name}` has {} values, expected {len}", v.len()),
        });
    }
    Ok(v)
}

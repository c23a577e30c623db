//! Optimizers. Each one implements [`Optimizer`]: a step reads as a list of named stages
//! (gradient, curvature, direction, step size, update). Hyperparameters arrive in one
//! [`OptimizerConfig`] (CLI flags, TOML, presets) and are validated at construction
//! ([`build`], from the objective whose network the optimizer's buffers are sized for),
//! or alone by the same checks ([`validate`]).
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

/// An optimizer chosen by name, with its hyperparameters checked: where [`validate`]
/// stops and what [`build`] builds from, so that both run the same checks.
enum Checked {
    Sgd(sgd::Settings),
    Adam(adam::Settings),
    Kfac(kfac::Settings),
    Engd(engd::Settings),
    EngdWoodbury(engd::WoodburySettings),
    HessianFree(hessian_free::Settings),
    Lbfgs(lbfgs::Settings),
    Hig(hig::Settings),
}

fn check(name: &str, cfg: &OptimizerConfig) -> Result<Checked> {
    Ok(match name {
        "sgd" => Checked::Sgd(sgd::Settings::new(cfg)?),
        "adam" => Checked::Adam(adam::Settings::new(cfg)?),
        // issue 3
        "kfac" => Checked::Kfac(kfac::Settings::new(cfg, KfacMode::LineSearch)?),
        "kfac-star" => Checked::Kfac(kfac::Settings::new(cfg, KfacMode::Star)?),
        "engd" => Checked::Engd(engd::Settings::new(cfg, GramianKind::Full)?),
        "engd-layer" => Checked::Engd(engd::Settings::new(cfg, GramianKind::Layer)?),
        "engd-diag" => Checked::Engd(engd::Settings::new(cfg, GramianKind::Diagonal)?),
        "engd-woodbury" => Checked::EngdWoodbury(engd::WoodburySettings::new(cfg)?),
        "hessian-free" => Checked::HessianFree(hessian_free::Settings::new(cfg)?),
        "lbfgs" => Checked::Lbfgs(lbfgs::Settings::new(cfg)?),
        // issue 4
        "hig" => Checked::Hig(hig::Settings::hig(cfg)?),
        "gn" => Checked::Hig(hig::Settings::gauss_newton(cfg)?),
        _ => return Err(Error::unknown("optimizer", name, OPTIMIZER_NAMES)),
    })
}

/// Check an optimizer's name and hyperparameters without building it (no network or
/// backend needed: presets are checked so): the checks [`build`] runs first.
pub fn validate(name: &str, cfg: &OptimizerConfig) -> Result<()> {
    check(name, cfg).map(drop)
}

/// Build an optimizer by name for the objective: its backend, its network (the buffers,
/// factors, Gramians and passes are sized for it) and its number of loss terms.
pub fn build<B: Backend, T: Real>(
    name: &str,
    cfg: &OptimizerConfig,
    obj: &Objective<B, T>,
) -> Result<Box<dyn Optimizer<B, T>>> {
    let (be, n) = (obj.backend(), obj.mlp().num_params());
    Ok(match check(name, cfg)? {
        Checked::Sgd(s) => Box::new(Sgd::from_settings(be, n, s)?),
        Checked::Adam(s) => Box::new(Adam::from_settings(be, n, s)?),
        Checked::Kfac(s) => Box::new(Kfac::from_settings(obj, s)?),
        Checked::Engd(s) => Box::new(Engd::from_settings(obj, s)?),
        Checked::EngdWoodbury(s) => Box::new(EngdWoodbury::from_settings(be, n, s)?),
        Checked::HessianFree(s) => Box::new(HessianFree::from_settings(obj, s)?),
        Checked::Lbfgs(s) => Box::new(Lbfgs::from_settings(be, n, s)?),
        Checked::Hig(s) => Box::new(Hig::from_settings(be, n, s)?),
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

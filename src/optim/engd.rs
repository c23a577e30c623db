//! Energy natural gradient descent (Müller & Zeinhofer 2023; docs/paper-setups.md §2.2):
//! `θ ← θ − η (G + λI)⁺ ∇L` with the Gramian `G = JᵀJ` of the scaled residual Jacobian,
//! an EMA on the Gramian (optionally starting at the identity), a minimum-norm solve
//! (the pseudo-inverse, as LAPACK `gelsd` gives it) and the grid line search.
//!
//! * `engd` (full `P × P`), `engd-layer` (one block per layer), `engd-diag` (diagonal);
//! * `engd-woodbury`: the same full-Gramian step in sample space,
//!   `Δ = −Jᵀ (JJᵀ + λI)⁺ r̃` (equal to `−(G + λI)⁻¹ ∇L` for λ > 0, and to the min-norm
//!   `−G⁺∇L` for λ = 0), cheaper when the number of residuals M is below P. No EMA.
//!
//! The Gramian and the gradient come from one sweep (per-chunk Jacobian rows and
//! symmetric rank-k updates on the backend); the minimum-norm solves run on the backend
//! too, in f64 ([`SymSolve`]: eigendecomposition, pseudo-inverse cut, two products).
//!
//! Checked by `tests/optim_second_order.rs` (the direction against a dense solve, loss
//! decrease, accuracy on Poisson 2d, state round trip, validation).

use super::kfac::LINE_SEARCH_K_MIN;
use super::util::{count_entry, count_get, ensure_finite};
use super::{field, grid_line_search, only_fields, OptimizerConfig, State, StepInfo};
use crate::backend::{Backend, Lay, Tr};
use crate::curvature::{jacobian_into, Gramian, GramianKind, Jacobian, SymSolve};
use crate::error::{check, Error, Result};
use crate::loss::Objective;
use crate::scalar::Real;

/// ENGD's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    kind: GramianKind,
    damping: f64,
    ema: f64,
    identity: bool,
    lr: Option<f64>,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig, kind: GramianKind) -> Result<Self> {
        let name = match kind {
            GramianKind::Full => "engd",
            GramianKind::Layer => "engd-layer",
            GramianKind::Diagonal => "engd-diag",
        };
        only_fields(
            name,
            cfg,
            &[field::lr, field::damping, field::ema, field::init_identity],
        )?;
        Ok(Settings {
            kind,
            damping: check::non_negative("damping", cfg.damping.unwrap_or(0.0))?,
            ema: check::unit_half_open("ema", cfg.ema.unwrap_or(0.0))?,
            identity: cfg.init_identity.unwrap_or(false),
            lr: cfg.lr.map(|v| check::positive("lr", v)).transpose()?,
        })
    }
}

pub struct Engd<B: Backend, T: Real> {
    kind: GramianKind,
    damping: f64,
    ema: f64,
    lr: Option<f64>,
    step: u64,
    gram: Gramian<B, T>,
    /// One solver per Gramian block.
    solvers: Vec<SymSolve<B>>,
    grad: B::Buf<T>,
    dir: B::Buf<T>,
    trial: B::Buf<T>,
}

impl<B: Backend, T: Real> Engd<B, T> {
    /// ENGD for the objective's network.
    pub fn new(obj: &Objective<B, T>, cfg: &OptimizerConfig, kind: GramianKind) -> Result<Self> {
        Self::from_settings(obj, Settings::new(cfg, kind)?)
    }

    pub(super) fn from_settings(obj: &Objective<B, T>, s: Settings) -> Result<Self> {
        let be = obj.backend();
        let p = obj.mlp().num_params();
        let gram = Gramian::new(be, obj.mlp(), s.kind, s.identity)?;
        let diagonal = s.kind == GramianKind::Diagonal;
        let solvers = gram
            .blocks()
            .iter()
            .map(|&(_, n)| SymSolve::new(be, n, diagonal))
            .collect::<Result<_>>()?;
        Ok(Engd {
            kind: s.kind,
            damping: s.damping,
            ema: s.ema,
            lr: s.lr,
            step: 0,
            gram,
            solvers,
            grad: be.alloc(p)?,
            dir: be.alloc(p)?,
            trial: be.alloc(p)?,
        })
    }

    /// The current Gramian estimate.
    pub fn gramian(&self) -> &Gramian<B, T> {
        &self.gram
    }
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Engd<B, T> {
    fn name(&self) -> &'static str {
        match self.kind {
            GramianKind::Full => "engd",
            GramianKind::Layer => "engd-layer",
            GramianKind::Diagonal => "engd-diag",
        }
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();

        // gradient and Gramian (EMA) in one sweep
        let loss = self.gram.update(obj, params, self.ema, &mut self.grad)?;

        // direction Δ = −(G + λI)⁺ ∇L: minimum-norm solves per block, on the backend
        for (b, &(off, _)) in self.gram.blocks().iter().enumerate() {
            let (g, g_off) = self.gram.block_data(b);
            self.solvers[b].solve(
                &be,
                g,
                g_off,
                self.damping,
                &self.grad,
                off,
                &mut self.dir,
                off,
                "ENGD Gramian",
            )?;
        }
        be.scale(-T::ONE, &mut self.dir)?;

        // step size and update
        let (dir, trial) = (&self.dir, &mut self.trial);
        step_along(obj, params, dir, loss, self.lr, trial, &mut self.step)
    }

    fn state(&self, be: &B) -> Result<State> {
        let mut s = vec![count_entry("step", self.step)];
        s.extend(self.gram.state(be, "gramian")?);
        Ok(s)
    }

    fn load_state(&mut self, be: &B, s: &State) -> Result<()> {
        self.gram.load_state(be, "gramian", s)?;
        self.step = count_get(s, "step")?;
        Ok(())
    }
}

/// The ENGD update `θ ← θ + η Δ` along the direction `dir`: a fixed `lr` or, without one,
/// the grid line search on the batch loss; counts the step. Fails if the direction or
/// the new parameters are not finite.
fn step_along<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &mut B::Buf<T>,
    dir: &B::Buf<T>,
    loss: f64,
    lr: Option<f64>,
    trial: &mut B::Buf<T>,
    step: &mut u64,
) -> Result<StepInfo> {
    let be = obj.backend().clone();
    ensure_finite(&be, dir, "ENGD direction")?;
    let eta = match lr {
        Some(lr) => {
            be.axpby(T::from_f64(lr), dir, T::ONE, params)?;
            lr
        }
        None => grid_line_search(obj, params, dir, loss, LINE_SEARCH_K_MIN, trial)?.eta,
    };
    ensure_finite(&be, params, "parameters after the ENGD update")?;
    *step += 1;
    Ok(StepInfo {
        loss,
        lr: Some(eta),
        extra: vec![],
    })
}

/// ENGD in sample space: `Δ = −Jᵀ (JJᵀ + λI)⁺ r̃`.
pub struct EngdWoodbury<B: Backend, T: Real> {
    damping: f64,
    lr: Option<f64>,
    step: u64,
    /// The Jacobian J and the scaled residuals r̃, reassembled in place every step.
    jac: Jacobian<B, T>,
    k: B::Buf<T>,
    y: B::Buf<T>,
    /// The sample-space solver, for the last number of residuals.
    solver: SymSolve<B>,
    dir: B::Buf<T>,
    trial: B::Buf<T>,
}

/// `engd-woodbury`'s hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct WoodburySettings {
    damping: f64,
    lr: Option<f64>,
}

impl WoodburySettings {
    pub(super) fn new(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields("engd-woodbury", cfg, &[field::lr, field::damping])?;
        Ok(WoodburySettings {
            damping: check::non_negative("damping", cfg.damping.unwrap_or(0.0))?,
            lr: cfg.lr.map(|v| check::positive("lr", v)).transpose()?,
        })
    }
}

impl<B: Backend, T: Real> EngdWoodbury<B, T> {
    pub fn new(be: &B, n_params: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n_params, WoodburySettings::new(cfg)?)
    }

    pub(super) fn from_settings(be: &B, n_params: usize, s: WoodburySettings) -> Result<Self> {
        Ok(EngdWoodbury {
            damping: s.damping,
            lr: s.lr,
            step: 0,
            jac: Jacobian::empty(be)?,
            k: be.alloc(0)?,
            y: be.alloc(0)?,
            solver: SymSolve::new(be, 0, false)?,
            dir: be.alloc(n_params)?,
            trial: be.alloc(n_params)?,
        })
    }
}

/// Refuse sample-space systems above this many bytes.
const MAX_WOODBURY_BYTES: usize = 16 << 30;

impl<B: Backend, T: Real> super::Optimizer<B, T> for EngdWoodbury<B, T> {
    fn name(&self) -> &'static str {
        "engd-woodbury"
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        let p = obj.mlp().num_params();
        let m = obj.num_residuals();
        let bytes = (m * p + m * m).saturating_mul(std::mem::size_of::<T>());
        if bytes > MAX_WOODBURY_BYTES {
            return Err(Error::Device(format!(
                "engd-woodbury needs {:.1} GiB for {m} residuals and {p} parameters",
                bytes as f64 / (1u64 << 30) as f64
            )));
        }
        if be.len(&self.y) != m {
            self.k = be.alloc(m * m)?;
            self.y = be.alloc(m)?;
            self.solver = SymSolve::new(&be, m, false)?;
        }

        // Jacobian and scaled residuals, on the backend
        jacobian_into(obj, params, &mut self.jac)?;
        let loss = 0.5 * be.dot(&self.jac.r, &self.jac.r)?;
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }

        // sample-space curvature JJᵀ + λI
        let jl = Lay::dense(m, p);
        be.gemm(
            T::ONE,
            &self.jac.j,
            jl,
            Tr::N,
            &self.jac.j,
            jl,
            Tr::T,
            T::ZERO,
            &mut self.k,
            Lay::dense(m, m),
        )?;

        // direction Δ = −Jᵀ (JJᵀ + λI)⁺ r̃ (the solve on the backend, in f64)
        self.solver.solve(
            &be,
            &self.k,
            0,
            self.damping,
            &self.jac.r,
            0,
            &mut self.y,
            0,
            "ENGD sample-space Gramian",
        )?;
        be.gemm(
            -T::ONE,
            &self.jac.j,
            jl,
            Tr::T,
            &self.y,
            Lay::dense(m, 1),
            Tr::N,
            T::ZERO,
            &mut self.dir,
            Lay::dense(p, 1),
        )?;

        // step size and update
        let (dir, trial) = (&self.dir, &mut self.trial);
        step_along(obj, params, dir, loss, self.lr, trial, &mut self.step)
    }

    fn state(&self, _be: &B) -> Result<State> {
        Ok(vec![count_entry("step", self.step)])
    }

    fn load_state(&mut self, _be: &B, s: &State) -> Result<()> {
        self.step = count_get(s, "step")?;
        Ok(())
    }
}

//! KFAC and KFAC* for PINN losses (Dangel, Müller, Zeinhofer 2024; docs/paper-setups.md
//! §2.1): per-layer Kronecker factors for the interior and the boundary term from the
//! forward-Laplacian jets, EMA `X ← βX + (1−β)X_new`, the same damping λ on all four
//! factors, and the exact inverse of the two-term Kronecker sum.
//!
//! * `kfac`: direction `Δ = −K⁻¹∇L`, momentum `m = μm + Δ`, then the grid line search
//!   `η ∈ {2^k, k = −30..0}` on the batch loss (or a fixed `lr`).
//! * `kfac-star` (Martens & Grosse 2015, §7): `δ_t = αΔ + μδ_{t−1}` with `(α, μ)` minimising
//!   the damped quadratic model `½ dᵀ(G + λI)d + ∇Lᵀd` over `d ∈ span(Δ, δ_{t−1})`, with the
//!   exact Gramian reached by Jacobian-vector products; the first step is `10⁻⁶ Δ` as in
//!   the paper's code. The products reuse the layer inputs and cotangents of the
//!   gradient pass ([`JacobianStore`]) when they fit in memory, else two tangent passes.
//!
//! Inverse problems (design §7): the coefficients get a dense block of their own,
//! `G_cc = Σ w/N (∂r/∂c)ᵀ(∂r/∂c)` from the same pass, EMA'd like the factors, damped by
//! λ and solved exactly (block-diagonal with the layers); KFAC*'s two-direction model
//! runs over the whole vector.
//!
//! Checked by `tests/optim_second_order.rs` (the step against a dense reconstruction of
//! the KFAC matrix and the 2×2 model, loss decrease, accuracy on Poisson 2d, state
//! round trip, validation) and the curvature tests.

use super::util::{
    count_entry, count_get, damping_positive, ensure_finite, finite_scalar, interval, warn_once,
};
use super::{field, grid_line_search, only_fields, OptimizerConfig, State, StepInfo};
use crate::backend::Backend;
use crate::curvature::linalg::pinv_solve;
use crate::curvature::{
    jvp_gram, DeviceFactors, JacobianStore, KfacFactors, KfacInverse, KfacPass, DEFAULT_STORE_BYTES,
};
use crate::error::{check, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

/// The grid line search's smallest exponent (2^-30), as in the paper's code.
pub const LINE_SEARCH_K_MIN: i32 = -30;
/// KFAC*'s fixed step size on its first step.
pub const KFAC_STAR_FIRST_LR: f64 = 1e-6;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KfacMode {
    /// Momentum and grid line search (`kfac`).
    LineSearch,
    /// Step size and momentum from the quadratic model (`kfac-star`).
    Star,
}

/// KFAC's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    mode: KfacMode,
    damping: f64,
    ema: f64,
    identity: bool,
    update_interval: usize,
    inverse_interval: usize,
    momentum: f64,
    lr: Option<f64>,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig, mode: KfacMode) -> Result<Self> {
        let (name, fields): (&str, &[&str]) = match mode {
            KfacMode::LineSearch => (
                "kfac",
                &[
                    field::lr,
                    field::momentum,
                    field::damping,
                    field::ema,
                    field::init_identity,
                    field::update_interval,
                    field::inverse_interval,
                ],
            ),
            KfacMode::Star => (
                "kfac-star",
                &[
                    field::damping,
                    field::ema,
                    field::init_identity,
                    field::update_interval,
                    field::inverse_interval,
                ],
            ),
        };
        only_fields(name, cfg, fields)?;
        Ok(Settings {
            mode,
            damping: damping_positive(cfg.damping.unwrap_or(1e-10))?,
            ema: check::unit_half_open("ema", cfg.ema.unwrap_or(0.95))?,
            momentum: check::unit_half_open("momentum", cfg.momentum.unwrap_or(0.0))?,
            lr: cfg.lr.map(|v| check::positive("lr", v)).transpose()?,
            identity: cfg.init_identity.unwrap_or(true),
            update_interval: interval("update_interval", cfg.update_interval)?,
            inverse_interval: interval("inverse_interval", cfg.inverse_interval)?,
        })
    }
}

pub struct Kfac<B: Backend, T: Real> {
    mode: KfacMode,
    damping: f64,
    ema: f64,
    update_interval: usize,
    inverse_interval: usize,
    momentum: f64,
    lr: Option<f64>,
    step: u64,
    /// The momentum buffer / previous update holds a value.
    started: bool,
    warned: bool,
    pass: KfacPass<B, T>,
    factors: DeviceFactors<B>,
    batch: DeviceFactors<B>,
    inverse: KfacInverse<B, T>,
    grad: B::Buf<T>,
    dir: B::Buf<T>,
    /// KFAC: the momentum buffer m; KFAC*: the previous update δ.
    mom: B::Buf<T>,
    trial: B::Buf<T>,
    /// KFAC*: the pass's layer inputs and cotangents, for `JΔ` and `Jδ` (memory-limited;
    /// above the limit: tangent passes).
    store: JacobianStore<B, T>,
    /// The coefficients' Gauss–Newton block, EMA'd (`K × K`; empty without coefficients).
    coef_block: Vec<f64>,
}

/// Solve KFAC*'s 2×2 damped quadratic model for `(α, μ)`.
///
/// `gram` = `[ΔᵀGΔ, ΔᵀGδ, δᵀGΔ, δᵀGδ]`, `dots` = `[ΔᵀΔ, Δᵀδ, δᵀδ]`, `g_dots` =
/// `[∇Lᵀ Δ, ∇Lᵀ δ]`. If δ adds nothing (zero, or parallel to Δ) the model is solved along
/// Δ alone (μ = 0).
pub fn kfac_star_coefficients(
    gram: [f64; 4],
    dots: [f64; 3],
    g_dots: [f64; 2],
    damping: f64,
) -> Result<(f64, f64)> {
    let m00 = gram[0] + damping * dots[0];
    let m01 = 0.5 * (gram[1] + gram[2]) + damping * dots[1];
    let m11 = gram[3] + damping * dots[2];
    let (b0, b1) = (-g_dots[0], -g_dots[1]);
    for (v, what) in [
        (m00, "ΔᵀGΔ"),
        (m01, "ΔᵀGδ"),
        (m11, "δᵀGδ"),
        (b0, "∇LᵀΔ"),
        (b1, "∇Lᵀδ"),
    ] {
        finite_scalar(v, &format!("KFAC* quadratic model entry {what}"))?;
    }
    if m00 <= 0.0 {
        // Δ = 0 (zero gradient): nothing to do
        return Ok((0.0, 0.0));
    }
    let det = m00 * m11 - m01 * m01;
    if m11 > 0.0 && det > 1e-12 * m00 * m11 {
        Ok(((b0 * m11 - m01 * b1) / det, (m00 * b1 - m01 * b0) / det))
    } else {
        Ok((b0 / m00, 0.0))
    }
}

impl<B: Backend, T: Real> Kfac<B, T> {
    /// KFAC for the objective's network and loss terms (1 or 2).
    pub fn new(obj: &Objective<B, T>, cfg: &OptimizerConfig, mode: KfacMode) -> Result<Self> {
        Self::from_settings(obj, Settings::new(cfg, mode)?)
    }

    pub(super) fn from_settings(obj: &Objective<B, T>, s: Settings) -> Result<Self> {
        let be = obj.backend();
        let mlp = obj.mlp();
        let p = mlp.num_params();
        let nt = obj.num_terms();
        Ok(Kfac {
            mode: s.mode,
            damping: s.damping,
            ema: s.ema,
            update_interval: s.update_interval,
            inverse_interval: s.inverse_interval,
            momentum: s.momentum,
            lr: s.lr,
            step: 0,
            started: false,
            warned: false,
            pass: KfacPass::new(mlp, nt)?,
            factors: DeviceFactors::new(be, mlp, nt, s.identity)?,
            batch: DeviceFactors::new(be, mlp, nt, false)?,
            inverse: KfacInverse::new(be, mlp)?,
            grad: be.alloc(p)?,
            dir: be.alloc(p)?,
            mom: be.alloc(p)?,
            trial: be.alloc(p)?,
            store: JacobianStore::new(be, DEFAULT_STORE_BYTES)?,
            coef_block: {
                let k = mlp.num_coefs();
                let mut b = vec![0.0; k * k];
                if s.identity {
                    (0..k).for_each(|i| b[i * k + i] = 1.0);
                }
                b
            },
        })
    }

    /// The coefficients' part of the direction: `−(G_cc + λI)⁻¹ ∇_c L` into `dir`'s
    /// coefficient entries (nothing without coefficients).
    fn coef_direction(&mut self, obj: &Objective<B, T>) -> Result<()> {
        let k = obj.num_coefs();
        if k == 0 {
            return Ok(());
        }
        let mut m = self.coef_block.clone();
        (0..k).for_each(|i| m[i * k + i] += self.damping);
        let g = obj.coef_part(&self.grad)?;
        let (x, _) = pinv_solve(k, &m, &g, None, "KFAC coefficient block")?;
        let d: Vec<f64> = x.iter().map(|v| -v).collect();
        obj.set_coef_part(&mut self.dir, &d)
    }

    /// Limit the memory KFAC* may use to keep the gradient pass's layer inputs and
    /// cotangents for its Jacobian-vector products (default [`DEFAULT_STORE_BYTES`]);
    /// above it, `JΔ` and `Jδ` come from two tangent passes.
    pub fn with_store_limit(mut self, bytes: usize) -> Self {
        self.store.set_limit(bytes);
        self
    }

    /// A host copy of the EMA'd factors, e.g. for inspection.
    pub fn factors(&self, be: &B) -> Result<KfacFactors> {
        self.factors.download(be)
    }
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Kfac<B, T> {
    fn name(&self) -> &'static str {
        match self.mode {
            KfacMode::LineSearch => "kfac",
            KfacMode::Star => "kfac-star",
        }
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        let damping = self.damping;
        let update_factors = self.step.is_multiple_of(self.update_interval as u64);
        let update_inverse = self.step.is_multiple_of(self.inverse_interval as u64);
        let mut extra = Vec::new();

        // gradient and curvature: one forward and backward sweep (KFAC* also keeps the
        // layer inputs and cotangents for its Jacobian-vector products when they fit)
        let batch = update_factors.then_some(&mut self.batch);
        let keep = (self.mode == KfacMode::Star && self.started).then_some(&mut self.store);
        let loss = self.pass.run(obj, params, &mut self.grad, batch, keep)?;
        if update_factors {
            self.factors.ema(&be, &self.batch, self.ema)?;
            let beta = self.ema;
            let new = self.pass.coef_block();
            for (x, &n) in self.coef_block.iter_mut().zip(new) {
                *x = beta * *x + (1.0 - beta) * n;
            }
        }

        // inverse of the damped Kronecker sum
        if update_inverse {
            let clamped = self.inverse.update(&be, &self.factors, damping)?;
            if clamped > 0 {
                extra.push(("clamped_eigenvalues", clamped as f64));
                warn_once(&mut self.warned, || {
                    format!("KFAC factors are numerically singular or indefinite: {clamped} eigenvalues clamped (consider a larger damping)")
                });
            }
        }

        // direction Δ = −K⁻¹∇L
        self.inverse.apply(&be, &self.grad, &mut self.dir, -1.0)?;
        self.coef_direction(obj)?;
        ensure_finite(&be, &self.dir, "KFAC direction")?;

        let lr = match self.mode {
            KfacMode::LineSearch => {
                // momentum m = μm + Δ (m = Δ on the first step)
                let mu = if self.started { self.momentum } else { 0.0 };
                be.axpby(T::ONE, &self.dir, T::from_f64(mu), &mut self.mom)?;
                self.started = true;
                // step size and update
                match self.lr {
                    Some(lr) => {
                        be.axpby(T::from_f64(lr), &self.mom, T::ONE, params)?;
                        lr
                    }
                    None => {
                        grid_line_search(
                            obj,
                            params,
                            &self.mom,
                            loss,
                            LINE_SEARCH_K_MIN,
                            &mut self.trial,
                        )?
                        .eta
                    }
                }
            }
            KfacMode::Star => {
                // step size and momentum from the quadratic model (exact Gramian products)
                let (alpha, mu) = if self.started {
                    let vs = [&self.dir, &self.mom];
                    let gram = if self.store.is_valid() {
                        self.store.jvp_gram(&be, &vs)?
                    } else {
                        jvp_gram(obj, params, &vs)?
                    };
                    self.store.invalidate();
                    let dots = [
                        be.dot(&self.dir, &self.dir)?,
                        be.dot(&self.dir, &self.mom)?,
                        be.dot(&self.mom, &self.mom)?,
                    ];
                    let g_dots = [
                        be.dot(&self.grad, &self.dir)?,
                        be.dot(&self.grad, &self.mom)?,
                    ];
                    kfac_star_coefficients(
                        [gram[0], gram[1], gram[2], gram[3]],
                        dots,
                        g_dots,
                        damping,
                    )?
                } else {
                    (KFAC_STAR_FIRST_LR, 0.0)
                };
                extra.push(("alpha", alpha));
                extra.push(("mu", mu));
                // update δ = αΔ + μδ, θ += δ
                be.axpby(
                    T::from_f64(alpha),
                    &self.dir,
                    T::from_f64(mu),
                    &mut self.mom,
                )?;
                self.started = true;
                be.axpby(T::ONE, &self.mom, T::ONE, params)?;
                alpha
            }
        };
        ensure_finite(&be, params, "parameters after the KFAC update")?;
        self.step += 1;
        Ok(StepInfo {
            loss,
            lr: Some(lr),
            extra,
        })
    }

    fn state(&self, be: &B) -> Result<State> {
        let mut s = vec![
            count_entry("step", self.step),
            count_entry("started", u64::from(self.started)),
            ("momentum".into(), convert(&be.download(&self.mom)?)),
        ];
        s.extend(self.factors.download(be)?.state("factor_"));
        s.extend(self.inverse.state(be, "inverse_")?);
        if !self.coef_block.is_empty() {
            s.push(("coef_block".into(), self.coef_block.clone()));
        }
        Ok(s)
    }

    fn load_state(&mut self, be: &B, s: &State) -> Result<()> {
        let mut host = self.factors.download(be)?;
        host.load_state("factor_", s)?;
        self.factors.load(be, &host)?;
        self.inverse.load_state(be, "inverse_", s)?;
        let n = be.len(&self.mom);
        let m = super::state_get(s, "momentum", n)?;
        self.mom = be.upload(&convert::<f64, T>(m))?;
        self.step = count_get(s, "step")?;
        self.started = count_get(s, "started")? != 0;
        if !self.coef_block.is_empty() {
            let n = self.coef_block.len();
            self.coef_block = super::state_get(s, "coef_block", n)?.to_vec();
        }
        Ok(())
    }
}

//! Hessian-free optimisation with the Gauss–Newton matrix (Martens 2010; the settings of
//! the paper's baseline, docs/paper-setups.md §2.3): truncated conjugate gradients on
//! `(G + λI) x = −∇L` with matrix-free Gramian-vector products (from the gradient pass's
//! kept layer inputs and cotangents, [`JacobianStore::gvp`], when they fit in memory;
//! else a tangent and a reverse pass each),
//! warm start from the previous solution times 0.95, Martens' relative-progress
//! termination, CG backtracking over the iterates kept at `⌈1.3^j⌉`, Levenberg–Marquardt
//! adaptation of λ from the reduction ratio, and an Armijo backtracking line search.
//!
//! Checked by `tests/optim_second_order.rs` (loss decrease, CG against a dense solve on a
//! small problem through the full step, state round trip, validation).

use super::util::{count_entry, count_get, ensure_finite, finite_scalar};
use super::{field, only_fields, OptimizerConfig, State, StepInfo};
use crate::backend::Backend;
use crate::curvature::{gvp, GradStorePass, JacobianStore, DEFAULT_STORE_BYTES};
use crate::error::{check, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

/// Warm-start decay of the previous CG solution.
const CG_DECAY: f64 = 0.95;
/// Martens' progress threshold.
const CG_PROGRESS_TOL: f64 = 1e-4;
/// Residual tolerance relative to ‖b‖.
const CG_RESIDUAL_TOL: f64 = 1e-5;
/// Armijo line search: sufficient decrease, shrink factor, tries.
const ARMIJO_C: f64 = 1e-2;
const ARMIJO_SHRINK: f64 = 0.8;
const ARMIJO_TRIES: usize = 20;

pub struct HessianFree<B: Backend, T: Real> {
    damping: f64,
    lr: f64,
    cg_iters: usize,
    step: u64,
    grad: B::Buf<T>,
    /// The last CG solution (warm start).
    x: B::Buf<T>,
    r: B::Buf<T>,
    p: B::Buf<T>,
    ap: B::Buf<T>,
    trial: B::Buf<T>,
    /// Kept iterates for backtracking (reused across steps).
    kept: Vec<B::Buf<T>>,
    /// The gradient pass that also keeps its layer inputs and cotangents, so that the
    /// step's `G v` products need no passes through the network.
    pass: GradStorePass<B, T>,
    store: JacobianStore<B, T>,
}

/// Hessian-free's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    damping: f64,
    lr: f64,
    cg_iters: usize,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields(
            "hessian-free",
            cfg,
            &[field::lr, field::damping, field::cg_iters],
        )?;
        Ok(Settings {
            damping: check::positive("damping", cfg.damping.unwrap_or(1.0))?,
            lr: check::positive("lr", cfg.lr.unwrap_or(1.0))?,
            cg_iters: check::at_least("cg_iters", cfg.cg_iters.unwrap_or(250), 1)?,
        })
    }
}

impl<B: Backend, T: Real> HessianFree<B, T> {
    /// Hessian-free for the objective's network.
    pub fn new(obj: &Objective<B, T>, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(obj, Settings::new(cfg)?)
    }

    pub(super) fn from_settings(obj: &Objective<B, T>, s: Settings) -> Result<Self> {
        let be = obj.backend();
        let n = obj.mlp().num_params();
        Ok(HessianFree {
            damping: s.damping,
            lr: s.lr,
            cg_iters: s.cg_iters,
            step: 0,
            grad: be.alloc(n)?,
            x: be.alloc(n)?,
            r: be.alloc(n)?,
            p: be.alloc(n)?,
            ap: be.alloc(n)?,
            trial: be.alloc(n)?,
            kept: Vec::new(),
            pass: GradStorePass::default(),
            store: JacobianStore::new(be, DEFAULT_STORE_BYTES)?,
        })
    }

    /// Limit the memory the stored gradient pass may use (default
    /// [`DEFAULT_STORE_BYTES`]); above it, every `G v` runs a forward, a tangent and a
    /// backward pass.
    pub fn with_store_limit(mut self, bytes: usize) -> Self {
        self.store.set_limit(bytes);
        self
    }

    /// The current (adapted) damping.
    pub fn damping(&self) -> f64 {
        self.damping
    }

    /// `out = (G + λI) v`, from the stored pass when it holds one.
    fn apply(
        obj: &mut Objective<B, T>,
        store: &mut JacobianStore<B, T>,
        params: &B::Buf<T>,
        damping: f64,
        v: &B::Buf<T>,
        out: &mut B::Buf<T>,
    ) -> Result<()> {
        if store.is_valid() {
            store.gvp(obj.backend(), v, out)?;
        } else {
            gvp(obj, params, v, out)?;
        }
        obj.backend().axpby(T::from_f64(damping), v, T::ONE, out)
    }

    /// Truncated CG on `(G + λI) x = b`, `b = −∇L` (in `self.grad` as `∇L`), warm-started at
    /// `0.95 ×` the previous solution, stopped by the residual test, Martens'
    /// relative-progress test or the iteration limit. Iterates are copied to `self.kept` at
    /// the `⌈1.3^j⌉` schedule and at the end; returns the iterations done and, per kept
    /// iterate, its iteration and model value `φ(x) = ½xᵀ(G+λI)x − bᵀx`.
    fn cg_solve(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        lam: f64,
        b_norm2: f64,
    ) -> Result<(usize, Vec<(usize, f64)>)> {
        let be = obj.backend().clone();
        let n = be.len(params);
        be.scale(T::from_f64(CG_DECAY), &mut self.x)?;
        // r = b − A x
        Self::apply(obj, &mut self.store, params, lam, &self.x, &mut self.ap)?;
        be.copy(&self.grad, 0, &mut self.r, 0, n)?;
        be.axpby(-T::ONE, &self.ap, -T::ONE, &mut self.r)?;
        be.copy(&self.r, 0, &mut self.p, 0, n)?;
        let mut rr = be.dot(&self.r, &self.r)?;
        // model value φ(x) = ½xᵀAx − bᵀx = −½ xᵀ(b + r), with b = −g
        let phi = |be: &B, x: &B::Buf<T>, r: &B::Buf<T>, g: &B::Buf<T>| -> Result<f64> {
            Ok(-0.5 * (be.dot(x, r)? - be.dot(x, g)?))
        };
        let mut phis = vec![phi(&be, &self.x, &self.r, &self.grad)?];
        let schedule = keep_schedule(self.cg_iters);
        let mut kept_info: Vec<(usize, f64)> = Vec::new();
        let mut iters = 0;
        for i in 1..=self.cg_iters {
            if rr <= (CG_RESIDUAL_TOL * CG_RESIDUAL_TOL) * b_norm2 {
                break;
            }
            Self::apply(obj, &mut self.store, params, lam, &self.p, &mut self.ap)?;
            let pap = be.dot(&self.p, &self.ap)?;
            finite_scalar(pap, "CG curvature pᵀ(G+λI)p")?;
            if pap <= 0.0 {
                break;
            }
            let alpha = rr / pap;
            be.axpby(T::from_f64(alpha), &self.p, T::ONE, &mut self.x)?;
            be.axpby(T::from_f64(-alpha), &self.ap, T::ONE, &mut self.r)?;
            let rr_new = be.dot(&self.r, &self.r)?;
            iters = i;
            let ph = phi(&be, &self.x, &self.r, &self.grad)?;
            phis.push(ph);
            let last = i == self.cg_iters;
            // Martens' relative-progress test over the last k iterations
            let k = (i / 10).max(10);
            let stop = i > k && {
                let (pi, pk, p0) = (phis[i], phis[i - k], phis[0]);
                pi < p0 && (pi - pk) / (pi - p0) < CG_PROGRESS_TOL
            };
            if schedule.contains(&i) || last || stop {
                self.keep_iterate(&be, n, &mut kept_info, i, ph)?;
            }
            if stop {
                break;
            }
            be.axpby(T::ONE, &self.r, T::from_f64(rr_new / rr), &mut self.p)?;
            rr = rr_new;
        }
        if kept_info.last().map(|k| k.0) != Some(iters) {
            // stopped on the residual test: keep the final iterate too
            let ph = *phis.last().expect("φ(x₀) is always there");
            self.keep_iterate(&be, n, &mut kept_info, iters, ph)?;
        }
        Ok((iters, kept_info))
    }

    /// Copy the current CG iterate into the next kept slot.
    fn keep_iterate(
        &mut self,
        be: &B,
        n: usize,
        kept: &mut Vec<(usize, f64)>,
        iter: usize,
        phi: f64,
    ) -> Result<()> {
        let slot = kept.len();
        if self.kept.len() <= slot {
            self.kept.push(be.alloc(n)?);
        }
        be.copy(&self.x, 0, &mut self.kept[slot], 0, n)?;
        kept.push((iter, phi));
        Ok(())
    }
}

/// The loss at a trial point; a non-finite loss is an infinitely bad candidate, not an
/// error (other errors propagate).
fn trial_loss<B: Backend, T: Real>(obj: &mut Objective<B, T>, p: &B::Buf<T>) -> Result<f64> {
    match obj.loss(p) {
        Ok(l) => Ok(l),
        Err(crate::Error::NonFinite(_)) => Ok(f64::INFINITY),
        Err(e) => Err(e),
    }
}

/// Iteration counts (1-based) after which CG iterates are kept: `⌈1.3^j⌉`, distinct.
fn keep_schedule(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    let mut x = 1.0f64;
    while (x.ceil() as usize) <= max {
        let k = x.ceil() as usize;
        if v.last() != Some(&k) {
            v.push(k);
        }
        x *= 1.3;
    }
    v
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for HessianFree<B, T> {
    fn name(&self) -> &'static str {
        "hessian-free"
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        let n = be.len(params);
        let lam = self.damping;

        // gradient, keeping the pass's jets for the G v products when they fit
        let loss = self
            .pass
            .run(obj, params, &mut self.grad, &mut self.store)?;
        let b_norm2 = ensure_finite(&be, &self.grad, "gradient")?;

        // CG on (G + λI) x = b with b = −∇L; iterates kept on the backtracking schedule
        let (iters, kept_info) = self.cg_solve(obj, params, lam, b_norm2)?;

        // CG backtracking: from the last kept iterate back while the loss keeps improving
        let mut best: Option<(usize, f64)> = None;
        for slot in (0..kept_info.len()).rev() {
            be.copy(params, 0, &mut self.trial, 0, n)?;
            be.axpby(T::ONE, &self.kept[slot], T::ONE, &mut self.trial)?;
            let l = trial_loss(obj, &self.trial)?;
            match best {
                Some((_, lb)) if l >= lb => break,
                _ => best = Some((slot, l)),
            }
        }
        let (slot, f_new) = best.expect("at least one kept iterate");
        let phi_x = kept_info[slot].1;

        // damping: Levenberg–Marquardt on the reduction ratio
        let rho = if phi_x < 0.0 {
            (f_new - loss) / phi_x
        } else {
            f64::NEG_INFINITY
        };
        if rho < 0.25 {
            self.damping *= 1.5;
        } else if rho > 0.75 {
            self.damping *= 2.0 / 3.0;
        }

        // step size: Armijo backtracking along the chosen iterate
        let gx = be.dot(&self.grad, &self.kept[slot])?;
        let mut eta = self.lr;
        let mut accepted = 0.0;
        for _ in 0..ARMIJO_TRIES {
            let l = if eta == 1.0 {
                f_new
            } else {
                be.copy(params, 0, &mut self.trial, 0, n)?;
                be.axpby(T::from_f64(eta), &self.kept[slot], T::ONE, &mut self.trial)?;
                trial_loss(obj, &self.trial)?
            };
            if l <= loss + ARMIJO_C * eta * gx.min(0.0) && l.is_finite() {
                accepted = eta;
                break;
            }
            eta *= ARMIJO_SHRINK;
        }

        // update (the stored jets belong to the old parameters)
        self.store.invalidate();
        if accepted > 0.0 {
            be.axpby(T::from_f64(accepted), &self.kept[slot], T::ONE, params)?;
        }
        ensure_finite(&be, params, "parameters after the Hessian-free update")?;
        self.step += 1;
        Ok(StepInfo {
            loss,
            lr: Some(accepted),
            extra: vec![
                ("damping", self.damping),
                ("cg_iters", iters as f64),
                ("cg_kept", kept_info[slot].0 as f64),
                ("rho", rho),
            ],
        })
    }

    fn state(&self, be: &B) -> Result<State> {
        Ok(vec![
            count_entry("step", self.step),
            ("damping".into(), vec![self.damping]),
            ("cg_solution".into(), convert(&be.download(&self.x)?)),
        ])
    }

    fn load_state(&mut self, be: &B, s: &State) -> Result<()> {
        let n = be.len(&self.x);
        self.step = count_get(s, "step")?;
        self.damping = check::positive("saved damping", super::state_get(s, "damping", 1)?[0])?;
        self.x = be.upload(&convert::<f64, T>(super::state_get(s, "cg_solution", n)?))?;
        Ok(())
    }
}

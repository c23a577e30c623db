//! Per-worker accumulators of a gradient sweep over every term ([`WorkerAccs`]): each
//! worker of [`Objective::sweep_par`] adds its chunks' gradient and squared residuals, and
//! whatever else its sweep gathers (a [`WorkerShare`]: KFAC's shares of a term's
//! factors), into buffers of its own, so that workers share nothing while they run; the
//! shares are added together afterwards, always in worker order, so that a sweep's result
//! depends on the number of workers but not on the threads' timing.
//!
//! Worker 0 adds into the caller's gradient and the first share; the further workers'
//! buffers are kept between sweeps (made on first use).
//!
//! Used by [`Objective::loss_grad`] and the KFAC pass (`curvature::KfacPass`,
//! `curvature::GradStorePass`), and checked through them: `tests/gradient.rs` (the
//! gradient against finite differences) and `tests/curvature_kfac.rs` (the pass with one
//! and three workers against one-worker and naive references).

use super::Objective;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::scalar::Real;

/// What a sweep worker accumulates besides its gradient and squared residuals: zeroed
/// when a term's sweep hands it out, and the further workers' added into the first's
/// afterwards ([`WorkerAccs::total_share`]).
pub trait WorkerShare<B: Backend>: Send {
    fn zero(&mut self, be: &B) -> Result<()>;
    /// `total += self`.
    fn add_to(&self, be: &B, total: &mut Self) -> Result<()>;
}

/// A sweep that gathers nothing but the gradient and the squared residuals.
impl<B: Backend> WorkerShare<B> for () {
    fn zero(&mut self, _: &B) -> Result<()> {
        Ok(())
    }
    fn add_to(&self, _: &B, _: &mut ()) -> Result<()> {
        Ok(())
    }
}

/// One worker's accumulators during a term's sweep.
pub struct WorkerAcc<'a, B: Backend, T: Real, X> {
    /// The worker's gradient (worker 0: the caller's); chunks add into it.
    pub grad: &'a mut B::Buf<T>,
    /// `Σ ‖r_n‖²` over the worker's chunks of the term.
    pub ss: f64,
    pub share: &'a mut X,
}

impl<B: Backend, T: Real, X> WorkerAcc<'_, B, T, X> {
    /// `Σ ‖r_n‖²` over all workers of a term.
    pub fn total_sq(accs: &[Self]) -> f64 {
        accs.iter().map(|a| a.ss).sum()
    }
}

/// The further workers' gradients and every worker's share, kept between sweeps.
pub struct WorkerAccs<B: Backend, T: Real, X> {
    /// Gradients of workers 1, 2, … (worker 0 adds into the caller's).
    grads: Vec<B::Buf<T>>,
    /// How many of `grads` the current sweep has written to (zero after
    /// [`Self::add_grads`]).
    used: usize,
    /// Shares of workers 0, 1, …
    shares: Vec<X>,
    /// Shares holding data of the current pool (the terms handed out since the last
    /// fresh one).
    live: usize,
}

impl<B: Backend, T: Real, X> Default for WorkerAccs<B, T, X> {
    fn default() -> Self {
        WorkerAccs {
            grads: vec![],
            used: 0,
            shares: vec![],
            live: 0,
        }
    }
}

impl<B: Backend, T: Real, X: WorkerShare<B>> WorkerAccs<B, T, X> {
    /// Start a sweep: check `grad` against the objective's network and zero it (and what a
    /// failed earlier sweep may have left in the further workers' gradients).
    pub fn start(&mut self, obj: &Objective<B, T>, grad: &mut B::Buf<T>) -> Result<()> {
        let be = obj.backend();
        let np = be.len(grad);
        obj.mlp().check_params(np)?;
        be.fill(grad, 0, np, T::ZERO)?;
        for g in &mut self.grads[..self.used] {
            be.fill(g, 0, np, T::ZERO)?;
        }
        self.used = 0;
        Ok(())
    }

    /// The accumulators of one term's `workers` workers: worker 0 adds into `grad`, each
    /// further one into its own gradient (zero-filled when made, and after
    /// [`Self::add_grads`]); `make` makes a missing share. With `pool`, the shares keep
    /// what the previous terms added (a pooled group of terms, summed in
    /// [`Self::total_share`] after its last term); otherwise they are zeroed first.
    pub fn term<'a>(
        &'a mut self,
        be: &B,
        grad: &'a mut B::Buf<T>,
        workers: usize,
        pool: bool,
        mut make: impl FnMut() -> Result<X>,
    ) -> Result<Vec<WorkerAcc<'a, B, T, X>>> {
        let np = be.len(grad);
        while self.grads.len() + 1 < workers {
            self.grads.push(be.alloc(np)?);
        }
        while self.shares.len() < workers {
            self.shares.push(make()?);
        }
        let keep = if pool { self.live.min(workers) } else { 0 };
        for s in &mut self.shares[keep..workers] {
            s.zero(be)?;
        }
        self.used = self.used.max(workers - 1);
        self.live = if pool {
            self.live.max(workers)
        } else {
            workers
        };
        let grads = std::iter::once(grad).chain(self.grads.iter_mut());
        Ok(grads
            .zip(self.shares.iter_mut())
            .take(workers)
            .map(|(grad, share)| WorkerAcc {
                grad,
                ss: 0.0,
                share,
            })
            .collect())
    }

    /// The total share of the terms handed out since the last fresh one: the further
    /// workers' shares added into worker 0's, in worker order.
    pub fn total_share(&mut self, be: &B) -> Result<&X> {
        let Some((total, rest)) = self.shares.split_first_mut() else {
            return Err(Error::Shape("no term has been swept yet".into()));
        };
        for s in &rest[..self.live.saturating_sub(1)] {
            s.add_to(be, total)?;
        }
        Ok(total)
    }

    /// Add the further workers' gradients into `grad` (in worker order) and zero them for
    /// the next term or sweep.
    pub fn add_grads(&mut self, be: &B, grad: &mut B::Buf<T>) -> Result<()> {
        let np = be.len(grad);
        for g in &mut self.grads[..self.used] {
            be.axpby(T::ONE, g, T::ONE, grad)?;
            be.fill(g, 0, np, T::ZERO)?;
        }
        self.used = 0;
        Ok(())
    }
}

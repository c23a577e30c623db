//! Stochastic gradient descent with heavy-ball momentum (PyTorch's convention:
//! `v = μv + g`, `θ −= η v`).

use super::{field, only_fields, state_get, OptimizerConfig, State, StepInfo};
use crate::backend::Backend;
use crate::error::{check, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

pub struct Sgd<B: Backend, T: Real> {
    lr: f64,
    momentum: f64,
    grad: B::Buf<T>,
    vel: B::Buf<T>,
    started: bool,
}

/// SGD's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    lr: f64,
    momentum: f64,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields("sgd", cfg, &[field::lr, field::momentum])?;
        Ok(Settings {
            lr: check::positive("lr", cfg.lr.unwrap_or(1e-3))?,
            momentum: check::unit_half_open("momentum", cfg.momentum.unwrap_or(0.0))?,
        })
    }
}

impl<B: Backend, T: Real> Sgd<B, T> {
    pub fn new(be: &B, n: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n, Settings::new(cfg)?)
    }

    pub(super) fn from_settings(be: &B, n: usize, s: Settings) -> Result<Self> {
        Ok(Sgd {
            lr: s.lr,
            momentum: s.momentum,
            grad: be.alloc(n)?,
            vel: be.alloc(n)?,
            started: false,
        })
    }
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Sgd<B, T> {
    fn name(&self) -> &'static str {
        "sgd"
    }
    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        // gradient
        let loss = obj.loss_grad(params, &mut self.grad)?;
        // velocity: v = μ v + g (v = g on the first step)
        let mu = if self.started {
            T::from_f64(self.momentum)
        } else {
            T::ZERO
        };
        be.axpby(T::ONE, &self.grad, mu, &mut self.vel)?;
        self.started = true;
        // update
        be.axpby(T::from_f64(-self.lr), &self.vel, T::ONE, params)?;
        Ok(StepInfo {
            loss,
            lr: Some(self.lr),
            extra: vec![],
        })
    }
    fn state(&self, be: &B) -> Result<State> {
        Ok(vec![
            ("velocity".into(), convert(&be.download(&self.vel)?)),
            ("started".into(), vec![f64::from(u8::from(self.started))]),
        ])
    }
    fn load_state(&mut self, be: &B, s: &State) -> Result<()> {
        let n = be.len(&self.vel);
        self.vel = be.upload(&convert::<f64, T>(state_get(s, "velocity", n)?))?;
        self.started = state_get(s, "started", 1)?[0] != 0.0;
        Ok(())
    }
}

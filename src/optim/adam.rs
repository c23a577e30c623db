//! Adam (Kingma & Ba), PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8.

use super::{field, only_fields, state_get, OptimizerConfig, State, StepInfo};
use crate::backend::{AdamStep, Backend};
use crate::error::{check, Error, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

pub struct Adam<B: Backend, T: Real> {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    t: u64,
    grad: B::Buf<T>,
    m: B::Buf<T>,
    v: B::Buf<T>,
}

/// Adam's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields(
            "adam",
            cfg,
            &[field::lr, field::beta1, field::beta2, field::eps],
        )?;
        Ok(Settings {
            lr: check::positive("lr", cfg.lr.unwrap_or(1e-3))?,
            beta1: check::unit_half_open("beta1", cfg.beta1.unwrap_or(0.9))?,
            beta2: check::unit_half_open("beta2", cfg.beta2.unwrap_or(0.999))?,
            eps: check::positive("eps", cfg.eps.unwrap_or(1e-8))?,
        })
    }
}

impl<B: Backend, T: Real> Adam<B, T> {
    pub fn new(be: &B, n: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n, Settings::new(cfg)?)
    }

    pub(super) fn from_settings(be: &B, n: usize, s: Settings) -> Result<Self> {
        Ok(Adam {
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            t: 0,
            grad: be.alloc(n)?,
            m: be.alloc(n)?,
            v: be.alloc(n)?,
        })
    }
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Adam<B, T> {
    fn name(&self) -> &'static str {
        "adam"
    }
    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        // gradient
        let loss = obj.loss_grad(params, &mut self.grad)?;
        // moments and update in one kernel
        self.t += 1;
        let t = self.t as i32;
        let step = AdamStep {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bc1: 1.0 - self.beta1.powi(t),
            bc2: 1.0 - self.beta2.powi(t),
        };
        be.adam_update(params, &self.grad, &mut self.m, &mut self.v, step)?;
        Ok(StepInfo {
            loss,
            lr: Some(self.lr),
            extra: vec![],
        })
    }
    fn state(&self, be: &B) -> Result<State> {
        Ok(vec![
            ("m".into(), convert(&be.download(&self.m)?)),
            ("v".into(), convert(&be.download(&self.v)?)),
            ("t".into(), vec![self.t as f64]),
        ])
    }
    fn load_state(&mut self, be: &B, s: &State) -> Result<()> {
        let n = be.len(&self.m);
        self.m = be.upload(&convert::<f64, T>(state_get(s, "m", n)?))?;
        self.v = be.upload(&convert::<f64, T>(state_get(s, "v", n)?))?;
        let t = state_get(s, "t", 1)?[0];
        if !(t >= 0.0 && t.fract() == 0.0) {
            return Err(Error::Format {
                path: "optimizer state".into(),
                msg: format!("adam step count {t}"),
            });
        }
        self.t = t as u64;
        Ok(())
    }
}

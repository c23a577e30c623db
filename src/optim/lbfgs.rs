//! L-BFGS (Nocedal & Wright, Alg. 7.4/7.5): the two-loop recursion over the last `history`
//! curvature pairs with the initial scaling `sᵀy / yᵀy`, and a strong-Wolfe line search
//! (Alg. 3.5/3.6, cubic interpolation; c1 = 1e-4, c2 = 0.9, at most 25 evaluations). One
//! optimizer step is one L-BFGS iteration. The first iteration's trial step is
//! `lr · min(1, 1/‖g‖₁)`, later ones `lr` (PyTorch's convention).
//!
//! All vectors live on the backend; the recursion needs only dot products and axpys.
//! Checked by `tests/optim_second_order.rs` (loss decrease, Wolfe conditions of the
//! accepted step, state round trip, validation).

use super::util::{count_entry, count_get, ensure_finite, finite_scalar};
use super::{field, only_fields, OptimizerConfig, State, StepInfo};
use crate::backend::Backend;
use crate::error::{check, Error, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_EVALS: usize = 25;
/// Stop the line search when the bracket is this small (relative to the step length).
const BRACKET_TOL: f64 = 1e-9;

pub struct Lbfgs<B: Backend, T: Real> {
    lr: f64,
    history: usize,
    step: u64,
    /// Curvature pairs, oldest first.
    s: Vec<B::Buf<T>>,
    y: Vec<B::Buf<T>>,
    /// Spare buffers recycled when the history is full.
    spare: Vec<B::Buf<T>>,
    grad: B::Buf<T>,
    dir: B::Buf<T>,
    trial: B::Buf<T>,
    g_trial: B::Buf<T>,
    g_best: B::Buf<T>,
    /// Loss and gradient at the current parameters are still valid (same points).
    cached: Option<f64>,
    /// Parameter count.
    n: usize,
}

/// L-BFGS's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    lr: f64,
    history: usize,
}

impl Settings {
    pub(super) fn new(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields("lbfgs", cfg, &[field::lr, field::history])?;
        Ok(Settings {
            lr: check::positive("lr", cfg.lr.unwrap_or(1.0))?,
            history: check::at_least("history", cfg.history.unwrap_or(10), 1)?,
        })
    }
}

/// Minimiser of the cubic through the points `p` and `q` (values and slopes), clamped
/// to [lo, hi]; the midpoint if the cubic has no minimiser.
fn cubic_min(p: Pt, q: Pt, lo: f64, hi: f64) -> f64 {
    let (x1, f1, g1, x2, f2, g2) = (p.t, p.f, p.d, q.t, q.f, q.d);
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2sq = d1 * d1 - g1 * g2;
    if d2sq >= 0.0 && (x1 - x2).abs() > 0.0 {
        let d2 = d2sq.sqrt();
        let m = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        if m.is_finite() {
            return m.clamp(lo, hi);
        }
    }
    0.5 * (lo + hi)
}

/// One evaluated point of the line search.
#[derive(Clone, Copy, Debug)]
struct Pt {
    t: f64,
    f: f64,
    d: f64,
}

impl<B: Backend, T: Real> Lbfgs<B, T> {
    pub fn new(be: &B, n: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n, Settings::new(cfg)?)
    }

    pub(super) fn from_settings(be: &B, n: usize, s: Settings) -> Result<Self> {
        Ok(Lbfgs {
            lr: s.lr,
            history: s.history,
            step: 0,
            s: Vec::new(),
            y: Vec::new(),
            spare: Vec::new(),
            grad: be.alloc(n)?,
            dir: be.alloc(n)?,
            trial: be.alloc(n)?,
            g_trial: be.alloc(n)?,
            g_best: be.alloc(n)?,
            cached: None,
            n,
        })
    }

    /// `dir = −H g` by the two-loop recursion.
    fn two_loop(&mut self, be: &B) -> Result<()> {
        let n = self.n;
        be.copy(&self.grad, 0, &mut self.dir, 0, n)?;
        let m = self.s.len();
        let mut alpha = vec![0.0; m];
        let mut rho = vec![0.0; m];
        for i in (0..m).rev() {
            rho[i] = 1.0 / be.dot(&self.y[i], &self.s[i])?;
            alpha[i] = rho[i] * be.dot(&self.s[i], &self.dir)?;
            be.axpby(T::from_f64(-alpha[i]), &self.y[i], T::ONE, &mut self.dir)?;
        }
        if m > 0 {
            let sy = 1.0 / rho[m - 1];
            let yy = be.dot(&self.y[m - 1], &self.y[m - 1])?;
            be.scale(T::from_f64(sy / yy), &mut self.dir)?;
        }
        for i in 0..m {
            let beta = rho[i] * be.dot(&self.y[i], &self.dir)?;
            be.axpby(
                T::from_f64(alpha[i] - beta),
                &self.s[i],
                T::ONE,
                &mut self.dir,
            )?;
        }
        be.scale(-T::ONE, &mut self.dir)
    }

    /// Loss, gradient (into `g_trial`) and directional derivative at `params + t·dir`.
    fn eval(&mut self, obj: &mut Objective<B, T>, params: &B::Buf<T>, t: f64) -> Result<Pt> {
        let be = obj.backend().clone();
        be.copy(params, 0, &mut self.trial, 0, self.n)?;
        be.axpby(T::from_f64(t), &self.dir, T::ONE, &mut self.trial)?;
        match obj.loss_grad(&self.trial, &mut self.g_trial) {
            Ok(f) => Ok(Pt {
                t,
                f,
                d: be.dot(&self.g_trial, &self.dir)?,
            }),
            // a non-finite trial is "too far": the bracketing logic treats it as a rise
            Err(Error::NonFinite(_)) => Ok(Pt {
                t,
                f: f64::INFINITY,
                d: f64::NAN,
            }),
            Err(e) => Err(e),
        }
    }

    /// Strong-Wolfe line search from `p0` (t = 0). Returns the accepted point (t = 0 if
    /// nothing lowered the loss); its gradient is left in `g_best`.
    fn line_search(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        p0: Pt,
        t0: f64,
    ) -> Result<Pt> {
        let be = obj.backend().clone();
        let n = self.n;
        let mut best = p0;
        let mut evals = 0;
        let mut prev = p0;
        let mut t = t0;
        // bracketing phase
        let (mut lo, mut hi) = loop {
            let cur = self.eval(obj, params, t)?;
            evals += 1;
            if cur.f < best.f {
                best = cur;
                be.copy(&self.g_trial, 0, &mut self.g_best, 0, n)?;
            }
            if !cur.f.is_finite()
                || cur.f > p0.f + C1 * cur.t * p0.d
                || (evals > 1 && cur.f >= prev.f)
            {
                break (prev, cur);
            }
            if cur.d.abs() <= -C2 * p0.d {
                be.copy(&self.g_trial, 0, &mut self.g_best, 0, n)?;
                return Ok(cur);
            }
            if cur.d >= 0.0 {
                break (cur, prev);
            }
            if evals >= MAX_EVALS {
                return Ok(best);
            }
            let (a, b) = (cur.t + 0.01 * (cur.t - prev.t), 10.0 * cur.t);
            let next = cubic_min(prev, cur, a, b);
            prev = cur;
            t = next;
        };
        // zoom phase: `lo` satisfies sufficient decrease and has the lower loss
        while evals < MAX_EVALS && (hi.t - lo.t).abs() > BRACKET_TOL * lo.t.abs().max(hi.t.abs()) {
            let (a, b) = if lo.t < hi.t {
                (lo.t, hi.t)
            } else {
                (hi.t, lo.t)
            };
            let w = b - a;
            let guess = if hi.f.is_finite() && hi.d.is_finite() {
                cubic_min(lo, hi, a, b)
            } else {
                0.5 * (a + b)
            };
            // keep away from the ends so the bracket shrinks
            let t = guess.clamp(a + 0.1 * w, b - 0.1 * w);
            let cur = self.eval(obj, params, t)?;
            evals += 1;
            if cur.f < best.f {
                best = cur;
                be.copy(&self.g_trial, 0, &mut self.g_best, 0, n)?;
            }
            if !cur.f.is_finite() || cur.f > p0.f + C1 * cur.t * p0.d || cur.f >= lo.f {
                hi = cur;
            } else {
                if cur.d.abs() <= -C2 * p0.d {
                    be.copy(&self.g_trial, 0, &mut self.g_best, 0, n)?;
                    return Ok(cur);
                }
                if cur.d * (hi.t - lo.t) >= 0.0 {
                    hi = lo;
                }
                lo = cur;
            }
        }
        Ok(best)
    }
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Lbfgs<B, T> {
    fn name(&self) -> &'static str {
        "lbfgs"
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        let n = self.n;

        // gradient (kept from the last line search while the points are unchanged)
        let loss = match self.cached.take() {
            Some(l) => l,
            None => obj.loss_grad(params, &mut self.grad)?,
        };

        // direction: two-loop recursion; fall back to −g if it is not a descent direction
        self.two_loop(&be)?;
        let mut d0 = be.dot(&self.grad, &self.dir)?;
        finite_scalar(d0, "L-BFGS directional derivative")?;
        if d0 >= 0.0 || self.s.is_empty() {
            if d0 >= 0.0 {
                self.s.clear();
                self.y.clear();
            }
            be.copy(&self.grad, 0, &mut self.dir, 0, n)?;
            be.scale(-T::ONE, &mut self.dir)?;
            d0 = be.dot(&self.grad, &self.dir)?;
        }
        if d0 == 0.0 {
            // zero gradient: a stationary point
            self.step += 1;
            return Ok(StepInfo {
                loss,
                lr: Some(0.0),
                extra: vec![],
            });
        }

        // step size: strong-Wolfe line search
        let t0 = if self.s.is_empty() {
            let g1 = {
                let g: Vec<f64> = convert(&be.download(&self.grad)?);
                g.iter().map(|v| v.abs()).sum::<f64>()
            };
            self.lr * (1.0f64).min(1.0 / g1)
        } else {
            self.lr
        };
        let p0 = Pt {
            t: 0.0,
            f: loss,
            d: d0,
        };
        let acc = self.line_search(obj, params, p0, t0)?;

        // update and curvature pair
        if acc.t > 0.0 {
            be.axpby(T::from_f64(acc.t), &self.dir, T::ONE, params)?;
            // s = t·dir, y = g_new − g
            let (mut s, mut y) = match (self.spare.pop(), self.spare.pop()) {
                (Some(a), Some(b)) => (a, b),
                _ => (be.alloc(n)?, be.alloc(n)?),
            };
            be.copy(&self.dir, 0, &mut s, 0, n)?;
            be.scale(T::from_f64(acc.t), &mut s)?;
            // the line search leaves the accepted point's gradient in g_best
            let g_new = &self.g_best;
            be.copy(g_new, 0, &mut y, 0, n)?;
            be.axpby(-T::ONE, &self.grad, T::ONE, &mut y)?;
            let sy = be.dot(&s, &y)?;
            be.copy(g_new, 0, &mut self.grad, 0, n)?;
            self.cached = Some(acc.f);
            if sy > 1e-10 * be.dot(&y, &y)?.max(f64::MIN_POSITIVE) {
                if self.s.len() == self.history {
                    self.spare.push(self.s.remove(0));
                    self.spare.push(self.y.remove(0));
                }
                self.s.push(s);
                self.y.push(y);
            } else {
                self.spare.push(s);
                self.spare.push(y);
            }
        }
        ensure_finite(&be, params, "parameters after the L-BFGS update")?;
        self.step += 1;
        Ok(StepInfo {
            loss,
            lr: Some(acc.t),
            extra: vec![("history", self.s.len() as f64)],
        })
    }

    fn points_changed(&mut self) {
        self.cached = None;
    }

    fn state(&self, be: &B) -> Result<State> {
        let mut st = vec![
            count_entry("step", self.step),
            count_entry("pairs", self.s.len() as u64),
        ];
        for (i, (s, y)) in self.s.iter().zip(&self.y).enumerate() {
            st.push((format!("s{i}"), convert(&be.download(s)?)));
            st.push((format!("y{i}"), convert(&be.download(y)?)));
        }
        Ok(st)
    }

    fn load_state(&mut self, be: &B, st: &State) -> Result<()> {
        let pairs = count_get(st, "pairs")? as usize;
        if pairs > self.history {
            return Err(Error::Format {
                path: "optimizer state".into(),
                msg: format!("{pairs} L-BFGS pairs for a history of {}", self.history),
            });
        }
        let n = self.n;
        let mut s = Vec::with_capacity(pairs);
        let mut y = Vec::with_capacity(pairs);
        for i in 0..pairs {
            s.push(be.upload(&convert::<f64, T>(super::state_get(
                st,
                &format!("s{i}"),
                n,
            )?))?);
            y.push(be.upload(&convert::<f64, T>(super::state_get(
                st,
                &format!("y{i}"),
                n,
            )?))?);
        }
        self.s = s;
        self.y = y;
        self.step = count_get(st, "step")?;
        self.cached = None;
        Ok(())
    }
}

//! Control of two coupled oscillators (the book's HIG notebook): a network maps a start
//! state `(x1, x2, v1, v2)` to 24 controls, an RK4 simulation with 24 steps of 0.5
//! applies them (one per step) to the last oscillator's velocity, and the residual is
//! `final state − start state`: the controls should bring the system back to where it
//! started. Dynamics: `x' = v`, `v' = −x + 0.2·L x + u·e_last` with the free-end
//! Laplacian `L = [[−1, 1], [1, −1]]`.
//!
//! The simulator supplies `∂(final state)/∂(controls)` (4 × 24) for the Gauss–Newton
//! seeds by forward mode through RK4: one tangent per control, propagated through the
//! same four stages as the state. A simulation whose state becomes non-finite reports
//! NaN residuals, which the objective turns into `Error::NonFinite` naming this term
//! (`oscillator-simulator`).
//!
//! Data: 4096 start states uniform in [0, 1)^4, drawn once from a fixed seed (the
//! book's training set size); each batch is a random subset of them, without
//! repetition (the book walks through the set in batches of 32 for HIG).
//!
//! Checked by `tests/hig.rs`: the Jacobian against central finite differences of the
//! simulation, a zero-control run against the matrix exponential of the free dynamics
//! (closed form), and non-finite controls against a clear error.

use crate::error::{Error, Result};
use crate::jet::JetKind;
use crate::pde::{Problem, Residual, Setup, TermSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Size of the fixed training set of start states.
pub const TRAIN_STATES: usize = 4096;
/// Seed of the training set (fixed, so every run sees the same 4096 states).
const TRAIN_SEED: u64 = 0x05C1_11A7_0B00_4096;
/// Name of the term, which is what error messages about the simulation show.
pub const TERM_NAME: &str = "oscillator-simulator";

/// Largest state dimension: work arrays live on the stack (the value path runs for
/// every sample of every loss evaluation).
const MAX_DIM: usize = 8;

/// RK4 simulation of `n` coupled linear oscillators with a control on the last one.
#[derive(Clone, Debug)]
pub struct Simulator {
    n_osc: usize,
    steps: usize,
    dt: f64,
    coupling: f64,
}

impl Default for Simulator {
    /// The book's setting: 2 oscillators, 24 steps of 0.5, coupling 0.2.
    fn default() -> Self {
        Simulator {
            n_osc: 2,
            steps: 24,
            dt: 0.5,
            coupling: 0.2,
        }
    }
}

impl Simulator {
    /// State dimension (positions, then velocities).
    pub fn dim(&self) -> usize {
        2 * self.n_osc
    }

    /// `(Lx)_i` for the free-end Laplacian: neighbours minus own value per neighbour.
    fn laplacian(&self, x: &[f64], i: usize) -> f64 {
        let n = self.n_osc;
        let mut l = 0.0;
        if i > 0 {
            l += x[i - 1] - x[i];
        }
        if i + 1 < n {
            l += x[i + 1] - x[i];
        }
        l
    }

    /// Right-hand side `(x', v') = (v, −x + c·Lx + u·e_last)`.
    fn rhs(&self, s: &[f64], u: f64, out: &mut [f64]) {
        let n = self.n_osc;
        let (x, v) = s.split_at(n);
        for i in 0..n {
            out[i] = v[i];
            out[n + i] = -x[i] + self.coupling * self.laplacian(x, i);
        }
        out[2 * n - 1] += u;
    }

    /// Jacobian-vector product of [`Self::rhs`] at state `_s` along state tangent `t` and
    /// control tangent `tu`. The ODE is linear in (state, control), so the product does
    /// not depend on the state; `_s` is kept so the RK4 tangent code below is the one a
    /// nonlinear ODE would use.
    fn rhs_jvp(&self, _s: &[f64], t: &[f64], tu: f64, out: &mut [f64]) {
        self.rhs(t, tu, out)
    }

    /// Simulate from `x0` with controls `u` (one per step); the final state goes to
    /// `out`. With `jac` (`dim × steps`, row-major), also `∂out/∂u` by forward mode.
    pub fn run(&self, x0: &[f64], u: &[f64], out: &mut [f64], jac: Option<&mut [f64]>) {
        let d = self.dim();
        let nt = self.steps;
        let h = self.dt;
        assert!(d <= MAX_DIM && x0.len() == d && u.len() == nt && out.len() == d);
        let mut s = [0.0; MAX_DIM];
        s[..d].copy_from_slice(x0);
        let s = &mut s[..d];
        // stage states and slopes
        let mut st = [[0.0; MAX_DIM]; 4];
        let mut k = [[0.0; MAX_DIM]; 4];
        // tangents: column j is ∂s/∂u_j, stored as tang[j·d..(j+1)·d]
        let want_jac = jac.is_some();
        let mut tang = if want_jac { vec![0.0; nt * d] } else { vec![] };
        let mut tk = [[0.0; MAX_DIM]; 4];
        let mut tt = [0.0; MAX_DIM];
        for (step, &c) in u.iter().enumerate() {
            // state stages: st[i] is the state at which slope k[i] is evaluated
            st[0][..d].copy_from_slice(s);
            self.rhs(&st[0][..d], c, &mut k[0][..d]);
            for (i, f) in [(1, 0.5), (2, 0.5), (3, 1.0)] {
                let (prev, cur) = k.split_at_mut(i);
                for j in 0..d {
                    st[i][j] = s[j] + f * h * prev[i - 1][j];
                }
                self.rhs(&st[i][..d], c, &mut cur[0][..d]);
            }
            // tangent stages, one control at a time: controls after this step have no
            // influence yet; the current one enters through the control tangent
            if want_jac {
                for ctrl in 0..=step {
                    let tu = if ctrl == step { 1.0 } else { 0.0 };
                    let t = &mut tang[ctrl * d..(ctrl + 1) * d];
                    self.rhs_jvp(&st[0][..d], t, tu, &mut tk[0][..d]);
                    for (i, f) in [(1, 0.5), (2, 0.5), (3, 1.0)] {
                        for j in 0..d {
                            tt[j] = t[j] + f * h * tk[i - 1][j];
                        }
                        self.rhs_jvp(&st[i][..d], &tt[..d], tu, &mut tk[i][..d]);
                    }
                    for j in 0..d {
                        t[j] += h / 6.0 * (tk[0][j] + 2.0 * tk[1][j] + 2.0 * tk[2][j] + tk[3][j]);
                    }
                }
            }
            for j in 0..d {
                s[j] += h / 6.0 * (k[0][j] + 2.0 * k[1][j] + 2.0 * k[2][j] + k[3][j]);
            }
        }
        out.copy_from_slice(s);
        if let Some(jac) = jac {
            for i in 0..d {
                for j in 0..nt {
                    jac[i * nt + j] = tang[j * d + i];
                }
            }
        }
    }
}

/// `r = final state − start state`; `∂r/∂y = ∂(final state)/∂(controls)`.
///
/// The dynamics are linear in (state, control), so that Jacobian does not depend on the
/// start state or the controls: it is computed once, by the simulator's forward mode,
/// and copied per sample. (Per sample it cost 16 µs for 24 tangents through 24 RK4
/// steps, about 80% of an Adam step on a batch of 256.) A nonlinear ODE would pass
/// `jac` to [`Simulator::run`] for every sample instead.
struct ReturnResidual {
    sim: Simulator,
    jac: Vec<f64>,
}

impl ReturnResidual {
    fn new(sim: Simulator) -> Self {
        let (d, nt) = (sim.dim(), sim.steps);
        let mut jac = vec![0.0; d * nt];
        let mut out = vec![0.0; d];
        sim.run(&vec![0.0; d], &vec![0.0; nt], &mut out, Some(&mut jac));
        ReturnResidual { sim, jac }
    }
}

impl Residual for ReturnResidual {
    fn n_res(&self) -> usize {
        self.sim.dim()
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        self.sim.run(x, y, r, None);
        if let Some(j) = jac {
            j.copy_from_slice(&self.jac);
        }
        if r.iter().all(|v| v.is_finite()) {
            r.iter_mut().zip(x).for_each(|(r, x)| *r -= x);
        } else {
            // a blown-up simulation: NaN makes the objective raise Error::NonFinite
            // naming this term, instead of training on infinities
            r.fill(f64::NAN);
        }
    }
}

pub struct Oscillators {
    sim: Simulator,
    residual: Arc<ReturnResidual>,
    states: Vec<f64>,
}

impl Default for Oscillators {
    fn default() -> Self {
        Self::new()
    }
}

impl Oscillators {
    /// The book's setup with its fixed training set.
    pub fn new() -> Self {
        let sim = Simulator::default();
        let mut rng = ChaCha8Rng::seed_from_u64(TRAIN_SEED);
        let states = (0..TRAIN_STATES * sim.dim())
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        Oscillators {
            residual: Arc::new(ReturnResidual::new(sim.clone())),
            sim,
            states,
        }
    }
}

impl Problem for Oscillators {
    fn name(&self) -> &str {
        "oscillators"
    }
    fn summary(&self) -> String {
        format!(
            "control {} coupled oscillators (x' = v, v' = -x + {}·Lx + u·e_last; RK4, {} steps of {}) back to their start state; {} start states in [0,1)^{}",
            self.sim.n_osc,
            self.sim.coupling,
            self.sim.steps,
            self.sim.dt,
            TRAIN_STATES,
            self.sim.dim()
        )
    }
    fn dim(&self) -> usize {
        self.sim.dim()
    }
    fn out_dim(&self) -> usize {
        self.sim.steps
    }
    fn terms(&self) -> Vec<TermSpec> {
        vec![TermSpec {
            name: TERM_NAME.into(),
            kind: JetKind::Value,
            residual: self.residual.clone(),
            weight: 1.0,
        }]
    }
    /// `n` distinct start states of the fixed training set, in random order.
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        if term != 0 {
            return Err(Error::invalid("term", term, "0 (the only term)"));
        }
        if n > TRAIN_STATES {
            return Err(Error::invalid(
                "points of term `oscillator-simulator`",
                n,
                format!("at most {TRAIN_STATES} (the size of the fixed training set)"),
            ));
        }
        let d = self.sim.dim();
        let mut x = Vec::with_capacity(n * d);
        for i in rand::seq::index::sample(rng, TRAIN_STATES, n) {
            x.extend_from_slice(&self.states[i * d..(i + 1) * d]);
        }
        Ok(x)
    }
    fn exact(&self, _x: &[f64], _out: &mut [f64]) -> bool {
        false
    }
    fn setup(&self) -> Setup {
        Setup {
            widths: vec![4, 20, 20, 20, 24],
            points: vec![32],
            resample: 1,
            eval_points: 32,
            budget_seconds: 100.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached Jacobian equals forward mode at an arbitrary state and controls
    /// (it must: the dynamics are linear), so caching it loses nothing.
    #[test]
    fn cached_jacobian_equals_forward_mode_anywhere() {
        let sim = Simulator::default();
        let res = ReturnResidual::new(sim.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x0: Vec<f64> = (0..4).map(|_| rng.random_range(-2.0..2.0)).collect();
        let u: Vec<f64> = (0..24).map(|_| rng.random_range(-3.0..3.0)).collect();
        let (mut out, mut jac) = (vec![0.0; 4], vec![0.0; 96]);
        sim.run(&x0, &u, &mut out, Some(&mut jac));
        let (mut r, mut cached) = (vec![0.0; 4], vec![0.0; 96]);
        res.eval(&x0, &u, &mut r, Some(&mut cached));
        for (a, b) in jac.iter().zip(&cached) {
            assert!((a - b).abs() <= 1e-13 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for i in 0..4 {
            assert!((r[i] - (out[i] - x0[i])).abs() < 1e-14);
        }
    }
}

//! Half-inverse gradients (HIG; Schnell, Holl & Thuerey, ICLR 2022) and Gauss–Newton
//! through the same code path (design §3).
//!
//! One step: the scaled residual Jacobian `J` (M × P, rows sample-major, so that
//! `L = ½‖r̃‖²` and `∇L = Jᵀr̃`), its thin SVD `J = U Σ Vᵀ` in f64, singular values
//! `σ ≤ τ·σ_max` dropped (set to zero, not clamped: their singular vectors are the
//! unreliable ones), and the step `Δθ = −η V Σ^{−κ} Uᵀ r̃` evaluated right to left
//! (`c = Uᵀr̃`, k numbers; scale by `σ^{−κ}`; `V c`), so the P × M (pseudo-)inverse is
//! never formed. κ = ½ is HIG, κ = 1 is the Gauss–Newton step `−η J⁺ r̃` (optimizer
//! `gn`). With `lr` set, η is fixed (the book uses η = 1); without it, η comes from the
//! grid line search `2^k`, k = −30..=0, of ENGD and KFAC, which makes `gn` the
//! pseudo-inverse (full) ENGD step.
//!
//! Where the SVD runs: behind the backend op [`Backend::thin_svd`], so a CUDA backend
//! uses cuSOLVER on the device-resident Jacobian; the truncation and scaling are a
//! kernel (`Backend::spectral_scale`) and the products are backend products, so only the
//! rank, σ_max, the smallest kept σ and the loss cross to the host. The SVD is f64 whatever the network's precision: HIG's whole point is to
//! resolve small singular values, which f32 cannot.
//!
//! Cost: the Jacobian (one reverse pass per residual component) and an SVD of
//! O(M·P·min(M, P)): fine for the book's problems and small PINNs (Poisson 2d:
//! 1020 × 257), slow for the paper's 10k-parameter networks with thousands of points.
//!
//! Checked by `tests/hig.rs`: the direction against a dense `V Σ^{−κ} Uᵀ` built in the
//! test, κ = 1 against the normal equations on a full-rank case, truncation on a matrix
//! with known singular values, loss decrease on the book's toy and a PINN, and the
//! validation errors.

use super::{field, grid_line_search, only_fields, OptimizerConfig, State, StepInfo};
use crate::backend::{Backend, Lay, Tr};
use crate::curvature::{jacobian_into, Jacobian};
use crate::error::{check, Error, Result};
use crate::loss::Objective;
use crate::scalar::{DType, Real};

/// Smallest line-search exponent (step sizes 2^K_MIN..=1), as for ENGD.
const K_MIN: i32 = -30;

/// What the SVD of one step found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvdInfo {
    /// Singular values kept (σ > τ·σ_max).
    pub rank: usize,
    pub sigma_max: f64,
    /// Smallest kept singular value (NaN if none was kept).
    pub sigma_min_kept: f64,
}

/// Workspace for the direction `−V Σ_τ^{−κ} Uᵀ r`; buffers are sized on first use and
/// reused while the Jacobian's shape stays the same.
pub struct SvdDirection<B: Backend> {
    rows: usize,
    cols: usize,
    u: B::Buf<f64>,
    s: B::Buf<f64>,
    vt: B::Buf<f64>,
    r: B::Buf<f64>,
    c: B::Buf<f64>,
    d: B::Buf<f64>,
}

impl<B: Backend> SvdDirection<B> {
    pub fn new(be: &B) -> Result<Self> {
        Ok(SvdDirection {
            rows: 0,
            cols: 0,
            u: be.alloc(0)?,
            s: be.alloc(0)?,
            vt: be.alloc(0)?,
            r: be.alloc(0)?,
            c: be.alloc(0)?,
            d: be.alloc(0)?,
        })
    }

    fn ensure(&mut self, be: &B, m: usize, p: usize) -> Result<()> {
        if (m, p) != (self.rows, self.cols) {
            let k = m.min(p);
            self.u = be.alloc(m * k)?;
            self.s = be.alloc(k)?;
            self.vt = be.alloc(k * p)?;
            self.r = be.alloc(m)?;
            self.c = be.alloc(k)?;
            self.d = be.alloc(p)?;
            self.rows = m;
            self.cols = p;
        }
        Ok(())
    }

    /// `out = alpha · d` with `d = −V Σ_τ^{−κ} Uᵀ r` for the thin SVD `J = U Σ Vᵀ` of the
    /// `m × p` row-major matrix `j`, where `Σ_τ^{−κ}` inverts `σ^κ` for σ > τ·σ_max and is
    /// zero otherwise; `r` has `m` entries, `out` `p`. Everything stays on the backend but
    /// what the SVD found. `κ` and `τ` are taken as given (the optimizers validate them).
    #[allow(clippy::too_many_arguments)]
    pub fn compute<T: Real>(
        &mut self,
        be: &B,
        j: &B::Buf<T>,
        m: usize,
        p: usize,
        r: &B::Buf<T>,
        kappa: f64,
        tau: f64,
        alpha: f64,
        out: &mut B::Buf<T>,
    ) -> Result<SvdInfo> {
        if be.len(r) != m || be.len(out) != p {
            return Err(Error::Shape(format!(
                "{} residuals and a {}-vector for a Jacobian with {m} rows and {p} columns",
                be.len(r),
                be.len(out)
            )));
        }
        if m == 0 || p == 0 {
            return Err(Error::invalid(
                "Jacobian",
                format!("{m}×{p}"),
                "at least one residual and one parameter (is the batch empty?)",
            ));
        }
        self.ensure(be, m, p)?;
        let k = m.min(p);
        // SVD (f64, on the device)
        be.thin_svd(j, Lay::dense(m, p), &mut self.u, &mut self.s, &mut self.vt)?;
        // c = Uᵀ r
        be.cast(r, 0, &mut self.r, 0, m)?;
        be.gemm(
            1.0,
            &self.u,
            Lay::dense(m, k),
            Tr::T,
            &self.r,
            Lay::dense(m, 1),
            Tr::N,
            0.0,
            &mut self.c,
            Lay::dense(k, 1),
        )?;
        // truncate and scale: c_i ← −σ_i^{−κ} c_i for σ_i > τ σ_max, else 0 (σ
        // non-increasing, so the kept ones lead)
        let (rank, sigma_max) = be.spectral_scale(&self.s, &mut self.c, k, kappa, tau)?;
        let mut sigma_min_kept = f64::NAN;
        if rank > 0 {
            let mut v = [0.0];
            be.download_range(&self.s, rank - 1, &mut v)?;
            sigma_min_kept = v[0];
        }
        let info = SvdInfo {
            rank,
            sigma_max,
            sigma_min_kept,
        };
        if rank == 0 {
            return be.fill(out, 0, p, T::ZERO).map(|_| info);
        }
        // d = V c over the kept directions only: the first `rank` rows of Vᵀ
        be.gemm(
            1.0,
            &self.vt,
            Lay::dense(rank, p),
            Tr::T,
            &self.c,
            Lay::dense(rank, 1),
            Tr::N,
            0.0,
            &mut self.d,
            Lay::dense(p, 1),
        )?;
        be.cast(&self.d, 0, out, 0, p)?;
        if alpha != 1.0 {
            be.scale(T::from_f64(alpha), out)?;
        }
        Ok(info)
    }
}

/// HIG (κ in (0, 1], default ½) or Gauss–Newton (κ = 1).
pub struct Hig<B: Backend, T: Real> {
    name: &'static str,
    kappa: f64,
    tau: f64,
    /// Fixed step size; None: grid line search.
    lr: Option<f64>,
    svd: SvdDirection<B>,
    /// The Jacobian and residuals, reassembled in place every step.
    jac: Jacobian<B, T>,
    dir: B::Buf<T>,
    trial: B::Buf<T>,
}

/// Default truncation: the book's 1e-10 in f64; 1e-6 for f32 Jacobians, whose entries
/// carry relative errors near 1e-7, so smaller singular values would be noise.
fn default_tau<T: Real>() -> f64 {
    match T::DTYPE {
        DType::F64 => 1e-10,
        DType::F32 => 1e-6,
    }
}

/// HIG's or Gauss–Newton's hyperparameters, checked ([`super::validate`] stops here).
pub(super) struct Settings {
    name: &'static str,
    kappa: f64,
    /// None: the default of the Jacobian's precision ([`default_tau`]).
    tau: Option<f64>,
    lr: Option<f64>,
}

impl Settings {
    /// See [`Hig::new`].
    pub(super) fn hig(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields("hig", cfg, &[field::lr, field::tau, field::kappa])?;
        let kappa = cfg.kappa.unwrap_or(0.5);
        if !(kappa.is_finite() && kappa > 0.0 && kappa <= 1.0) {
            return Err(Error::invalid("kappa", kappa, "in (0, 1]"));
        }
        Self::with_kappa("hig", cfg, kappa)
    }

    /// See [`Hig::gauss_newton`].
    pub(super) fn gauss_newton(cfg: &OptimizerConfig) -> Result<Self> {
        only_fields("gn", cfg, &[field::lr, field::tau])?;
        Self::with_kappa("gn", cfg, 1.0)
    }

    fn with_kappa(name: &'static str, cfg: &OptimizerConfig, kappa: f64) -> Result<Self> {
        Ok(Settings {
            name,
            kappa,
            tau: cfg.tau.map(|v| check::unit_open("tau", v)).transpose()?,
            lr: cfg.lr.map(|v| check::positive("lr", v)).transpose()?,
        })
    }
}

impl<B: Backend, T: Real> Hig<B, T> {
    /// Half-inverse gradients: uses `kappa` (default 0.5), `tau`, `lr`.
    pub fn new(be: &B, n_params: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n_params, Settings::hig(cfg)?)
    }

    /// Gauss–Newton (`J⁺ r̃` through the same truncated SVD): uses `tau`, `lr`.
    pub fn gauss_newton(be: &B, n_params: usize, cfg: &OptimizerConfig) -> Result<Self> {
        Self::from_settings(be, n_params, Settings::gauss_newton(cfg)?)
    }

    pub(super) fn from_settings(be: &B, n_params: usize, s: Settings) -> Result<Self> {
        Ok(Hig {
            name: s.name,
            kappa: s.kappa,
            tau: s.tau.unwrap_or_else(default_tau::<T>),
            lr: s.lr,
            svd: SvdDirection::new(be)?,
            jac: Jacobian::empty(be)?,
            dir: be.alloc(n_params)?,
            trial: be.alloc(n_params)?,
        })
    }

    pub fn kappa(&self) -> f64 {
        self.kappa
    }
    pub fn tau(&self) -> f64 {
        self.tau
    }
}

/// Where residual row `row` of the stacked Jacobian comes from: (term name, sample).
fn locate_row<B: Backend, T: Real>(obj: &Objective<B, T>, mut row: usize) -> (String, usize) {
    for t in 0..obj.num_terms() {
        let nr = obj.term_spec(t).residual.n_res();
        let rows = obj.term_points(t) * nr;
        if row < rows {
            return (obj.term_spec(t).name.clone(), row / nr.max(1));
        }
        row -= rows;
    }
    ("?".into(), 0)
}

impl<B: Backend, T: Real> super::Optimizer<B, T> for Hig<B, T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn step(&mut self, obj: &mut Objective<B, T>, params: &mut B::Buf<T>) -> Result<StepInfo> {
        let be = obj.backend().clone();
        if obj.num_residuals() == 0 {
            return Err(Error::invalid(
                "batch",
                "empty",
                format!(
                    "at least one point with residuals for `{}` (the objective has none)",
                    self.name
                ),
            ));
        }
        // curvature: scaled residual Jacobian J and residuals r̃ (L = ½‖r̃‖²), on the backend
        jacobian_into(obj, params, &mut self.jac)?;
        let jac = &self.jac;
        let loss = 0.5 * be.dot(&jac.r, &jac.r)?;
        if !loss.is_finite() {
            // find the culprit (an error path: the residuals may come to the host)
            let r = jac.r_host(&be)?;
            if let Some(i) = r.iter().position(|v| !v.is_finite()) {
                let (term, sample) = locate_row(obj, i);
                return Err(Error::NonFinite(format!(
                    "residual row {i} (term `{term}`, sample {sample}) is {}",
                    r[i]
                )));
            }
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        // direction: η·(−V Σ_τ^{−κ} Uᵀ r̃) from the thin SVD of J (η = 1 for the search)
        let eta_fixed = self.lr.unwrap_or(1.0);
        let (m, p) = (jac.rows, jac.cols);
        let info = self.svd.compute(
            &be,
            &jac.j,
            m,
            p,
            &jac.r,
            self.kappa,
            self.tau,
            eta_fixed,
            &mut self.dir,
        )?;
        let extra = vec![
            ("rank", info.rank as f64),
            ("sigma_max", info.sigma_max),
            ("sigma_min_kept", info.sigma_min_kept),
        ];
        // step size and update
        let eta = match self.lr {
            Some(eta) => {
                be.axpby(T::ONE, &self.dir, T::ONE, params)?;
                eta
            }
            None => grid_line_search(obj, params, &self.dir, loss, K_MIN, &mut self.trial)?.eta,
        };
        Ok(StepInfo {
            loss,
            lr: Some(eta),
            extra,
        })
    }

    /// HIG keeps no state between steps (every step starts from a fresh Jacobian).
    fn state(&self, _be: &B) -> Result<State> {
        Ok(vec![])
    }

    fn load_state(&mut self, _be: &B, state: &State) -> Result<()> {
        match state.first() {
            None => Ok(()),
            Some((k, _)) => Err(Error::Format {
                path: "optimizer state".into(),
                msg: format!("`{}` keeps no state, found `{k}`", self.name),
            }),
        }
    }
}

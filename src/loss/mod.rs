//! Least-squares objectives `L(θ) = Σ_terms w/(2N) Σ_n ‖r_n(θ)‖²` on a backend: the loss
//! (value pass only), its gradient (one forward-with-storage and one backward pass per
//! chunk), and a chunk-by-chunk sweep that exposes residuals, their Gauss–Newton seeds and
//! the reverse pass to curvature code (KFAC factors, Gramians, Jacobians).
//!
//! Residuals that are quadratic forms of the output jet (every built-in problem and the
//! custom poisson/heat ones, [`crate::pde::Residual::quad_form`]) are computed by the
//! backend where the jet lives: the per-point data `a, d` are uploaded when the points
//! change, and a sweep's residuals, squared sums and seeds stay there; only scalars come
//! back. Other residuals are evaluated on the host from the downloaded output jet, and
//! any consumer may still ask a chunk for its host residuals and Jacobian (lazily).
//!
//! Sweeps run in workers ([`Objective::sweep_par`]): contiguous shares of a term's
//! samples, each with its own jet engine and scratch, one per thread on the CPU; a
//! gradient sweep's workers accumulate into buffers of their own ([`WorkerAccs`], in
//! [`accs`]), added together afterwards.
//!
//! Inverse problems (design §7): the parameter vector is `[network | coefficients]`
//! ([`Mlp::num_coefs`]); every entry point reads the coefficients' current values from
//! its tail. Terms whose residual reads them run on the host ([`crate::pde::Residual::
//! eval_coef`]), which also gives `∂r/∂coef`: each chunk of a gradient sweep records its
//! share of the coefficients' gradient and of their Gauss–Newton block
//! ([`ChunkPass::record_coefs`]), summed afterwards in (term, sample) order, so the sum
//! does not depend on the threads' timing ([`Objective::finish_coefs`]).
//!
//! Checked by `tests/gradient.rs`: the gradient against finite differences of the loss,
//! the per-layer Z/G matrices against the gradient (∇W = Gᵀ Z with seeds r/N), and the
//! backend residual path against the host path; `tests/curvature_kfac.rs` runs the KFAC
//! pass with one and three workers.

mod accs;
mod eval;

pub use accs::{WorkerAcc, WorkerAccs, WorkerShare};
pub use eval::{Evaluator, FieldErrors, L2Error};

use crate::backend::{run_workers, Backend, Lay, QuadForm};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, JetEngine, JetKind, LayerView};
use crate::model::Mlp;
use crate::pde::TermSpec;
use crate::scalar::{convert, Real};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One chunk's shares of the coefficients' gradient (`w/N Σ r ∂r/∂c`, K values) and of
/// their Gauss–Newton block (`w/N Σ (∂r/∂c)ᵀ ∂r/∂c`, K × K), keyed by (term, first
/// sample).
type CoefShares = BTreeMap<(usize, usize), (Vec<f64>, Vec<f64>)>;

/// One sweep worker: its jet engine and residual scratch (`r` holds a chunk's residuals,
/// `ss` one squared sum).
struct Worker<B: Backend, T: Real> {
    engine: JetEngine<B, T>,
    r: B::Buf<T>,
    ss: B::Buf<T>,
}

impl<B: Backend, T: Real> Worker<B, T> {
    fn new(be: &B, mlp: &Mlp, spec: &TermSpec, chunk_rows: Option<usize>) -> Result<Self> {
        let engine = JetEngine::new(be.clone(), mlp.clone(), spec.kind.clone(), chunk_rows)?;
        let r = be.alloc(engine.chunk())?;
        Ok(Worker {
            engine,
            r,
            ss: be.alloc(1)?,
        })
    }
}

/// A term's residual as a quadratic form on the backend (see [`QuadForm`]).
struct Quad<B: Backend, T: Real> {
    a: B::Buf<T>,
    b: B::Buf<T>,
    d: B::Buf<T>,
}

struct Term<B: Backend, T: Real> {
    spec: TermSpec,
    /// At least one; more for [`Objective::sweep_par`] (made on first use).
    workers: Vec<Worker<B, T>>,
    chunk_rows: Option<usize>,
    x_host: Vec<f64>,
    x: B::Buf<T>,
    n: usize,
    quad: Option<Quad<B, T>>,
}

/// A least-squares objective over a network and a set of terms with their points.
pub struct Objective<B: Backend, T: Real> {
    be: B,
    mlp: Mlp,
    terms: Vec<Term<B, T>>,
    /// At most this many sweep workers (None: the backend's choice).
    max_workers: Option<usize>,
    /// The workers' gradients of [`Objective::loss_grad`] (kept between calls).
    grad_accs: WorkerAccs<B, T, ()>,
    /// Use the backend's residual kernels where a term has a quadratic form.
    backend_residuals: bool,
    /// The coefficients' values, read from the parameters' tail by every entry point.
    coefs: Vec<f64>,
    /// Chunks' coefficient shares of the current sweep ([`ChunkPass::record_coefs`]).
    coef_shares: Mutex<CoefShares>,
}

/// One chunk of one term during a sweep: its points, its residuals and their Jacobian with
/// respect to the output jet (on the backend, or on the host on request), and the reverse
/// pass.
pub struct ChunkPass<'a, B: Backend, T: Real> {
    pub term: usize,
    /// Index of the chunk's first sample within the term.
    pub first: usize,
    /// Samples in this chunk.
    pub n: usize,
    /// Samples in the whole term.
    pub n_total: usize,
    /// The term's weight `w` (loss = w/(2N) Σ ‖r‖²).
    pub weight: f64,
    pub n_res: usize,
    /// Output-jet values per sample (`S·m`).
    pub s_m: usize,
    /// The chunk's points (row-major).
    pub x: &'a [f64],
    spec: &'a TermSpec,
    /// Host residuals (`n × n_res`), `∂r/∂y` (`n × n_res × S·m`) and `∂r/∂coef`
    /// (`n × n_res × K`, empty for a term without coefficients), once computed.
    host: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    /// The coefficients' values and where a chunk records its shares.
    coefs: &'a [f64],
    coef_shares: &'a Mutex<CoefShares>,
    /// The quadratic form, if the residuals are in `r_dev`.
    form: Option<QuadForm<'a, B, T>>,
    r_dev: &'a mut B::Buf<T>,
    ss_dev: &'a mut B::Buf<T>,
    pub(crate) engine: &'a mut JetEngine<B, T>,
    pub(crate) params: &'a B::Buf<T>,
}

impl<B: Backend, T: Real> ChunkPass<'_, B, T> {
    fn host(&mut self) -> Result<&(Vec<f64>, Vec<f64>, Vec<f64>)> {
        if self.host.is_none() {
            let (nr, sm, n) = (self.n_res, self.s_m, self.n);
            let kc = if self.uses_coefs() {
                self.coefs.len()
            } else {
                0
            };
            let d = self.x.len() / n.max(1);
            let y = self.engine.output()?;
            let mut r = vec![0.0; n * nr];
            let mut jac = vec![0.0; n * nr * sm];
            let mut dc = vec![0.0; n * nr * kc];
            for i in 0..n {
                let (x, y) = (&self.x[i * d..(i + 1) * d], &y[i * sm..(i + 1) * sm]);
                let (r, jac) = (
                    &mut r[i * nr..(i + 1) * nr],
                    &mut jac[i * nr * sm..][..nr * sm],
                );
                if kc > 0 {
                    let dc = &mut dc[i * nr * kc..][..nr * kc];
                    self.spec
                        .residual
                        .eval_coef(x, y, self.coefs, r, Some(jac), Some(dc));
                } else {
                    self.spec.residual.eval(x, y, r, Some(jac));
                }
            }
            self.host = Some((r, jac, dc));
        }
        Ok(self.host.as_ref().expect("just computed"))
    }
    /// Whether this chunk's residuals read the problem's coefficients.
    pub fn uses_coefs(&self) -> bool {
        !self.coefs.is_empty() && self.spec.residual.n_coef() > 0
    }
    /// The number of coefficients of the objective (K; 0 for a forward problem).
    pub fn n_coef(&self) -> usize {
        self.coefs.len()
    }
    /// `∂r/∂coef` per sample (`n × n_res × K`) on the host; empty if the term's residual
    /// does not read the coefficients (its columns of the Jacobian are zero).
    pub fn coef_jac(&mut self) -> Result<&[f64]> {
        if !self.uses_coefs() {
            return Ok(&[]);
        }
        Ok(&self.host()?.2)
    }
    /// The coefficients' part of `J v` per residual (`n × n_res`, un-scaled):
    /// `(∂r_{i,q}/∂coef)·v_coef`, zero for a term without coefficients.
    pub fn coef_tangent(&mut self, v_coef: &[f64]) -> Result<Vec<f64>> {
        let (n, nr, k) = (self.n, self.n_res, self.coefs.len());
        let dc = self.coef_jac()?;
        if dc.is_empty() {
            return Ok(vec![0.0; n * nr]);
        }
        Ok(dc
            .chunks(k)
            .map(|row| row.iter().zip(v_coef).map(|(a, b)| a * b).sum())
            .collect())
    }
    /// `Σ_{i,q} w[i·n_res + q] · ∂r_{i,q}/∂coef` (K values): the coefficients' part of
    /// `Jᵀ w` for weights `w` of the chunk's residuals (zero without coefficients).
    pub fn coef_vjp(&mut self, w: &[f64]) -> Result<Vec<f64>> {
        let k = self.coefs.len();
        let mut out = vec![0.0; k];
        for (row, &wi) in self.coef_jac()?.chunks(k.max(1)).zip(w) {
            for (o, &d) in out.iter_mut().zip(row) {
                *o += wi * d;
            }
        }
        Ok(out)
    }
    /// Record this chunk's share of the coefficients' gradient `w/N Σ r·∂r/∂coef` and of
    /// their Gauss–Newton block `w/N Σ (∂r/∂coef)ᵀ(∂r/∂coef)` for
    /// [`Objective::finish_coefs`]; nothing for a term without coefficients.
    pub fn record_coefs(&mut self) -> Result<()> {
        if !self.uses_coefs() {
            return Ok(());
        }
        let k = self.coefs.len();
        let scale = self.weight / self.n_total as f64;
        let (r, _, dc) = self.host()?;
        let (mut g, mut gram) = (vec![0.0; k], vec![0.0; k * k]);
        for (row, &rv) in dc.chunks(k).zip(r) {
            for a in 0..k {
                g[a] += scale * rv * row[a];
                for b in 0..k {
                    gram[a * k + b] += scale * row[a] * row[b];
                }
            }
        }
        let key = (self.term, self.first);
        self.coef_shares
            .lock()
            .map_err(|_| Error::Shape("a sweep worker panicked".into()))?
            .insert(key, (g, gram));
        Ok(())
    }
    /// Residuals per sample (`n × n_res`), on the host.
    pub fn r(&mut self) -> Result<&[f64]> {
        Ok(&self.host()?.0)
    }
    /// `∂r/∂y` per sample (`n × n_res × S·m`, the output-jet layout of
    /// [`JetEngine::output`]), on the host.
    pub fn jac(&mut self) -> Result<&[f64]> {
        Ok(&self.host()?.1)
    }
    /// `Σ ‖r_n‖²` over the chunk (on the backend where it can; one scalar comes back).
    pub fn sum_sq(&mut self) -> Result<f64> {
        if self.form.is_some() {
            let be = self.engine.backend().clone();
            let row = Lay::dense(1, self.n);
            be.row_dot(self.r_dev, row, self.r_dev, row, T::ZERO, self.ss_dev, 0)?;
            let mut v = [T::ZERO];
            be.download_range(self.ss_dev, 0, &mut v)?;
            return Ok(v[0].to_f64());
        }
        Ok(self.r()?.iter().map(|v| v * v).sum())
    }
    /// Reverse pass with the given output-jet seeds (`n × S·m`, sample-major).
    pub fn backward(
        &mut self,
        seeds: &[f64],
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.engine.backward(self.params, seeds, visit)
    }
    /// Reverse pass seeded with `(alpha·r_n + beta)·∂r_n/∂y` (one residual component),
    /// the seeds made on the backend.
    fn backward_form(
        &mut self,
        alpha: f64,
        beta: f64,
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.backward_form_with(None, alpha, beta, visit)
    }
    /// [`Self::backward_form`] with per-sample weights `w` in place of the residuals.
    fn backward_form_with(
        &mut self,
        w: Option<&B::Buf<T>>,
        alpha: f64,
        beta: f64,
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        let form = self.form.expect("called with a form");
        let be = self.engine.backend().clone();
        let shape = self.engine.output_shape();
        let r = w.unwrap_or(&*self.r_dev);
        let (y, seeds) = self.engine.output_and_seeds()?;
        let (a, b) = (T::from_f64(alpha), T::from_f64(beta));
        be.quad_seeds(y, &form, r, a, b, self.first, shape, seeds)?;
        self.engine.backward_seeded(self.params, visit)
    }
    /// Whether this chunk's residuals are a quadratic form held on the backend: then
    /// [`Self::residual_tangent_to`] and [`Self::backward_weighted`] work there.
    pub fn on_backend(&self) -> bool {
        self.form.is_some()
    }
    /// `out[i] = (∂r_i/∂y)·ẏ_i` along the parameter direction `v`, on the backend: the
    /// chunk's rows of `J·v`, un-scaled (`out` grows to the chunk if needed). Needs a
    /// quadratic-form residual ([`Self::on_backend`]); overwrites the seed buffer.
    pub fn residual_tangent_to(&mut self, v: &B::Buf<T>, out: &mut B::Buf<T>) -> Result<()> {
        let Some(form) = self.form else {
            return Err(Error::Shape(
                "residual_tangent_to needs residuals on the backend (a quadratic form)".into(),
            ));
        };
        let be = self.engine.backend().clone();
        if be.len(out) < self.n {
            *out = be.alloc(self.n)?;
        }
        self.engine.tangent_in_place(self.params, v)?;
        let shape = self.engine.output_shape();
        let (y, yd) = self.engine.output_and_tangent()?;
        be.quad_tangent(y, &form, yd, self.first, shape, out)
    }
    /// Reverse pass seeded with `alpha·w_i·∂r_i/∂y` for per-sample weights `w` on the
    /// backend (`Jᵀ` of a weighted residual vector). Needs [`Self::on_backend`].
    pub fn backward_weighted(
        &mut self,
        w: &B::Buf<T>,
        alpha: f64,
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        if self.form.is_none() {
            return Err(Error::Shape(
                "backward_weighted needs residuals on the backend (a quadratic form)".into(),
            ));
        }
        self.backward_form_with(Some(w), alpha, 0.0, visit)
    }
    /// Reverse pass for the loss gradient: seeds `w/N Σ_q r_{n,q} ∂r_{n,q}/∂y`.
    pub fn backward_grad(
        &mut self,
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        let scale = self.weight / self.n_total as f64;
        if self.form.is_some() {
            return self.backward_form(scale, 0.0, visit);
        }
        let seeds = self.grad_seeds()?;
        self.backward(&seeds, visit)
    }
    /// Reverse pass seeded with the un-scaled Jacobian of residual component `q`.
    pub fn backward_component(
        &mut self,
        q: usize,
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        if self.form.is_some() {
            return self.backward_form(0.0, 1.0, visit);
        }
        let seeds = self.component_seeds(q, |_| 1.0)?;
        self.backward(&seeds, visit)
    }
    /// `out[i] = scale · r_{i,q}` on the backend (`out` grows to the chunk if needed).
    pub fn component_residuals(&mut self, q: usize, scale: f64, out: &mut B::Buf<T>) -> Result<()> {
        self.residuals_to(Some(q), scale, out)
    }
    /// `out[i·n_res + q] = scale · r_{i,q}` on the backend (`out` grows if needed).
    pub fn scaled_residuals(&mut self, scale: f64, out: &mut B::Buf<T>) -> Result<()> {
        self.residuals_to(None, scale, out)
    }
    fn residuals_to(&mut self, q: Option<usize>, scale: f64, out: &mut B::Buf<T>) -> Result<()> {
        let be = self.engine.backend().clone();
        let nr = self.n_res;
        let len = if q.is_some() { self.n } else { self.n * nr };
        if be.len(out) < len {
            *out = be.alloc(len)?;
        }
        if self.form.is_some() {
            // one component, already on the backend
            be.copy(self.r_dev, 0, out, 0, self.n)?;
            return be.scale(T::from_f64(scale), out);
        }
        let (skip, step) = match q {
            Some(q) => (q, nr),
            None => (0, 1),
        };
        let host: Vec<T> = self
            .r()?
            .iter()
            .skip(skip)
            .step_by(step)
            .map(|&v| T::from_f64(v * scale))
            .collect();
        be.upload_range(&host, out, 0)
    }
    /// Seeds of the loss gradient on the host: `w/N Σ_r r_{n,r} ∂r_{n,r}/∂y`.
    pub fn grad_seeds(&mut self) -> Result<Vec<f64>> {
        let scale = self.weight / self.n_total as f64;
        let (n, nr, sm) = (self.n, self.n_res, self.s_m);
        let (r, jac, _) = self.host()?;
        let mut s = vec![0.0; n * sm];
        for i in 0..n {
            for q in 0..nr {
                let rv = r[i * nr + q] * scale;
                let j = &jac[(i * nr + q) * sm..][..sm];
                for (o, &jv) in s[i * sm..][..sm].iter_mut().zip(j) {
                    *o += rv * jv;
                }
            }
        }
        Ok(s)
    }
    /// Seeds selecting residual component `q` of every sample, each scaled by `scale[i]`
    /// (on the host).
    pub fn component_seeds(&mut self, q: usize, scale: impl Fn(usize) -> f64) -> Result<Vec<f64>> {
        let (n, nr, sm) = (self.n, self.n_res, self.s_m);
        let jac = &self.host()?.1;
        let mut s = vec![0.0; n * sm];
        for i in 0..n {
            let c = scale(i);
            let j = &jac[(i * nr + q) * sm..][..sm];
            for (o, &jv) in s[i * sm..][..sm].iter_mut().zip(j) {
                *o = c * jv;
            }
        }
        Ok(s)
    }
    pub fn kind(&self) -> &JetKind {
        self.engine.kind()
    }
}

/// What a sweep over one term reads: the term's spec, points and residual form.
struct TermInput<'a, B: Backend, T: Real> {
    t: usize,
    coefs: &'a [f64],
    coef_shares: &'a Mutex<CoefShares>,
    spec: &'a TermSpec,
    x: &'a B::Buf<T>,
    x_host: &'a [f64],
    n_total: usize,
    d: usize,
    m: usize,
    form: Option<QuadForm<'a, B, T>>,
}

impl<B: Backend, T: Real> TermInput<'_, B, T> {
    /// Forward (with stored jets) every chunk of samples `range` with the worker's engine,
    /// compute the residuals on the backend if the term has a form, and hand each chunk
    /// to `f`.
    fn run(
        &self,
        worker: &mut Worker<B, T>,
        params: &B::Buf<T>,
        range: std::ops::Range<usize>,
        f: &mut dyn FnMut(&mut ChunkPass<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        let d = self.d;
        let Worker { engine, r, ss } = worker;
        let mut first = range.start;
        while first < range.end {
            let c = engine.chunk().min(range.end - first);
            engine.forward_chunk(params, self.x, first, c, true)?;
            if let Some(form) = &self.form {
                let be = engine.backend().clone();
                be.quad_residual(engine.output_buf(), form, first, engine.output_shape(), r)?;
            }
            let mut pass = ChunkPass {
                term: self.t,
                first,
                n: c,
                n_total: self.n_total,
                weight: self.spec.weight,
                n_res: self.spec.residual.n_res(),
                s_m: self.spec.kind.s() * self.m,
                x: &self.x_host[first * d..(first + c) * d],
                spec: self.spec,
                host: None,
                coefs: self.coefs,
                coef_shares: self.coef_shares,
                form: self.form,
                r_dev: r,
                ss_dev: ss,
                engine,
                params,
            };
            f(&mut pass)?;
            first += c;
        }
        Ok(())
    }

    /// Host residuals (`c × n_res`) of the chunk of `c` samples at `first` from its output
    /// jet `y` (sample-major, [`JetEngine::output`]).
    fn host_residuals(&self, first: usize, c: usize, y: &[f64], out: &mut [f64]) {
        let (d, nr) = (self.d, self.spec.residual.n_res());
        let sm = self.spec.kind.s() * self.m;
        let coefs = self.spec.residual.n_coef() > 0 && !self.coefs.is_empty();
        for i in 0..c {
            let gi = first + i;
            let (x, y) = (&self.x_host[gi * d..(gi + 1) * d], &y[i * sm..(i + 1) * sm]);
            let r = &mut out[i * nr..(i + 1) * nr];
            if coefs {
                self.spec
                    .residual
                    .eval_coef(x, y, self.coefs, r, None, None);
            } else {
                self.spec.residual.eval(x, y, r, None);
            }
        }
    }

    /// `Σ ‖r_n‖²` of samples `range` from value passes (no stored jets).
    fn sum_sq_values(
        &self,
        worker: &mut Worker<B, T>,
        params: &B::Buf<T>,
        range: std::ops::Range<usize>,
    ) -> Result<f64> {
        let nr = self.spec.residual.n_res();
        let Worker { engine, r, ss } = worker;
        let be = engine.backend().clone();
        let mut total = 0.0;
        let mut first = range.start;
        let mut rh = vec![0.0; engine.chunk() * nr];
        while first < range.end {
            let c = engine.chunk().min(range.end - first);
            engine.forward_chunk(params, self.x, first, c, false)?;
            if let Some(form) = &self.form {
                be.quad_residual(engine.output_buf(), form, first, engine.output_shape(), r)?;
                let row = Lay::dense(1, c);
                be.row_dot(r, row, r, row, T::ZERO, ss, 0)?;
                let mut v = [T::ZERO];
                be.download_range(ss, 0, &mut v)?;
                total += v[0].to_f64();
            } else {
                let y = engine.output()?;
                self.host_residuals(first, c, &y, &mut rh);
                total += rh[..c * nr].iter().map(|v| v * v).sum::<f64>();
            }
            first += c;
        }
        Ok(total)
    }
}

impl<B: Backend, T: Real> Objective<B, T> {
    /// `chunk_rows`: jet rows per chunk (None: the engine default).
    /// `mlp` may carry coefficients ([`Mlp::with_coefficients`]): then every term's
    /// residual reads none or all of them.
    pub fn new(be: B, mlp: Mlp, specs: Vec<TermSpec>, chunk_rows: Option<usize>) -> Result<Self> {
        let mut terms = Vec::with_capacity(specs.len());
        let k = mlp.num_coefs();
        for spec in specs {
            let kr = spec.residual.n_coef();
            if kr != 0 && kr != k {
                return Err(Error::invalid(
                    format!("coefficients read by term `{}`", spec.name),
                    kr,
                    format!("0 or the problem's {k}"),
                ));
            }
            if !(spec.weight.is_finite() && spec.weight >= 0.0) {
                return Err(Error::invalid(
                    format!("weight of term `{}`", spec.name),
                    spec.weight,
                    "a finite number >= 0",
                ));
            }
            let worker = Worker::new(&be, &mlp, &spec, chunk_rows)?;
            let x = be.alloc(0)?;
            terms.push(Term {
                spec,
                workers: vec![worker],
                chunk_rows,
                x_host: vec![],
                x,
                n: 0,
                quad: None,
            });
        }
        Ok(Objective {
            be,
            mlp,
            terms,
            max_workers: None,
            grad_accs: WorkerAccs::default(),
            backend_residuals: true,
            coefs: vec![0.0; k],
            coef_shares: Mutex::new(BTreeMap::new()),
        })
    }

    /// Number of unknown coefficients (the tail of the parameter vector).
    pub fn num_coefs(&self) -> usize {
        self.coefs.len()
    }

    /// The coefficients' values at the last call (the parameters' tail).
    pub fn coefficients(&self) -> &[f64] {
        &self.coefs
    }

    /// The tail of a parameter-length vector `v` (its coefficient entries), on the host.
    pub fn coef_part(&self, v: &B::Buf<T>) -> Result<Vec<f64>> {
        let k = self.coefs.len();
        if k == 0 {
            return Ok(vec![]);
        }
        let mut h = vec![T::ZERO; k];
        self.be
            .download_range(v, self.mlp.num_net_params(), &mut h)?;
        Ok(convert(&h))
    }

    /// Write `vals` into the coefficient entries of a parameter-length vector.
    pub fn set_coef_part(&self, v: &mut B::Buf<T>, vals: &[f64]) -> Result<()> {
        if vals.is_empty() {
            return Ok(());
        }
        self.be
            .upload_range(&convert::<f64, T>(vals), v, self.mlp.num_net_params())
    }

    /// Forget the coefficient shares of an unfinished sweep (call before a sweep whose
    /// chunks [`ChunkPass::record_coefs`]).
    pub fn start_coefs(&self) {
        if let Ok(mut m) = self.coef_shares.lock() {
            m.clear();
        }
    }

    /// After a sweep whose chunks recorded their coefficient shares: their sum in (term,
    /// sample) order, the gradient written into `grad`'s coefficient entries (added to
    /// what is there), and the coefficients' Gauss–Newton block (`K × K`) returned.
    pub fn finish_coefs(&self, grad: &mut B::Buf<T>) -> Result<Vec<f64>> {
        let k = self.coefs.len();
        let shares = std::mem::take(
            &mut *self
                .coef_shares
                .lock()
                .map_err(|_| Error::Shape("a sweep worker panicked".into()))?,
        );
        if k == 0 {
            return Ok(vec![]);
        }
        let (mut g, mut gram) = (self.coef_part(grad)?, vec![0.0; k * k]);
        for (cg, cgram) in shares.values() {
            g.iter_mut().zip(cg).for_each(|(a, b)| *a += b);
            gram.iter_mut().zip(cgram).for_each(|(a, b)| *a += b);
        }
        self.set_coef_part(grad, &g)?;
        Ok(gram)
    }

    pub fn backend(&self) -> &B {
        &self.be
    }
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }
    pub fn num_terms(&self) -> usize {
        self.terms.len()
    }
    pub fn term_spec(&self, t: usize) -> &TermSpec {
        &self.terms[t].spec
    }
    pub fn term_points(&self, t: usize) -> usize {
        self.terms[t].n
    }
    /// The term's points on the host (row-major).
    pub fn term_x(&self, t: usize) -> &[f64] {
        &self.terms[t].x_host
    }
    /// Total number of residual rows (Σ_terms N · n_res): the Jacobian's height.
    pub fn num_residuals(&self) -> usize {
        self.terms
            .iter()
            .map(|t| t.n * t.spec.residual.n_res())
            .sum()
    }
    /// Bytes held by the jet engines' work buffers.
    pub fn workspace_bytes(&self) -> usize {
        self.terms
            .iter()
            .flat_map(|t| &t.workers)
            .map(|w| w.engine.workspace_bytes())
            .sum()
    }

    /// Compute residuals and seeds with the backend's kernels where a term's residual is
    /// a quadratic form (the default), or always on the host (`false`; for comparisons).
    pub fn set_backend_residuals(&mut self, on: bool) -> Result<()> {
        self.backend_residuals = on;
        for t in 0..self.terms.len() {
            self.upload_form(t)?;
        }
        Ok(())
    }

    /// True if term `t`'s residuals are computed by the backend.
    pub fn backend_residuals(&self, t: usize) -> bool {
        self.terms[t].quad.is_some()
    }

    /// The per-point data of term `t`'s quadratic form on the backend, if it has one
    /// (one residual component; the output jet along the coordinate axes).
    fn upload_form(&mut self, t: usize) -> Result<()> {
        let d = self.mlp.input_dim();
        let c = self.terms[t].spec.kind.s() * self.mlp.output_dim();
        let term = &mut self.terms[t];
        term.quad = None;
        let axes = term.spec.kind.axes();
        // residuals that read the coefficients run on the host (their ∂r/∂coef with them)
        if !self.backend_residuals
            || !axes
            || term.spec.residual.n_res() != 1
            || term.spec.residual.n_coef() > 0
            || term.n == 0
        {
            return Ok(());
        }
        let (mut a, mut b, mut dv) = (vec![0.0; term.n * c], vec![0.0; c], vec![0.0; term.n]);
        for i in 0..term.n {
            let x = &term.x_host[i * d..(i + 1) * d];
            b.fill(0.0);
            match term
                .spec
                .residual
                .quad_form(x, &mut a[i * c..(i + 1) * c], &mut b)
            {
                Some(v) => dv[i] = v,
                None => return Ok(()),
            }
        }
        term.quad = Some(Quad {
            a: self.be.upload(&convert::<f64, T>(&a))?,
            b: self.be.upload(&convert::<f64, T>(&b))?,
            d: self.be.upload(&convert::<f64, T>(&dv))?,
        });
        Ok(())
    }

    /// Replace the operator of term `t` (a term of one operator) by `op` of the same
    /// dimension and number of directions, in the term and in every worker's jet engine:
    /// a fresh draw of a randomized estimator before a step (design §9). The residual's
    /// backend data do not depend on the directions and stay.
    pub fn set_operator(&mut self, t: usize, op: &crate::jet::Operator) -> Result<()> {
        let term = self
            .terms
            .get_mut(t)
            .ok_or_else(|| Error::invalid("term", t, "an existing term index"))?;
        for w in &mut term.workers {
            w.engine.set_operator(op)?;
        }
        term.spec.kind = JetKind::Full(op.clone());
        Ok(())
    }

    /// Replace the points of term `t` (row-major, input-dimension columns).
    pub fn set_points(&mut self, t: usize, x: Vec<f64>) -> Result<()> {
        let d = self.mlp.input_dim();
        let term = self
            .terms
            .get_mut(t)
            .ok_or_else(|| Error::invalid("term", t, "an existing term index"))?;
        if !x.len().is_multiple_of(d) {
            return Err(Error::Shape(format!(
                "{} coordinates are not a whole number of {d}-dimensional points",
                x.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                format!("point {} of term `{}`", i / d, term.spec.name),
                x[i],
                "finite coordinates",
            ));
        }
        term.n = x.len() / d;
        term.x = self.be.upload(&convert::<f64, T>(&x))?;
        term.x_host = x;
        self.upload_form(t)
    }

    /// Check `params` against the network and read the coefficients from its tail.
    fn check_params(&mut self, params: &B::Buf<T>) -> Result<()> {
        self.mlp.check_params(self.be.len(params))?;
        if !self.coefs.is_empty() {
            self.coefs = self.coef_part(params)?;
        }
        Ok(())
    }

    /// Make sure term `t` has `workers` workers.
    fn ensure_workers(&mut self, t: usize, workers: usize) -> Result<()> {
        let term = &mut self.terms[t];
        while term.workers.len() < workers {
            let w = Worker::new(&self.be, &self.mlp, &term.spec, term.chunk_rows)?;
            term.workers.push(w);
        }
        Ok(())
    }

    /// Split term `t` over `workers` workers: `(samples, worker)` jobs and the term's
    /// sweep input.
    #[allow(clippy::type_complexity)]
    fn jobs(
        &mut self,
        t: usize,
        workers: usize,
    ) -> Result<(
        TermInput<'_, B, T>,
        Vec<(std::ops::Range<usize>, &mut Worker<B, T>)>,
    )> {
        self.ensure_workers(t, workers)?;
        let (d, m) = (self.mlp.input_dim(), self.mlp.output_dim());
        let (coefs, coef_shares) = (&self.coefs, &self.coef_shares);
        let term = &mut self.terms[t];
        let n = term.n;
        let form = term.quad.as_ref().map(|q| QuadForm {
            a: &q.a,
            b: &q.b,
            d: &q.d,
        });
        let input = TermInput {
            t,
            coefs,
            coef_shares,
            spec: &term.spec,
            x: &term.x,
            x_host: &term.x_host,
            n_total: n,
            d,
            m,
            form,
        };
        let jobs = term
            .workers
            .iter_mut()
            .take(workers)
            .enumerate()
            .map(|(w, wk)| (n * w / workers..n * (w + 1) / workers, wk))
            .collect();
        Ok((input, jobs))
    }

    /// Residuals of term `t` (`N × n_res`) on the host, from value passes (no stored
    /// jets).
    pub fn residuals(&mut self, params: &B::Buf<T>, t: usize) -> Result<Vec<f64>> {
        self.check_params(params)?;
        let (input, mut jobs) = self.jobs(t, 1)?;
        let (range, worker) = jobs.pop().expect("one job");
        let nr = input.spec.residual.n_res();
        let mut r = vec![0.0; range.len() * nr];
        let engine = &mut worker.engine;
        let mut first = 0;
        while first < range.end {
            let c = engine.chunk().min(range.end - first);
            engine.forward_chunk(params, input.x, first, c, false)?;
            let y = engine.output()?;
            input.host_residuals(first, c, &y, &mut r[first * nr..(first + c) * nr]);
            first += c;
        }
        Ok(r)
    }

    /// Per-term losses `w/(2N) Σ ‖r‖²` (value passes, split over the workers).
    pub fn loss_terms(&mut self, params: &B::Buf<T>) -> Result<Vec<f64>> {
        self.check_params(params)?;
        let mut out = Vec::with_capacity(self.terms.len());
        for t in 0..self.terms.len() {
            let n = self.terms[t].n;
            if n == 0 {
                out.push(0.0);
                continue;
            }
            let workers = self.workers(t);
            let (input, jobs) = self.jobs(t, workers)?;
            let mut sums = vec![0.0; jobs.len()];
            let jobs: Vec<_> = jobs.into_iter().zip(sums.iter_mut()).collect();
            run_workers(jobs, |((range, wk), s)| {
                *s = input.sum_sq_values(wk, params, range)?;
                Ok(())
            })?;
            out.push(self.term_loss(t, sums.iter().sum()));
        }
        Ok(out)
    }

    /// Term `t`'s loss `w/(2N) Σ ‖r_n‖²` from the squared residual sum `ss`.
    pub fn term_loss(&self, t: usize, ss: f64) -> f64 {
        let term = &self.terms[t];
        term.spec.weight * ss / (2.0 * term.n.max(1) as f64)
    }

    /// The loss from its per-term values; a non-finite sum is an error that names them.
    pub fn total_loss(&self, per_term: &[f64]) -> Result<f64> {
        let l: f64 = per_term.iter().sum();
        if !l.is_finite() {
            return Err(Error::NonFinite(format!(
                "loss is {l} ({})",
                self.name_terms(per_term)
            )));
        }
        Ok(l)
    }

    /// The loss (value pass only). Non-finite values are reported as errors.
    pub fn loss(&mut self, params: &B::Buf<T>) -> Result<f64> {
        let terms = self.loss_terms(params)?;
        self.total_loss(&terms)
    }

    /// "term `a` = 1.0, term `b` = NaN": per-term values named, so that a non-finite
    /// loss says where it came from (e.g. a simulator inside a residual).
    fn name_terms(&self, per_term: &[f64]) -> String {
        self.terms
            .iter()
            .zip(per_term)
            .map(|(t, v)| format!("term `{}` = {v}", t.spec.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Visit every chunk of term `t` in order: forward with stored jets, residuals, then
    /// `f` (which may run backward passes).
    pub fn sweep(
        &mut self,
        params: &B::Buf<T>,
        t: usize,
        mut f: impl FnMut(&mut ChunkPass<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.check_params(params)?;
        let (input, mut jobs) = self.jobs(t, 1)?;
        let (range, worker) = jobs.pop().expect("one job");
        input.run(worker, params, range, &mut f)
    }

    /// The number of workers [`Self::sweep_par`] uses for term `t`: the backend's
    /// [`Backend::chunk_workers`] (or the limit of [`Self::set_workers`]), at most one per
    /// chunk.
    pub fn workers(&self, t: usize) -> usize {
        let term = &self.terms[t];
        let chunks = term.n.div_ceil(term.workers[0].engine.chunk()).max(1);
        let want = self.max_workers.unwrap_or_else(|| self.be.chunk_workers());
        want.clamp(1, chunks)
    }

    /// Fix the number of sweep workers (None: the backend's choice). More workers than
    /// threads is allowed (they take turns), which lets tests cover uneven splits on any
    /// machine.
    pub fn set_workers(&mut self, workers: Option<usize>) -> Result<()> {
        if workers == Some(0) {
            return Err(Error::invalid("sweep workers", 0, "at least 1"));
        }
        self.max_workers = workers;
        Ok(())
    }

    /// [`Self::sweep`] split over `states.len()` workers (see [`Self::workers`]), each with
    /// its own jet engine and state, and a contiguous share of the samples, chunked as
    /// usual. On the CPU each worker runs on its own thread with single-threaded
    /// operations, which beats splitting every small product across threads. The caller
    /// merges the states; chunk boundaries, and so rounding, depend on the worker count.
    pub fn sweep_par<W: Send>(
        &mut self,
        params: &B::Buf<T>,
        t: usize,
        states: &mut [W],
        f: impl Fn(&mut W, &mut ChunkPass<'_, B, T>) -> Result<()> + Sync,
    ) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        self.check_params(params)?;
        let (input, jobs) = self.jobs(t, states.len())?;
        let jobs: Vec<_> = jobs.into_iter().zip(states.iter_mut()).collect();
        run_workers(jobs, |((range, wk), st)| {
            input.run(wk, params, range, &mut |pass| f(&mut *st, pass))
        })
    }

    /// Loss and its gradient (written to `grad`, which must have the parameter count).
    pub fn loss_grad(&mut self, params: &B::Buf<T>, grad: &mut B::Buf<T>) -> Result<f64> {
        let mut accs = std::mem::take(&mut self.grad_accs);
        let loss = self.loss_grad_with(&mut accs, params, grad);
        self.grad_accs = accs;
        loss
    }

    /// [`Self::loss_grad`] with the workers' accumulators; the further workers' gradients
    /// are added in after each term.
    fn loss_grad_with(
        &mut self,
        accs: &mut WorkerAccs<B, T, ()>,
        params: &B::Buf<T>,
        grad: &mut B::Buf<T>,
    ) -> Result<f64> {
        let be = self.be.clone();
        accs.start(self, grad)?;
        self.start_coefs();
        let mut per_term = Vec::with_capacity(self.terms.len());
        for t in 0..self.terms.len() {
            let workers = self.workers(t);
            let mut states = accs.term(&be, grad, workers, false, || Ok(()))?;
            self.sweep_par(params, t, &mut states, |acc, pass| {
                acc.ss += pass.sum_sq()?;
                pass.record_coefs()?;
                pass.backward_grad(|be, v| accumulate_grad(be, &v, T::ONE, acc.grad))
            })?;
            let ss = WorkerAcc::total_sq(&states);
            drop(states);
            accs.add_grads(&be, grad)?;
            per_term.push(self.term_loss(t, ss));
        }
        self.finish_coefs(grad)?;
        self.total_loss(&per_term)
    }
}

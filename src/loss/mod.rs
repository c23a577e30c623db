//! Least-squares objectives `L(θ) = Σ_terms w/(2N) Σ_n ‖r_n(θ)‖²` on a backend: the loss
//! (value pass only), its gradient (one forward-with-storage and one backward pass per
//! chunk), and a chunk-by-chunk sweep that exposes residuals, their Gauss–Newton seeds and
//! the reverse pass to curvature code (KFAC factors, Gramians, Jacobians).
//!
//! Checked by `tests/gradient.rs`: the gradient against finite differences of the loss,
//! and the per-layer Z/G matrices against the gradient (∇W = Gᵀ Z with seeds r/N).

use crate::backend::{run_workers, Backend};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, JetEngine, JetKind, LayerView};
use crate::model::Mlp;
use crate::pde::TermSpec;
use crate::scalar::{convert, Real};

struct Term<B: Backend, T: Real> {
    spec: TermSpec,
    engine: JetEngine<B, T>,
    /// Engines of the further workers of [`Objective::sweep_par`] (made on first use).
    workers: Vec<JetEngine<B, T>>,
    chunk_rows: Option<usize>,
    x_host: Vec<f64>,
    x: B::Buf<T>,
    n: usize,
}

/// A least-squares objective over a network and a set of terms with their points.
pub struct Objective<B: Backend, T: Real> {
    be: B,
    mlp: Mlp,
    terms: Vec<Term<B, T>>,
    /// At most this many sweep workers (None: the backend's choice).
    max_workers: Option<usize>,
}

/// One chunk of one term during a [`Objective::sweep`]: its points, residuals, the
/// residuals' Jacobian with respect to the output jet, and access to the reverse pass.
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
    /// Residuals per sample (`n × n_res`).
    pub r: Vec<f64>,
    /// `∂r/∂y` per sample (`n × n_res × S·m`).
    pub jac: Vec<f64>,
    pub n_res: usize,
    /// Output-jet values per sample (`S·m`).
    pub s_m: usize,
    /// The chunk's points (row-major).
    pub x: &'a [f64],
    pub(crate) engine: &'a mut JetEngine<B, T>,
    pub(crate) params: &'a B::Buf<T>,
}

impl<B: Backend, T: Real> ChunkPass<'_, B, T> {
    /// Reverse pass with the given output-jet seeds (`n × S·m`, sample-major).
    pub fn backward(
        &mut self,
        seeds: &[f64],
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.engine.backward(self.params, seeds, visit)
    }
    /// Seeds of the loss gradient: `w/N Σ_r r_{n,r} ∂r_{n,r}/∂y`.
    pub fn grad_seeds(&self) -> Vec<f64> {
        let scale = self.weight / self.n_total as f64;
        let mut s = vec![0.0; self.n * self.s_m];
        for i in 0..self.n {
            for q in 0..self.n_res {
                let rv = self.r[i * self.n_res + q] * scale;
                let j = &self.jac[(i * self.n_res + q) * self.s_m..][..self.s_m];
                for (o, &jv) in s[i * self.s_m..][..self.s_m].iter_mut().zip(j) {
                    *o += rv * jv;
                }
            }
        }
        s
    }
    /// Seeds selecting residual component `q` of every sample, each scaled by `scale[i]`.
    pub fn component_seeds(&self, q: usize, scale: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut s = vec![0.0; self.n * self.s_m];
        for i in 0..self.n {
            let c = scale(i);
            let j = &self.jac[(i * self.n_res + q) * self.s_m..][..self.s_m];
            for (o, &jv) in s[i * self.s_m..][..self.s_m].iter_mut().zip(j) {
                *o = c * jv;
            }
        }
        s
    }
    pub fn kind(&self) -> &JetKind {
        self.engine.kind()
    }
}

/// What a sweep over one term reads: the term's spec and points.
struct TermInput<'a, B: Backend, T: Real> {
    t: usize,
    spec: &'a TermSpec,
    x: &'a B::Buf<T>,
    x_host: &'a [f64],
    n_total: usize,
    d: usize,
    m: usize,
}

impl<B: Backend, T: Real> TermInput<'_, B, T> {
    /// Forward (with stored jets) every chunk of samples `range` with `engine`, compute the
    /// residuals and their Jacobians on the host, and hand each chunk to `f`.
    fn run(
        &self,
        engine: &mut JetEngine<B, T>,
        params: &B::Buf<T>,
        range: std::ops::Range<usize>,
        f: &mut dyn FnMut(&mut ChunkPass<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        let (d, nr) = (self.d, self.spec.residual.n_res());
        let sm = self.spec.kind.s() * self.m;
        let mut first = range.start;
        while first < range.end {
            let c = engine.chunk().min(range.end - first);
            engine.forward_chunk(params, self.x, first, c, true)?;
            let y = engine.output()?;
            let mut r = vec![0.0; c * nr];
            let mut jac = vec![0.0; c * nr * sm];
            for i in 0..c {
                let gi = first + i;
                self.spec.residual.eval(
                    &self.x_host[gi * d..(gi + 1) * d],
                    &y[i * sm..(i + 1) * sm],
                    &mut r[i * nr..(i + 1) * nr],
                    Some(&mut jac[i * nr * sm..(i + 1) * nr * sm]),
                );
            }
            let mut pass = ChunkPass {
                term: self.t,
                first,
                n: c,
                n_total: self.n_total,
                weight: self.spec.weight,
                r,
                jac,
                n_res: nr,
                s_m: sm,
                x: &self.x_host[first * d..(first + c) * d],
                engine,
                params,
            };
            f(&mut pass)?;
            first += c;
        }
        Ok(())
    }
}

impl<B: Backend, T: Real> Objective<B, T> {
    /// `chunk_rows`: jet rows per chunk (None: the engine default).
    pub fn new(be: B, mlp: Mlp, specs: Vec<TermSpec>, chunk_rows: Option<usize>) -> Result<Self> {
        let mut terms = Vec::with_capacity(specs.len());
        for spec in specs {
            if !(spec.weight.is_finite() && spec.weight >= 0.0) {
                return Err(Error::invalid(
                    format!("weight of term `{}`", spec.name),
                    spec.weight,
                    "a finite number >= 0",
                ));
            }
            let engine = JetEngine::new(be.clone(), mlp.clone(), spec.kind.clone(), chunk_rows)?;
            let x = be.alloc(0)?;
            terms.push(Term {
                spec,
                engine,
                workers: vec![],
                chunk_rows,
                x_host: vec![],
                x,
                n: 0,
            });
        }
        Ok(Objective {
            be,
            mlp,
            terms,
            max_workers: None,
        })
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
            .flat_map(|t| std::iter::once(&t.engine).chain(&t.workers))
            .map(|e| e.workspace_bytes())
            .sum()
    }

    /// Replace the points of term `t` (row-major, input-dimension columns).
    pub fn set_points(&mut self, t: usize, x: Vec<f64>) -> Result<()> {
        let d = self.mlp.input_dim();
        let term = self
            .terms
            .get_mut(t)
            .ok_or_else(|| Error::invalid("term", t, "an existing term index"))?;
        if x.len() % d != 0 {
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
        Ok(())
    }

    fn check_params(&self, params: &B::Buf<T>) -> Result<()> {
        self.mlp.check_params(self.be.len(params))
    }

    /// Residuals of term `t` (`N × n_res`) from a value-and-jet pass without storage. value-and-jet pass without storage, split
    /// over [`Self::workers`] like [`Self::sweep_par`].
    pub fn residuals(&mut self, params: &B::Buf<T>, t: usize) -> Result<Vec<f64>> {
        self.check_params(params)?;
        let workers = self.workers(t);
        self.ensure_workers(t, workers)?;
        let d = self.mlp.input_dim();
        let term = &mut self.terms[t];
        let nr = term.spec.residual.n_res();
        let sm = term.spec.kind.s() * self.mlp.output_dim();
        let n = term.n;
        let mut r = vec![0.0; n * nr];
        let mut jobs = Vec::with_capacity(workers);
        let mut rest = &mut r[..];
        let engines = std::iter::once(&mut term.engine).chain(term.workers.iter_mut());
        for (w, eng) in engines.take(workers).enumerate() {
            let range = n * w / workers..n * (w + 1) / workers;
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(range.len() * nr);
            rest = tail;
            jobs.push((range, eng, mine));
        }
        let (spec, x, x_host) = (&term.spec, &term.x, &term.x_host);
        run_workers(jobs, |(range, eng, out)| {
            let mut first = range.start;
            while first < range.end {
                let c = eng.chunk().min(range.end - first);
                eng.forward_chunk(params, x, first, c, false)?;
                let y = eng.output()?;
                for i in 0..c {
                    let gi = first + i;
                    let li = gi - range.start;
                    spec.residual.eval(
                        &x_host[gi * d..(gi + 1) * d],
                        &y[i * sm..(i + 1) * sm],
                        &mut out[li * nr..(li + 1) * nr],
                        None,
                    );
                }
                first += c;
            }
            Ok(())
        })?;
        Ok(r)
    }

    /// Make sure term `t` has engines for `workers` workers.
    fn ensure_workers(&mut self, t: usize, workers: usize) -> Result<()> {
        let term = &mut self.terms[t];
        while term.workers.len() + 1 < workers {
            term.workers.push(JetEngine::new(
                self.be.clone(),
                self.mlp.clone(),
                term.spec.kind.clone(),
                term.chunk_rows,
            )?);
        }
        Ok(())
    }

    /// Per-term losses `w/(2N) Σ ‖r‖²`.
    pub fn loss_terms(&mut self, params: &B::Buf<T>) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.terms.len());
        for t in 0..self.terms.len() {
            let n = self.terms[t].n;
            if n == 0 {
                out.push(0.0);
                continue;
            }
            let r = self.residuals(params, t)?;
            let w = self.terms[t].spec.weight;
            out.push(w * r.iter().map(|v| v * v).sum::<f64>() / (2.0 * n as f64));
        }
        Ok(out)
    }

    /// The loss (value pass only). Non-finite values are reported as errors.
    pub fn loss(&mut self, params: &B::Buf<T>) -> Result<f64> {
        let terms = self.loss_terms(params)?;
        let l: f64 = terms.iter().sum();
        if !l.is_finite() {
            return Err(Error::NonFinite(format!(
                "loss is {l} ({})",
                self.name_terms(&terms)
            )));
        }
        Ok(l)
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

    /// Visit every chunk of term `t`: forward with stored jets, residuals and seeds on
    /// the host, then `f` (which may run backward passes).
    pub fn sweep(
        &mut self,
        params: &B::Buf<T>,
        t: usize,
        mut f: impl FnMut(&mut ChunkPass<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.check_params(params)?;
        let d = self.mlp.input_dim();
        let m = self.mlp.output_dim();
        let term = &mut self.terms[t];
        let range = 0..term.n;
        let input = TermInput {
            t,
            spec: &term.spec,
            x: &term.x,
            x_host: &term.x_host,
            n_total: term.n,
            d,
            m,
        };
        input.run(&mut term.engine, params, range, &mut f)
    }

    /// The number of workers [`Self::sweep_par`] uses for term `t`: the backend's
    /// [`Backend::chunk_workers`] (or the limit of [`Self::set_workers`]), at most one per
    /// chunk.
    pub fn workers(&self, t: usize) -> usize {
        let term = &self.terms[t];
        let chunks = term.n.div_ceil(term.engine.chunk()).max(1);
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
        let workers = states.len();
        if workers <= 1 {
            return match states.first_mut() {
                Some(st) => self.sweep(params, t, |pass| f(st, pass)),
                None => Ok(()),
            };
        }
        self.check_params(params)?;
        self.ensure_workers(t, workers)?;
        let d = self.mlp.input_dim();
        let m = self.mlp.output_dim();
        let term = &mut self.terms[t];
        let n = term.n;
        let input = TermInput {
            t,
            spec: &term.spec,
            x: &term.x,
            x_host: &term.x_host,
            n_total: n,
            d,
            m,
        };
        let engines = std::iter::once(&mut term.engine).chain(term.workers.iter_mut());
        let jobs: Vec<_> = engines
            .zip(states.iter_mut())
            .enumerate()
            .map(|(w, (eng, st))| (n * w / workers..n * (w + 1) / workers, eng, st))
            .collect();
        run_workers(jobs, |(range, eng, st)| {
            input.run(eng, params, range, &mut |pass| f(&mut *st, pass))
        })
    }

    /// Loss and its gradient (written to `grad`, which must have the parameter count).
    pub fn loss_grad(&mut self, params: &B::Buf<T>, grad: &mut B::Buf<T>) -> Result<f64> {
        self.mlp.check_params(self.be.len(grad))?;
        let np = self.be.len(grad);
        self.be.fill(grad, 0, np, T::ZERO)?;
        let mut per_term = Vec::with_capacity(self.terms.len());
        for t in 0..self.terms.len() {
            let n = self.terms[t].n.max(1) as f64;
            let w = self.terms[t].spec.weight;
            // per worker: sum of squared residuals and a gradient (the first worker adds
            // into `grad` itself)
            let workers = self.workers(t);
            let mut extra = Vec::with_capacity(workers - 1);
            for _ in 1..workers {
                extra.push(self.be.alloc::<T>(np)?);
            }
            let mut states: Vec<(f64, &mut B::Buf<T>)> = std::iter::once(&mut *grad)
                .chain(extra.iter_mut())
                .map(|g| (0.0, g))
                .collect();
            self.sweep_par(params, t, &mut states, |(ss, g), pass| {
                *ss += pass.r.iter().map(|v| v * v).sum::<f64>();
                let seeds = pass.grad_seeds();
                pass.backward(&seeds, |be, v| accumulate_grad(be, &v, T::ONE, g))
            })?;
            let ss: f64 = states.iter().map(|s| s.0).sum();
            drop(states);
            for g in &extra {
                self.be.axpby(T::ONE, g, T::ONE, grad)?;
            }
            per_term.push(w * ss / (2.0 * n));
        }
        let loss: f64 = per_term.iter().sum();
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "loss is {loss} ({})",
                self.name_terms(&per_term)
            )));
        }
        Ok(loss)
    }
}

/// Evaluates a network's values on fixed points and their error against known values.
pub struct Evaluator<B: Backend, T: Real> {
    engine: JetEngine<B, T>,
    x: B::Buf<T>,
    n: usize,
    reference: Vec<f64>,
}

/// Absolute and relative L2 errors: `sqrt(mean (u − u*)²)` and that over `sqrt(mean u*²)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct L2Error {
    pub abs: f64,
    pub rel: f64,
}

impl<B: Backend, T: Real> Evaluator<B, T> {
    /// `x`: row-major points; `reference`: the exact outputs there (`N × m`).
    pub fn new(be: B, mlp: Mlp, x: &[f64], reference: Vec<f64>) -> Result<Self> {
        let d = mlp.input_dim();
        let n = x.len() / d;
        if reference.len() != n * mlp.output_dim() {
            return Err(Error::Shape(format!(
                "{} reference values for {n} points with {} outputs",
                reference.len(),
                mlp.output_dim()
            )));
        }
        let xb = be.upload(&convert::<f64, T>(x))?;
        let engine = JetEngine::new(be, mlp, JetKind::Value, None)?;
        Ok(Evaluator {
            engine,
            x: xb,
            n,
            reference,
        })
    }
    /// Network outputs at the points (`N × m`).
    pub fn values(&mut self, params: &B::Buf<T>) -> Result<Vec<f64>> {
        self.engine.forward(params, &self.x, self.n)
    }
    pub fn l2(&mut self, params: &B::Buf<T>) -> Result<L2Error> {
        let u = self.values(params)?;
        let n = u.len().max(1) as f64;
        let se: f64 = u
            .iter()
            .zip(&self.reference)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let sr: f64 = self.reference.iter().map(|b| b * b).sum();
        let abs = (se / n).sqrt();
        Ok(L2Error {
            abs,
            rel: if sr > 0.0 {
                abs / (sr / n).sqrt()
            } else {
                f64::NAN
            },
        })
    }
}

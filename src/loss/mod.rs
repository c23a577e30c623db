//! Least-squares objectives `L(θ) = Σ_terms w/(2N) Σ_n ‖r_n(θ)‖²` on a backend: the loss
//! (value pass only), its gradient (one forward-with-storage and one backward pass per
//! chunk), and a chunk-by-chunk sweep that exposes residuals, their Gauss–Newton seeds and
//! the reverse pass to curvature code (KFAC factors, Gramians, Jacobians).
//!
//! Checked by `tests/gradient.rs`: the gradient against finite differences of the loss,
//! and the per-layer Z/G matrices against the gradient (∇W = Gᵀ Z with seeds r/N).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, JetEngine, JetKind, LayerView};
use crate::model::Mlp;
use crate::pde::TermSpec;
use crate::scalar::{convert, Real};

struct Term<B: Backend, T: Real> {
    spec: TermSpec,
    engine: JetEngine<B, T>,
    x_host: Vec<f64>,
    x: B::Buf<T>,
    n: usize,
}

/// A least-squares objective over a network and a set of terms with their points.
pub struct Objective<B: Backend, T: Real> {
    be: B,
    mlp: Mlp,
    terms: Vec<Term<B, T>>,
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
                x_host: vec![],
                x,
                n: 0,
            });
        }
        Ok(Objective { be, mlp, terms })
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
        self.terms.iter().map(|t| t.engine.workspace_bytes()).sum()
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

    /// Residuals of term `t` (`N × n_res`) from a value-and-jet pass without storage.
    pub fn residuals(&mut self, params: &B::Buf<T>, t: usize) -> Result<Vec<f64>> {
        self.check_params(params)?;
        let term = &mut self.terms[t];
        let d = self.mlp.input_dim();
        let nr = term.spec.residual.n_res();
        let sm = term.spec.kind.s() * self.mlp.output_dim();
        let mut r = vec![0.0; term.n * nr];
        let mut first = 0;
        while first < term.n {
            let c = term.engine.chunk().min(term.n - first);
            term.engine
                .forward_chunk(params, &term.x, first, c, false)?;
            let y = term.engine.output()?;
            for i in 0..c {
                let gi = first + i;
                term.spec.residual.eval(
                    &term.x_host[gi * d..(gi + 1) * d],
                    &y[i * sm..(i + 1) * sm],
                    &mut r[gi * nr..(gi + 1) * nr],
                    None,
                );
            }
            first += c;
        }
        Ok(r)
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
        let nr = term.spec.residual.n_res();
        let sm = term.spec.kind.s() * m;
        let mut first = 0;
        while first < term.n {
            let c = term.engine.chunk().min(term.n - first);
            term.engine.forward_chunk(params, &term.x, first, c, true)?;
            let y = term.engine.output()?;
            let mut r = vec![0.0; c * nr];
            let mut jac = vec![0.0; c * nr * sm];
            for i in 0..c {
                let gi = first + i;
                term.spec.residual.eval(
                    &term.x_host[gi * d..(gi + 1) * d],
                    &y[i * sm..(i + 1) * sm],
                    &mut r[i * nr..(i + 1) * nr],
                    Some(&mut jac[i * nr * sm..(i + 1) * nr * sm]),
                );
            }
            let mut pass = ChunkPass {
                term: t,
                first,
                n: c,
                n_total: term.n,
                weight: term.spec.weight,
                r,
                jac,
                n_res: nr,
                s_m: sm,
                x: &term.x_host[first * d..(first + c) * d],
                engine: &mut term.engine,
                params,
            };
            f(&mut pass)?;
            first += c;
        }
        Ok(())
    }

    /// Loss and its gradient (written to `grad`, which must have the parameter count).
    pub fn loss_grad(&mut self, params: &B::Buf<T>, grad: &mut B::Buf<T>) -> Result<f64> {
        self.mlp.check_params(self.be.len(grad))?;
        let np = self.be.len(grad);
        self.be.fill(grad, 0, np, T::ZERO)?;
        let mut per_term = Vec::with_capacity(self.terms.len());
        for t in 0..self.terms.len() {
            let mut ss = 0.0;
            let n = self.terms[t].n.max(1) as f64;
            let w = self.terms[t].spec.weight;
            self.sweep(params, t, |pass| {
                ss += pass.r.iter().map(|v| v * v).sum::<f64>();
                let seeds = pass.grad_seeds();
                pass.backward(&seeds, |be, v| accumulate_grad(be, &v, T::ONE, grad))
            })?;
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

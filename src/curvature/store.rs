//! Jacobian-vector products from the stored layer inputs and cotangents of one KFAC pass.
//!
//! The residual of sample n depends on layer l's weights only through its pre-activation
//! jet rows `z_{l,s,n} = W̃_l z̃_{l,s,n}`, so `J_n v = c Σ_l Σ_s g_{l,s,n}ᵀ V_l z̃_{l,s,n}` with
//! `g` the un-scaled cotangents the KFAC pass computes anyway for its `B` factors and `V_l`
//! the layer's block of `v`. Keeping every chunk's `z̃` and `g` (what the pass already has
//! in hand) turns `J v` for directions chosen after the pass (KFAC*'s Δ) into one product
//! and one row-wise dot per layer, instead of a new forward and a tangent pass:
//! `out = Σ_l rowdot(Z̃_l Ṽ_lᵀ, G_l)`, then a sum over each sample's S rows. Rows are kept
//! value rows first (all samples), then chunk by chunk the derivative rows, so Z̃'s bias
//! column (1 on value rows) is one `add_bias`; several directions share one product with
//! the stacked `[V_1; V_2; …]`, in row blocks.
//!
//! Only for residuals with one component; the memory is `Σ_terms N·S·Σ_l (fan_in +
//! fan_out)` values, refused above a limit (callers fall back to tangent passes).
//! Checked by `tests/curvature_kfac.rs` against the dense Jacobian and the tangent-pass
//! products, and through KFAC* in `tests/optim_second_order.rs`.

use crate::backend::{Backend, Lay, Tr};
use crate::error::{Error, Result};
use crate::loss::Objective;
use crate::model::LayerLayout;
use crate::scalar::{convert, Real};

/// Rows per block of the stacked products: bounded scratch, and products large enough to
/// run fast (on heat 4+1d 4096 rows measured as fast as 8192, faster than 1024).
const ROW_BLOCK: usize = 4096;

/// Default limit on the stored bytes.
pub const DEFAULT_STORE_BYTES: usize = 1 << 30;

struct StoreTerm<B: Backend, T: Real> {
    /// Row scale `sqrt(w/N)`.
    c: f64,
    /// Jet rows per sample.
    s: usize,
    /// Samples.
    n: usize,
    /// `(first sample, samples)` of every chunk recorded so far.
    chunks: Vec<(usize, usize)>,
    filled: usize,
    /// Per layer: inputs `N·S × fan_in` and cotangents `N·S × fan_out`; rows `0..N` are
    /// the value rows, then chunk by chunk the derivative rows in block layout.
    a: Vec<B::Buf<T>>,
    g: Vec<B::Buf<T>>,
}

impl<B: Backend, T: Real> StoreTerm<B, T> {
    fn rows(&self) -> usize {
        self.n * self.s
    }
    /// First derivative row of the chunk starting at sample `i0`.
    fn deriv_off(&self, i0: usize) -> usize {
        self.n + i0 * (self.s - 1)
    }
}

/// Stored layer inputs and cotangents of every chunk of the last pass.
pub struct JacobianStore<B: Backend, T: Real> {
    layers: Vec<LayerLayout>,
    terms: Vec<StoreTerm<B, T>>,
    /// Stacked weight blocks and biases of the directions of one product.
    vstack: B::Buf<T>,
    bstack: B::Buf<T>,
    tmp: B::Buf<T>,
    out: B::Buf<T>,
    max_bytes: usize,
    valid: bool,
}

impl<B: Backend, T: Real> JacobianStore<B, T> {
    pub fn new(be: &B, max_bytes: usize) -> Result<Self> {
        Ok(JacobianStore {
            layers: vec![],
            terms: vec![],
            vstack: be.alloc(0)?,
            bstack: be.alloc(0)?,
            tmp: be.alloc(0)?,
            out: be.alloc(0)?,
            max_bytes,
            valid: false,
        })
    }

    /// Bytes needed to store a pass over `obj`, or None if the store cannot be used
    /// (a residual with several components).
    pub fn bytes_needed(obj: &Objective<B, T>) -> Option<usize> {
        let layers = obj.mlp().layers();
        let per_row: usize = layers.iter().map(|l| l.fan_in + l.fan_out).sum();
        let mut total = 0usize;
        for t in 0..obj.num_terms() {
            let spec = obj.term_spec(t);
            if spec.residual.n_res() != 1 {
                return None;
            }
            total += obj.term_points(t) * spec.kind.s() * per_row;
        }
        Some(total.saturating_mul(std::mem::size_of::<T>()))
    }

    /// Prepare for a pass over `obj`; returns false (and stores nothing) if the store
    /// does not apply or exceeds its memory limit.
    pub fn begin(&mut self, obj: &Objective<B, T>) -> Result<bool> {
        self.valid = false;
        match Self::bytes_needed(obj) {
            Some(b) if b <= self.max_bytes => {}
            _ => {
                self.terms.clear();
                return Ok(false);
            }
        }
        let be = obj.backend();
        let layers = obj.mlp().layers();
        if layers != self.layers {
            self.terms.clear();
            self.layers = layers;
        }
        let nt = obj.num_terms();
        self.terms.truncate(nt);
        for t in 0..nt {
            let spec = obj.term_spec(t);
            let n = obj.term_points(t);
            let s = spec.kind.s();
            let c = (spec.weight / n.max(1) as f64).sqrt();
            let fresh = t >= self.terms.len() || self.terms[t].rows() != n * s;
            if fresh {
                let a = self
                    .layers
                    .iter()
                    .map(|l| be.alloc(n * s * l.fan_in))
                    .collect::<Result<Vec<_>>>()?;
                let g = self
                    .layers
                    .iter()
                    .map(|l| be.alloc(n * s * l.fan_out))
                    .collect::<Result<Vec<_>>>()?;
                let term = StoreTerm {
                    c,
                    s,
                    n,
                    chunks: vec![],
                    filled: 0,
                    a,
                    g,
                };
                if t < self.terms.len() {
                    self.terms[t] = term;
                } else {
                    self.terms.push(term);
                }
            }
            let term = &mut self.terms[t];
            term.c = c;
            term.s = s;
            term.n = n;
            term.chunks.clear();
            term.filled = 0;
        }
        Ok(true)
    }

    /// Register the next chunk of term `t` (`n` samples); returns its first sample.
    pub fn add_chunk(&mut self, t: usize, n: usize) -> usize {
        let term = &mut self.terms[t];
        let i0 = term.filled;
        term.chunks.push((i0, n));
        term.filled += n;
        i0
    }

    /// Keep layer `l`'s input jet `a` and un-scaled cotangent `g` (block layout, `n`
    /// samples) of the chunk of term `t` that starts at sample `i0`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        be: &B,
        t: usize,
        l: usize,
        i0: usize,
        n: usize,
        a: &B::Buf<T>,
        g: &B::Buf<T>,
    ) -> Result<()> {
        let (fi, fo) = (self.layers[l].fan_in, self.layers[l].fan_out);
        let term = &mut self.terms[t];
        let d = term.deriv_off(i0);
        let dr = n * (term.s - 1);
        be.copy(a, 0, &mut term.a[l], i0 * fi, n * fi)?;
        be.copy(a, n * fi, &mut term.a[l], d * fi, dr * fi)?;
        be.copy(g, 0, &mut term.g[l], i0 * fo, n * fo)?;
        be.copy(g, n * fo, &mut term.g[l], d * fo, dr * fo)
    }

    /// Mark the pass complete.
    pub fn finish(&mut self) -> Result<()> {
        for (t, term) in self.terms.iter().enumerate() {
            if term.filled != term.n {
                return Err(Error::Shape(format!(
                    "Jacobian store: term {t} has {} of {} samples",
                    term.filled, term.n
                )));
            }
        }
        self.valid = true;
        Ok(())
    }

    /// Invalidate (the parameters or points changed).
    pub fn invalidate(&mut self) {
        self.valid = false;
    }

    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// `J v_j` for the stored pass and each direction (each of length M, rows as in
    /// [`super::jacobian`]).
    pub fn jvps(&mut self, be: &B, vs: &[&B::Buf<T>]) -> Result<Vec<Vec<f64>>> {
        if !self.valid {
            return Err(Error::Shape(
                "the Jacobian store holds no complete pass".into(),
            ));
        }
        let k = vs.len();
        let mut res = vec![Vec::new(); k];
        let fo_max = self.layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let rows_max = self.terms.iter().map(|t| t.rows()).max().unwrap_or(0);
        // [V_1; …; V_k] and [b_1, …, b_k] of every layer, once
        let mut voff = Vec::with_capacity(self.layers.len());
        let mut boff = Vec::with_capacity(self.layers.len());
        let (mut vlen, mut blen) = (0, 0);
        for l in &self.layers {
            voff.push(vlen);
            boff.push(blen);
            vlen += k * l.fan_out * l.fan_in;
            blen += k * l.fan_out;
        }
        if be.len(&self.vstack) < vlen {
            self.vstack = be.alloc(vlen)?;
        }
        if be.len(&self.bstack) < blen {
            self.bstack = be.alloc(blen)?;
        }
        for (li, lay) in self.layers.iter().enumerate() {
            let (fi, fo) = (lay.fan_in, lay.fan_out);
            for (j, v) in vs.iter().enumerate() {
                be.copy(
                    v,
                    lay.w_off,
                    &mut self.vstack,
                    voff[li] + j * fo * fi,
                    fo * fi,
                )?;
                be.copy(v, lay.b_off, &mut self.bstack, boff[li] + j * fo, fo)?;
            }
        }
        if be.len(&self.tmp) < ROW_BLOCK * k * fo_max {
            self.tmp = be.alloc(ROW_BLOCK * k * fo_max)?;
        }
        if be.len(&self.out) < k * rows_max {
            self.out = be.alloc(k * rows_max)?;
        }
        for t in 0..self.terms.len() {
            let rows = self.terms[t].rows();
            let term = &self.terms[t];
            // in row blocks: the scratch stays bounded
            for r0 in (0..rows).step_by(ROW_BLOCK) {
                let nb = ROW_BLOCK.min(rows - r0);
                let values = term.n.saturating_sub(r0).min(nb);
                for (l, lay) in self.layers.iter().enumerate() {
                    let (fi, fo) = (lay.fan_in, lay.fan_out);
                    let kf = k * fo;
                    // Z̃ Ṽᵀ: the inputs times the stacked weights, plus the biases on the
                    // value rows
                    be.gemm(
                        T::ONE,
                        &term.a[l],
                        Lay::at(r0 * fi, nb, fi),
                        Tr::N,
                        &self.vstack,
                        Lay::at(voff[l], kf, fi),
                        Tr::T,
                        T::ZERO,
                        &mut self.tmp,
                        Lay::dense(nb, kf),
                    )?;
                    be.add_bias(&mut self.tmp, values, kf, &self.bstack, boff[l])?;
                    let beta = if l == 0 { T::ZERO } else { T::ONE };
                    for j in 0..k {
                        let lx = Lay {
                            off: j * fo,
                            rows: nb,
                            cols: fo,
                            ld: kf,
                        };
                        let ly = Lay::at(r0 * fo, nb, fo);
                        be.row_dot(
                            &self.tmp,
                            lx,
                            &term.g[l],
                            ly,
                            beta,
                            &mut self.out,
                            j * rows + r0,
                        )?;
                    }
                }
            }
            let term = &self.terms[t];
            let mut host = vec![T::ZERO; k * rows];
            be.download_range(&self.out, 0, &mut host)?;
            let host: Vec<f64> = convert(&host);
            for (j, r) in res.iter_mut().enumerate() {
                let h = &host[j * rows..(j + 1) * rows];
                for &(i0, n) in &term.chunks {
                    let d = term.deriv_off(i0);
                    for i in 0..n {
                        let mut sum = h[i0 + i];
                        for s in 0..term.s - 1 {
                            sum += h[d + s * n + i];
                        }
                        r.push(term.c * sum);
                    }
                }
            }
        }
        Ok(res)
    }

    /// `J v` for the stored pass (length M, rows as in [`super::jacobian`]).
    pub fn jvp(&mut self, be: &B, v: &B::Buf<T>) -> Result<Vec<f64>> {
        Ok(self.jvps(be, &[v])?.pop().expect("one direction"))
    }

    /// The Gram matrix `[(J v_i)·(J v_j)]` (row-major `k × k`) for the stored pass.
    pub fn jvp_gram(&mut self, be: &B, vs: &[&B::Buf<T>]) -> Result<Vec<f64>> {
        let jv = self.jvps(be, vs)?;
        let k = vs.len();
        let mut gram = vec![0.0; k * k];
        for a in 0..k {
            for b in 0..k {
                gram[a * k + b] = jv[a].iter().zip(&jv[b]).map(|(x, y)| x * y).sum();
            }
        }
        Ok(gram)
    }
}

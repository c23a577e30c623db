//! Jacobian-vector and Gauss–Newton products from the stored layer inputs and cotangents
//! of one KFAC pass (KFAC*'s 2×2 model, Hessian-free's CG products).
//!
//! The residual of sample n depends on layer l's weights only through its pre-activation
//! jet rows `z_{l,s,n} = W̃_l z̃_{l,s,n}`, so `J_n v = c Σ_l Σ_s g_{l,s,n}ᵀ V_l z̃_{l,s,n}` with
//! `g` the un-scaled cotangents the KFAC pass computes anyway for its `B` factors and `V_l`
//! the layer's block of `v`. Keeping every chunk's `z̃` and `g` (what the pass already has
//! in hand) turns `J v` for directions chosen after the pass (KFAC*'s Δ) into one product
//! and one row-wise dot per layer and chunk, instead of a new forward and a tangent pass:
//! `out = Σ_l rowdot(Z̃_l Ṽ_lᵀ, G_l)`, then a sum over each sample's S rows. The jets are
//! kept without copies: the pass swaps the jet engine's buffers of a visited layer with
//! the store's (the engine goes on with the store's old ones), so a chunk's rows stay in
//! the engine's block layout (value rows first, so Z̃'s bias column is one `add_bias`).
//! Several directions share one product with the stacked `[V_1; V_2; …]`. `G v = Jᵀ(J v)`
//! goes on from the per-sample `J v` with the gradient's contraction: the cotangent rows
//! scaled by `c²(J v)_n`, times the inputs (two products per layer and chunk in all).
//!
//! A term's chunks are kept in pieces, one per worker of the chunk-parallel sweep
//! ([`Objective::sweep_par`]), each covering a contiguous share of the samples, so that
//! workers record without sharing buffers.
//!
//! Only for residuals with one component; the memory is about `Σ_terms N·S·Σ_l (fan_in +
//! max fan_out)` values (the engine's cotangent buffers have the widest layer's width),
//! refused above a limit (callers fall back to tangent passes).
//! Checked by `tests/curvature_kfac.rs` against the dense Jacobian (`J v`, `JᵀJ v`) and
//! the pass-based products, and through KFAC* and Hessian-free in
//! `tests/optim_second_order.rs` (each with and without the store).

use crate::backend::{run_workers, Backend, JetShape, Lay, Tr};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad_from, LayerView};
use crate::loss::Objective;
use crate::model::LayerLayout;
use crate::scalar::{convert, Real};

/// Default limit on the stored bytes.
pub const DEFAULT_STORE_BYTES: usize = 1 << 30;

/// The stacked directions of one product (see [`JacobianStore::jvps`]).
struct Directions<'a, B: Backend, T: Real> {
    layers: &'a [LayerLayout],
    vstack: &'a B::Buf<T>,
    bstack: &'a B::Buf<T>,
    voff: &'a [usize],
    boff: &'a [usize],
    k: usize,
}

/// One worker's scratch of [`JacobianStore::gvp`].
struct GvpScratch<B: Backend, T: Real> {
    /// A chunk's `Z̃ Ṽᵀ` block, then its scaled cotangents.
    tmp: B::Buf<T>,
    /// A chunk's `J v` rows and per-sample weights.
    dots: B::Buf<T>,
    w: B::Buf<T>,
    /// The worker's share of `G v`.
    acc: B::Buf<T>,
}

/// One chunk's kept jets. The buffers are the jet engine's own, swapped in during the
/// backward pass (so they have the engine's chunk capacity, not the chunk's size).
struct Slot<B: Backend, T: Real> {
    /// Piece-local first sample and number of samples.
    i0: usize,
    n: usize,
    /// Per layer: the input jet (`n·S × fan_in`) and the un-scaled cotangent
    /// (`n·S × fan_out`), dense, block layout (value rows first).
    a: Vec<B::Buf<T>>,
    g: Vec<B::Buf<T>>,
}

/// One worker's share of one term: samples `first..first + n`.
pub struct StorePiece<B: Backend, T: Real> {
    /// Row scale `sqrt(w/N)` (N of the whole term).
    c: f64,
    /// Jet rows per sample, and the jet's directions and Laplacian row (`s = 1 + k + lap`).
    s: usize,
    k: usize,
    lap: bool,
    /// Samples.
    n: usize,
    /// The piece's first sample within the term.
    first: usize,
    /// Layers of the network.
    layers: usize,
    /// Chunks in sample order; the first `used` belong to the current pass (the rest
    /// keep their buffers for later passes).
    slots: Vec<Slot<B, T>>,
    used: usize,
    /// Samples recorded in the current pass.
    filled: usize,
}

impl<B: Backend, T: Real> StorePiece<B, T> {
    fn rows(&self) -> usize {
        self.n * self.s
    }

    /// `J v_j` of this piece's samples for the `k` stacked directions, with `tmp` and `out`
    /// as scratch (grown as needed).
    fn jvps(
        &self,
        be: &B,
        dirs: &Directions<'_, B, T>,
        tmp: &mut B::Buf<T>,
        out: &mut B::Buf<T>,
    ) -> Result<Vec<Vec<f64>>> {
        let (k, s) = (dirs.k, self.s);
        let rows = self.rows();
        let slots = &self.slots[..self.used];
        let fo_max = dirs.layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let nb_max = slots.iter().map(|c| c.n * s).max().unwrap_or(0);
        if be.len(tmp) < nb_max * k * fo_max {
            *tmp = be.alloc(nb_max * k * fo_max)?;
        }
        if be.len(out) < k * rows {
            *out = be.alloc(k * rows)?;
        }
        // chunk by chunk (the rows of a chunk start at i0·S in `out`)
        for slot in slots {
            let (nb, r0) = (slot.n * s, slot.i0 * s);
            for (l, lay) in dirs.layers.iter().enumerate() {
                let (fi, fo) = (lay.fan_in, lay.fan_out);
                let kf = k * fo;
                // Z̃ Ṽᵀ: the inputs times the stacked weights, plus the biases on the value
                // rows
                be.gemm(
                    T::ONE,
                    &slot.a[l],
                    Lay::dense(nb, fi),
                    Tr::N,
                    dirs.vstack,
                    Lay::at(dirs.voff[l], kf, fi),
                    Tr::T,
                    T::ZERO,
                    tmp,
                    Lay::dense(nb, kf),
                )?;
                be.add_bias(tmp, slot.n, kf, dirs.bstack, dirs.boff[l])?;
                let beta = if l == 0 { T::ZERO } else { T::ONE };
                for j in 0..k {
                    let lx = Lay {
                        off: j * fo,
                        rows: nb,
                        cols: fo,
                        ld: kf,
                    };
                    let ly = Lay::dense(nb, fo);
                    be.row_dot(tmp, lx, &slot.g[l], ly, beta, out, j * rows + r0)?;
                }
            }
        }
        let mut host = vec![T::ZERO; k * rows];
        be.download_range(out, 0, &mut host)?;
        let host: Vec<f64> = convert(&host);
        // per sample: the sum over its S rows (rows s·n + i of its chunk)
        let res = (0..k)
            .map(|j| {
                let h = &host[j * rows..(j + 1) * rows];
                let mut r = Vec::with_capacity(self.n);
                for slot in slots {
                    let (n, r0) = (slot.n, slot.i0 * s);
                    for i in 0..n {
                        let sum: f64 = (0..s).map(|q| h[r0 + q * n + i]).sum();
                        r.push(self.c * sum);
                    }
                }
                r
            })
            .collect();
        Ok(res)
    }

    /// `acc += Jᵀ J v` over this piece's samples (`v` a full parameter vector; `sc`
    /// scratch, grown as needed). Per chunk: `J v` row by row as in [`Self::jvps`], its
    /// per-sample sums `w_i = c²Σ_s (J v)_{i,s}` by a column sum, then per layer the
    /// gradient-like `Gᵀ diag(w) Z̃` with the cotangent rows scaled by `w`.
    fn gvp(
        &self,
        be: &B,
        layers: &[LayerLayout],
        v: &B::Buf<T>,
        sc: &mut GvpScratch<B, T>,
    ) -> Result<()> {
        let GvpScratch { tmp, dots, w, acc } = sc;
        let s = self.s;
        let slots = &self.slots[..self.used];
        let fo_max = layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let n_max = slots.iter().map(|c| c.n).max().unwrap_or(0);
        let grow = |b: &mut B::Buf<T>, len: usize| -> Result<()> {
            if be.len(b) < len {
                *b = be.alloc(len)?;
            }
            Ok(())
        };
        grow(tmp, n_max * s * fo_max)?;
        grow(dots, n_max * s)?;
        grow(w, n_max)?;
        let c2 = T::from_f64(self.c * self.c);
        for slot in slots {
            let (n, nb) = (slot.n, slot.n * s);
            // J v, row by row: Σ_l rowdot(Z̃_l Ṽ_lᵀ, G_l)
            for (l, lay) in layers.iter().enumerate() {
                let (fi, fo) = (lay.fan_in, lay.fan_out);
                be.gemm(
                    T::ONE,
                    &slot.a[l],
                    Lay::dense(nb, fi),
                    Tr::N,
                    v,
                    Lay::at(lay.w_off, fo, fi),
                    Tr::T,
                    T::ZERO,
                    tmp,
                    Lay::dense(nb, fo),
                )?;
                be.add_bias(tmp, n, fo, v, lay.b_off)?;
                let beta = if l == 0 { T::ZERO } else { T::ONE };
                let rows = Lay::dense(nb, fo);
                be.row_dot(tmp, rows, &slot.g[l], rows, beta, dots, 0)?;
            }
            // per sample (rows s·n + i): w_i = c² Σ_s
            be.col_sum(c2, dots, s, n, T::ZERO, w, 0)?;
            // Jᵀ w: the cotangent rows scaled by w, times the inputs
            for (l, lay) in layers.iter().enumerate() {
                let shape = JetShape {
                    n,
                    k: self.k,
                    lap: self.lap,
                    h: lay.fan_out,
                };
                be.scale_jet_rows_to(&slot.g[l], w, shape, tmp)?;
                let shape_in = shape.with_h(lay.fan_in);
                accumulate_grad_from(be, *lay, shape_in, tmp, &slot.a[l], T::ONE, acc)?;
            }
        }
        Ok(())
    }

    /// Keep the input jet and the un-scaled cotangent `v.g` of the visited layer of the
    /// chunk of `n` samples that starts at sample `first` of the term, by swapping the
    /// engine's buffers with this piece's (no copies: the engine goes on with the
    /// piece's old buffers, and its stored jets of the chunk are gone). Returns the kept
    /// `(input, cotangent)`. Chunks must be recorded in order of their samples, every
    /// layer of a chunk before the next chunk.
    #[allow(clippy::type_complexity)]
    pub fn record(
        &mut self,
        be: &B,
        first: usize,
        n: usize,
        v: &mut LayerView<'_, B, T>,
    ) -> Result<(&B::Buf<T>, &B::Buf<T>)> {
        if first < self.first || first + n > self.first + self.n {
            return Err(Error::Shape(format!(
                "Jacobian store: chunk of samples {first}..{} outside the piece {}..{}",
                first + n,
                self.first,
                self.first + self.n
            )));
        }
        let l = v.index;
        if l >= self.layers || v.shape.n != n {
            return Err(Error::Shape(format!(
                "Jacobian store: layer {l} of a chunk of {} samples recorded as {n} samples \
                 of a {}-layer network",
                v.shape.n, self.layers
            )));
        }
        let i0 = first - self.first;
        let current = self.used.checked_sub(1).map(|c| &self.slots[c]);
        if current.is_none_or(|c| (c.i0, c.n) != (i0, n)) {
            if i0 != self.filled {
                return Err(Error::Shape(format!(
                    "Jacobian store: chunk at sample {first} recorded out of order"
                )));
            }
            if self.used == self.slots.len() {
                let empty = |_| be.alloc(0);
                self.slots.push(Slot {
                    i0,
                    n,
                    a: (0..self.layers).map(empty).collect::<Result<_>>()?,
                    g: (0..self.layers).map(empty).collect::<Result<_>>()?,
                });
            }
            let slot = &mut self.slots[self.used];
            (slot.i0, slot.n) = (i0, n);
            self.used += 1;
            self.filled += n;
        }
        let slot = &mut self.slots[self.used - 1];
        // first use of the slot: buffers like the engine's, to hand back in the swap
        if be.len(&slot.a[l]) != be.len(v.a()) {
            slot.a[l] = be.alloc(be.len(v.a()))?;
        }
        if be.len(&slot.g[l]) != be.len(v.g) {
            slot.g[l] = be.alloc(be.len(v.g))?;
        }
        v.swap_input(&mut slot.a[l], be)?;
        std::mem::swap(v.g, &mut slot.g[l]);
        Ok((&slot.a[l], &slot.g[l]))
    }
}

/// Stored layer inputs and cotangents of every chunk of the last pass.
pub struct JacobianStore<B: Backend, T: Real> {
    layers: Vec<LayerLayout>,
    /// Per term, one piece per sweep worker.
    terms: Vec<Vec<StorePiece<B, T>>>,
    /// Stacked weight blocks and biases of the directions of one product.
    vstack: B::Buf<T>,
    bstack: B::Buf<T>,
    /// Per piece worker: the product block and the per-row results.
    scratch: Vec<(B::Buf<T>, B::Buf<T>)>,
    /// Per piece worker: the scratch of [`Self::gvp`].
    gvp_scratch: Vec<GvpScratch<B, T>>,
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
            scratch: vec![],
            gvp_scratch: vec![],
            max_bytes,
            valid: false,
        })
    }

    /// Change the memory limit (takes effect at the next pass).
    pub fn set_limit(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// Bytes needed to store a pass over `obj`, or None if the store cannot be used
    /// (a residual with several components).
    pub fn bytes_needed(obj: &Objective<B, T>) -> Option<usize> {
        let layers = obj.mlp().layers();
        let g_width = layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let per_row: usize = layers.iter().map(|l| l.fan_in + g_width).sum();
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
        let layers = obj.mlp().layers();
        if layers != self.layers {
            self.terms.clear();
            self.layers = layers;
        }
        let nt = obj.num_terms();
        self.terms.truncate(nt);
        for t in 0..nt {
            let spec = obj.term_spec(t);
            let n_t = obj.term_points(t);
            let s = spec.kind.s();
            let c = (spec.weight / n_t.max(1) as f64).sqrt();
            let workers = obj.workers(t);
            if t == self.terms.len() {
                self.terms.push(vec![]);
            }
            let pieces = &mut self.terms[t];
            pieces.truncate(workers);
            while pieces.len() < workers {
                pieces.push(StorePiece {
                    c,
                    s,
                    k: spec.kind.k(),
                    lap: spec.kind.lap(),
                    n: 0,
                    first: 0,
                    layers: self.layers.len(),
                    slots: vec![],
                    used: 0,
                    filled: 0,
                });
            }
            for (w, p) in pieces.iter_mut().enumerate() {
                let (first, end) = (n_t * w / workers, n_t * (w + 1) / workers);
                (p.c, p.s, p.n, p.first) = (c, s, end - first, first);
                (p.k, p.lap) = (spec.kind.k(), spec.kind.lap());
                p.used = 0;
                p.filled = 0;
            }
        }
        Ok(true)
    }

    /// The pieces of term `t`, one per sweep worker, for recording.
    pub fn pieces_mut(&mut self, t: usize) -> &mut [StorePiece<B, T>] {
        &mut self.terms[t]
    }

    /// Mark the pass complete.
    pub fn finish(&mut self) -> Result<()> {
        for (t, pieces) in self.terms.iter().enumerate() {
            for p in pieces {
                if p.filled != p.n {
                    return Err(Error::Shape(format!(
                        "Jacobian store: term {t}, samples {}..{}: {} recorded",
                        p.first,
                        p.first + p.n,
                        p.filled
                    )));
                }
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
        // pieces in order: each term's samples come out in order
        // pieces in parallel (each with its own scratch), their results in order: each
        // term's samples come out in order
        let most = self.terms.iter().map(Vec::len).max().unwrap_or(0);
        while self.scratch.len() < most {
            self.scratch.push((be.alloc(0)?, be.alloc(0)?));
        }
        let dirs = Directions {
            layers: &self.layers,
            vstack: &self.vstack,
            bstack: &self.bstack,
            voff: &voff,
            boff: &boff,
            k,
        };
        for pieces in &self.terms {
            let mut outs: Vec<Vec<Vec<f64>>> = vec![vec![]; pieces.len()];
            let jobs: Vec<_> = pieces
                .iter()
                .zip(self.scratch.iter_mut())
                .zip(outs.iter_mut())
                .collect();
            run_workers(jobs, |((piece, (tmp, out)), res)| {
                *res = piece.jvps(be, &dirs, tmp, out)?;
                Ok(())
            })?;
            for piece_res in outs {
                for (r, p) in res.iter_mut().zip(piece_res) {
                    r.extend(p);
                }
            }
        }
        Ok(res)
    }

    /// `out = G v = Jᵀ J v` for the stored pass (the Gauss–Newton product of
    /// [`super::gvp`] without its forward, tangent and backward passes): per chunk two
    /// products per layer with the kept jets, the pieces in parallel.
    pub fn gvp(&mut self, be: &B, v: &B::Buf<T>, out: &mut B::Buf<T>) -> Result<()> {
        if !self.valid {
            return Err(Error::Shape(
                "the Jacobian store holds no complete pass".into(),
            ));
        }
        let np = be.len(out);
        let needed = self.layers.last().map_or(0, |l| l.b_off + l.fan_out);
        if np != needed || be.len(v) != needed {
            return Err(Error::Shape(format!(
                "G v: v has {}, out {} entries, the network {needed} parameters",
                be.len(v),
                np
            )));
        }
        let most = self.terms.iter().map(Vec::len).max().unwrap_or(0);
        while self.gvp_scratch.len() < most {
            self.gvp_scratch.push(GvpScratch {
                tmp: be.alloc(0)?,
                dots: be.alloc(0)?,
                w: be.alloc(0)?,
                acc: be.alloc(np)?,
            });
        }
        for sc in &mut self.gvp_scratch[..most] {
            if be.len(&sc.acc) != np {
                sc.acc = be.alloc(np)?;
            }
            be.fill(&mut sc.acc, 0, np, T::ZERO)?;
        }
        let layers = &self.layers;
        for pieces in &self.terms {
            let jobs: Vec<_> = pieces.iter().zip(self.gvp_scratch.iter_mut()).collect();
            run_workers(jobs, |(piece, sc)| piece.gvp(be, layers, v, sc))?;
        }
        be.fill(out, 0, np, T::ZERO)?;
        for sc in &self.gvp_scratch[..most] {
            be.axpby(T::ONE, &sc.acc, T::ONE, out)?;
        }
        Ok(())
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

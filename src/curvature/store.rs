//! Jacobian-vector and Gauss–Newton products from the stored layer inputs and cotangents
//! of one KFAC pass (KFAC*'s 2×2 model, Hessian-free's CG products).
//!
//! The residual of sample n depends on layer l's weights only through its pre-activation
//! jet rows `z_{l,s,n} = W̃_l z̃_{l,s,n}`, so `J_n v = c Σ_l Σ_s g_{l,s,n}ᵀ V_l z̃_{l,s,n}` with
//! `g` the un-scaled cotangents the KFAC pass computes anyway for its `B` factors and `V_l`
//! the layer's block of `v`. Keeping every chunk's `z̃` and `g` (what the pass already has
//! in hand) turns `J v` for directions chosen after the pass (KFAC*'s Δ) into one product
//! and one row-wise dot per layer and chunk, instead of a new forward and a tangent pass:
//! `out = Σ_l rowdot(Z̃_l Ṽ_lᵀ, G_l)`, then a sum over each sample's S rows (a column
//! sum), all on the backend: KFAC*'s Gram entries are `S Sᵀ` of those per-sample
//! sums per piece, and only their `k × k` values are read back. The jets are
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

/// One worker's scratch of [`JacobianStore::jvps`] and [`JacobianStore::jvp_gram`].
struct JvScratch<B: Backend, T: Real> {
    /// A chunk's `Z̃ Ṽᵀ` block.
    tmp: B::Buf<T>,
    /// A chunk's `J v_j` rows (`k × n·S`).
    dots: B::Buf<T>,
    /// The piece's per-sample `J v_j` (`k × n`).
    sums: B::Buf<T>,
    /// Those in f64 and their Gram matrix (`k × k`): KFAC*'s 2×2 model is solved from
    /// nearly collinear directions, so its entries are accumulated in f64 at any `T`.
    sums64: B::Buf<f64>,
    gram: B::Buf<f64>,
}

/// Replace `b` by a buffer of at least `len` entries if it is shorter.
fn grow<B: Backend, T: Real>(be: &B, b: &mut B::Buf<T>, len: usize) -> Result<()> {
    if be.len(b) < len {
        *b = be.alloc(len)?;
    }
    Ok(())
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

impl<B: Backend, T: Real> Slot<B, T> {
    /// The chunk's `J v_j` rows for the `k` directions (`s` jet rows per sample) into
    /// `dots` (`k × n·s`, direction-major), un-scaled: per layer `Z̃ Ṽᵀ` with the stacked
    /// weights (plus the biases on the value rows) into `tmp`, then one row-wise dot per
    /// direction with the cotangents, summed over the layers.
    fn jv_rows(
        &self,
        be: &B,
        s: usize,
        dirs: &Directions<'_, B, T>,
        tmp: &mut B::Buf<T>,
        dots: &mut B::Buf<T>,
    ) -> Result<()> {
        let (n, nb, k) = (self.n, self.n * s, dirs.k);
        for (l, lay) in dirs.layers.iter().enumerate() {
            let (fi, fo) = (lay.fan_in, lay.fan_out);
            let kf = k * fo;
            be.gemm(
                T::ONE,
                &self.a[l],
                Lay::dense(nb, fi),
                Tr::N,
                dirs.vstack,
                Lay::at(dirs.voff[l], kf, fi),
                Tr::T,
                T::ZERO,
                tmp,
                Lay::dense(nb, kf),
            )?;
            be.add_bias(tmp, n, kf, dirs.bstack, dirs.boff[l])?;
            let beta = if l == 0 { T::ZERO } else { T::ONE };
            for j in 0..k {
                let lx = Lay {
                    off: j * fo,
                    rows: nb,
                    cols: fo,
                    ld: kf,
                };
                be.row_dot(tmp, lx, &self.g[l], Lay::dense(nb, fo), beta, dots, j * nb)?;
            }
        }
        Ok(())
    }
}

/// One worker's share of one term: samples `first..first + n`.
pub struct StorePiece<B: Backend, T: Real> {
    /// Row scale `sqrt(w/N)` (N of the whole term).
    c: f64,
    /// Jet rows per sample, and the jet's directions and operator rows (`s = 1 + k + ops`).
    s: usize,
    k: usize,
    ops: usize,
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
    /// `J v_j` of this piece's samples for the `k` stacked directions into `sc.sums`
    /// (`k × n`, direction-major), on the backend. Per chunk: its `J v_j` rows
    /// ([`Slot::jv_rows`]), then per direction the sums over each sample's S rows by a
    /// column sum of that direction's `S × n` block (the rows of sample i are `q·n + i`,
    /// q < S), scaled by `c`.
    fn jv_sums(&self, be: &B, dirs: &Directions<'_, B, T>, sc: &mut JvScratch<B, T>) -> Result<()> {
        let (k, s) = (dirs.k, self.s);
        let slots = &self.slots[..self.used];
        let fo_max = dirs.layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let nb_max = slots.iter().map(|c| c.n * s).max().unwrap_or(0);
        grow(be, &mut sc.tmp, nb_max * k * fo_max)?;
        grow(be, &mut sc.dots, k * nb_max)?;
        grow(be, &mut sc.sums, k * self.n)?;
        let c = T::from_f64(self.c);
        for slot in slots {
            let (n, nb) = (slot.n, slot.n * s);
            slot.jv_rows(be, s, dirs, &mut sc.tmp, &mut sc.dots)?;
            for j in 0..k {
                let out = j * self.n + slot.i0;
                be.col_sum(c, &sc.dots, j * nb, s, n, T::ZERO, &mut sc.sums, out)?;
            }
        }
        Ok(())
    }

    /// `acc += Jᵀ J v` over this piece's samples (`v` a full parameter vector; `sc`
    /// scratch, grown as needed; `dir` is `v` as one direction). Per chunk: `J v` row by
    /// row ([`Slot::jv_rows`]), its per-sample sums `w_i = c²Σ_s (J v)_{i,s}` by a column
    /// sum, then per layer the gradient-like `Gᵀ diag(w) Z̃` with the cotangent rows
    /// scaled by `w`.
    fn gvp(&self, be: &B, dir: &Directions<'_, B, T>, sc: &mut GvpScratch<B, T>) -> Result<()> {
        let GvpScratch { tmp, dots, w, acc } = sc;
        let (s, layers) = (self.s, dir.layers);
        let slots = &self.slots[..self.used];
        let fo_max = layers.iter().map(|l| l.fan_out).max().unwrap_or(0);
        let n_max = slots.iter().map(|c| c.n).max().unwrap_or(0);
        grow(be, tmp, n_max * s * fo_max)?;
        grow(be, dots, n_max * s)?;
        grow(be, w, n_max)?;
        let c2 = T::from_f64(self.c * self.c);
        for slot in slots {
            let n = slot.n;
            slot.jv_rows(be, s, dir, tmp, dots)?;
            // per sample (rows s·n + i): w_i = c² Σ_s
            be.col_sum(c2, dots, 0, s, n, T::ZERO, w, 0)?;
            // Jᵀ w: the cotangent rows scaled by w, times the inputs
            for (l, lay) in layers.iter().enumerate() {
                let shape = JetShape {
                    n,
                    k: self.k,
                    ops: self.ops,
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
    /// Per piece worker: the scratch of [`Self::jvps`] and [`Self::jvp_gram`].
    jv_scratch: Vec<JvScratch<B, T>>,
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
            jv_scratch: vec![],
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
        if obj.num_coefs() > 0 {
            // the coefficients' Jacobian columns are not kept: products of inverse
            // problems come from tangent passes (design §7)
            return None;
        }
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
                    ops: spec.kind.ops(),
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
                (p.k, p.ops) = (spec.kind.k(), spec.kind.ops());
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

    /// Per term and piece: `J v_j` of the piece's samples for the directions `vs`
    /// (`jv_sums` into the piece's scratch), then `reduce(be, scratch, n, k)`.
    fn for_each_piece<R: Send>(
        &mut self,
        be: &B,
        vs: &[&B::Buf<T>],
        reduce: impl Fn(&B, &mut JvScratch<B, T>, usize, usize) -> Result<R> + Sync,
    ) -> Result<Vec<Vec<R>>> {
        if !self.valid {
            return Err(Error::Shape(
                "the Jacobian store holds no complete pass".into(),
            ));
        }
        let k = vs.len();
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
        let most = self.terms.iter().map(Vec::len).max().unwrap_or(0);
        while self.jv_scratch.len() < most {
            self.jv_scratch.push(JvScratch {
                tmp: be.alloc(0)?,
                dots: be.alloc(0)?,
                sums: be.alloc(0)?,
                sums64: be.alloc(0)?,
                gram: be.alloc(0)?,
            });
        }
        let dirs = Directions {
            layers: &self.layers,
            vstack: &self.vstack,
            bstack: &self.bstack,
            voff: &voff,
            boff: &boff,
            k,
        };
        // pieces in parallel, each with its own scratch
        let mut out = Vec::with_capacity(self.terms.len());
        for pieces in &self.terms {
            let mut res: Vec<Option<R>> = pieces.iter().map(|_| None).collect();
            let jobs: Vec<_> = pieces
                .iter()
                .zip(self.jv_scratch.iter_mut())
                .zip(res.iter_mut())
                .collect();
            run_workers(jobs, |((piece, sc), res)| {
                piece.jv_sums(be, &dirs, sc)?;
                *res = Some(reduce(be, sc, piece.n, k)?);
                Ok(())
            })?;
            // every worker ran (run_workers returns the first failure)
            out.push(res.into_iter().flatten().collect());
        }
        Ok(out)
    }

    /// `J v_j` for the stored pass and each direction (each of length M, rows as in
    /// [`super::jacobian`]).
    pub fn jvps(&mut self, be: &B, vs: &[&B::Buf<T>]) -> Result<Vec<Vec<f64>>> {
        let k = vs.len();
        let per_piece = self.for_each_piece(be, vs, |be, sc, n, k| {
            let mut host = vec![T::ZERO; k * n];
            be.download_range(&sc.sums, 0, &mut host)?;
            Ok(convert(&host))
        })?;
        // each term's pieces cover its samples in order
        let mut res = vec![Vec::new(); k];
        for piece_sums in per_piece.iter().flatten() {
            let n = piece_sums.len() / k.max(1);
            for (j, r) in res.iter_mut().enumerate() {
                r.extend_from_slice(&piece_sums[j * n..(j + 1) * n]);
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
        // one direction, read in place: its layer blocks are v's own
        let voff: Vec<usize> = self.layers.iter().map(|l| l.w_off).collect();
        let boff: Vec<usize> = self.layers.iter().map(|l| l.b_off).collect();
        let dir = Directions {
            layers: &self.layers,
            vstack: v,
            bstack: v,
            voff: &voff,
            boff: &boff,
            k: 1,
        };
        for pieces in &self.terms {
            let jobs: Vec<_> = pieces.iter().zip(self.gvp_scratch.iter_mut()).collect();
            run_workers(jobs, |(piece, sc)| piece.gvp(be, &dir, sc))?;
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

    /// The Gram matrix `[(J v_i)·(J v_j)]` (row-major `k × k`) for the stored pass: each
    /// piece's `S Sᵀ` of its per-sample sums on the backend, only the `k × k` entries read
    /// back and added up in f64.
    pub fn jvp_gram(&mut self, be: &B, vs: &[&B::Buf<T>]) -> Result<Vec<f64>> {
        let k = vs.len();
        let per_piece = self.for_each_piece(be, vs, |be, sc, n, k| {
            if n == 0 {
                return Ok(vec![0.0; k * k]);
            }
            grow(be, &mut sc.sums64, k * n)?;
            grow(be, &mut sc.gram, k * k)?;
            be.cast(&sc.sums, 0, &mut sc.sums64, 0, k * n)?;
            be.gemm(
                1.0,
                &sc.sums64,
                Lay::dense(k, n),
                Tr::N,
                &sc.sums64,
                Lay::dense(k, n),
                Tr::T,
                0.0,
                &mut sc.gram,
                Lay::dense(k, k),
            )?;
            let mut host = vec![0.0; k * k];
            be.download_range(&sc.gram, 0, &mut host)?;
            Ok(host)
        })?;
        let mut gram = vec![0.0; k * k];
        for piece in per_piece.iter().flatten() {
            for (g, p) in gram.iter_mut().zip(piece) {
                *g += p;
            }
        }
        Ok(gram)
    }
}

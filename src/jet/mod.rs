//! The forward Laplacian: a Taylor-mode pass that carries, per sample, the value, the K
//! directional derivatives and J weighted second-order rows `L_j = Σ_k c_jk ∂²_k` (one
//! [`Operator`], or an [`OperatorSet`]) of every hidden vector through the tanh MLP in
//! one sweep (design §1), and its reverse mode.
//!
//! Jets of a chunk of `n` samples are `(n·S) × h` matrices in block layout (rows
//! `s·n + i`), so each linear layer is one matrix product. The batch is processed in
//! chunks of samples: products stay cache-sized and memory is O(chunk), not O(N).
//!
//! Checked by `tests/jet.rs`: against the independent autodiff baseline
//! (`crate::autodiff`), against finite differences, in f32 and f64, for D = 1, widths of
//! 1 and several layers; the reverse mode against finite differences of the loss;
//! operator sets (J = 2, 3, mixed terms) row by row against finite differences and
//! autodiff, and J = 1 sets against the single-operator jet.

mod operator;
mod random;
mod tangent;

pub use operator::{Operator, OperatorSet};
pub use random::{Direction, Estimator, RandomOperator};

use crate::backend::{Backend, JetShape, Lay, Tr};
use crate::error::{Error, Result};
use crate::model::{LayerLayout, Mlp};
use crate::scalar::Real;

/// Target number of jet rows (samples × S) per chunk: large enough for efficient
/// products, small enough to stay in cache (one tall product of the whole batch is
/// slower than the same work in chunks; docs/design.md §1).
pub const DEFAULT_CHUNK_ROWS: usize = 2048;

/// What the output jet carries: values only; values, K directional derivatives and the
/// weighted second-order term of an [`Operator`]; or values, the K shared directions and
/// the J second-order terms of an [`OperatorSet`].
#[derive(Clone, Debug, PartialEq)]
pub enum JetKind {
    Value,
    Full(Operator),
    Set(OperatorSet),
}

impl JetKind {
    /// Number of directions K.
    pub fn k(&self) -> usize {
        match self {
            JetKind::Value => 0,
            JetKind::Full(op) => op.k(),
            JetKind::Set(set) => set.k(),
        }
    }
    /// Number of second-order operator rows J.
    pub fn ops(&self) -> usize {
        match self {
            JetKind::Value => 0,
            JetKind::Full(_) => 1,
            JetKind::Set(set) => set.ops(),
        }
    }
    /// Jet rows per sample, `1 + K + J`.
    pub fn s(&self) -> usize {
        1 + self.k() + self.ops()
    }
    /// The input dimension the operators act on (None for values only).
    pub fn dim(&self) -> Option<usize> {
        match self {
            JetKind::Value => None,
            JetKind::Full(op) => Some(op.dim()),
            JetKind::Set(set) => Some(set.dim()),
        }
    }
    /// The output jet's derivative rows need no rotation: the directions are the
    /// coordinate axes, begin with them, or were drawn at random (a residual built for
    /// drawn directions reads them as they are). False only for an [`Operator`]
    /// factorised by its eigendecomposition.
    pub fn axes(&self) -> bool {
        match self {
            JetKind::Full(op) => !op.rotates(),
            JetKind::Value | JetKind::Set(_) => true,
        }
    }
    /// The `K × D` directions and the `J × K` weights (empty for values only).
    fn dirs_coef(&self) -> (&[f64], &[f64]) {
        match self {
            JetKind::Value => (&[], &[]),
            JetKind::Full(op) => (op.dirs(), op.coef()),
            JetKind::Set(set) => (set.dirs(), set.coef()),
        }
    }
}

/// One layer's data during the backward pass, handed to a visitor: the layer's input
/// jet (rows × fan_in; for layer 0 the input jet of the points; [`Self::a`]) and the
/// gradient `g` of the seeded outputs with respect to the layer's pre-activation jet
/// (rows × fan_out). The visitor may modify `g` or swap it for a buffer of the same
/// length (it is not used afterwards), and may take the input jet with
/// [`Self::swap_input`].
pub struct LayerView<'a, B: Backend, T: Real> {
    pub index: usize,
    pub layout: LayerLayout,
    /// Shape of the chunk with `h = fan_in`.
    pub shape: JetShape,
    a: &'a mut B::Buf<T>,
    pub g: &'a mut B::Buf<T>,
    /// The engine's "jets of the last forward chunk are stored" flag.
    stored: &'a mut bool,
}

impl<B: Backend, T: Real> LayerView<'_, B, T> {
    /// The layer's input jet.
    pub fn a(&self) -> &B::Buf<T> {
        self.a
    }
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }
    pub fn a_lay(&self) -> Lay {
        Lay::dense(self.rows(), self.layout.fan_in)
    }
    pub fn g_lay(&self) -> Lay {
        Lay::dense(self.rows(), self.layout.fan_out)
    }
    pub fn out_shape(&self) -> JetShape {
        self.shape.with_h(self.layout.fan_out)
    }

    /// Swap the layer's input jet with `into` (same length: the engine keeps `into`'s old
    /// buffer as scratch for later chunks), so that a caller can keep the jet without a
    /// copy. The backward pass never reads a layer's input after its visit, but the
    /// chunk's stored jets are then incomplete: anything that needs them (another
    /// backward pass, a tangent pass) is refused until the next forward pass.
    pub fn swap_input(&mut self, into: &mut B::Buf<T>, be: &B) -> Result<()> {
        if be.len(into) != be.len(self.a) {
            return Err(Error::Shape(format!(
                "swap_input: buffer of {} elements for an input jet buffer of {}",
                be.len(into),
                be.len(self.a)
            )));
        }
        std::mem::swap(self.a, into);
        *self.stored = false;
        Ok(())
    }
}

/// `grad[W] += alpha · Gᵀ A`, `grad[b] += alpha · Σ_value rows G`: the parameter gradient of
/// whatever was seeded, for one layer and chunk.
pub fn accumulate_grad<B: Backend, T: Real>(
    be: &B,
    v: &LayerView<'_, B, T>,
    alpha: T,
    grad: &mut B::Buf<T>,
) -> Result<()> {
    accumulate_grad_from(be, v.layout, v.shape, v.g, v.a, alpha, grad)
}

/// [`accumulate_grad`] for a layer's cotangent `g` and input jet `a` held anywhere (chunk
/// `shape` with `h = fan_in`; `g` dense rows × fan_out, `a` dense rows × fan_in).
pub fn accumulate_grad_from<B: Backend, T: Real>(
    be: &B,
    l: LayerLayout,
    shape: JetShape,
    g: &B::Buf<T>,
    a: &B::Buf<T>,
    alpha: T,
    grad: &mut B::Buf<T>,
) -> Result<()> {
    let rows = shape.rows();
    be.gemm(
        alpha,
        g,
        Lay::dense(rows, l.fan_out),
        Tr::T,
        a,
        Lay::dense(rows, l.fan_in),
        Tr::N,
        T::ONE,
        grad,
        Lay::at(l.w_off, l.fan_out, l.fan_in),
    )?;
    be.col_sum(alpha, g, 0, shape.n, l.fan_out, T::ONE, grad, l.b_off)
}

struct TrainBufs<B: Backend, T: Real> {
    /// Input jet of every layer (a[0] = the points' jet).
    a: Vec<B::Buf<T>>,
    /// Pre-activation jet of every hidden layer.
    z: Vec<B::Buf<T>>,
    /// Gradient ping-pong buffers.
    g: [B::Buf<T>; 2],
}

/// Forward Laplacian engine for one network and one jet kind. Buffers are allocated on
/// first use for a chunk of `chunk` samples and reused.
pub struct JetEngine<B: Backend, T: Real> {
    be: B,
    mlp: Mlp,
    kind: JetKind,
    chunk: usize,
    coef: B::Buf<T>,
    dirs: B::Buf<T>,
    wv: B::Buf<T>,
    y: B::Buf<T>,
    /// Number of samples in the chunk held by the buffers (valid after a forward pass).
    n_cur: usize,
    stored: bool,
    train: Option<TrainBufs<B, T>>,
    eval: Option<[B::Buf<T>; 2]>,
}

impl<B: Backend, T: Real> JetEngine<B, T> {
    /// `chunk_rows`: target jet rows per chunk (None: [`DEFAULT_CHUNK_ROWS`]).
    pub fn new(be: B, mlp: Mlp, kind: JetKind, chunk_rows: Option<usize>) -> Result<Self> {
        if let Some(dim) = kind.dim() {
            if dim != mlp.input_dim() {
                return Err(Error::Shape(format!(
                    "operator acts on {} input dimensions, the network {} has {}",
                    dim,
                    mlp.describe(),
                    mlp.input_dim()
                )));
            }
        }
        let rows = chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS);
        if rows == 0 {
            return Err(Error::invalid(
                "chunk rows",
                0,
                "a positive number of jet rows",
            ));
        }
        let chunk = (rows / kind.s()).max(1);
        let (coef, dirs) = match &kind {
            JetKind::Value => (be.alloc(0)?, be.alloc(0)?),
            _ => {
                let (d, c) = kind.dirs_coef();
                (
                    be.upload(&crate::scalar::convert::<f64, T>(c))?,
                    be.upload(&crate::scalar::convert::<f64, T>(d))?,
                )
            }
        };
        let wv = be.alloc(kind.k() * mlp.widths()[1])?;
        let y = be.alloc(chunk * kind.s() * mlp.output_dim())?;
        Ok(JetEngine {
            be,
            mlp,
            kind,
            chunk,
            coef,
            dirs,
            wv,
            y,
            n_cur: 0,
            stored: false,
            train: None,
            eval: None,
        })
    }

    /// Replace the operator's directions and weights by those of `op`, which must have the
    /// dimension and number of directions of the engine's operator (the buffers keep their
    /// sizes): a fresh draw of a randomized operator before a step. Stored jets are
    /// invalidated (they belong to the old directions).
    pub fn set_operator(&mut self, op: &Operator) -> Result<()> {
        match &self.kind {
            JetKind::Full(cur) if cur.dim() == op.dim() && cur.k() == op.k() => {}
            kind => {
                return Err(Error::Shape(format!(
                    "set_operator: an operator of {} directions in {} dimensions for a jet \
                     of {} directions in {:?} dimensions (one operator of the same shape \
                     expected)",
                    op.k(),
                    op.dim(),
                    kind.k(),
                    kind.dim()
                )))
            }
        }
        self.be.upload_range(
            &crate::scalar::convert::<f64, T>(op.dirs()),
            &mut self.dirs,
            0,
        )?;
        self.be.upload_range(
            &crate::scalar::convert::<f64, T>(op.coef()),
            &mut self.coef,
            0,
        )?;
        self.kind = JetKind::Full(op.clone());
        self.stored = false;
        Ok(())
    }

    pub fn backend(&self) -> &B {
        &self.be
    }
    fn check_stored(&self, what: &str) -> Result<()> {
        if self.stored {
            Ok(())
        } else {
            Err(Error::Shape(format!(
                "{what} needs a forward pass with stored jets"
            )))
        }
    }
    /// Shape of the output jet of the last forward chunk (`h` = outputs).
    pub fn output_shape(&self) -> JetShape {
        self.shape(self.n_cur, self.mlp.output_dim())
    }
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }
    pub fn kind(&self) -> &JetKind {
        &self.kind
    }
    /// Samples per chunk.
    pub fn chunk(&self) -> usize {
        self.chunk
    }
    fn shape(&self, n: usize, h: usize) -> JetShape {
        JetShape {
            n,
            k: self.kind.k(),
            ops: self.kind.ops(),
            h,
        }
    }

    /// Bytes held by the engine's buffers (for memory reports).
    pub fn workspace_bytes(&self) -> usize {
        let b = |x: &B::Buf<T>| self.be.len(x) * std::mem::size_of::<T>();
        let mut s = b(&self.coef) + b(&self.dirs) + b(&self.wv) + b(&self.y);
        if let Some(t) = &self.train {
            s += t.a.iter().chain(&t.z).chain(&t.g).map(b).sum::<usize>();
        }
        if let Some(e) = &self.eval {
            s += e.iter().map(b).sum::<usize>();
        }
        s
    }

    fn ensure_train(&mut self) -> Result<()> {
        if self.train.is_none() {
            let w = self.mlp.widths();
            let rows = self.chunk * self.kind.s();
            let nl = self.mlp.num_layers();
            let a = (0..nl)
                .map(|l| self.be.alloc(rows * w[l]))
                .collect::<Result<Vec<_>>>()?;
            let z = (0..nl - 1)
                .map(|l| self.be.alloc(rows * w[l + 1]))
                .collect::<Result<Vec<_>>>()?;
            let gmax = *w[1..].iter().max().unwrap();
            let g = [self.be.alloc(rows * gmax)?, self.be.alloc(rows * gmax)?];
            self.train = Some(TrainBufs { a, z, g });
        }
        Ok(())
    }

    fn ensure_eval(&mut self) -> Result<()> {
        if self.eval.is_none() {
            let w = self.mlp.widths();
            let hmax = w[1..w.len() - 1].iter().copied().max().unwrap_or(0);
            let rows = self.chunk * self.kind.s();
            self.eval = Some([self.be.alloc(rows * hmax)?, self.be.alloc(rows * hmax)?]);
        }
        Ok(())
    }

    fn check_inputs(
        &self,
        params: &B::Buf<T>,
        x: &B::Buf<T>,
        first: usize,
        n: usize,
    ) -> Result<()> {
        self.mlp.check_params(self.be.len(params))?;
        let d = self.mlp.input_dim();
        if n > self.chunk {
            return Err(Error::Shape(format!(
                "chunk of {n} samples exceeds the engine's {}",
                self.chunk
            )));
        }
        if (first + n) * d > self.be.len(x) {
            return Err(Error::Shape(format!(
                "points {first}..{} requested from a buffer of {} points of dimension {d}",
                first + n,
                self.be.len(x) / d.max(1)
            )));
        }
        Ok(())
    }

    /// `V Wᵀ` for the first layer: the first layer's directional derivatives.
    fn first_layer_dirs(&mut self, params: &B::Buf<T>) -> Result<()> {
        let k = self.kind.k();
        if k == 0 {
            return Ok(());
        }
        let l0 = self.mlp.layer(0);
        self.be.gemm(
            T::ONE,
            &self.dirs,
            Lay::dense(k, l0.fan_in),
            Tr::N,
            params,
            Lay::at(l0.w_off, l0.fan_out, l0.fan_in),
            Tr::T,
            T::ZERO,
            &mut self.wv,
            Lay::dense(k, l0.fan_out),
        )
    }

    /// `dst[0..n rows] = x Wᵀ + b` for layer `l` whose input rows are `src[0..rows]`.
    fn linear(
        be: &B,
        params: &B::Buf<T>,
        l: LayerLayout,
        src: &B::Buf<T>,
        src_lay: Lay,
        dst: &mut B::Buf<T>,
        value_rows: usize,
    ) -> Result<()> {
        be.gemm(
            T::ONE,
            src,
            src_lay,
            Tr::N,
            params,
            Lay::at(l.w_off, l.fan_out, l.fan_in),
            Tr::T,
            T::ZERO,
            dst,
            Lay::dense(src_lay.rows, l.fan_out),
        )?;
        be.add_bias(dst, value_rows, l.fan_out, params, l.b_off)
    }

    /// Forward pass of samples `first..first+n` of `x` (row-major points, D columns).
    /// With `store`, every layer's jets are kept for [`Self::backward`]; without, the pass
    /// runs in place in two ping-pong buffers. The output jet is left in the engine
    /// (read it with [`Self::output`]).
    pub fn forward_chunk(
        &mut self,
        params: &B::Buf<T>,
        x: &B::Buf<T>,
        first: usize,
        n: usize,
        store: bool,
    ) -> Result<()> {
        self.check_inputs(params, x, first, n)?;
        self.first_layer_dirs(params)?;
        let nl = self.mlp.num_layers();
        let d = self.mlp.input_dim();
        let w = self.mlp.widths().to_vec();
        let rows = n * self.kind.s();
        let x_lay = Lay::at(first * d, n, d);
        let l0 = self.mlp.layer(0);
        let (kk, ops) = (self.kind.k(), self.kind.ops());
        let shape = move |n: usize, h: usize| JetShape { n, k: kk, ops, h };
        self.n_cur = n;
        self.stored = store;
        if nl == 1 {
            // A linear model: the first layer is the output layer.
            Self::linear(&self.be, params, l0, x, x_lay, &mut self.y, n)?;
            let sh = shape(n, w[1]);
            self.be.jet_broadcast_dirs(&mut self.y, &self.wv, sh)?;
            if store {
                self.ensure_train()?;
                let t = self.train.as_mut().unwrap();
                self.be
                    .jet_input(x, first * d, &self.dirs, &mut t.a[0], shape(n, d))?;
            }
            return Ok(());
        }
        if store {
            self.ensure_train()?;
            let sh_in = shape(n, d);
            let sh1 = shape(n, w[1]);
            let t = self.train.as_mut().unwrap();
            self.be
                .jet_input(x, first * d, &self.dirs, &mut t.a[0], sh_in)?;
            Self::linear(&self.be, params, l0, x, x_lay, &mut t.z[0], n)?;
            self.be.jet_broadcast_dirs(&mut t.z[0], &self.wv, sh1)?;
            self.be.jet_tanh(&t.z[0], &mut t.a[1], &self.coef, sh1)?;
            for l in 1..nl {
                let lay = self.mlp.layer(l);
                let src_lay = Lay::dense(rows, w[l]);
                if l + 1 == nl {
                    Self::linear(&self.be, params, lay, &t.a[l], src_lay, &mut self.y, n)?;
                } else {
                    Self::linear(&self.be, params, lay, &t.a[l], src_lay, &mut t.z[l], n)?;
                    let sh = shape(n, w[l + 1]);
                    self.be.jet_tanh(&t.z[l], &mut t.a[l + 1], &self.coef, sh)?;
                }
            }
        } else {
            self.ensure_eval()?;
            let sh1 = shape(n, w[1]);
            let [e0, e1] = self.eval.as_mut().unwrap();
            Self::linear(&self.be, params, l0, x, x_lay, e0, n)?;
            self.be.jet_input_tanh(e0, &self.wv, &self.coef, sh1)?;
            for l in 1..nl {
                let lay = self.mlp.layer(l);
                let (src, dst) = if l % 2 == 1 {
                    (&*e0, &mut *e1)
                } else {
                    (&*e1, &mut *e0)
                };
                let src_lay = Lay::dense(rows, w[l]);
                if l + 1 == nl {
                    Self::linear(&self.be, params, lay, src, src_lay, &mut self.y, n)?;
                } else {
                    Self::linear(&self.be, params, lay, src, src_lay, dst, n)?;
                    self.be
                        .jet_tanh_inplace(dst, &self.coef, shape(n, w[l + 1]))?;
                }
            }
        }
        Ok(())
    }

    /// The output jet of the last forward chunk on the host, sample-major: per sample
    /// `S·m` values `[u (m), ∂_1 u (m), …, ∂_K u (m), L_1 u (m), …, L_J u (m)]`, the
    /// derivatives along the coordinate axes (rotated back if the operator's directions
    /// are not; an operator set's first D directions are the axes, its pair directions
    /// `e_i + e_j` follow as they are).
    pub fn output(&self) -> Result<Vec<f64>> {
        self.output_block_to_host(&self.y)
    }

    /// An output-shaped jet block (`S·n × m`, block layout) on the host, sample-major and
    /// with the directions rotated back to the coordinate axes: [`Self::output`]'s layout.
    pub(crate) fn output_block_to_host(&self, buf: &B::Buf<T>) -> Result<Vec<f64>> {
        let n = self.n_cur;
        let m = self.mlp.output_dim();
        let s = self.kind.s();
        let mut blk = vec![T::ZERO; n * s * m];
        self.be.download_range(buf, 0, &mut blk)?;
        let mut out = vec![0.0; n * s * m];
        for i in 0..n {
            for r in 0..s {
                for j in 0..m {
                    out[(i * s + r) * m + j] = blk[(r * n + i) * m + j].to_f64();
                }
            }
        }
        if let JetKind::Full(op) = &self.kind {
            if op.rotates() {
                rotate_dirs(op, &mut out, n, m, s, false);
            }
        }
        Ok(out)
    }

    /// Reverse mode through the stored jets of the last forward chunk. `seeds` are the
    /// sample-major output-jet cotangents (layout of [`Self::output`]). `visit` is called
    /// for every layer, last to first, with the layer's input jet and the cotangent of its
    /// pre-activation jet.
    pub fn backward(
        &mut self,
        params: &B::Buf<T>,
        seeds: &[f64],
        visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.check_stored("backward")?;
        let n = self.n_cur;
        let m = self.mlp.output_dim();
        let s = self.kind.s();
        if seeds.len() != n * s * m {
            return Err(Error::Shape(format!(
                "seeds have {} entries, expected {}",
                seeds.len(),
                n * s * m
            )));
        }
        let mut sd = seeds.to_vec();
        if let JetKind::Full(op) = &self.kind {
            if op.rotates() {
                rotate_dirs(op, &mut sd, n, m, s, true);
            }
        }
        let mut blk = vec![T::ZERO; n * s * m];
        for i in 0..n {
            for r in 0..s {
                for j in 0..m {
                    blk[(r * n + i) * m + j] = T::from_f64(sd[(i * s + r) * m + j]);
                }
            }
        }
        let t = self.train.as_mut().unwrap();
        self.be.upload_range(&blk, &mut t.g[0], 0)?;
        self.backward_seeded(params, visit)
    }

    /// The output jet of the last forward chunk where it lives (block layout: row
    /// `s·n + i` of `m` values is component `s` of sample `i`, along the operator's
    /// directions).
    pub fn output_buf(&self) -> &B::Buf<T> {
        &self.y
    }

    /// The output jet and the buffer that [`Self::backward_seeded`] reads its seeds from
    /// (block layout, like [`Self::output_buf`]), after a forward pass with stored jets.
    #[allow(clippy::type_complexity)]
    pub fn output_and_seeds(&mut self) -> Result<(&B::Buf<T>, &mut B::Buf<T>)> {
        self.check_stored("seeds")?;
        let t = self.train.as_mut().unwrap();
        Ok((&self.y, &mut t.g[0]))
    }

    /// [`Self::backward`] with the seeds already in place ([`Self::output_and_seeds`]).
    pub fn backward_seeded(
        &mut self,
        params: &B::Buf<T>,
        mut visit: impl FnMut(&B, LayerView<'_, B, T>) -> Result<()>,
    ) -> Result<()> {
        self.check_stored("backward")?;
        let n = self.n_cur;
        let s = self.kind.s();
        let nl = self.mlp.num_layers();
        let w = self.mlp.widths().to_vec();
        let rows = n * s;
        let shape = self.shape(n, 0);
        let t = self.train.as_mut().unwrap();
        let [g0, g1] = &mut t.g;
        let stored = &mut self.stored;
        for l in (0..nl).rev() {
            let lay = self.mlp.layer(l);
            let (cur, next) = if (nl - 1 - l).is_multiple_of(2) {
                (&mut *g0, &mut *g1)
            } else {
                (&mut *g1, &mut *g0)
            };
            if l > 0 {
                // cotangent of the layer input a_l = G W, then through tanh to z_{l-1}
                self.be.gemm(
                    T::ONE,
                    cur,
                    Lay::dense(rows, w[l + 1]),
                    Tr::N,
                    params,
                    Lay::at(lay.w_off, lay.fan_out, lay.fan_in),
                    Tr::N,
                    T::ZERO,
                    next,
                    Lay::dense(rows, w[l]),
                )?;
                self.be.jet_tanh_backward(
                    &t.z[l - 1],
                    &t.a[l],
                    next,
                    &self.coef,
                    shape.with_h(w[l]),
                )?;
            }
            visit(
                &self.be,
                LayerView {
                    index: l,
                    layout: lay,
                    shape: shape.with_h(w[l]),
                    a: &mut t.a[l],
                    g: cur,
                    stored: &mut *stored,
                },
            )?;
        }
        Ok(())
    }

    /// Evaluate the output jet of all `n` points of `x` (row-major, D columns) in chunks,
    /// sample-major as in [`Self::output`].
    pub fn forward(&mut self, params: &B::Buf<T>, x: &B::Buf<T>, n: usize) -> Result<Vec<f64>> {
        let per = self.kind.s() * self.mlp.output_dim();
        let mut out = Vec::with_capacity(n * per);
        let mut first = 0;
        while first < n {
            let c = self.chunk.min(n - first);
            self.forward_chunk(params, x, first, c, false)?;
            out.extend(self.output()?);
            first += c;
        }
        Ok(out)
    }
}

/// Rotate the first-order block of sample-major jets between the operator's directions
/// and the coordinate axes: `∇u = Vᵀ ∂_V u` (to_dirs = false) or `∂_V = V ∇` (true).
fn rotate_dirs(op: &Operator, y: &mut [f64], n: usize, m: usize, s: usize, to_dirs: bool) {
    let k = op.k();
    let d = op.dim();
    let v = op.dirs();
    let mut tmp = vec![0.0; k.max(d)];
    for i in 0..n {
        for j in 0..m {
            let at = |r: usize| (i * s + 1 + r) * m + j;
            if to_dirs {
                for (kk, t) in tmp.iter_mut().enumerate().take(k) {
                    *t = (0..d).map(|dd| v[kk * d + dd] * y[at(dd)]).sum();
                }
                for kk in 0..k {
                    y[at(kk)] = tmp[kk];
                }
            } else {
                for (dd, t) in tmp.iter_mut().enumerate().take(d) {
                    *t = (0..k).map(|kk| v[kk * d + dd] * y[at(kk)]).sum();
                }
                for dd in 0..d {
                    y[at(dd)] = tmp[dd];
                }
            }
        }
    }
}

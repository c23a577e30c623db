//! The backend seam: every array operation the engine performs on its hot path goes
//! through [`Backend`]. The CPU implementation ([`cpu::Cpu`]) is the reference that every
//! other implementation (the CUDA backend) is tested against; each elementwise operation
//! here corresponds to one GPU kernel, and the `*_ref` functions in `cpu` are the
//! CPU twins those kernels are compared with.
//!
//! This file holds the trait and the types of its arguments; beside it: `check` (the
//! argument checks every backend runs, with the same messages), `cpu` (the reference),
//! `cuda` (the GPU: kernel plans in `cuda::ops`, the forwarding the GPU and the emulation
//! share in `cuda::host`), `emu` (the CUDA kernels run on the CPU, for tests) and `device`
//! (`--device`).
//!
//! Conventions: all matrices are row-major; a [`Lay`] describes a (possibly strided)
//! view into a buffer. Jet matrices use the block layout of design §1: for a chunk of `n`
//! samples with `S` jet rows each, row `s·n + i` holds jet component `s` of sample `i`
//! (s = 0 value, s = 1..=K directions, s = K+1..=K+J the J operator rows, if any).
//!
//! Checked by tests/kernels.rs (every op of the emulated CUDA backend against the CPU
//! backend, bad arguments included), tests/jet.rs (the CPU's jets against autodiff and
//! finite differences) and, on a GPU, tests/gpu.rs.

pub(crate) mod check;
pub mod cpu;
pub mod cuda;
pub mod device;
#[doc(hidden)]
pub mod emu;

use crate::error::Result;
use crate::scalar::Real;

/// Row-major view of a matrix inside a buffer: element (r, c) is at `off + r·ld + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lay {
    pub off: usize,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl Lay {
    /// A dense `rows × cols` matrix starting at offset 0.
    pub fn dense(rows: usize, cols: usize) -> Self {
        Lay {
            off: 0,
            rows,
            cols,
            ld: cols,
        }
    }
    /// A dense `rows × cols` matrix starting at `off`.
    pub fn at(off: usize, rows: usize, cols: usize) -> Self {
        Lay {
            off,
            rows,
            cols,
            ld: cols,
        }
    }
    /// Number of elements spanned (the last element's index + 1 − off).
    pub fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.ld + self.cols
        }
    }
}

/// Whether a gemm operand is used as is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tr {
    N,
    T,
}

impl Tr {
    /// Shape of `op(A)` for a stored view `lay`.
    pub fn shape(self, lay: Lay) -> (usize, usize) {
        match self {
            Tr::N => (lay.rows, lay.cols),
            Tr::T => (lay.cols, lay.rows),
        }
    }
}

/// Shape of a chunk of jets: `n` samples, `k` first-order directions, `ops` second-order
/// operator rows `L_j = Σ_k c_jk ∂²_k` (0 for values and gradients only, 1 for the
/// weighted Laplacian of one operator, more for an operator set), `h` columns.
/// Rows = n · S with S = 1 + k + ops; the kernels' coefficients are `ops × k` (row j =
/// the weights of `L_j`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JetShape {
    pub n: usize,
    pub k: usize,
    pub ops: usize,
    pub h: usize,
}

impl JetShape {
    /// A row-major `rows × cols` matrix as a value-only jet (one row per sample), so that
    /// the per-sample row ops (`scale_jet_rows`) scale its rows.
    pub fn matrix(rows: usize, cols: usize) -> Self {
        JetShape {
            n: rows,
            k: 0,
            ops: 0,
            h: cols,
        }
    }
    /// Jet rows per sample.
    pub fn s(&self) -> usize {
        1 + self.k + self.ops
    }
    pub fn rows(&self) -> usize {
        self.n * self.s()
    }
    pub fn len(&self) -> usize {
        self.rows() * self.h
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn with_h(self, h: usize) -> Self {
        JetShape { h, ..self }
    }
}

/// Where [`Backend::jac_rows`] writes: sample `i`'s row is `row0 + i·row_stride` of a
/// row-major matrix with leading dimension `ld`; the layer's weights start at column
/// `w_off` (fan_out × fan_in, row-major) and its bias at `b_off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JacRows {
    pub row0: usize,
    pub row_stride: usize,
    pub ld: usize,
    pub w_off: usize,
    pub b_off: usize,
}

/// Hyperparameters of one Adam update (bias corrections already folded into `lr_t`).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 1 − β1^t
    pub bc1: f64,
    /// 1 − β2^t
    pub bc2: f64,
}

/// The operations the training engine needs from a compute device.
///
/// Buffers are typed by element; `Buf<T>` for the CPU is a `Vec<T>`. Every operation
/// validates its arguments against the buffer lengths and returns
/// [`crate::Error::Shape`] instead of reading out of bounds (the checks of `check.rs`,
/// shared by every backend). The methods are grouped by kind; the kernel groups name the
/// `kernels/*.cu` file their kernels are in.
#[allow(clippy::too_many_arguments)]
pub trait Backend: Clone + Send + Sync + 'static {
    type Buf<T: Real>: Send + Sync;

    // ---- the device: its name, synchronisation, memory account, parallelism -------------------
    /// Human-readable device description.
    fn name(&self) -> String;
    /// Wait until all queued work has finished (for timings). The CPU runs synchronously.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// `(current, peak)` bytes of device memory held through this backend, if it keeps an
    /// account (the CUDA backend does; the CPU's memory is the process heap, see
    /// [`crate::mem`]).
    fn memory_use(&self) -> Option<(usize, usize)> {
        None
    }
    /// Restart the peak of [`Backend::memory_use`] at the current use.
    fn reset_peak_memory(&self) {}
    /// How many workers a chunk-parallel sweep ([`crate::loss::Objective::sweep_par`])
    /// should use: 1 where one stream of large operations is best (a GPU), the thread
    /// count on the CPU.
    fn chunk_workers(&self) -> usize {
        1
    }

    // ---- memory and transfers (host ↔ device, within and between buffers) ----------------------
    /// A zero-filled buffer of `len` elements.
    fn alloc<T: Real>(&self, len: usize) -> Result<Self::Buf<T>>;
    fn upload<T: Real>(&self, host: &[T]) -> Result<Self::Buf<T>>;
    fn download<T: Real>(&self, buf: &Self::Buf<T>) -> Result<Vec<T>>;
    /// Copy `dst.len()` elements starting at `off` to the host.
    fn download_range<T: Real>(&self, buf: &Self::Buf<T>, off: usize, dst: &mut [T]) -> Result<()>;
    /// Copy `src` into `buf` starting at `off`.
    fn upload_range<T: Real>(&self, src: &[T], buf: &mut Self::Buf<T>, off: usize) -> Result<()>;
    fn len<T: Real>(&self, buf: &Self::Buf<T>) -> usize;
    /// `dst[dst_off..dst_off+len] = src[src_off..src_off+len]`
    fn copy<T: Real>(
        &self,
        src: &Self::Buf<T>,
        src_off: usize,
        dst: &mut Self::Buf<T>,
        dst_off: usize,
        len: usize,
    ) -> Result<()>;
    /// `buf[off..off+len] = value`
    fn fill<T: Real>(&self, buf: &mut Self::Buf<T>, off: usize, len: usize, value: T)
        -> Result<()>;
    /// `y[y_off + i] = x[x_off + i]` for `i < len`, converted between precisions (a copy
    /// when `T = U`).
    fn cast<T: Real, U: Real>(
        &self,
        x: &Self::Buf<T>,
        x_off: usize,
        y: &mut Self::Buf<U>,
        y_off: usize,
        len: usize,
    ) -> Result<()>;

    // ---- dense products (cuBLAS on the GPU; views `Lay` of row-major matrices) -----------------
    /// `C = alpha · op(A) · op(B) + beta · C` (beta = 0 ignores C's previous contents).
    fn gemm<T: Real>(
        &self,
        alpha: T,
        a: &Self::Buf<T>,
        la: Lay,
        ta: Tr,
        b: &Self::Buf<T>,
        lb: Lay,
        tb: Tr,
        beta: T,
        c: &mut Self::Buf<T>,
        lc: Lay,
    ) -> Result<()>;
    /// `C = alpha · Aᵀ A + beta · C` for an `m × n` view A and a full `n × n` C
    /// (both triangles written).
    fn syrk<T: Real>(
        &self,
        alpha: T,
        a: &Self::Buf<T>,
        la: Lay,
        beta: T,
        c: &mut Self::Buf<T>,
        lc: Lay,
    ) -> Result<()>;

    // ---- vectors: elementwise updates (kernels/vector.cu) --------------------------------------
    /// `y = alpha · x + beta · y`
    fn axpby<T: Real>(
        &self,
        alpha: T,
        x: &Self::Buf<T>,
        beta: T,
        y: &mut Self::Buf<T>,
    ) -> Result<()>;
    /// `x = alpha · x`
    fn scale<T: Real>(&self, alpha: T, x: &mut Self::Buf<T>) -> Result<()>;
    /// Elementwise product in place: `y[y_off + i] *= x[x_off + i]` for `i < len`.
    /// CPU twin: `cpu::mul_ref`.
    fn mul<T: Real>(
        &self,
        x: &Self::Buf<T>,
        x_off: usize,
        y: &mut Self::Buf<T>,
        y_off: usize,
        len: usize,
    ) -> Result<()>;
    /// One Adam update of `p` with gradient `g` and moments `m`, `v`.
    fn adam_update<T: Real>(
        &self,
        p: &mut Self::Buf<T>,
        g: &Self::Buf<T>,
        m: &mut Self::Buf<T>,
        v: &mut Self::Buf<T>,
        step: AdamStep,
    ) -> Result<()>;

    // ---- reductions to f64 scalars, columns and rows (kernels/reduce.cu) -----------------------
    /// `Σ x_i y_i`, accumulated in f64.
    fn dot<T: Real>(&self, x: &Self::Buf<T>, y: &Self::Buf<T>) -> Result<f64>;
    /// `Σ (x[x_off + i] − y[y_off + i])²` for `i < len`, each difference and the sum in f64
    /// (the L2 error of an evaluation).
    fn sq_dist<T: Real>(
        &self,
        x: &Self::Buf<T>,
        x_off: usize,
        y: &Self::Buf<T>,
        y_off: usize,
        len: usize,
    ) -> Result<f64>;
    /// `out[out_off + j] = beta·out[out_off + j] + alpha · Σ_{r < rows} x[x_off + r·cols + j]`
    /// (column sums of the dense `rows × cols` block that starts at `x_off`).
    #[allow(clippy::too_many_arguments)]
    fn col_sum<T: Real>(
        &self,
        alpha: T,
        x: &Self::Buf<T>,
        x_off: usize,
        rows: usize,
        cols: usize,
        beta: T,
        out: &mut Self::Buf<T>,
        out_off: usize,
    ) -> Result<()>;
    /// Row-wise dot products of two equally shaped views: `out[out_off + r] =
    /// beta·out[out_off + r] + Σ_c X[r, c] · Y[r, c]` for `r < rows` (beta = 0 ignores the
    /// old contents). CPU twin: `cpu::row_dot_ref`.
    fn row_dot<T: Real>(
        &self,
        x: &Self::Buf<T>,
        lx: Lay,
        y: &Self::Buf<T>,
        ly: Lay,
        beta: T,
        out: &mut Self::Buf<T>,
        out_off: usize,
    ) -> Result<()>;

    // ---- forward Laplacian: the jets of a chunk through one layer (kernels/jet.cu) -------------
    /// Add `bias` (length `cols`, at `bias_off`) to the first `rows` rows of `x` (row-major, `cols` wide).
    fn add_bias<T: Real>(
        &self,
        x: &mut Self::Buf<T>,
        rows: usize,
        cols: usize,
        bias: &Self::Buf<T>,
        bias_off: usize,
    ) -> Result<()>;
    /// Input jet `A₀` of a chunk: value rows = the points `x` (`shape.n × shape.h`, at
    /// `x_off`), direction row k of every sample = `dirs[k]` (a `k × h` matrix), operator rows = 0.
    fn jet_input<T: Real>(
        &self,
        x: &Self::Buf<T>,
        x_off: usize,
        dirs: &Self::Buf<T>,
        out: &mut Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// First linear layer of the jet: value rows already hold `x Wᵀ + b`; writes direction
    /// row k of every sample = `wv[k]` (row k of `V Wᵀ`) and zero operator rows.
    fn jet_broadcast_dirs<T: Real>(
        &self,
        z: &mut Self::Buf<T>,
        wv: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// Fused first layer + tanh, in place: value rows hold `x Wᵀ + b`; writes the tanh jet
    /// with directions `s1 · wv[k]` and operator rows `s2 · Σ_k c_jk wv[k]²` without forming
    /// the pre-activation jet.
    fn jet_input_tanh<T: Real>(
        &self,
        z: &mut Self::Buf<T>,
        wv: &Self::Buf<T>,
        coef: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// `a = tanh` jet of the pre-activation jet `z` (design §1), out of place: per operator
    /// row j, `L_j a = s1 L_j z + s2 Σ_k c_jk (∂_k z)²` with `coef` the `ops × k` weights.
    fn jet_tanh<T: Real>(
        &self,
        z: &Self::Buf<T>,
        a: &mut Self::Buf<T>,
        coef: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// The same, in place.
    fn jet_tanh_inplace<T: Real>(
        &self,
        z: &mut Self::Buf<T>,
        coef: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// Reverse mode through the tanh jet: `g` holds the gradient with respect to the
    /// activation jet on entry and the gradient with respect to the pre-activation jet
    /// `z` on exit. `a` holds at least the value rows `tanh z` of the forward pass (read
    /// instead of evaluating tanh again).
    fn jet_tanh_backward<T: Real>(
        &self,
        z: &Self::Buf<T>,
        a: &Self::Buf<T>,
        g: &mut Self::Buf<T>,
        coef: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// Tangent (forward mode in the parameters) through the tanh jet, the linearisation of
    /// [`Backend::jet_tanh`]: `z` is the pre-activation jet, `a` the activation jet
    /// `jet_tanh` made from it (only its value rows `a = tanh z` are read, which saves
    /// recomputing tanh), and `t` holds the tangent of `z` on entry and the tangent of `a`
    /// on exit. With `s1 = 1 − a²`, `s2 = −2a·s1`, `s3 = s1(6a² − 2)` and `ż` the entry values:
    /// `ȧ = s1 ż`; `∂_d ȧ = s1 ∂_d ż + s2 ż ∂_d z`;
    /// `L_j ȧ = s1 L_j ż + s2 ż L_j z + s3 ż Σ_d c_jd (∂_d z)² + 2 s2 Σ_d c_jd ∂_d z ∂_d ż`
    /// for each operator row j (`coef` is `ops × k`).
    /// CPU twin: `cpu::tanh_tangent_samples`.
    fn jet_tanh_tangent<T: Real>(
        &self,
        z: &Self::Buf<T>,
        a: &Self::Buf<T>,
        t: &mut Self::Buf<T>,
        coef: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// Multiply every jet row of sample `i` by `w[i]`.
    fn scale_jet_rows<T: Real>(
        &self,
        g: &mut Self::Buf<T>,
        w: &Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// `dst` = `src` with every jet row of sample `i` multiplied by `w[i]` (the first
    /// `shape.len()` elements of each).
    fn scale_jet_rows_to<T: Real>(
        &self,
        src: &Self::Buf<T>,
        w: &Self::Buf<T>,
        shape: JetShape,
        dst: &mut Self::Buf<T>,
    ) -> Result<()>;

    // ---- autodiff baseline and per-sample Jacobians (kernels/autodiff.cu) ----------------------
    /// Forward-over-reverse through tanh for the nested-differentiation baseline. `a` is
    /// the stored activation block (value rows `a`, tangent rows `ȧ`, `shape.k` tangents,
    /// no Laplacian); `g` holds the cotangent block (`ḡa`, its tangents `dḡa`) on entry and
    /// that of the pre-activation on exit: `ḡz = s1 ḡa`, `dḡz = s1 dḡa − 2 a ȧ ḡa`.
    fn ad_tanh_rev<T: Real>(
        &self,
        a: &Self::Buf<T>,
        g: &mut Self::Buf<T>,
        shape: JetShape,
    ) -> Result<()>;
    /// Per-sample parameter Jacobian of one layer: for every sample `i` of the chunk,
    /// the weight block of its row is `scale[i] · Σ_s g_{s,i} a_{s,i}ᵀ` (an outer-product
    /// sum over the sample's S jet rows; `a` is `rows × shape.h`, `g` is `rows × fan_out`)
    /// and the bias block `scale[i] · g_{0,i}` (value row only). Overwrites those entries.
    fn jac_rows<T: Real>(
        &self,
        a: &Self::Buf<T>,
        g: &Self::Buf<T>,
        shape: JetShape,
        fan_out: usize,
        scale: &Self::Buf<T>,
        out: &mut Self::Buf<T>,
        at: JacRows,
    ) -> Result<()>;

    // ---- quadratic-form residuals of the output jet (kernels/jet.cu) ---------------------------
    /// Residuals of a quadratic form ([`QuadForm`]) for the chunk of `shape.n` samples
    /// starting at sample `first` of its term, from the chunk's output jet `y` (block
    /// layout, `shape.h` = outputs): `r[i] = d[first+i] + Σ_c (a[first+i, c] + b[c]·y_ic)·y_ic`.
    /// CPU twin: `cpu::quad_residual_ref`.
    fn quad_residual<T: Real>(
        &self,
        y: &Self::Buf<T>,
        form: &QuadForm<'_, Self, T>,
        first: usize,
        shape: JetShape,
        r: &mut Self::Buf<T>,
    ) -> Result<()>;
    /// Directional derivative of those residuals along the output-jet tangent `yd` (block
    /// layout like `y`): `t[i] = Σ_c (a[first+i, c] + 2 b[c]·y_ic)·yd_ic`, the chunk's rows
    /// of `J·v` (un-scaled). CPU twin: `cpu::quad_tangent_ref`.
    fn quad_tangent<T: Real>(
        &self,
        y: &Self::Buf<T>,
        form: &QuadForm<'_, Self, T>,
        yd: &Self::Buf<T>,
        first: usize,
        shape: JetShape,
        t: &mut Self::Buf<T>,
    ) -> Result<()>;
    /// Seeds (output-jet cotangents, block layout) of those residuals:
    /// `g_ic = (alpha·r_i + beta)·(a_ic + 2 b_c y_ic)`. CPU twin: `cpu::quad_seeds_ref`.
    #[allow(clippy::too_many_arguments)]
    fn quad_seeds<T: Real>(
        &self,
        y: &Self::Buf<T>,
        form: &QuadForm<'_, Self, T>,
        r: &Self::Buf<T>,
        alpha: T,
        beta: T,
        first: usize,
        shape: JetShape,
        g: &mut Self::Buf<T>,
    ) -> Result<()>;

    // ---- factorizations in f64 (cuSOLVER on the GPU) -------------------------------------------
    /// Thin singular value decomposition of the `m × n` view `la` of `a`, computed in f64
    /// whatever `T` is: `A = U diag(s) Vᵀ` with `k = min(m, n)`. Writes `U` to `u` as a
    /// dense row-major `m × k` matrix (orthonormal columns), the singular values to
    /// `s[..k]` (non-negative, non-increasing) and `Vᵀ` to `vt` as a dense row-major
    /// `k × n` matrix (orthonormal rows); the buffers may be longer. Non-finite input
    /// gives [`crate::Error::NonFinite`], a failed iteration [`crate::Error::Numerical`].
    /// CPU reference twin: [`cpu::thin_svd_ref`] (faer's SVD); the CUDA backend maps it
    /// to cuSOLVER (gesvd/gesvdj).
    fn thin_svd<T: Real>(
        &self,
        a: &Self::Buf<T>,
        la: Lay,
        u: &mut Self::Buf<f64>,
        s: &mut Self::Buf<f64>,
        vt: &mut Self::Buf<f64>,
    ) -> Result<()>;
    /// Symmetric eigendecomposition in f64 of the `n × n` row-major matrix `a`, of which
    /// only the lower triangle is read: the eigenvalues in ascending order to `vals[..n]`
    /// and eigenvector k to row k of `vecs` (row-major `n × n`, i.e. `Uᵀ`; the buffers may
    /// be longer). Non-finite entries give [`crate::Error::NonFinite`]. CPU: faer
    /// ([`crate::curvature::linalg::sym_eig`]); CUDA: cuSOLVER `syevd`.
    fn sym_eig(
        &self,
        a: &Self::Buf<f64>,
        n: usize,
        vals: &mut Self::Buf<f64>,
        vecs: &mut Self::Buf<f64>,
    ) -> Result<()>;

    // ---- spectral steps of the KFAC and HIG inverses (kernels/linalg.cu) -----------------------
    /// Eigenvalue fixes in place on `vals[..n]` ([`EigFix`]); returns how many were
    /// clamped (or dropped) and the maximum the floor or cut is relative to, NaN if any
    /// value is NaN (one small read-back). CPU twin: `cpu::eig_fix_ref`.
    fn eig_fix(&self, vals: &mut Self::Buf<f64>, n: usize, mode: EigFix) -> Result<EigFixed>;
    /// The Kronecker-sum scaling `d[o·na + i] = 1 / (1 + sb[o]·sa[i])` for `o < nb`,
    /// `i < na`, written in the training precision. CPU twin: `cpu::kron_recip_ref`.
    fn kron_recip<T: Real>(
        &self,
        sa: &Self::Buf<f64>,
        na: usize,
        sb: &Self::Buf<f64>,
        nb: usize,
        d: &mut Self::Buf<T>,
    ) -> Result<()>;
    /// `x[i·n + i] += v` for `i < n` (damping of a row-major `n × n` factor).
    fn add_diag<T: Real>(&self, x: &mut Self::Buf<T>, n: usize, v: T) -> Result<()>;
    /// HIG's spectral step on `k` singular values `s` (non-increasing) and `c = Uᵀr̃`:
    /// `c_i ← −s_i^{−κ}·c_i` where `s_i > τ·s_0` and `s_i > 0`, else 0. Returns how many
    /// were kept and `s_0` (one small read-back). CPU twin: `cpu::spectral_scale_ref`.
    fn spectral_scale(
        &self,
        s: &Self::Buf<f64>,
        c: &mut Self::Buf<f64>,
        k: usize,
        kappa: f64,
        tau: f64,
    ) -> Result<(usize, f64)>;
    /// The bias border of an augmented input factor (row-major `n × n`): the last column
    /// copied from the last row, the corner set to `corner`. CPU twin:
    /// `cpu::bias_border_ref`.
    fn bias_border<T: Real>(&self, a: &mut Self::Buf<T>, n: usize, corner: T) -> Result<()>;
}

/// Which fix [`Backend::eig_fix`] applies to eigenvalues `v` with maximum `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EigFix {
    /// `m = max v`, floor `f = max(n·ε·m, f64::MIN_POSITIVE)`: `v ← 1/√max(v, f)`,
    /// counting the raised ones (the caller reports `m ≤ 0` as an error).
    InvSqrtFloor,
    /// `m = max |v|`: `v ← max(v, 0)`, counting `v < −n·10³·ε·m` (smaller negatives are
    /// rounding noise of a semi-definite factor).
    NonNegative,
    /// `m = max |v|`, cut `c = n·ε·m`: `v ← 1/v` where `|v| > c` (and `m > 0`), else 0 (the
    /// pseudo-inverse of a spectrum, LAPACK `gelsd`'s default cut), counting the dropped.
    PseudoInverse,
}

/// What [`Backend::eig_fix`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EigFixed {
    pub clamped: usize,
    pub max: f64,
}

/// A residual that is a quadratic form of the output jet, per sample of a term:
/// `r_i = d_i + Σ_c (a_ic + b_c y_ic) y_ic` over the `C = S·m` jet entries `c = s·m + j`
/// ([`crate::pde::Residual::quad_form`]). `a` is `N × C` (sample-major), `b` has `C`
/// entries, `d` has `N`.
pub struct QuadForm<'a, B: Backend, T: Real> {
    pub a: &'a B::Buf<T>,
    pub b: &'a B::Buf<T>,
    pub d: &'a B::Buf<T>,
}

// Manual impls: a derive would ask for `B: Copy`.
impl<B: Backend, T: Real> Clone for QuadForm<'_, B, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend, T: Real> Copy for QuadForm<'_, B, T> {}

/// Run one job per worker: inline if there is one (its operations may then use every
/// thread), else in parallel, each job's CPU backend operations kept on its own thread
/// ([`cpu::sequential`]). The jobs of chunk-parallel sweeps and of their consumers.
pub fn run_workers<J: Send>(jobs: Vec<J>, f: impl Fn(J) -> Result<()> + Sync) -> Result<()> {
    use rayon::prelude::*;
    if jobs.len() <= 1 {
        return jobs.into_iter().try_for_each(f);
    }
    jobs.into_par_iter()
        .map(|j| crate::backend::cpu::sequential(|| f(j)))
        .collect::<Result<Vec<()>>>()?;
    Ok(())
}

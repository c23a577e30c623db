//! Kernel plans: for every elementwise and reduction op of the [`crate::backend::Backend`]
//! trait, the argument checks (the same as the CPU backend's, with the same messages),
//! the launch geometry and the argument list of its kernel(s). Generic over the
//! [`Launcher`], so the CUDA backend and the CPU emulation (`backend::emu`) run exactly
//! this code; only the launch itself differs.
//!
//! Checked by tests/kernels.rs: every op, run through the emulation, against the CPU
//! backend (f32 and f64, ragged and empty sizes, out-of-range arguments).

use super::launch::{kernel_name, Geometry, KArg, Launcher};
use crate::backend::{
    check_quad, check_view, AdamStep, EigFix, EigFixed, JacRows, JetShape, Lay, QuadLens,
};
use crate::error::{Error, Result};
use crate::scalar::Real;
use std::marker::PhantomData;

/// A buffer as the kernels see it: a base address and a length in elements.
#[derive(Debug)]
pub struct Dev<T> {
    pub ptr: u64,
    pub len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Dev<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Dev<T> {}

impl<T: Real> Dev<T> {
    /// # Safety
    /// `ptr` must address `len` elements of `T` (device memory for the CUDA backend, host
    /// memory for the emulation) that stay allocated, and are not accessed otherwise,
    /// while the ops this `Dev` is handed to run; the ops only touch elements below `len`.
    pub unsafe fn new(ptr: u64, len: usize) -> Self {
        Dev {
            ptr,
            len,
            _t: PhantomData,
        }
    }
    /// Address of element `off`.
    pub fn at(self, off: usize) -> u64 {
        self.ptr + (off * std::mem::size_of::<T>()) as u64
    }
    fn arg(self) -> KArg {
        KArg::Ptr(self.ptr)
    }
    fn arg_at(self, off: usize) -> KArg {
        KArg::Ptr(self.at(off))
    }
}

pub(crate) fn check_len(what: &str, len: usize, need: usize) -> Result<()> {
    if need > len {
        Err(Error::Shape(format!(
            "{what}: need {need} elements, buffer has {len}"
        )))
    } else {
        Ok(())
    }
}

fn launch_linear<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    n: usize,
    args: &[KArg],
) -> Result<()> {
    match Geometry::linear(n, l.limits()) {
        // SAFETY: every caller checked the extents its kernel touches against the `Dev`
        // lengths, and `Dev::new`'s contract makes those elements valid.
        Some(g) => unsafe { l.launch(&kernel_name::<T>(base), g, args) },
        None => Ok(()),
    }
}

fn jet_args(shape: JetShape) -> [KArg; 4] {
    [
        KArg::len(shape.n),
        KArg::len(shape.k),
        KArg::flag(shape.lap),
        KArg::len(shape.h),
    ]
}

// ---- vectors ----------------------------------------------------------------------------

/// `buf[off..off+len] = value`
pub fn fill<L: Launcher + ?Sized, T: Real>(
    l: &L,
    buf: Dev<T>,
    off: usize,
    len: usize,
    value: T,
) -> Result<()> {
    check_len("fill", buf.len, off + len)?;
    launch_linear::<L, T>(
        l,
        "fill",
        len,
        &[buf.arg_at(off), KArg::len(len), KArg::val(value)],
    )
}

/// `x = alpha x`
pub fn scale<L: Launcher + ?Sized, T: Real>(l: &L, alpha: T, x: Dev<T>) -> Result<()> {
    launch_linear::<L, T>(
        l,
        "scale",
        x.len,
        &[x.arg(), KArg::len(x.len), KArg::val(alpha)],
    )
}

/// `y = alpha x + beta y`
pub fn axpby<L: Launcher + ?Sized, T: Real>(
    l: &L,
    alpha: T,
    x: Dev<T>,
    beta: T,
    y: Dev<T>,
) -> Result<()> {
    if x.len != y.len {
        return Err(Error::Shape(format!(
            "axpby: x has {}, y has {} elements",
            x.len, y.len
        )));
    }
    launch_linear::<L, T>(
        l,
        "axpby",
        x.len,
        &[
            x.arg(),
            y.arg(),
            KArg::len(x.len),
            KArg::val(alpha),
            KArg::val(beta),
        ],
    )
}

/// `Σ x_i y_i` in f64: per-block partial sums, then one block adds them up.
pub fn dot<L: Launcher + ?Sized, T: Real>(l: &L, x: Dev<T>, y: Dev<T>) -> Result<f64> {
    if x.len != y.len {
        return Err(Error::Shape(format!(
            "dot: x has {}, y has {} elements",
            x.len, y.len
        )));
    }
    partial_sum::<L, T>(l, "dot_partial", x.arg(), y.arg(), x.len)
}

/// `Σ (x[x_off + i] − y[y_off + i])²` for `i < len`, in f64.
pub fn sq_dist<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    x_off: usize,
    y: Dev<T>,
    y_off: usize,
    len: usize,
) -> Result<f64> {
    check_len("sq_dist (x)", x.len, x_off + len)?;
    check_len("sq_dist (y)", y.len, y_off + len)?;
    partial_sum::<L, T>(l, "sq_dist_partial", x.arg_at(x_off), y.arg_at(y_off), len)
}

/// A two-pass f64 reduction over `n` pairs: the `{base}_{T}` kernel writes one partial sum
/// per block, `sum_partials_f64` adds them; one scalar comes back.
fn partial_sum<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    x: KArg,
    y: KArg,
    n: usize,
) -> Result<f64> {
    let Some(g) = Geometry::linear(n, l.limits()) else {
        return Ok(0.0);
    };
    let blocks = g.grid[0] as usize;
    let mut out = [0u8; 8];
    l.with_scratch((blocks + 1) * 8, &mut |s| {
        let total = s + (blocks * 8) as u64;
        // SAFETY: every caller checked that x and y address n elements; the scratch area
        // holds blocks + 1 f64s: the partial sums and the total.
        unsafe {
            l.launch(
                &kernel_name::<T>(base),
                g,
                &[x, y, KArg::len(n), KArg::Ptr(s)],
            )?;
            l.launch(
                "sum_partials_f64",
                Geometry::single_block(),
                &[KArg::Ptr(s), KArg::len(blocks), KArg::Ptr(total)],
            )?;
            l.read(total, &mut out)
        }
    })?;
    Ok(f64::from_le_bytes(out))
}

/// One Adam update; the bias corrections are folded on the host like `cpu::adam_ref`.
pub fn adam<L: Launcher + ?Sized, T: Real>(
    l: &L,
    p: Dev<T>,
    g: Dev<T>,
    m: Dev<T>,
    v: Dev<T>,
    s: AdamStep,
) -> Result<()> {
    let n = p.len;
    if g.len != n || m.len != n || v.len != n {
        return Err(Error::Shape(format!(
            "adam_update: p {n}, g {}, m {}, v {}",
            g.len, m.len, v.len
        )));
    }
    launch_linear::<L, T>(
        l,
        "adam",
        n,
        &[
            p.arg(),
            g.arg(),
            m.arg(),
            v.arg(),
            KArg::len(n),
            KArg::val(T::from_f64(s.beta1)),
            KArg::val(T::from_f64(s.beta2)),
            KArg::val(T::from_f64(s.lr / s.bc1)),
            KArg::val(T::from_f64(1.0 / s.bc2.sqrt())),
            KArg::val(T::from_f64(s.eps)),
        ],
    )
}

/// `y[y_off + i] *= x[x_off + i]` for `i < len`.
pub fn mul<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    x_off: usize,
    y: Dev<T>,
    y_off: usize,
    len: usize,
) -> Result<()> {
    check_len("mul (x)", x.len, x_off + len)?;
    check_len("mul (y)", y.len, y_off + len)?;
    launch_linear::<L, T>(
        l,
        "mul",
        len,
        &[x.arg_at(x_off), y.arg_at(y_off), KArg::len(len)],
    )
}

// ---- reductions over rows and columns ------------------------------------------------------

/// `out[out_off + j] = beta·out[out_off + j] + alpha·Σ_{r < rows} x[x_off + r·cols + j]`.
#[allow(clippy::too_many_arguments)]
pub fn col_sum<L: Launcher + ?Sized, T: Real>(
    l: &L,
    alpha: T,
    x: Dev<T>,
    x_off: usize,
    rows: usize,
    cols: usize,
    beta: T,
    out: Dev<T>,
    out_off: usize,
) -> Result<()> {
    check_len("col_sum (x)", x.len, x_off + rows * cols)?;
    check_len("col_sum (out)", out.len, out_off + cols)?;
    let Some((g, parts, chunk)) = Geometry::col_sum(rows, cols, l.limits()) else {
        return Ok(());
    };
    let size = std::mem::size_of::<T>();
    l.with_scratch(parts * cols * size, &mut |s| {
        // SAFETY: x holds x_off + rows·cols elements and out out_off + cols (checked
        // above); the scratch area holds parts·cols elements, one row per partition.
        unsafe {
            l.launch(
                &kernel_name::<T>("col_sum_part"),
                g,
                &[
                    x.arg_at(x_off),
                    KArg::len(rows),
                    KArg::len(cols),
                    KArg::len(chunk),
                    KArg::Ptr(s),
                ],
            )?;
            let fin = Geometry::linear(cols, l.limits()).expect("cols > 0");
            l.launch(
                &kernel_name::<T>("col_sum_finish"),
                fin,
                &[
                    KArg::Ptr(s),
                    KArg::len(parts),
                    KArg::len(cols),
                    out.arg_at(out_off),
                    KArg::val(alpha),
                    KArg::val(beta),
                ],
            )
        }
    })
}

/// `out[out_off + r] = beta·out[out_off + r] + Σ_c X[r, c]·Y[r, c]`.
#[allow(clippy::too_many_arguments)]
pub fn row_dot<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    lx: Lay,
    y: Dev<T>,
    ly: Lay,
    beta: T,
    out: Dev<T>,
    out_off: usize,
) -> Result<()> {
    check_view("row_dot X", x.len, lx)?;
    check_view("row_dot Y", y.len, ly)?;
    if lx.rows != ly.rows || lx.cols != ly.cols {
        return Err(Error::Shape(format!(
            "row_dot: X is {}x{}, Y is {}x{}",
            lx.rows, lx.cols, ly.rows, ly.cols
        )));
    }
    check_len("row_dot (out)", out.len, out_off + lx.rows)?;
    let Some(g) = Geometry::warp_per_row(lx.rows, l.limits()) else {
        return Ok(());
    };
    // SAFETY: both views lie inside their buffers (check_view) and out has out_off + rows
    // elements.
    unsafe {
        l.launch(
            &kernel_name::<T>("row_dot"),
            g,
            &[
                x.arg_at(lx.off),
                KArg::len(lx.ld),
                y.arg_at(ly.off),
                KArg::len(ly.ld),
                KArg::len(lx.rows),
                KArg::len(lx.cols),
                out.arg_at(out_off),
                KArg::val(beta),
            ],
        )
    }
}

// ---- jets -------------------------------------------------------------------------------------

/// Add `bias[bias_off..bias_off+cols]` to the first `rows` rows of `x`.
pub fn add_bias<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    rows: usize,
    cols: usize,
    bias: Dev<T>,
    bias_off: usize,
) -> Result<()> {
    check_len("add_bias (x)", x.len, rows * cols)?;
    check_len("add_bias (bias)", bias.len, bias_off + cols)?;
    launch_linear::<L, T>(
        l,
        "add_bias",
        rows * cols,
        &[
            x.arg(),
            KArg::len(rows),
            KArg::len(cols),
            bias.arg_at(bias_off),
        ],
    )
}

/// Input jet of a chunk (see `Backend::jet_input`).
pub fn jet_input<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    x_off: usize,
    dirs: Dev<T>,
    out: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    let JetShape { n, k, h, .. } = shape;
    check_len("jet_input (x)", x.len, x_off + n * h)?;
    check_len("jet_input (dirs)", dirs.len, k * h)?;
    check_len("jet_input (out)", out.len, shape.len())?;
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_input",
        n * h,
        &[
            x.arg_at(x_off),
            dirs.arg(),
            out.arg(),
            j[0],
            j[1],
            j[2],
            j[3],
        ],
    )
}

/// Direction rows `wv[k]` and zero Laplacian rows of the first layer.
pub fn jet_broadcast_dirs<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    wv: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("jet_broadcast_dirs (z)", z.len, shape.len())?;
    check_len("jet_broadcast_dirs (wv)", wv.len, shape.k * shape.h)?;
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_broadcast_dirs",
        shape.n * shape.h,
        &[z.arg(), wv.arg(), j[0], j[1], j[2], j[3]],
    )
}

/// Fused first layer + tanh, in place.
pub fn jet_input_tanh<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    wv: Dev<T>,
    coef: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("jet_input_tanh (z)", z.len, shape.len())?;
    check_len("jet_input_tanh (wv)", wv.len, shape.k * shape.h)?;
    check_len("jet_input_tanh (coef)", coef.len, shape.k)?;
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_input_tanh",
        shape.n * shape.h,
        &[z.arg(), wv.arg(), coef.arg(), j[0], j[1], j[2], j[3]],
    )
}

/// tanh jet, out of place (`a` distinct from `z`) or in place (`a == z`).
pub fn jet_tanh<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    a: Dev<T>,
    coef: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    if z.ptr == a.ptr {
        check_len("jet_tanh_inplace (z)", a.len, shape.len())?;
        check_len("jet_tanh_inplace (coef)", coef.len, shape.k)?;
    } else {
        check_len("jet_tanh (z)", z.len, shape.len())?;
        check_len("jet_tanh (a)", a.len, shape.len())?;
        check_len("jet_tanh (coef)", coef.len, shape.k)?;
    }
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_tanh",
        shape.n * shape.h,
        &[z.arg(), a.arg(), coef.arg(), j[0], j[1], j[2], j[3]],
    )
}

/// Reverse mode through the tanh jet, in place on `g`; `a` holds at least the value rows
/// `tanh z`.
pub fn jet_tanh_backward<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    a: Dev<T>,
    g: Dev<T>,
    coef: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("jet_tanh_backward (z)", z.len, shape.len())?;
    check_len("jet_tanh_backward (a)", a.len, shape.n * shape.h)?;
    check_len("jet_tanh_backward (g)", g.len, shape.len())?;
    check_len("jet_tanh_backward (coef)", coef.len, shape.k)?;
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_tanh_backward",
        shape.n * shape.h,
        &[
            z.arg(),
            a.arg(),
            g.arg(),
            coef.arg(),
            j[0],
            j[1],
            j[2],
            j[3],
        ],
    )
}

/// Tangent through the tanh jet, in place on `t`.
pub fn jet_tanh_tangent<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    a: Dev<T>,
    t: Dev<T>,
    coef: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("jet_tanh_tangent (z)", z.len, shape.len())?;
    check_len("jet_tanh_tangent (a)", a.len, shape.n * shape.h)?;
    check_len("jet_tanh_tangent (t)", t.len, shape.len())?;
    check_len("jet_tanh_tangent (coef)", coef.len, shape.k)?;
    let j = jet_args(shape);
    launch_linear::<L, T>(
        l,
        "jet_tanh_tangent",
        shape.n * shape.h,
        &[
            z.arg(),
            a.arg(),
            t.arg(),
            coef.arg(),
            j[0],
            j[1],
            j[2],
            j[3],
        ],
    )
}

/// Multiply every jet row of sample `i` by `w[i]`.
pub fn scale_jet_rows<L: Launcher + ?Sized, T: Real>(
    l: &L,
    g: Dev<T>,
    w: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("scale_jet_rows (g)", g.len, shape.len())?;
    check_len("scale_jet_rows (w)", w.len, shape.n)?;
    launch_linear::<L, T>(
        l,
        "scale_jet_rows",
        shape.len(),
        &[
            g.arg(),
            w.arg(),
            KArg::len(shape.n),
            KArg::len(shape.rows()),
            KArg::len(shape.h),
        ],
    )
}

/// `dst` = `src` with every jet row of sample `i` multiplied by `w[i]`.
pub fn scale_jet_rows_to<L: Launcher + ?Sized, T: Real>(
    l: &L,
    src: Dev<T>,
    w: Dev<T>,
    shape: JetShape,
    dst: Dev<T>,
) -> Result<()> {
    check_len("scale_jet_rows_to (src)", src.len, shape.len())?;
    check_len("scale_jet_rows_to (w)", w.len, shape.n)?;
    check_len("scale_jet_rows_to (dst)", dst.len, shape.len())?;
    launch_linear::<L, T>(
        l,
        "scale_jet_rows_to",
        shape.len(),
        &[
            dst.arg(),
            src.arg(),
            w.arg(),
            KArg::len(shape.n),
            KArg::len(shape.rows()),
            KArg::len(shape.h),
        ],
    )
}

/// Forward-over-reverse through tanh (autodiff baseline), in place on `g`.
pub fn ad_tanh_rev<L: Launcher + ?Sized, T: Real>(
    l: &L,
    a: Dev<T>,
    g: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check_len("ad_tanh_rev (a)", a.len, shape.len())?;
    check_len("ad_tanh_rev (g)", g.len, shape.len())?;
    if shape.lap {
        return Err(Error::Shape(
            "ad_tanh_rev: the autodiff block has no Laplacian rows".into(),
        ));
    }
    launch_linear::<L, T>(
        l,
        "ad_tanh_rev",
        shape.n * shape.h,
        &[
            a.arg(),
            g.arg(),
            KArg::len(shape.n),
            KArg::len(shape.k),
            KArg::len(shape.h),
        ],
    )
}

/// Per-sample parameter Jacobian rows of one layer (see `Backend::jac_rows`).
#[allow(clippy::too_many_arguments)]
pub fn jac_rows<L: Launcher + ?Sized, T: Real>(
    l: &L,
    a: Dev<T>,
    g: Dev<T>,
    shape: JetShape,
    fan_out: usize,
    scale: Dev<T>,
    out: Dev<T>,
    at: JacRows,
) -> Result<()> {
    let (n, s, fi, fo) = (shape.n, shape.s(), shape.h, fan_out);
    check_len("jac_rows (a)", a.len, n * s * fi)?;
    check_len("jac_rows (g)", g.len, n * s * fo)?;
    check_len("jac_rows (scale)", scale.len, n)?;
    if n == 0 {
        return Ok(());
    }
    let last_row = at.row0 + (n - 1) * at.row_stride;
    let need = last_row * at.ld + (at.w_off + fo * fi).max(at.b_off + fo);
    check_len("jac_rows (out)", out.len, need)?;
    if at.w_off + fo * fi > at.ld || at.b_off + fo > at.ld || (at.row_stride == 0 && n > 1) {
        return Err(Error::Shape(format!(
            "jac_rows: layer block does not fit rows of {} (stride {})",
            at.ld, at.row_stride
        )));
    }
    launch_linear::<L, T>(
        l,
        "jac_rows",
        n * fo * (fi + 1),
        &[
            a.arg(),
            g.arg(),
            scale.arg(),
            out.arg(),
            KArg::len(n),
            KArg::len(s),
            KArg::len(fi),
            KArg::len(fo),
            KArg::len(at.row0),
            KArg::len(at.row_stride),
            KArg::len(at.ld),
            KArg::len(at.w_off),
            KArg::len(at.b_off),
        ],
    )
}

// ---- helpers of the cuBLAS / cuSOLVER paths ---------------------------------------------------

/// Mirror one triangle of the `n × n` view `lc` (row-major) onto the other: the lower
/// triangle onto the upper when `from_lower`, else the reverse.
pub fn symmetrize<L: Launcher + ?Sized, T: Real>(
    l: &L,
    c: Dev<T>,
    lc: Lay,
    from_lower: bool,
) -> Result<()> {
    check_view("symmetrize", c.len, lc)?;
    if lc.rows != lc.cols {
        return Err(Error::Shape(format!(
            "symmetrize: {}x{} is not square",
            lc.rows, lc.cols
        )));
    }
    let n = lc.rows;
    launch_linear::<L, T>(
        l,
        "symmetrize",
        n * n,
        &[
            c.arg_at(lc.off),
            KArg::len(n),
            KArg::len(lc.ld.max(n)),
            KArg::flag(from_lower),
        ],
    )
}

/// Copy the view `la` of `src` into the dense f64 buffer `dst` (row-major, or transposed
/// when `transpose`); returns the first non-finite entry `(row, col, value)` if any.
pub fn pack_f64<L: Launcher + ?Sized, T: Real>(
    l: &L,
    src: Dev<T>,
    la: Lay,
    transpose: bool,
    dst: Dev<f64>,
) -> Result<Option<(usize, usize, f64)>> {
    check_view("pack_f64 (src)", src.len, la)?;
    let n = la.rows * la.cols;
    check_len("pack_f64 (dst)", dst.len, n)?;
    let Some(g) = Geometry::linear(n, l.limits()) else {
        return Ok(None);
    };
    let mut bad = [0u8; 8];
    l.with_scratch(8, &mut |s| {
        // SAFETY: the view lies inside src (check_view), dst holds rows·cols f64s, the
        // scratch area one u64.
        unsafe {
            l.write(&u64::MAX.to_le_bytes(), s)?;
            l.launch(
                &kernel_name::<T>("pack_f64"),
                g,
                &[
                    src.arg_at(la.off),
                    KArg::len(la.rows),
                    KArg::len(la.cols),
                    KArg::len(la.ld.max(la.cols)),
                    KArg::flag(transpose),
                    dst.arg(),
                    KArg::Ptr(s),
                ],
            )?;
            l.read(s, &mut bad)
        }
    })?;
    let e = u64::from_le_bytes(bad);
    if e == u64::MAX {
        return Ok(None);
    }
    let e = e as usize;
    let (r, c) = (e / la.cols, e % la.cols);
    let mut v = vec![0u8; std::mem::size_of::<T>()];
    // SAFETY: (r, c) lies inside the view, which check_view placed inside src.
    unsafe { l.read(src.at(la.off + r * la.ld + c), &mut v)? };
    let val = match v.len() {
        4 => f32::from_le_bytes(v[..4].try_into().expect("4 bytes")) as f64,
        _ => f64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
    };
    Ok(Some((r, c, val)))
}

// ---- residuals ----------------------------------------------------------------------------

/// Quadratic-form residuals of one chunk (see `Backend::quad_residual`); `a`, `b`, `d` as
/// in [`crate::backend::QuadForm`].
#[allow(clippy::too_many_arguments)]
pub fn quad_residual<L: Launcher + ?Sized, T: Real>(
    l: &L,
    y: Dev<T>,
    a: Dev<T>,
    b: Dev<T>,
    d: Dev<T>,
    first: usize,
    shape: JetShape,
    r: Dev<T>,
) -> Result<()> {
    let d_need = first + shape.n;
    quad_per_sample(l, "quad_residual", [y, a, b, d, r], first, shape, d_need)
}

/// Directional derivatives of the quadratic-form residuals (see `Backend::quad_tangent`).
#[allow(clippy::too_many_arguments)]
pub fn quad_tangent<L: Launcher + ?Sized, T: Real>(
    l: &L,
    y: Dev<T>,
    a: Dev<T>,
    b: Dev<T>,
    yd: Dev<T>,
    first: usize,
    shape: JetShape,
    t: Dev<T>,
) -> Result<()> {
    quad_per_sample(
        l,
        "quad_tangent",
        [y, a, b, yd, t],
        first,
        shape,
        shape.len(),
    )
}

/// The per-sample quadratic-form kernels (one thread per sample): buffers `[y, a, b, x,
/// out]`, where the kernel reads `x_need` elements of `x` (`d`, or the tangent `ẏ`) and
/// writes one value per sample to `out`.
fn quad_per_sample<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    [y, a, b, x, out]: [Dev<T>; 5],
    first: usize,
    shape: JetShape,
    x_need: usize,
) -> Result<()> {
    let lens = QuadLens {
        y: y.len,
        a: a.len,
        b: b.len,
        d: x.len,
        out: out.len,
    };
    check_quad(base, lens, first, shape, x_need, shape.n)?;
    launch_linear::<L, T>(
        l,
        base,
        shape.n,
        &[
            y.arg(),
            a.arg(),
            b.arg(),
            x.arg(),
            out.arg(),
            KArg::len(first),
            KArg::len(shape.n),
            KArg::len(shape.s()),
            KArg::len(shape.h),
        ],
    )
}

/// Seeds of the quadratic-form residuals (see `Backend::quad_seeds`).
#[allow(clippy::too_many_arguments)]
pub fn quad_seeds<L: Launcher + ?Sized, T: Real>(
    l: &L,
    y: Dev<T>,
    a: Dev<T>,
    b: Dev<T>,
    r: Dev<T>,
    ab: [T; 2],
    first: usize,
    shape: JetShape,
    g: Dev<T>,
) -> Result<()> {
    let lens = QuadLens {
        y: y.len,
        a: a.len,
        b: b.len,
        d: r.len,
        out: g.len,
    };
    check_quad("quad_seeds", lens, first, shape, shape.n, shape.len())?;
    launch_linear::<L, T>(
        l,
        "quad_seeds",
        shape.len(),
        &[
            y.arg(),
            a.arg(),
            b.arg(),
            r.arg(),
            g.arg(),
            KArg::val(ab[0]),
            KArg::val(ab[1]),
            KArg::len(first),
            KArg::len(shape.n),
            KArg::len(shape.s()),
            KArg::len(shape.h),
        ],
    )
}

// ---- the KFAC inverse ---------------------------------------------------------------------

/// `x[i·n + i] += v` for `i < n`.
pub fn add_diag<L: Launcher + ?Sized, T: Real>(l: &L, x: Dev<T>, n: usize, v: T) -> Result<()> {
    check_len("add_diag", x.len, n * n)?;
    launch_linear::<L, T>(l, "add_diag", n, &[x.arg(), KArg::len(n), KArg::val(v)])
}

/// The bias border of a row-major `n × n` input factor (see `Backend::bias_border`).
pub fn bias_border<L: Launcher + ?Sized, T: Real>(
    l: &L,
    a: Dev<T>,
    n: usize,
    corner: T,
) -> Result<()> {
    check_len("bias_border", a.len, n * n)?;
    launch_linear::<L, T>(
        l,
        "bias_border",
        n,
        &[a.arg(), KArg::len(n), KArg::val(corner)],
    )
}

/// `y[y_off + i] = x[x_off + i]` for `i < len`, converted from `T` to `U`.
pub fn cast<L: Launcher + ?Sized, T: Real, U: Real>(
    l: &L,
    x: Dev<T>,
    x_off: usize,
    y: Dev<U>,
    y_off: usize,
    len: usize,
) -> Result<()> {
    check_len("cast (x)", x.len, x_off + len)?;
    check_len("cast (y)", y.len, y_off + len)?;
    let name = format!("cast_{}_{}", T::DTYPE.name(), U::DTYPE.name());
    let args = [x.arg_at(x_off), y.arg_at(y_off), KArg::len(len)];
    match Geometry::linear(len, l.limits()) {
        // SAFETY: x and y hold at least x_off + len and y_off + len elements of their
        // types (checked above).
        Some(g) => unsafe { l.launch(&name, g, &args) },
        None => Ok(()),
    }
}

/// The eigenvalue fixes of `Backend::eig_fix`, one block; reads back two scalars.
pub fn eig_fix<L: Launcher + ?Sized>(
    l: &L,
    v: Dev<f64>,
    n: usize,
    mode: EigFix,
) -> Result<EigFixed> {
    check_len("eig_fix", v.len, n)?;
    if n == 0 {
        return Ok(EigFixed {
            clamped: 0,
            max: f64::NEG_INFINITY,
        });
    }
    let mode = match mode {
        EigFix::InvSqrtFloor => 0,
        EigFix::NonNegative => 1,
        EigFix::PseudoInverse => 2,
    };
    // SAFETY: v holds n f64s (checked above).
    let [count, max] =
        unsafe { single_block_pair(l, "eig_fix_f64", &[v.arg(), KArg::len(n), KArg::I32(mode)])? };
    Ok(EigFixed {
        clamped: count as usize,
        max,
    })
}

/// Launch the single-block kernel `kernel` with `args` followed by the address of two f64s
/// it writes, and read those back (the scalars a step may return to the host).
///
/// # Safety
/// `args` must satisfy [`Launcher::launch`]'s contract for `kernel`.
unsafe fn single_block_pair<L: Launcher + ?Sized>(
    l: &L,
    kernel: &str,
    args: &[KArg],
) -> Result<[f64; 2]> {
    let mut info = [0u8; 16];
    l.with_scratch(16, &mut |s| {
        let mut all = args.to_vec();
        all.push(KArg::Ptr(s));
        // SAFETY: the caller vouches for `args`; the scratch area holds the two f64s the
        // kernel writes, read back after it.
        unsafe {
            l.launch(kernel, Geometry::single_block(), &all)?;
            l.read(s, &mut info)
        }
    })?;
    let f = |b: &[u8]| f64::from_le_bytes(b.try_into().expect("8 bytes"));
    Ok([f(&info[..8]), f(&info[8..])])
}

/// HIG's spectral scaling (see `Backend::spectral_scale`), one block; reads back two
/// scalars.
pub fn spectral_scale<L: Launcher + ?Sized>(
    l: &L,
    s: Dev<f64>,
    c: Dev<f64>,
    k: usize,
    kappa: f64,
    tau: f64,
) -> Result<(usize, f64)> {
    check_len("spectral_scale (s)", s.len, k.max(1))?;
    check_len("spectral_scale (c)", c.len, k)?;
    if k == 0 {
        return Ok((0, 0.0));
    }
    // SAFETY: s and c hold k f64s (checked above).
    let [kept, smax] = unsafe {
        single_block_pair(
            l,
            "spectral_scale_f64",
            &[
                s.arg(),
                c.arg(),
                KArg::len(k),
                KArg::F64(kappa),
                KArg::F64(tau),
            ],
        )?
    };
    Ok((kept as usize, smax))
}

/// `d[o·na + i] = 1 / (1 + sb[o]·sa[i])`.
pub fn kron_recip<L: Launcher + ?Sized, T: Real>(
    l: &L,
    sa: Dev<f64>,
    na: usize,
    sb: Dev<f64>,
    nb: usize,
    d: Dev<T>,
) -> Result<()> {
    check_len("kron_recip (sa)", sa.len, na)?;
    check_len("kron_recip (sb)", sb.len, nb)?;
    check_len("kron_recip (d)", d.len, na * nb)?;
    launch_linear::<L, T>(
        l,
        "kron_recip",
        na * nb,
        &[sa.arg(), KArg::len(na), sb.arg(), KArg::len(nb), d.arg()],
    )
}

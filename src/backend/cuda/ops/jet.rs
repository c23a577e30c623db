//! Plans of the forward-Laplacian kernels (`kernels/jet.cu`; CPU twins in
//! `backend/cpu/jet.rs` and the CPU backend): the input jet, the first layer, the tanh jet
//! forward, backward and tangent, bias rows and per-sample row scaling. One thread per
//! (sample, column) of the chunk, grid-stride; the jet shape goes to every kernel as
//! `(n, k, ops, h)`.
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU backend, with and
//! without operator rows (one and several), ragged and empty chunks, bad lengths) and tests/jet.rs; the
//! argument checks are `backend::check`'s.

use super::{launch_linear, Dev};
use crate::backend::check;
use crate::backend::cuda::launch::{KArg, Launcher};
use crate::backend::JetShape;
use crate::error::Result;
use crate::scalar::Real;

/// The jet shape as the kernels take it: `n, k, ops, h` (all `i64`).
fn jet_args(shape: JetShape) -> [KArg; 4] {
    [
        KArg::len(shape.n),
        KArg::len(shape.k),
        KArg::len(shape.ops),
        KArg::len(shape.h),
    ]
}

/// `bufs` followed by the jet shape: the argument list of most jet kernels.
fn with_shape<const N: usize>(bufs: [KArg; N], shape: JetShape) -> Vec<KArg> {
    let mut v = bufs.to_vec();
    v.extend(jet_args(shape));
    v
}

/// Add `bias[bias_off..bias_off+cols]` to the first `rows` rows of `x`.
pub fn add_bias<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    rows: usize,
    cols: usize,
    bias: Dev<T>,
    bias_off: usize,
) -> Result<()> {
    check::add_bias(x.len, rows, cols, bias.len, bias_off)?;
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
    check::jet_input(x.len, x_off, dirs.len, out.len, shape)?;
    let args = with_shape([x.arg_at(x_off), dirs.arg(), out.arg()], shape);
    launch_linear::<L, T>(l, "jet_input", shape.n * shape.h, &args)
}

/// Direction rows `wv[k]` and zero operator rows of the first layer.
pub fn jet_broadcast_dirs<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    wv: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check::jet_broadcast_dirs(z.len, wv.len, shape)?;
    let args = with_shape([z.arg(), wv.arg()], shape);
    launch_linear::<L, T>(l, "jet_broadcast_dirs", shape.n * shape.h, &args)
}

/// Fused first layer + tanh, in place.
pub fn jet_input_tanh<L: Launcher + ?Sized, T: Real>(
    l: &L,
    z: Dev<T>,
    wv: Dev<T>,
    coef: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check::jet_input_tanh(z.len, wv.len, coef.len, shape)?;
    let args = with_shape([z.arg(), wv.arg(), coef.arg()], shape);
    launch_linear::<L, T>(l, "jet_input_tanh", shape.n * shape.h, &args)
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
        check::jet_tanh_inplace(a.len, coef.len, shape)?;
    } else {
        check::jet_tanh(z.len, a.len, coef.len, shape)?;
    }
    let args = with_shape([z.arg(), a.arg(), coef.arg()], shape);
    launch_linear::<L, T>(l, "jet_tanh", shape.n * shape.h, &args)
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
    tanh_linear(l, "jet_tanh_backward", "g", [z, a, g, coef], shape)
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
    tanh_linear(l, "jet_tanh_tangent", "t", [z, a, t, coef], shape)
}

/// The linearisations of the tanh jet (kernel `base`): buffers `[z, a, out, coef]`, `out`
/// (named `out_name` in messages) updated in place.
fn tanh_linear<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    out_name: &str,
    bufs: [Dev<T>; 4],
    shape: JetShape,
) -> Result<()> {
    check::jet_tanh_linear(base, bufs.map(|b| b.len), out_name, shape)?;
    let args = with_shape(bufs.map(Dev::arg), shape);
    launch_linear::<L, T>(l, base, shape.n * shape.h, &args)
}

/// Multiply every jet row of sample `i` by `w[i]`.
pub fn scale_jet_rows<L: Launcher + ?Sized, T: Real>(
    l: &L,
    g: Dev<T>,
    w: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check::scale_jet_rows(g.len, w.len, shape)?;
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
    check::scale_jet_rows_to(src.len, w.len, dst.len, shape)?;
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

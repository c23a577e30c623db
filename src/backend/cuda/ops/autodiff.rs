//! Plans of the autodiff-baseline and per-sample Jacobian kernels (`kernels/autodiff.cu`;
//! CPU twins in the CPU backend): forward-over-reverse through tanh, and the rows of the
//! per-sample parameter Jacobian of one layer.
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU backend, strided
//! and bad output rows) and tests/jet.rs; the argument checks are `backend::check`'s.

use super::{launch_linear, Dev};
use crate::backend::check;
use crate::backend::cuda::launch::{KArg, Launcher};
use crate::backend::{JacRows, JetShape};
use crate::error::Result;
use crate::scalar::Real;

/// Forward-over-reverse through tanh (autodiff baseline), in place on `g`.
pub fn ad_tanh_rev<L: Launcher + ?Sized, T: Real>(
    l: &L,
    a: Dev<T>,
    g: Dev<T>,
    shape: JetShape,
) -> Result<()> {
    check::ad_tanh_rev(a.len, g.len, shape)?;
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
    check::jac_rows([a.len, g.len, scale.len, out.len], shape, fan_out, at)?;
    let (n, s, fi, fo) = (shape.n, shape.s(), shape.h, fan_out);
    if n == 0 {
        return Ok(());
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

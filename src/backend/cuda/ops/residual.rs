//! Plans of the quadratic-form residual kernels (`quad_*` in `kernels/jet.cu`; CPU twins
//! in `backend/cpu/residual.rs`): the residuals, their tangents (one thread per sample)
//! and their seeds (one thread per output-jet entry), see [`crate::backend::QuadForm`].
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU twins, chunks at
//! an offset into their term, bad lengths) and tests/problems.rs; the argument checks are
//! `backend::check`'s.

use super::{launch_linear, Dev};
use crate::backend::check;
use crate::backend::cuda::launch::{KArg, Launcher};
use crate::backend::JetShape;
use crate::error::Result;
use crate::scalar::Real;

/// The lengths of buffers `[y, a, b, x, out]`, for the checks.
fn quad_lens<T: Real>(bufs: [Dev<T>; 5]) -> [usize; 5] {
    bufs.map(|b| b.len)
}

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
    let bufs = [y, a, b, d, r];
    check::quad_residual(quad_lens(bufs), first, shape)?;
    quad_per_sample(l, "quad_residual", bufs, first, shape)
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
    let bufs = [y, a, b, yd, t];
    check::quad_tangent(quad_lens(bufs), first, shape)?;
    quad_per_sample(l, "quad_tangent", bufs, first, shape)
}

/// Launch a per-sample quadratic-form kernel (one thread per sample) on buffers `[y, a,
/// b, x, out]`, checked by the caller: it reads `x` (`d`, or the tangent `ẏ`) and writes
/// one value per sample to `out`.
fn quad_per_sample<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    [y, a, b, x, out]: [Dev<T>; 5],
    first: usize,
    shape: JetShape,
) -> Result<()> {
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
    check::quad_seeds(quad_lens([y, a, b, r, g]), first, shape)?;
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

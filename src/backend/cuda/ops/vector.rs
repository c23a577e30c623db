//! Plans of the elementwise vector kernels (`kernels/vector.cu`; CPU twins in
//! `backend/cpu/vector.rs` and the CPU backend): fill, scale, axpby, mul, Adam.
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU backend, ragged and
//! empty sizes, bad lengths); the argument checks are `backend::check`'s.

use super::{launch_linear, Dev};
use crate::backend::check;
use crate::backend::cuda::launch::{KArg, Launcher};
use crate::backend::AdamStep;
use crate::error::Result;
use crate::scalar::Real;

/// `buf[off..off+len] = value`
pub fn fill<L: Launcher + ?Sized, T: Real>(
    l: &L,
    buf: Dev<T>,
    off: usize,
    len: usize,
    value: T,
) -> Result<()> {
    check::range("fill", buf.len, off, len)?;
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
    check::same_len("axpby", x.len, y.len)?;
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

/// `y[y_off + i] *= x[x_off + i]` for `i < len`.
pub fn mul<L: Launcher + ?Sized, T: Real>(
    l: &L,
    x: Dev<T>,
    x_off: usize,
    y: Dev<T>,
    y_off: usize,
    len: usize,
) -> Result<()> {
    check::pair("mul", x.len, x_off, y.len, y_off, len)?;
    launch_linear::<L, T>(
        l,
        "mul",
        len,
        &[x.arg_at(x_off), y.arg_at(y_off), KArg::len(len)],
    )
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
    check::adam(p.len, g.len, m.len, v.len)?;
    launch_linear::<L, T>(
        l,
        "adam",
        p.len,
        &[
            p.arg(),
            g.arg(),
            m.arg(),
            v.arg(),
            KArg::len(p.len),
            KArg::val(T::from_f64(s.beta1)),
            KArg::val(T::from_f64(s.beta2)),
            KArg::val(T::from_f64(s.lr / s.bc1)),
            KArg::val(T::from_f64(1.0 / s.bc2.sqrt())),
            KArg::val(T::from_f64(s.eps)),
        ],
    )
}

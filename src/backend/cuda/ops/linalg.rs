//! Plans of the linear-algebra kernels (`kernels/linalg.cu`; CPU twins in
//! `backend/cpu/linalg.rs` and the CPU backend): the helpers of the cuBLAS and cuSOLVER
//! paths (`symmetrize`, `pack_f64`), precision casts, and the spectral steps of the KFAC
//! and HIG inverses (eigenvalue fixes, Kronecker-sum reciprocals, damping, bias borders,
//! spectral scaling; the single-block ones read two scalars back).
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU twins, non-finite
//! entries, empty and bad sizes); the argument checks are `backend::check`'s.

use super::{launch_linear, Dev};
use crate::backend::check;
use crate::backend::cuda::launch::{kernel_name, Geometry, KArg, Launcher};
use crate::backend::{EigFix, EigFixed, Lay};
use crate::error::Result;
use crate::scalar::Real;

// ---- helpers of the cuBLAS / cuSOLVER paths ---------------------------------------------------

/// Mirror one triangle of the `n × n` view `lc` (row-major) onto the other: the lower
/// triangle onto the upper when `from_lower`, else the reverse.
pub fn symmetrize<L: Launcher + ?Sized, T: Real>(
    l: &L,
    c: Dev<T>,
    lc: Lay,
    from_lower: bool,
) -> Result<()> {
    check::symmetrize(c.len, lc)?;
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
    check::pack_f64(src.len, la, dst.len)?;
    let n = la.rows * la.cols;
    let Some(g) = Geometry::linear(n, l.limits()) else {
        return Ok(None);
    };
    let mut bad = [0u8; 8];
    l.with_scratch(8, &mut |s| {
        // SAFETY: the view lies inside src and dst holds rows·cols f64s (check::pack_f64
        // above); the scratch area holds one u64.
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
    // SAFETY: (r, c) lies inside the view, which check::pack_f64 placed inside src.
    unsafe { l.read(src.at(la.off + r * la.ld + c), &mut v)? };
    let val = match v.len() {
        4 => f32::from_le_bytes(v[..4].try_into().expect("4 bytes")) as f64,
        _ => f64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
    };
    Ok(Some((r, c, val)))
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
    check::pair("cast", x.len, x_off, y.len, y_off, len)?;
    let name = format!("cast_{}_{}", T::DTYPE.name(), U::DTYPE.name());
    let args = [x.arg_at(x_off), y.arg_at(y_off), KArg::len(len)];
    match Geometry::linear(len, l.limits()) {
        // SAFETY: x and y hold at least x_off + len and y_off + len elements of their
        // types (check::pair above).
        Some(g) => unsafe { l.launch(&name, g, &args) },
        None => Ok(()),
    }
}

// ---- the spectral steps of the KFAC and HIG inverses --------------------------------------------

/// The eigenvalue fixes of `Backend::eig_fix`, one block; reads back two scalars.
pub fn eig_fix<L: Launcher + ?Sized>(
    l: &L,
    v: Dev<f64>,
    n: usize,
    mode: EigFix,
) -> Result<EigFixed> {
    check::eig_fix(v.len, n)?;
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
    // SAFETY: v holds n f64s (check::eig_fix above).
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

/// `d[o·na + i] = 1 / (1 + sb[o]·sa[i])`.
pub fn kron_recip<L: Launcher + ?Sized, T: Real>(
    l: &L,
    sa: Dev<f64>,
    na: usize,
    sb: Dev<f64>,
    nb: usize,
    d: Dev<T>,
) -> Result<()> {
    check::kron_recip(sa.len, na, sb.len, nb, d.len)?;
    launch_linear::<L, T>(
        l,
        "kron_recip",
        na * nb,
        &[sa.arg(), KArg::len(na), sb.arg(), KArg::len(nb), d.arg()],
    )
}

/// `x[i·n + i] += v` for `i < n`.
pub fn add_diag<L: Launcher + ?Sized, T: Real>(l: &L, x: Dev<T>, n: usize, v: T) -> Result<()> {
    check::square("add_diag", x.len, n)?;
    launch_linear::<L, T>(l, "add_diag", n, &[x.arg(), KArg::len(n), KArg::val(v)])
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
    check::spectral_scale(s.len, c.len, k)?;
    if k == 0 {
        return Ok((0, 0.0));
    }
    // SAFETY: s and c hold k f64s (check::spectral_scale above).
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

/// The bias border of a row-major `n × n` input factor (see `Backend::bias_border`).
pub fn bias_border<L: Launcher + ?Sized, T: Real>(
    l: &L,
    a: Dev<T>,
    n: usize,
    corner: T,
) -> Result<()> {
    check::square("bias_border", a.len, n)?;
    launch_linear::<L, T>(
        l,
        "bias_border",
        n,
        &[a.arg(), KArg::len(n), KArg::val(corner)],
    )
}

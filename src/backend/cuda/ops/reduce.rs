//! Plans of the reduction kernels (`kernels/reduce.cu`; CPU twins in
//! `backend/cpu/reduce.rs` and the CPU backend): dot products and squared distances in
//! f64 (two passes through the scratch area, one scalar read back), column sums (row
//! partitions, then a finishing pass) and row-wise dot products (a warp per row).
//!
//! Checked by tests/kernels.rs through the emulation (against the CPU backend, ragged and
//! empty sizes, bad lengths and views); the argument checks are `backend::check`'s.

use super::Dev;
use crate::backend::check;
use crate::backend::cuda::launch::{kernel_name, Geometry, KArg, Launcher};
use crate::backend::Lay;
use crate::error::Result;
use crate::scalar::Real;

/// `Σ x_i y_i` in f64: per-block partial sums, then one block adds them up.
pub fn dot<L: Launcher + ?Sized, T: Real>(l: &L, x: Dev<T>, y: Dev<T>) -> Result<f64> {
    check::same_len("dot", x.len, y.len)?;
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
    check::pair("sq_dist", x.len, x_off, y.len, y_off, len)?;
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
    check::col_sum(x.len, x_off, rows, cols, out.len, out_off)?;
    let Some((g, parts, chunk)) = Geometry::col_sum(rows, cols, l.limits()) else {
        return Ok(());
    };
    let size = std::mem::size_of::<T>();
    l.with_scratch(parts * cols * size, &mut |s| {
        // SAFETY: x holds x_off + rows·cols elements and out out_off + cols (check::col_sum
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
    check::row_dot(x.len, lx, y.len, ly, out.len, out_off)?;
    let Some(g) = Geometry::warp_per_row(lx.rows, l.limits()) else {
        return Ok(());
    };
    // SAFETY: both views lie inside their buffers and out has out_off + rows elements
    // (check::row_dot above).
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

//! The argument checks of every backend op, written once: the CPU backend (`cpu`) and the
//! kernel plans of the CUDA backend and its emulation (`cuda::ops`, `cuda::blas`,
//! `cuda::solver`) call the same function with their buffers' lengths, so every backend
//! rejects the same bad arguments with the same [`Error::Shape`] message, before any
//! element is touched. One function per op (named after it, grouped like the
//! [`super::Backend`] trait), built from [`check_len`] and [`check_view`].
//!
//! Checked by tests/kernels.rs (out-of-range arguments rejected by the emulation and the
//! CPU alike) and the unit tests below (the messages).

use super::{JacRows, JetShape, Lay, Tr};
use crate::error::{Error, Result};

/// `need` elements fit in a buffer of `len`: `{what}: need {need} elements, buffer has {len}`.
pub(crate) fn check_len(what: &str, len: usize, need: usize) -> Result<()> {
    if need > len {
        Err(Error::Shape(format!(
            "{what}: need {need} elements, buffer has {len}"
        )))
    } else {
        Ok(())
    }
}

/// [`check_len`] for each `(name, len, need)` of op `op`, in order, the first failure
/// reported as `{op} ({name}): need …` (the name formatted only then: the checks run on
/// every op of the hot path).
fn lens<const N: usize>(op: &str, bufs: [(&str, usize, usize); N]) -> Result<()> {
    for (name, len, need) in bufs {
        if need > len {
            return check_len(&format!("{op} ({name})"), len, need);
        }
    }
    Ok(())
}

/// `lay` is a valid view inside a buffer of `len` elements.
pub(crate) fn check_view(what: &str, len: usize, lay: Lay) -> Result<()> {
    if lay.cols > lay.ld && lay.rows > 1 {
        return Err(Error::Shape(format!(
            "{what}: leading dimension {} < cols {}",
            lay.ld, lay.cols
        )));
    }
    if lay.off + lay.span() > len {
        return Err(Error::Shape(format!(
            "{what}: view {}x{} (ld {}) at offset {} exceeds buffer of {len}",
            lay.rows, lay.cols, lay.ld, lay.off
        )));
    }
    Ok(())
}

// ---- memory and transfers ------------------------------------------------------------------

/// `download_range`, `upload_range`, `fill` (`what`): `n` elements at `off` of `len`.
pub(crate) fn range(what: &str, len: usize, off: usize, n: usize) -> Result<()> {
    check_len(what, len, off + n)
}

/// `copy`: `len` elements from `src_off` of `src` to `dst_off` of `dst`.
pub(crate) fn copy(
    src: usize,
    src_off: usize,
    dst: usize,
    dst_off: usize,
    len: usize,
) -> Result<()> {
    lens(
        "copy",
        [
            ("source", src, src_off + len),
            ("destination", dst, dst_off + len),
        ],
    )
}

/// The ops on `len` elements at `x_off` of `x` and `y_off` of `y` (`cast`, `mul`,
/// `sq_dist`, named `op`).
pub(crate) fn pair(
    op: &str,
    x: usize,
    x_off: usize,
    y: usize,
    y_off: usize,
    len: usize,
) -> Result<()> {
    lens(op, [("x", x, x_off + len), ("y", y, y_off + len)])
}

// ---- vectors -------------------------------------------------------------------------------

/// The whole-buffer ops on two buffers of equal length (`axpby`, `dot`, named `op`).
pub(crate) fn same_len(op: &str, x: usize, y: usize) -> Result<()> {
    if x != y {
        return Err(Error::Shape(format!("{op}: x has {x}, y has {y} elements")));
    }
    Ok(())
}

/// `adam_update`: `p`, `g`, `m`, `v` of equal length.
pub(crate) fn adam(p: usize, g: usize, m: usize, v: usize) -> Result<()> {
    if g != p || m != p || v != p {
        return Err(Error::Shape(format!(
            "adam_update: p {p}, g {g}, m {m}, v {v}"
        )));
    }
    Ok(())
}

// ---- reductions ----------------------------------------------------------------------------

/// `col_sum`: the `rows × cols` block at `x_off` of `x`, `cols` sums at `out_off` of `out`.
pub(crate) fn col_sum(
    x: usize,
    x_off: usize,
    rows: usize,
    cols: usize,
    out: usize,
    out_off: usize,
) -> Result<()> {
    lens(
        "col_sum",
        [("x", x, x_off + rows * cols), ("out", out, out_off + cols)],
    )
}

/// `row_dot`: views `lx` of `x` and `ly` of `y` of one shape, a value per row at
/// `out_off` of `out`.
pub(crate) fn row_dot(
    x: usize,
    lx: Lay,
    y: usize,
    ly: Lay,
    out: usize,
    out_off: usize,
) -> Result<()> {
    check_view("row_dot X", x, lx)?;
    check_view("row_dot Y", y, ly)?;
    if lx.rows != ly.rows || lx.cols != ly.cols {
        return Err(Error::Shape(format!(
            "row_dot: X is {}x{}, Y is {}x{}",
            lx.rows, lx.cols, ly.rows, ly.cols
        )));
    }
    check_len("row_dot (out)", out, out_off + lx.rows)
}

// ---- dense products ------------------------------------------------------------------------

/// Validate the operands of `C = α op(A) op(B) + βC` (views inside their buffers of
/// lengths `lens`, matching shapes) and return `(m, n, k)`: C is m × n, the inner
/// dimension k.
pub(crate) fn gemm_dims(
    lens: [usize; 3],
    la: Lay,
    ta: Tr,
    lb: Lay,
    tb: Tr,
    lc: Lay,
) -> Result<(usize, usize, usize)> {
    check_view("gemm A", lens[0], la)?;
    check_view("gemm B", lens[1], lb)?;
    check_view("gemm C", lens[2], lc)?;
    let (m, ka) = ta.shape(la);
    let (kb, n) = tb.shape(lb);
    if ka != kb || m != lc.rows || n != lc.cols {
        return Err(Error::Shape(format!(
            "gemm: op(A) is {m}x{ka}, op(B) is {kb}x{n}, C is {}x{}",
            lc.rows, lc.cols
        )));
    }
    Ok((m, n, ka))
}

/// Validate the operands of `C = α AᵀA + βC` (views inside their buffers of lengths
/// `lens`, C square with A's column count) and return that count.
pub(crate) fn syrk_dim(lens: [usize; 2], la: Lay, lc: Lay) -> Result<usize> {
    check_view("syrk A", lens[0], la)?;
    check_view("syrk C", lens[1], lc)?;
    let n = la.cols;
    if lc.rows != n || lc.cols != n {
        return Err(Error::Shape(format!(
            "syrk: A has {n} columns, C is {}x{}",
            lc.rows, lc.cols
        )));
    }
    Ok(n)
}

/// `symmetrize` (the GPU's step after cuBLAS syrk): a square view `lc` of `c`.
pub(crate) fn symmetrize(c: usize, lc: Lay) -> Result<()> {
    check_view("symmetrize", c, lc)?;
    if lc.rows != lc.cols {
        return Err(Error::Shape(format!(
            "symmetrize: {}x{} is not square",
            lc.rows, lc.cols
        )));
    }
    Ok(())
}

// ---- jets ----------------------------------------------------------------------------------

/// `add_bias`: `rows × cols` of `x`, `cols` entries at `bias_off` of `bias`.
pub(crate) fn add_bias(
    x: usize,
    rows: usize,
    cols: usize,
    bias: usize,
    bias_off: usize,
) -> Result<()> {
    lens(
        "add_bias",
        [("x", x, rows * cols), ("bias", bias, bias_off + cols)],
    )
}

/// `jet_input`: the points at `x_off` of `x`, the directions, the output jet.
pub(crate) fn jet_input(
    x: usize,
    x_off: usize,
    dirs: usize,
    out: usize,
    shape: JetShape,
) -> Result<()> {
    let JetShape { n, k, h, .. } = shape;
    lens(
        "jet_input",
        [
            ("x", x, x_off + n * h),
            ("dirs", dirs, k * h),
            ("out", out, shape.len()),
        ],
    )
}

/// `jet_broadcast_dirs`: the jet `z` and the direction rows `wv`.
pub(crate) fn jet_broadcast_dirs(z: usize, wv: usize, shape: JetShape) -> Result<()> {
    lens(
        "jet_broadcast_dirs",
        [("z", z, shape.len()), ("wv", wv, shape.k * shape.h)],
    )
}

/// `jet_input_tanh`: the jet `z`, the direction rows `wv`, the coefficients.
pub(crate) fn jet_input_tanh(z: usize, wv: usize, coef: usize, shape: JetShape) -> Result<()> {
    lens(
        "jet_input_tanh",
        [
            ("z", z, shape.len()),
            ("wv", wv, shape.k * shape.h),
            ("coef", coef, shape.ops * shape.k),
        ],
    )
}

/// `jet_tanh`: the jets `z` and `a`, the coefficients.
pub(crate) fn jet_tanh(z: usize, a: usize, coef: usize, shape: JetShape) -> Result<()> {
    lens(
        "jet_tanh",
        [
            ("z", z, shape.len()),
            ("a", a, shape.len()),
            ("coef", coef, shape.ops * shape.k),
        ],
    )
}

/// `jet_tanh_inplace`: the jet `z`, the coefficients.
pub(crate) fn jet_tanh_inplace(z: usize, coef: usize, shape: JetShape) -> Result<()> {
    lens(
        "jet_tanh_inplace",
        [("z", z, shape.len()), ("coef", coef, shape.ops * shape.k)],
    )
}

/// `jet_tanh_backward` (`g`) and `jet_tanh_tangent` (`t`), named `op`: the jet `z`, the
/// value rows of `a`, the jet `out` (`out_name`) updated in place, the coefficients.
pub(crate) fn jet_tanh_linear(
    op: &str,
    [z, a, out, coef]: [usize; 4],
    out_name: &str,
    shape: JetShape,
) -> Result<()> {
    lens(
        op,
        [
            ("z", z, shape.len()),
            ("a", a, shape.n * shape.h),
            (out_name, out, shape.len()),
            ("coef", coef, shape.ops * shape.k),
        ],
    )
}

/// `scale_jet_rows`: the jet `g`, a weight per sample.
pub(crate) fn scale_jet_rows(g: usize, w: usize, shape: JetShape) -> Result<()> {
    lens("scale_jet_rows", [("g", g, shape.len()), ("w", w, shape.n)])
}

/// `scale_jet_rows_to`: the jet `src`, a weight per sample, the jet `dst`.
pub(crate) fn scale_jet_rows_to(src: usize, w: usize, dst: usize, shape: JetShape) -> Result<()> {
    lens(
        "scale_jet_rows_to",
        [
            ("src", src, shape.len()),
            ("w", w, shape.n),
            ("dst", dst, shape.len()),
        ],
    )
}

// ---- autodiff baseline and per-sample Jacobians ------------------------------------------

/// `ad_tanh_rev`: the blocks `a` and `g`, which have no Laplacian rows.
pub(crate) fn ad_tanh_rev(a: usize, g: usize, shape: JetShape) -> Result<()> {
    lens(
        "ad_tanh_rev",
        [("a", a, shape.len()), ("g", g, shape.len())],
    )?;
    if shape.ops > 0 {
        return Err(Error::Shape(
            "ad_tanh_rev: the autodiff block has no operator rows".into(),
        ));
    }
    Ok(())
}

/// `jac_rows`: the jets `a` and `g`, the scales, and (for a non-empty chunk) the rows of
/// `out` the layer's blocks go to.
pub(crate) fn jac_rows(
    [a, g, scale, out]: [usize; 4],
    shape: JetShape,
    fan_out: usize,
    at: JacRows,
) -> Result<()> {
    let (n, s, fi, fo) = (shape.n, shape.s(), shape.h, fan_out);
    lens(
        "jac_rows",
        [
            ("a", a, n * s * fi),
            ("g", g, n * s * fo),
            ("scale", scale, n),
        ],
    )?;
    if n == 0 {
        return Ok(());
    }
    let last_row = at.row0 + (n - 1) * at.row_stride;
    let need = last_row * at.ld + (at.w_off + fo * fi).max(at.b_off + fo);
    check_len("jac_rows (out)", out, need)?;
    if at.w_off + fo * fi > at.ld || at.b_off + fo > at.ld || (at.row_stride == 0 && n > 1) {
        return Err(Error::Shape(format!(
            "jac_rows: layer block does not fit rows of {} (stride {})",
            at.ld, at.row_stride
        )));
    }
    Ok(())
}

// ---- residuals -----------------------------------------------------------------------------

/// The checks of the quadratic-form residual ops ([`super::Backend::quad_residual`] and
/// its tangent and seeds) on the lengths of `[y, a, b, d, out]` (the output jet, the
/// form's `a`, `b`, `d`, and the output; the residuals instead of `d` for the seeds, the
/// tangent `ẏ` for the tangent): `d_need` and `out_need` are what op `what` reads of `d`
/// (or r, or ẏ) and writes of its output.
fn check_quad(
    what: &str,
    [y, a, b, d, out]: [usize; 5],
    first: usize,
    shape: JetShape,
    d_need: usize,
    out_need: usize,
) -> Result<()> {
    let c = shape.s() * shape.h;
    lens(
        what,
        [
            ("y", y, shape.len()),
            ("a", a, (first + shape.n) * c),
            ("b", b, c),
            ("d, r or ẏ", d, d_need),
            ("out", out, out_need),
        ],
    )
}

/// `quad_residual`: a residual per sample from `d[first..]`.
pub(crate) fn quad_residual(l: [usize; 5], first: usize, shape: JetShape) -> Result<()> {
    check_quad("quad_residual", l, first, shape, first + shape.n, shape.n)
}

/// `quad_tangent`: a value per sample from the tangent jet `ẏ` (in place of `d`).
pub(crate) fn quad_tangent(l: [usize; 5], first: usize, shape: JetShape) -> Result<()> {
    check_quad("quad_tangent", l, first, shape, shape.len(), shape.n)
}

/// `quad_seeds`: an output jet from a residual per sample (in place of `d`).
pub(crate) fn quad_seeds(l: [usize; 5], first: usize, shape: JetShape) -> Result<()> {
    check_quad("quad_seeds", l, first, shape, shape.n, shape.len())
}

// ---- factorizations and the KFAC inverse -----------------------------------------------------

/// `thin_svd`: the view `la` of `a`, and `U` (m × k), `s` (k), `Vᵀ` (k × n), k = min(m, n).
pub(crate) fn thin_svd(a: usize, la: Lay, u: usize, s: usize, vt: usize) -> Result<()> {
    check_view("thin_svd (A)", a, la)?;
    let (m, n) = (la.rows, la.cols);
    let k = m.min(n);
    lens(
        "thin_svd",
        [("U", u, m * k), ("s", s, k), ("Vᵀ", vt, k * n)],
    )
}

/// `pack_f64` (the GPU's step before cuSOLVER): the view `la` of `src`, a dense `dst`.
pub(crate) fn pack_f64(src: usize, la: Lay, dst: usize) -> Result<()> {
    check_view("pack_f64 (src)", src, la)?;
    check_len("pack_f64 (dst)", dst, la.rows * la.cols)
}

/// `sym_eig`: the `n × n` matrix `a`, `n` values, `n × n` vectors.
pub(crate) fn sym_eig(a: usize, n: usize, vals: usize, vecs: usize) -> Result<()> {
    lens(
        "sym_eig",
        [
            ("A", a, n * n),
            ("values", vals, n),
            ("vectors", vecs, n * n),
        ],
    )
}

/// `eig_fix`: `n` eigenvalues.
pub(crate) fn eig_fix(vals: usize, n: usize) -> Result<()> {
    check_len("eig_fix", vals, n)
}

/// `add_diag`, `bias_border` (`what`): a row-major `n × n` matrix.
pub(crate) fn square(what: &str, len: usize, n: usize) -> Result<()> {
    check_len(what, len, n * n)
}

/// `kron_recip`: `na` and `nb` values, the `nb × na` output.
pub(crate) fn kron_recip(sa: usize, na: usize, sb: usize, nb: usize, d: usize) -> Result<()> {
    lens(
        "kron_recip",
        [("sa", sa, na), ("sb", sb, nb), ("d", d, na * nb)],
    )
}

/// `spectral_scale`: `k` singular values (at least `s_0`) and `k` coefficients.
pub(crate) fn spectral_scale(s: usize, c: usize, k: usize) -> Result<()> {
    lens("spectral_scale", [("s", s, k.max(1)), ("c", c, k)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<()>) -> String {
        match r {
            Err(Error::Shape(m)) => m,
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn messages_name_the_op_and_the_buffer() {
        assert_eq!(
            msg(range("fill", 4, 3, 2)),
            "fill: need 5 elements, buffer has 4"
        );
        assert_eq!(
            msg(copy(4, 0, 2, 1, 2)),
            "copy (destination): need 3 elements, buffer has 2"
        );
        assert_eq!(
            msg(pair("cast", 4, 3, 9, 0, 2)),
            "cast (x): need 5 elements, buffer has 4"
        );
        assert_eq!(msg(same_len("dot", 3, 4)), "dot: x has 3, y has 4 elements");
        assert_eq!(msg(adam(3, 3, 2, 3)), "adam_update: p 3, g 3, m 2, v 3");
        let sh = JetShape {
            n: 2,
            k: 1,
            ops: 1,
            h: 3,
        };
        assert!(jet_tanh(18, 18, 1, sh).is_ok());
        assert_eq!(
            msg(jet_tanh(18, 17, 1, sh)),
            "jet_tanh (a): need 18 elements, buffer has 17"
        );
        assert_eq!(
            msg(jet_tanh_linear("jet_tanh_tangent", [18, 6, 18, 0], "t", sh)),
            "jet_tanh_tangent (coef): need 1 elements, buffer has 0"
        );
        assert_eq!(
            msg(ad_tanh_rev(18, 18, sh)),
            "ad_tanh_rev: the autodiff block has no operator rows"
        );
        assert_eq!(
            msg(quad_residual([18, 18, 9, 1, 2], 0, sh)),
            "quad_residual (d, r or ẏ): need 2 elements, buffer has 1"
        );
        assert_eq!(
            msg(thin_svd(6, Lay::dense(2, 3), 4, 2, 5)),
            "thin_svd (Vᵀ): need 6 elements, buffer has 5"
        );
        assert_eq!(
            msg(check_view("row_dot X", 5, Lay::dense(2, 3))),
            "row_dot X: view 2x3 (ld 3) at offset 0 exceeds buffer of 5"
        );
    }
}

//! CPU twins of the quadratic-form residual kernels (`quad_residual`, `quad_tangent`,
//! `quad_seeds` in `kernels/jet.cu`): residuals, their tangents and the Gauss–Newton seeds
//! of `r = d + Σ (a + b·y)·y` over the output jet (design §2).
//!
//! Checked by `tests/kernels.rs` and `tests/problems.rs`.

use crate::backend::JetShape;
use crate::scalar::Real;

/// CPU twin of the quadratic-form residual kernel (`quad_residual` in kernels/jet.cu),
/// same summation order: `r[i] = d[first+i] + Σ_c (a[first+i, c] + b[c]·y_ic)·y_ic`.
pub fn quad_residual_ref<T: Real>(
    y: &[T],
    a: &[T],
    b: &[T],
    d: &[T],
    first: usize,
    shape: JetShape,
    r: &mut [T],
) {
    let (n, m) = (shape.n, shape.h);
    let c_all = shape.s() * m;
    for (i, ri) in r.iter_mut().enumerate().take(n) {
        let ai = &a[(first + i) * c_all..(first + i + 1) * c_all];
        let mut acc = d[first + i];
        for (c, (&ac, &bc)) in ai.iter().zip(&b[..c_all]).enumerate() {
            let v = y[((c / m) * n + i) * m + c % m];
            acc += (ac + bc * v) * v;
        }
        *ri = acc;
    }
}

/// CPU twin of the quadratic-form tangent kernel (`quad_tangent` in kernels/jet.cu):
/// `t_i = Σ_c (a_ic + 2 b_c y_ic)·yd_ic`, summed in the kernel's order.
pub fn quad_tangent_ref<T: Real>(
    y: &[T],
    a: &[T],
    b: &[T],
    yd: &[T],
    first: usize,
    shape: JetShape,
    t: &mut [T],
) {
    let (n, m) = (shape.n, shape.h);
    let c_all = shape.s() * m;
    let two = T::from_f64(2.0);
    for (i, ti) in t.iter_mut().enumerate().take(n) {
        let ai = &a[(first + i) * c_all..(first + i + 1) * c_all];
        let mut acc = T::ZERO;
        for (c, (&ac, &bc)) in ai.iter().zip(&b[..c_all]).enumerate() {
            let e = ((c / m) * n + i) * m + c % m;
            acc += (ac + two * bc * y[e]) * yd[e];
        }
        *ti = acc;
    }
}

/// CPU twin of the quadratic-form seed kernel (`quad_seeds` in kernels/jet.cu):
/// `g_ic = (alpha·r_i + beta)·(a_ic + 2 b_c y_ic)` in block layout; `ab = [alpha, beta]`.
#[allow(clippy::too_many_arguments)]
pub fn quad_seeds_ref<T: Real>(
    y: &[T],
    a: &[T],
    b: &[T],
    r: &[T],
    ab: [T; 2],
    first: usize,
    shape: JetShape,
    g: &mut [T],
) {
    let (n, m) = (shape.n, shape.h);
    let c_all = shape.s() * m;
    let two = T::from_f64(2.0);
    for (e, ge) in g.iter_mut().enumerate().take(shape.len()) {
        let (i, c) = ((e / m) % n, (e / (m * n)) * m + e % m);
        let v = y[e];
        *ge = (ab[0] * r[i] + ab[1]) * (a[(first + i) * c_all + c] + two * b[c] * v);
    }
}

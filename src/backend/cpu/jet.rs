//! CPU twins of the jet kernels (`kernels/jet.cu`): the tanh-jet forward, reverse and
//! tangent steps and the fused first-layer input, per range of samples through raw
//! pointers (rayon tasks own disjoint samples), with AVX2 builds.
//!
//! A jet carries `J = shape.ops` operator rows `L_j = Σ_k c_jk ∂²_k` (`coef` is `J × k`).
//! The forward, reverse and tangent steps have a path for exactly one operator (the
//! single-operator jets of every built-in problem, the measured hot path, kept as it was)
//! and a general one for any J (0 included), whose kernels' operation order the CUDA
//! kernels follow.
//!
//! Checked by `tests/jet.rs` (forward Laplacian against autodiff and finite differences),
//! `tests/kernels.rs` (against the emulated CUDA kernels) and the unit test below.

use super::simd::with_avx2;
use crate::backend::JetShape;
use crate::scalar::Real;

with_avx2! {
    unsafe fn tanh_fwd_one = tanh_fwd_samples(
        src: Option<*const T>, p: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_fwd_any = tanh_fwd_general(
        src: Option<*const T>, p: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_bwd_one = tanh_bwd_samples(
        z: *const T, act: &[T], g: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_bwd_any = tanh_bwd_general(
        z: *const T, act: &[T], g: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn input_tanh = input_tanh_samples(
        p: *mut T, wv: &[T], q: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_tangent_one = tanh_tangent_samples(
        z: *const T, act: &[T], t: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_tangent_any = tanh_tangent_general(
        z: *const T, act: &[T], t: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
}

/// tanh jet forward for samples i0..i1 ([`tanh_fwd_samples`] for one operator row, else
/// [`tanh_fwd_general`]).
///
/// # Safety
/// The contract of [`tanh_fwd_samples`].
#[inline]
pub(super) unsafe fn tanh_fwd<T: Real>(
    src: Option<*const T>,
    p: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        if shape.ops == 1 {
            tanh_fwd_one(src, p, coef, shape, i0, i1)
        } else {
            tanh_fwd_any(src, p, coef, shape, i0, i1)
        }
    }
}

/// Reverse of [`tanh_fwd`] for samples i0..i1.
///
/// # Safety
/// The contract of [`tanh_bwd_samples`].
#[inline]
pub(super) unsafe fn tanh_bwd<T: Real>(
    z: *const T,
    act: &[T],
    g: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        if shape.ops == 1 {
            tanh_bwd_one(z, act, g, coef, shape, i0, i1)
        } else {
            tanh_bwd_any(z, act, g, coef, shape, i0, i1)
        }
    }
}

/// Tangent of [`tanh_fwd`] for samples i0..i1.
///
/// # Safety
/// The contract of [`tanh_tangent_samples`].
#[inline]
pub(super) unsafe fn tanh_tangent<T: Real>(
    z: *const T,
    act: &[T],
    t: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        if shape.ops == 1 {
            tanh_tangent_one(z, act, t, coef, shape, i0, i1)
        } else {
            tanh_tangent_any(z, act, t, coef, shape, i0, i1)
        }
    }
}

// ---- CPU twins of the jet kernels -------------------------------------------------------
//
// Each works on the rows of samples i0..i1 of one jet buffer through raw pointers (rayon
// tasks own disjoint samples); within a sample every row is turned into a slice so that
// the loops over the h columns vectorise.

/// Row `r` (0-based jet component) of sample `i` as a mutable slice.
///
/// # Safety
/// `p` must be valid for `shape.len()` elements, and no other live reference may cover
/// the same row.
#[inline(always)]
pub(super) unsafe fn row<'a, T>(p: *mut T, shape: JetShape, r: usize, i: usize) -> &'a mut [T] {
    let h = shape.h;
    // SAFETY: in bounds by the caller's contract (r < S, i < n).
    unsafe { std::slice::from_raw_parts_mut(p.add((r * shape.n + i) * h), h) }
}

/// tanh jet forward for samples i0..i1 with exactly one operator row, in place on `p`,
/// or from `src` (copied row by row, while the row is in cache, instead of a separate
/// pass over the whole buffer). Loops are zipped iterators so that they vectorise
/// without bounds checks.
///
/// # Safety
/// `p` (and `src`, if given) valid for `shape.len()` elements and not overlapping; no
/// other task touches samples i0..i1 of `p`; `coef` has `shape.k` weights.
#[inline(always)]
pub(super) unsafe fn tanh_fwd_samples<T: Real>(
    src: Option<*const T>,
    p: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, h, .. } = shape;
    debug_assert_eq!(shape.ops, 1);
    let mut s1 = vec![T::ZERO; h];
    let mut s2 = vec![T::ZERO; h];
    let mut acc = vec![T::ZERO; h];
    let get = |r: usize, i: usize| {
        // SAFETY: distinct rows of this task's samples (the caller's contract); each row
        // is fetched once.
        let dst = unsafe { row(p, shape, r, i) };
        if let Some(s) = src {
            // SAFETY: the source row is only read and does not overlap `p`.
            dst.copy_from_slice(unsafe { row(s as *mut T, shape, r, i) });
        }
        dst
    };
    for i in i0..i1 {
        let v = get(0, i);
        for ((vj, a), b) in v.iter_mut().zip(&mut s1).zip(&mut s2) {
            let t = vj.tanh();
            let d1 = T::ONE - t * t;
            *a = d1;
            *b = -(t + t) * d1;
            *vj = t;
        }
        acc.fill(T::ZERO);
        for (d, &c) in coef.iter().enumerate().take(k) {
            let r = get(1 + d, i);
            for ((rj, aj), &d1) in r.iter_mut().zip(&mut acc).zip(&s1) {
                let dz = *rj;
                *aj += c * dz * dz;
                *rj = d1 * dz;
            }
        }
        let r = get(1 + k, i);
        for ((rj, &d1), (&d2, &aj)) in r.iter_mut().zip(&s1).zip(s2.iter().zip(&acc)) {
            *rj = d1 * *rj + d2 * aj;
        }
    }
}

/// The same for any number J of operator rows (`coef` is `J × k`): `acc` holds
/// `Σ_k c_jk (∂_k z)²` for every row j, summed over k in the order of the one-row path.
///
/// # Safety
/// As [`tanh_fwd_samples`], with `coef` of `shape.ops · shape.k` weights.
#[inline(always)]
pub(super) unsafe fn tanh_fwd_general<T: Real>(
    src: Option<*const T>,
    p: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, ops, h, .. } = shape;
    let mut s1 = vec![T::ZERO; h];
    let mut s2 = vec![T::ZERO; h];
    let mut acc = vec![T::ZERO; ops * h];
    let get = |r: usize, i: usize| {
        // SAFETY: distinct rows of this task's samples (the caller's contract); each row
        // is fetched once.
        let dst = unsafe { row(p, shape, r, i) };
        if let Some(s) = src {
            // SAFETY: the source row is only read and does not overlap `p`.
            dst.copy_from_slice(unsafe { row(s as *mut T, shape, r, i) });
        }
        dst
    };
    for i in i0..i1 {
        let v = get(0, i);
        for ((vj, a), b) in v.iter_mut().zip(&mut s1).zip(&mut s2) {
            let t = vj.tanh();
            let d1 = T::ONE - t * t;
            *a = d1;
            *b = -(t + t) * d1;
            *vj = t;
        }
        acc.fill(T::ZERO);
        for d in 0..k {
            let r = get(1 + d, i);
            if h > 0 {
                for (j, aj) in acc.chunks_exact_mut(h).enumerate() {
                    let c = coef[j * k + d];
                    for (a, &dz) in aj.iter_mut().zip(r.iter()) {
                        *a += c * dz * dz;
                    }
                }
            }
            for (rj, &d1) in r.iter_mut().zip(&s1) {
                *rj = d1 * *rj;
            }
        }
        for j in 0..ops {
            let r = get(1 + k + j, i);
            let aj = &acc[j * h..(j + 1) * h];
            for ((rj, &d1), (&d2, &a)) in r.iter_mut().zip(&s1).zip(s2.iter().zip(aj)) {
                *rj = d1 * *rj + d2 * a;
            }
        }
    }
}

/// Reverse of [`tanh_fwd_samples`] (one operator row) for samples i0..i1; `g` is updated
/// in place. `act` holds (at least) the value rows `tanh z` of the forward pass.
///
/// # Safety
/// `z` and `g` valid for `shape.len()` elements and not overlapping; no other task
/// touches samples i0..i1 of `g`; `act` has at least `shape.n · shape.h` elements;
/// `coef` has `shape.ops · shape.k` weights.
#[inline(always)]
pub(super) unsafe fn tanh_bwd_samples<T: Real>(
    z: *const T,
    act: &[T],
    g: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, h, .. } = shape;
    debug_assert_eq!(shape.ops, 1);
    let z = z as *mut T;
    let two = T::from_f64(2.0);
    let six = T::from_f64(6.0);
    let mut bufs = vec![T::ZERO; 5 * h];
    // exact-length slices: the index loops below then need no bounds checks
    let (s1, rest) = bufs.split_at_mut(h);
    let (s2, rest) = rest.split_at_mut(h);
    let (s3gl, rest) = rest.split_at_mut(h);
    let (gl, acc) = rest.split_at_mut(h);
    let acc = &mut acc[..h];
    for i in i0..i1 {
        // SAFETY: z rows are only read; g rows are distinct rows of this task's sample.
        let gv = unsafe { row(g, shape, 0, i) };
        let (gv, tv) = (&mut gv[..h], &act[i * h..(i + 1) * h]);
        for j in 0..h {
            let t = tv[j];
            let d1 = T::ONE - t * t;
            s1[j] = d1;
            s2[j] = -(t + t) * d1;
            acc[j] = d1 * gv[j];
        }
        {
            // SAFETY: as above.
            let (zl, gla) = unsafe { (row(z, shape, 1 + k, i), row(g, shape, 1 + k, i)) };
            let (zl, gla) = (&zl[..h], &mut gla[..h]);
            for j in 0..h {
                let t2 = T::ONE - s1[j]; // tanh²
                let gval = gla[j];
                gl[j] = gval;
                // s3 = s1 (6 t² − 2)
                s3gl[j] = s1[j] * (six * t2 - two) * gval;
                acc[j] += s2[j] * zl[j] * gval;
                gla[j] = s1[j] * gval;
            }
        }
        for (d, &c) in coef.iter().enumerate().take(k) {
            // SAFETY: as above.
            let (zd, gd) = unsafe { (row(z, shape, 1 + d, i), row(g, shape, 1 + d, i)) };
            let (zd, gd) = (&zd[..h], &mut gd[..h]);
            for j in 0..h {
                let (dz, gg) = (zd[j], gd[j]);
                acc[j] += s2[j] * dz * gg + c * dz * dz * s3gl[j];
                gd[j] = s1[j] * gg + two * c * s2[j] * dz * gl[j];
            }
        }
        gv.copy_from_slice(acc);
    }
}

/// Reverse of [`tanh_fwd_general`] (any number J of operator rows) for samples i0..i1,
/// in place on `g`. Per direction d the operator cotangents enter through
/// `w_d = Σ_j c_jd ḡL_j a` (per column): `ḡ∂_d z = s1 ḡ∂_d a + 2 s2 ∂_d z w_d` and
/// `ḡz += s2 ∂_d z ḡ∂_d a + (∂_d z)² s3 w_d`; then per row j `ḡz += s2 L_j z ḡL_j a`
/// and `ḡL_j z = s1 ḡL_j a`.
///
/// # Safety
/// As [`tanh_bwd_samples`].
#[inline(always)]
pub(super) unsafe fn tanh_bwd_general<T: Real>(
    z: *const T,
    act: &[T],
    g: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, ops, h, .. } = shape;
    let z = z as *mut T;
    let two = T::from_f64(2.0);
    let six = T::from_f64(6.0);
    let mut bufs = vec![T::ZERO; 5 * h];
    // exact-length slices: the index loops below then need no bounds checks
    let (s1, rest) = bufs.split_at_mut(h);
    let (s2, rest) = rest.split_at_mut(h);
    let (s3, rest) = rest.split_at_mut(h);
    let (w, acc) = rest.split_at_mut(h);
    let acc = &mut acc[..h];
    for i in i0..i1 {
        // SAFETY: z rows are only read; g rows are distinct rows of this task's sample.
        let gv = unsafe { row(g, shape, 0, i) };
        let (gv, tv) = (&mut gv[..h], &act[i * h..(i + 1) * h]);
        for j in 0..h {
            let t = tv[j];
            let d1 = T::ONE - t * t;
            s1[j] = d1;
            s2[j] = -(t + t) * d1;
            // s3 = s1 (6 t² − 2), t² as the one-row path computes it
            s3[j] = d1 * (six * (T::ONE - d1) - two);
            acc[j] = d1 * gv[j];
        }
        for d in 0..k {
            w.fill(T::ZERO);
            for jj in 0..ops {
                let c = coef[jj * k + d];
                // SAFETY: an operator row of this task's sample, only read here (no
                // mutable slice of it is live).
                let gl = unsafe { row(g, shape, 1 + k + jj, i) };
                for (wj, &gj) in w.iter_mut().zip(gl.iter()) {
                    *wj += c * gj;
                }
            }
            // SAFETY: as above; direction row d, distinct from the operator rows.
            let (zd, gd) = unsafe { (row(z, shape, 1 + d, i), row(g, shape, 1 + d, i)) };
            let (zd, gd) = (&zd[..h], &mut gd[..h]);
            for j in 0..h {
                let (dz, gg) = (zd[j], gd[j]);
                acc[j] += s2[j] * dz * gg + dz * dz * (s3[j] * w[j]);
                gd[j] = s1[j] * gg + two * s2[j] * dz * w[j];
            }
        }
        for jj in 0..ops {
            // SAFETY: as above.
            let (zl, gl) = unsafe { (row(z, shape, 1 + k + jj, i), row(g, shape, 1 + k + jj, i)) };
            let (zl, gl) = (&zl[..h], &mut gl[..h]);
            for j in 0..h {
                let gval = gl[j];
                acc[j] += s2[j] * zl[j] * gval;
                gl[j] = s1[j] * gval;
            }
        }
        gv.copy_from_slice(acc);
    }
}

/// Fused first layer + tanh for samples i0..i1 (value rows of `z` hold `x Wᵀ + b`);
/// `q` holds `Σ_k c_jk wv[k]²` for each operator row j (`ops × h`).
///
/// # Safety
/// `p` valid for `shape.len()` elements; no other task touches samples i0..i1.
#[inline(always)]
pub(super) unsafe fn input_tanh_samples<T: Real>(
    p: *mut T,
    wv: &[T],
    q: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, ops, h, .. } = shape;
    let mut s1 = vec![T::ZERO; h];
    for i in i0..i1 {
        // SAFETY: distinct rows of this task's sample.
        let v = unsafe { row(p, shape, 0, i) };
        for j in 0..h {
            let t = v[j].tanh();
            s1[j] = T::ONE - t * t;
            v[j] = t;
        }
        for d in 0..k {
            // SAFETY: as above.
            let r = unsafe { row(p, shape, 1 + d, i) };
            let w = &wv[d * h..(d + 1) * h];
            for j in 0..h {
                r[j] = s1[j] * w[j];
            }
        }
        for jj in 0..ops {
            // SAFETY: as above; reads the value row written above (tanh values).
            let (v, r) = unsafe { (row(p, shape, 0, i), row(p, shape, 1 + k + jj, i)) };
            let q = &q[jj * h..(jj + 1) * h];
            for j in 0..h {
                r[j] = -(v[j] + v[j]) * s1[j] * q[j];
            }
        }
    }
}

/// CPU twin of the tanh-jet tangent kernel ([`crate::backend::Backend::jet_tanh_tangent`]) for samples
/// i0..i1 and one operator row, in place on `t`. Per sample, the value-row tangent `ż`
/// is read before it is overwritten, by the same task.
///
/// # Safety
/// `z` and `t` must be valid for `shape.len()` elements and not overlap; `a` holds at
/// least the `n·h` value rows, `coef` `shape.ops · shape.k` weights.
#[inline(always)]
pub(super) unsafe fn tanh_tangent_samples<T: Real>(
    z: *const T,
    act: &[T],
    t: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { n, k, h, .. } = shape;
    debug_assert_eq!(shape.ops, 1);
    let two = T::from_f64(2.0);
    let six = T::from_f64(6.0);
    let mut s1 = vec![T::ZERO; h];
    let mut s2 = vec![T::ZERO; h];
    let mut s3 = vec![T::ZERO; h];
    let mut zd = vec![T::ZERO; h];
    // Σ_d c_d (∂_d z)² and Σ_d c_d ∂_d z ∂_d ż
    let mut q = vec![T::ZERO; h];
    let mut x = vec![T::ZERO; h];
    for i in i0..i1 {
        let v = i * h;
        for j in 0..h {
            let a = act[v + j];
            let d1 = T::ONE - a * a;
            s1[j] = d1;
            s2[j] = -(a + a) * d1;
            s3[j] = d1 * (six * a * a - two);
            let zdot = *t.add(v + j);
            zd[j] = zdot;
            q[j] = T::ZERO;
            x[j] = T::ZERO;
            *t.add(v + j) = d1 * zdot;
        }
        for (d, &c) in coef.iter().enumerate().take(k) {
            let row = ((1 + d) * n + i) * h;
            for j in 0..h {
                let dz = *z.add(row + j);
                let dzd = *t.add(row + j);
                q[j] += c * dz * dz;
                x[j] += c * dz * dzd;
                *t.add(row + j) = s1[j] * dzd + s2[j] * zd[j] * dz;
            }
        }
        let row = ((1 + k) * n + i) * h;
        for j in 0..h {
            let lz = *z.add(row + j);
            let lzd = *t.add(row + j);
            *t.add(row + j) =
                s1[j] * lzd + s2[j] * zd[j] * lz + s3[j] * zd[j] * q[j] + two * s2[j] * x[j];
        }
    }
}

/// The tangent for any number J of operator rows: per row j,
/// `L_j ȧ = s1 L_j ż + s2 ż L_j z + s3 ż Σ_d c_jd (∂_d z)² + 2 s2 Σ_d c_jd ∂_d z ∂_d ż`.
///
/// # Safety
/// As [`tanh_tangent_samples`].
#[inline(always)]
pub(super) unsafe fn tanh_tangent_general<T: Real>(
    z: *const T,
    act: &[T],
    t: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { n, k, ops, h } = shape;
    let two = T::from_f64(2.0);
    let six = T::from_f64(6.0);
    let mut s1 = vec![T::ZERO; h];
    let mut s2 = vec![T::ZERO; h];
    let mut s3 = vec![T::ZERO; h];
    let mut zd = vec![T::ZERO; h];
    // per operator row: Σ_d c_jd (∂_d z)² and Σ_d c_jd ∂_d z ∂_d ż
    let mut q = vec![T::ZERO; ops * h];
    let mut x = vec![T::ZERO; ops * h];
    for i in i0..i1 {
        let v = i * h;
        for j in 0..h {
            let a = act[v + j];
            let d1 = T::ONE - a * a;
            s1[j] = d1;
            s2[j] = -(a + a) * d1;
            s3[j] = d1 * (six * a * a - two);
            let zdot = *t.add(v + j);
            zd[j] = zdot;
            *t.add(v + j) = d1 * zdot;
        }
        q.fill(T::ZERO);
        x.fill(T::ZERO);
        for d in 0..k {
            let row = ((1 + d) * n + i) * h;
            for jj in 0..ops {
                let c = coef[jj * k + d];
                for j in 0..h {
                    let dz = *z.add(row + j);
                    let dzd = *t.add(row + j);
                    q[jj * h + j] += c * dz * dz;
                    x[jj * h + j] += c * dz * dzd;
                }
            }
            for j in 0..h {
                let dz = *z.add(row + j);
                let dzd = *t.add(row + j);
                *t.add(row + j) = s1[j] * dzd + s2[j] * zd[j] * dz;
            }
        }
        for jj in 0..ops {
            let row = ((1 + k + jj) * n + i) * h;
            for j in 0..h {
                let lz = *z.add(row + j);
                let lzd = *t.add(row + j);
                let (qj, xj) = (q[jj * h + j], x[jj * h + j]);
                *t.add(row + j) =
                    s1[j] * lzd + s2[j] * zd[j] * lz + s3[j] * zd[j] * qj + two * s2[j] * xj;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::Cpu;
    #[allow(unused_imports)]
    use crate::backend::*;

    #[test]
    fn jet_tanh_tangent_matches_differences_of_jet_tanh() {
        let cpu = Cpu;
        // one operator row, none, and several (the general path)
        for (k, ops) in [(3, 1), (2, 0), (0, 0), (3, 2), (2, 3)] {
            let shape = JetShape {
                n: 37,
                k,
                ops,
                h: 5,
            };
            let len = shape.len();
            let z: Vec<f64> = (0..len).map(|i| (i as f64 * 0.731).sin() * 1.3).collect();
            let zd: Vec<f64> = (0..len).map(|i| (i as f64 * 0.377 + 1.0).cos()).collect();
            let coef: Vec<f64> = (0..ops * k)
                .map(|e| 0.5 + e as f64 - 0.3 * (e % 2) as f64 * 4.0)
                .collect();
            let mut t = zd.clone();
            let mut act = vec![0.0; len];
            cpu.jet_tanh(&z, &mut act, &coef, shape).unwrap();
            cpu.jet_tanh_tangent(&z, &act, &mut t, &coef, shape)
                .unwrap();
            let eps = 1e-6;
            let shifted = |sgn: f64| {
                let zz: Vec<f64> = z.iter().zip(&zd).map(|(a, b)| a + sgn * eps * b).collect();
                let mut a = vec![0.0; len];
                cpu.jet_tanh(&zz, &mut a, &coef, shape).unwrap();
                a
            };
            let (ap, am) = (shifted(1.0), shifted(-1.0));
            for i in 0..len {
                let fd = (ap[i] - am[i]) / (2.0 * eps);
                assert!(
                    (t[i] - fd).abs() < 1e-7 * (1.0 + fd.abs()),
                    "k {k} [{i}] {} vs {fd}",
                    t[i]
                );
            }
            // direct formulas for one sample and unit (sample 3, unit 2)
            let (n, h) = (shape.n, shape.h);
            let at = |s: usize| (s * n + 3) * h + 2;
            let a = z[at(0)].tanh();
            let s1 = 1.0 - a * a;
            let s2 = -2.0 * a * s1;
            let s3 = s1 * (6.0 * a * a - 2.0);
            assert!((t[at(0)] - s1 * zd[at(0)]).abs() < 1e-15);
            for d in 0..k {
                let want = s1 * zd[at(1 + d)] + s2 * zd[at(0)] * z[at(1 + d)];
                assert!((t[at(1 + d)] - want).abs() < 1e-14);
            }
            for j in 0..ops {
                let l = 1 + k + j;
                let c = &coef[j * k..(j + 1) * k];
                let q: f64 = (0..k).map(|d| c[d] * z[at(1 + d)].powi(2)).sum();
                let x: f64 = (0..k).map(|d| c[d] * z[at(1 + d)] * zd[at(1 + d)]).sum();
                let want =
                    s1 * zd[at(l)] + s2 * zd[at(0)] * z[at(l)] + s3 * zd[at(0)] * q + 2.0 * s2 * x;
                assert!((t[at(l)] - want).abs() < 1e-12, "k {k} ops {ops} row {j}");
            }
        }
        // short buffers are refused
        let shape = JetShape {
            n: 2,
            k: 1,
            ops: 1,
            h: 2,
        };
        let z = vec![0.0; 12];
        let mut t = vec![0.0; 5];
        assert!(cpu
            .jet_tanh_tangent(&z, &z, &mut t, &vec![1.0], shape)
            .is_err());
        let mut t = vec![0.0; 12];
        let short = vec![0.0; 3];
        assert!(cpu
            .jet_tanh_tangent(&z, &short, &mut t, &vec![1.0], shape)
            .is_err());
    }
}

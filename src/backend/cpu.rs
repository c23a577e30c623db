//! The CPU backend: faer for dense products (multi-threaded through rayon), and fused,
//! rayon-parallel loops for the jet kernels. These loops are the CPU twins of the CUDA
//! kernels in `kernels/*.cu`: same arguments, same formulas (design §1), and the
//! reference the GPU and the emulated kernels are tested against. The tanh-jet loops are
//! also built for AVX2 and picked at run time (same bits: Rust does not fuse `a·b + c`).
//! Inside a chunk-parallel sweep ([`sequential`]) every operation stays on its thread.
//!
//! Checked by `tests/jet.rs` (forward Laplacian against the autodiff baseline and finite
//! differences) and by the unit tests at the bottom of this file.

use super::{
    check_quad, check_view, gemm_dims, syrk_dim, AdamStep, Backend, EigFix, EigFixed, JacRows,
    JetShape, Lay, QuadForm, QuadLens, Tr,
};
use crate::error::{Error, Result};
use crate::scalar::Real;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// The CPU backend. Cheap to clone; holds no state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// Below this many multiply-adds a product runs on one thread: rayon's fork/join costs
/// more than it saves on small matrices.
const PAR_GEMM_MIN_MACS: usize = 1 << 18;
/// Samples per rayon task in the jet kernels.
const SAMPLES_PER_TASK: usize = 16;

thread_local! {
    /// Set while this thread works through one share of a chunk-parallel sweep
    /// ([`Cpu::chunk_workers`]): its products and jet kernels then run on this thread only,
    /// since the other threads are busy with their own chunks.
    static SEQUENTIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with this thread's CPU backend operations kept on this thread (no rayon
/// fork/join inside products and jet kernels). Used by the chunk-parallel sweeps of
/// [`crate::loss::Objective`], which put one worker on each thread instead.
pub fn sequential<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SEQUENTIAL.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(SEQUENTIAL.with(|s| s.replace(true)));
    f()
}

fn is_sequential() -> bool {
    SEQUENTIAL.with(|s| s.get())
}

fn par_for(macs: usize) -> Par {
    if macs >= PAR_GEMM_MIN_MACS && rayon::current_num_threads() > 1 && !is_sequential() {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

fn check_len(what: &str, len: usize, need: usize) -> Result<()> {
    if need > len {
        Err(Error::Shape(format!(
            "{what}: need {need} elements, buffer has {len}"
        )))
    } else {
        Ok(())
    }
}

fn mat_ref<T: Real>(buf: &[T], lay: Lay, tr: Tr) -> MatRef<'_, T> {
    let s = &buf[lay.off..lay.off + lay.span()];
    let m = MatRef::from_row_major_slice_with_stride(s, lay.rows, lay.cols, lay.ld.max(1));
    match tr {
        Tr::N => m,
        Tr::T => m.transpose(),
    }
}

/// The transpose of a row-major view, as a column-major matrix over the same memory.
///
/// Products are always handed to faer as `Cᵀ = op(B)ᵀ op(A)ᵀ` with this column-major
/// destination: faer 0.24.4's small-matrix kernels (nano-gemm) write out of bounds for
/// some shapes when the destination is row-major (seen under valgrind for 3×3·3×9).
fn mat_mut_t<T: Real>(buf: &mut [T], lay: Lay) -> MatMut<'_, T> {
    let span = lay.span();
    let s = &mut buf[lay.off..lay.off + span];
    MatMut::from_column_major_slice_with_stride_mut(s, lay.cols, lay.rows, lay.ld.max(1))
}

/// A raw pointer that rayon tasks may share. Each task writes a disjoint set of
/// indices (the jet rows of its own samples), which is what makes the sharing sound.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);

impl<T> SharedPtr<T> {
    /// Taking `self` makes closures capture the whole (Send + Sync) wrapper, not the
    /// raw-pointer field.
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used by the jet kernels below, whose tasks touch disjoint sample rows.
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

/// Run `f(i0, i1)` over sample ranges in parallel.
fn par_samples(n: usize, f: impl Fn(usize, usize) + Send + Sync) {
    if is_sequential() {
        f(0, n);
        return;
    }
    let tasks = n.div_ceil(SAMPLES_PER_TASK);
    (0..tasks).into_par_iter().for_each(|t| {
        let i0 = t * SAMPLES_PER_TASK;
        f(i0, (i0 + SAMPLES_PER_TASK).min(n));
    });
}

/// Declares `$wide`: the kernel `$kernel` compiled again for AVX2 (4 f64 lanes instead of
/// SSE2's 2), called where the CPU has AVX2 and FMA, else the baseline build. The kernels
/// are `#[inline(always)]` so that their loops (and `fast_tanh`) are compiled inside the
/// wrapper with the wider vectors. Rust never fuses `a * b + c`, so both builds give the
/// same bits (checked by `tests/kernels.rs`, which runs whichever this CPU picks). An
/// AVX-512 build measured no faster on the heat 4+1d KFAC* step (AMD EPYC, 2 cores).
macro_rules! with_avx2 {
    ($(unsafe fn $wide:ident = $kernel:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {$(
        /// # Safety
        /// The wrapped kernel's contract.
        unsafe fn $wide<T: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide<T: Real>($($arg: $ty),*) {
                    // SAFETY: the caller's contract, passed on.
                    unsafe { $kernel($($arg),*) }
                }
                if has_avx2() {
                    // SAFETY: the CPU has the features `wide` is compiled for; the rest is
                    // the caller's contract, passed on.
                    return unsafe { wide($($arg),*) };
                }
            }
            // SAFETY: the caller's contract, passed on.
            unsafe { $kernel($($arg),*) }
        }
    )*};
}

/// Whether the AVX2 builds of the elementwise kernels run here: the CPU has AVX2 and FMA,
/// and `KFAC_PINN_SIMD=base` does not ask for the baseline build (for comparisons).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        std::env::var("KFAC_PINN_SIMD").as_deref() != Ok("base")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

with_avx2! {
    unsafe fn tanh_fwd = tanh_fwd_samples(
        src: Option<*const T>, p: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_bwd = tanh_bwd_samples(
        z: *const T, act: &[T], g: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn input_tanh = input_tanh_samples(
        p: *mut T, wv: &[T], q: &[T], shape: JetShape, i0: usize, i1: usize,
    );
    unsafe fn tanh_tangent = tanh_tangent_samples(
        z: *const T, act: &[T], t: *mut T, coef: &[T], shape: JetShape, i0: usize, i1: usize,
    );
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
unsafe fn row<'a, T>(p: *mut T, shape: JetShape, r: usize, i: usize) -> &'a mut [T] {
    let h = shape.h;
    // SAFETY: in bounds by the caller's contract (r < S, i < n).
    unsafe { std::slice::from_raw_parts_mut(p.add((r * shape.n + i) * h), h) }
}

/// tanh jet forward for samples i0..i1, in place on `p`, or from `src` (copied row by
/// row, while the row is in cache, instead of a separate pass over the whole buffer).
/// Loops are zipped iterators so that they vectorise without bounds checks.
///
/// # Safety
/// `p` (and `src`, if given) valid for `shape.len()` elements and not overlapping; no
/// other task touches samples i0..i1 of `p`.
#[inline(always)]
unsafe fn tanh_fwd_samples<T: Real>(
    src: Option<*const T>,
    p: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, lap, h, .. } = shape;
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
        if lap {
            let r = get(1 + k, i);
            for ((rj, &d1), (&d2, &aj)) in r.iter_mut().zip(&s1).zip(s2.iter().zip(&acc)) {
                *rj = d1 * *rj + d2 * aj;
            }
        }
    }
}

/// Reverse of [`tanh_fwd_samples`] for samples i0..i1; `g` is updated in place. `act`
/// holds (at least) the value rows `tanh z` of the forward pass.
///
/// # Safety
/// `z` and `g` valid for `shape.len()` elements and not overlapping; no other task
/// touches samples i0..i1 of `g`; `act` has at least `shape.n · shape.h` elements.
#[inline(always)]
unsafe fn tanh_bwd_samples<T: Real>(
    z: *const T,
    act: &[T],
    g: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, lap, h, .. } = shape;
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
        if lap {
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
            if lap {
                for j in 0..h {
                    let (dz, gg) = (zd[j], gd[j]);
                    acc[j] += s2[j] * dz * gg + c * dz * dz * s3gl[j];
                    gd[j] = s1[j] * gg + two * c * s2[j] * dz * gl[j];
                }
            } else {
                for j in 0..h {
                    let (dz, gg) = (zd[j], gd[j]);
                    acc[j] += s2[j] * dz * gg;
                    gd[j] = s1[j] * gg;
                }
            }
        }
        gv.copy_from_slice(acc);
    }
}

/// Fused first layer + tanh for samples i0..i1 (value rows of `z` hold `x Wᵀ + b`).
///
/// # Safety
/// `p` valid for `shape.len()` elements; no other task touches samples i0..i1.
#[inline(always)]
unsafe fn input_tanh_samples<T: Real>(
    p: *mut T,
    wv: &[T],
    q: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { k, lap, h, .. } = shape;
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
        if lap {
            // SAFETY: as above; reads the value row written above (tanh values).
            let (v, r) = unsafe { (row(p, shape, 0, i), row(p, shape, 1 + k, i)) };
            for j in 0..h {
                r[j] = -(v[j] + v[j]) * s1[j] * q[j];
            }
        }
    }
}

impl Backend for Cpu {
    type Buf<T: Real> = Vec<T>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    /// One worker per rayon thread: products of the small layers of a PINN do not
    /// scale across threads, whole chunks do.
    fn chunk_workers(&self) -> usize {
        if is_sequential() {
            1
        } else {
            rayon::current_num_threads()
        }
    }

    fn alloc<T: Real>(&self, len: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::Device(format!(
                "out of host memory: could not allocate {} bytes",
                len.saturating_mul(std::mem::size_of::<T>())
            ))
        })?;
        v.resize(len, T::ZERO);
        Ok(v)
    }
    fn upload<T: Real>(&self, host: &[T]) -> Result<Vec<T>> {
        Ok(host.to_vec())
    }
    fn download<T: Real>(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Ok(buf.clone())
    }
    fn download_range<T: Real>(&self, buf: &Vec<T>, off: usize, dst: &mut [T]) -> Result<()> {
        check_len("download_range", buf.len(), off + dst.len())?;
        dst.copy_from_slice(&buf[off..off + dst.len()]);
        Ok(())
    }
    fn upload_range<T: Real>(&self, src: &[T], buf: &mut Vec<T>, off: usize) -> Result<()> {
        check_len("upload_range", buf.len(), off + src.len())?;
        buf[off..off + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn len<T: Real>(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }
    fn copy<T: Real>(
        &self,
        src: &Vec<T>,
        src_off: usize,
        dst: &mut Vec<T>,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        check_len("copy (source)", src.len(), src_off + len)?;
        check_len("copy (destination)", dst.len(), dst_off + len)?;
        dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
        Ok(())
    }
    fn fill<T: Real>(&self, buf: &mut Vec<T>, off: usize, len: usize, value: T) -> Result<()> {
        check_len("fill", buf.len(), off + len)?;
        buf[off..off + len].fill(value);
        Ok(())
    }

    fn gemm<T: Real>(
        &self,
        alpha: T,
        a: &Vec<T>,
        la: Lay,
        ta: Tr,
        b: &Vec<T>,
        lb: Lay,
        tb: Tr,
        beta: T,
        c: &mut Vec<T>,
        lc: Lay,
    ) -> Result<()> {
        let (m, nn, ka) = gemm_dims([a.len(), b.len(), c.len()], la, ta, lb, tb, lc)?;
        if m == 0 || nn == 0 {
            return Ok(());
        }
        // cm is Cᵀ (nn × m); see `mat_mut_t`.
        let mut cm = mat_mut_t(c, lc);
        let accum = if beta == T::ZERO {
            Accum::Replace
        } else {
            if beta != T::ONE {
                for r in 0..nn {
                    for col in 0..m {
                        cm[(r, col)] *= beta;
                    }
                }
            }
            Accum::Add
        };
        if ka == 0 {
            if accum == Accum::Replace {
                cm.fill(T::ZERO);
            }
            return Ok(());
        }
        let lhs = mat_ref(b, lb, tb).transpose();
        let rhs = mat_ref(a, la, ta).transpose();
        faer::linalg::matmul::matmul(cm, accum, lhs, rhs, alpha, par_for(m * nn * ka));
        Ok(())
    }

    fn syrk<T: Real>(
        &self,
        alpha: T,
        a: &Vec<T>,
        la: Lay,
        beta: T,
        c: &mut Vec<T>,
        lc: Lay,
    ) -> Result<()> {
        let n = syrk_dim([a.len(), c.len()], la, lc)?;
        if n == 0 {
            return Ok(());
        }
        // Cᵀ = C for the symmetric result; `mat_mut_t` keeps faer's destination column-major.
        let mut cm = mat_mut_t(c, lc);
        let accum = if beta == T::ZERO {
            Accum::Replace
        } else {
            if beta != T::ONE {
                for r in 0..n {
                    for col in 0..=r {
                        cm[(r, col)] *= beta;
                    }
                }
            }
            Accum::Add
        };
        if la.rows == 0 {
            if accum == Accum::Replace {
                cm.fill(T::ZERO);
            }
        } else {
            let am = mat_ref(a, la, Tr::N);
            faer::linalg::matmul::triangular::matmul(
                cm.as_mut(),
                BlockStructure::TriangularLower,
                accum,
                am.transpose(),
                BlockStructure::Rectangular,
                am,
                BlockStructure::Rectangular,
                alpha,
                par_for(n * n * la.rows / 2),
            );
        }
        for r in 0..n {
            for col in r + 1..n {
                cm[(r, col)] = cm[(col, r)];
            }
        }
        Ok(())
    }

    fn axpby<T: Real>(&self, alpha: T, x: &Vec<T>, beta: T, y: &mut Vec<T>) -> Result<()> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "axpby: x has {}, y has {} elements",
                x.len(),
                y.len()
            )));
        }
        if beta == T::ONE {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
        } else {
            y.iter_mut()
                .zip(x)
                .for_each(|(y, &x)| *y = alpha * x + beta * *y);
        }
        Ok(())
    }
    fn scale<T: Real>(&self, alpha: T, x: &mut Vec<T>) -> Result<()> {
        x.iter_mut().for_each(|v| *v *= alpha);
        Ok(())
    }
    fn dot<T: Real>(&self, x: &Vec<T>, y: &Vec<T>) -> Result<f64> {
        if x.len() != y.len() {
            return Err(Error::Shape(format!(
                "dot: x has {}, y has {} elements",
                x.len(),
                y.len()
            )));
        }
        Ok(x.iter()
            .zip(y)
            .map(|(&a, &b)| a.to_f64() * b.to_f64())
            .sum())
    }
    fn sq_dist<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &Vec<T>,
        y_off: usize,
        len: usize,
    ) -> Result<f64> {
        check_len("sq_dist (x)", x.len(), x_off + len)?;
        check_len("sq_dist (y)", y.len(), y_off + len)?;
        Ok(x[x_off..x_off + len]
            .iter()
            .zip(&y[y_off..y_off + len])
            .map(|(&a, &b)| (a.to_f64() - b.to_f64()).powi(2))
            .sum())
    }
    fn adam_update<T: Real>(
        &self,
        p: &mut Vec<T>,
        g: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        s: AdamStep,
    ) -> Result<()> {
        let n = p.len();
        if g.len() != n || m.len() != n || v.len() != n {
            return Err(Error::Shape(format!(
                "adam_update: p {n}, g {}, m {}, v {}",
                g.len(),
                m.len(),
                v.len()
            )));
        }
        adam_ref(p, g, m, v, s);
        Ok(())
    }

    fn add_bias<T: Real>(
        &self,
        x: &mut Vec<T>,
        rows: usize,
        cols: usize,
        bias: &Vec<T>,
        bias_off: usize,
    ) -> Result<()> {
        check_len("add_bias (x)", x.len(), rows * cols)?;
        check_len("add_bias (bias)", bias.len(), bias_off + cols)?;
        if cols == 0 {
            return Ok(());
        }
        let b = &bias[bias_off..bias_off + cols];
        x[..rows * cols].par_chunks_mut(cols).for_each(|row| {
            row.iter_mut().zip(b).for_each(|(x, &b)| *x += b);
        });
        Ok(())
    }

    fn jet_input<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        dirs: &Vec<T>,
        out: &mut Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        let JetShape { n, k, lap, h } = shape;
        check_len("jet_input (x)", x.len(), x_off + n * h)?;
        check_len("jet_input (dirs)", dirs.len(), k * h)?;
        check_len("jet_input (out)", out.len(), shape.len())?;
        out[..n * h].copy_from_slice(&x[x_off..x_off + n * h]);
        for d in 0..k {
            let blk = &mut out[(1 + d) * n * h..(2 + d) * n * h];
            if h > 0 {
                blk.chunks_mut(h)
                    .for_each(|r| r.copy_from_slice(&dirs[d * h..(d + 1) * h]));
            }
        }
        if lap {
            out[(1 + k) * n * h..(2 + k) * n * h].fill(T::ZERO);
        }
        Ok(())
    }

    fn jet_broadcast_dirs<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        let JetShape { n, k, lap, h } = shape;
        check_len("jet_broadcast_dirs (z)", z.len(), shape.len())?;
        check_len("jet_broadcast_dirs (wv)", wv.len(), k * h)?;
        if h == 0 {
            return Ok(());
        }
        for d in 0..k {
            z[(1 + d) * n * h..(2 + d) * n * h]
                .par_chunks_mut(h)
                .for_each(|r| r.copy_from_slice(&wv[d * h..(d + 1) * h]));
        }
        if lap {
            z[(1 + k) * n * h..(2 + k) * n * h].fill(T::ZERO);
        }
        Ok(())
    }

    fn jet_input_tanh<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check_len("jet_input_tanh (z)", z.len(), shape.len())?;
        check_len("jet_input_tanh (wv)", wv.len(), shape.k * shape.h)?;
        check_len("jet_input_tanh (coef)", coef.len(), shape.k)?;
        // Σ_k c_k wv[k]² does not depend on the sample.
        let h = shape.h;
        let mut q = vec![T::ZERO; h];
        for d in 0..shape.k {
            for j in 0..h {
                let w = wv[d * h + j];
                q[j] += coef[d] * w * w;
            }
        }
        let p = SharedPtr(z.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above; each task writes only the rows of samples i0..i1.
            unsafe { input_tanh(p.get(), wv, &q, shape, i0, i1) }
        });
        Ok(())
    }

    fn jet_tanh<T: Real>(
        &self,
        z: &Vec<T>,
        a: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check_len("jet_tanh (z)", z.len(), shape.len())?;
        check_len("jet_tanh (a)", a.len(), shape.len())?;
        check_len("jet_tanh (coef)", coef.len(), shape.k)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let p = SharedPtr(a.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above; `z` is only read and `a` is a distinct buffer
            // (exclusive borrow); each task touches only the rows of its own samples.
            unsafe { tanh_fwd(Some(zp.get() as *const T), p.get(), coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn jet_tanh_inplace<T: Real>(
        &self,
        z: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check_len("jet_tanh_inplace (z)", z.len(), shape.len())?;
        check_len("jet_tanh_inplace (coef)", coef.len(), shape.k)?;
        let p = SharedPtr(z.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above; each task touches only the rows of its own
            // samples i0..i1.
            unsafe { tanh_fwd(None, p.get(), coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn jet_tanh_backward<T: Real>(
        &self,
        z: &Vec<T>,
        a: &Vec<T>,
        g: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check_len("jet_tanh_backward (z)", z.len(), shape.len())?;
        check_len("jet_tanh_backward (a)", a.len(), shape.n * shape.h)?;
        check_len("jet_tanh_backward (g)", g.len(), shape.len())?;
        check_len("jet_tanh_backward (coef)", coef.len(), shape.k)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let gp = SharedPtr(g.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above; `z` and `a` are only read and `g` is a distinct
            // buffer (exclusive borrow); each task touches only rows of samples i0..i1.
            unsafe { tanh_bwd(zp.get(), a, gp.get(), coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn scale_jet_rows<T: Real>(&self, g: &mut Vec<T>, w: &Vec<T>, shape: JetShape) -> Result<()> {
        check_len("scale_jet_rows (g)", g.len(), shape.len())?;
        check_len("scale_jet_rows (w)", w.len(), shape.n)?;
        let (n, h) = (shape.n, shape.h);
        if h == 0 || n == 0 {
            return Ok(());
        }
        g[..shape.len()]
            .par_chunks_mut(h)
            .enumerate()
            .for_each(|(r, row)| {
                let s = w[r % n];
                row.iter_mut().for_each(|x| *x *= s);
            });
        Ok(())
    }

    fn scale_jet_rows_to<T: Real>(
        &self,
        src: &Vec<T>,
        w: &Vec<T>,
        shape: JetShape,
        dst: &mut Vec<T>,
    ) -> Result<()> {
        check_len("scale_jet_rows_to (src)", src.len(), shape.len())?;
        check_len("scale_jet_rows_to (w)", w.len(), shape.n)?;
        check_len("scale_jet_rows_to (dst)", dst.len(), shape.len())?;
        let (n, h) = (shape.n, shape.h);
        if h == 0 || n == 0 {
            return Ok(());
        }
        dst[..shape.len()]
            .par_chunks_mut(h)
            .zip(src[..shape.len()].par_chunks(h))
            .enumerate()
            .for_each(|(r, (d, s))| {
                let f = w[r % n];
                d.iter_mut().zip(s).for_each(|(d, s)| *d = *s * f);
            });
        Ok(())
    }

    fn ad_tanh_rev<T: Real>(&self, a: &Vec<T>, g: &mut Vec<T>, shape: JetShape) -> Result<()> {
        check_len("ad_tanh_rev (a)", a.len(), shape.len())?;
        check_len("ad_tanh_rev (g)", g.len(), shape.len())?;
        if shape.lap {
            return Err(Error::Shape(
                "ad_tanh_rev: the autodiff block has no Laplacian rows".into(),
            ));
        }
        let (n, h) = (shape.n, shape.h);
        if n == 0 || h == 0 {
            return Ok(());
        }
        let (gv, gt) = g[..shape.len()].split_at_mut(n * h);
        let av = &a[..n * h];
        // tangent rows first: they read the value-row cotangent before it is overwritten
        gt.par_chunks_mut(n * h).enumerate().for_each(|(d, blk)| {
            let at = &a[(1 + d) * n * h..(2 + d) * n * h];
            for idx in 0..n * h {
                let av = av[idx];
                blk[idx] = (T::ONE - av * av) * blk[idx] - (av + av) * at[idx] * gv[idx];
            }
        });
        gv.par_chunks_mut(h)
            .zip(av.par_chunks(h))
            .for_each(|(gr, ar)| {
                gr.iter_mut()
                    .zip(ar)
                    .for_each(|(g, &a)| *g *= T::ONE - a * a);
            });
        Ok(())
    }

    fn jac_rows<T: Real>(
        &self,
        a: &Vec<T>,
        g: &Vec<T>,
        shape: JetShape,
        fan_out: usize,
        scale: &Vec<T>,
        out: &mut Vec<T>,
        at: JacRows,
    ) -> Result<()> {
        let (n, s, fi, fo) = (shape.n, shape.s(), shape.h, fan_out);
        check_len("jac_rows (a)", a.len(), n * s * fi)?;
        check_len("jac_rows (g)", g.len(), n * s * fo)?;
        check_len("jac_rows (scale)", scale.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let last_row = at.row0 + (n - 1) * at.row_stride;
        let need = last_row * at.ld + (at.w_off + fo * fi).max(at.b_off + fo);
        check_len("jac_rows (out)", out.len(), need)?;
        if at.w_off + fo * fi > at.ld || at.b_off + fo > at.ld || (at.row_stride == 0 && n > 1) {
            return Err(Error::Shape(format!(
                "jac_rows: layer block does not fit rows of {} (stride {})",
                at.ld, at.row_stride
            )));
        }
        let p = SharedPtr(out.as_mut_ptr());
        (0..n).into_par_iter().for_each(|i| {
            let row = (at.row0 + i * at.row_stride) * at.ld;
            let base = p.get();
            // SAFETY: `need` was checked against out.len(); distinct samples write distinct
            // rows (row_stride > 0), so the tasks' writes are disjoint.
            let w = unsafe { std::slice::from_raw_parts_mut(base.add(row + at.w_off), fo * fi) };
            let sc = scale[i];
            w.fill(T::ZERO);
            for r in 0..s {
                let rr = r * n + i;
                let ar = &a[rr * fi..(rr + 1) * fi];
                for o in 0..fo {
                    let gv = g[rr * fo + o] * sc;
                    if gv != T::ZERO {
                        w[o * fi..(o + 1) * fi]
                            .iter_mut()
                            .zip(ar)
                            .for_each(|(w, &av)| *w += gv * av);
                    }
                }
            }
            // SAFETY: as above; the bias block lies in the same row, disjoint from the weights.
            let b = unsafe { std::slice::from_raw_parts_mut(base.add(row + at.b_off), fo) };
            for o in 0..fo {
                b[o] = sc * g[i * fo + o];
            }
        });
        Ok(())
    }

    fn col_sum<T: Real>(
        &self,
        alpha: T,
        x: &Vec<T>,
        x_off: usize,
        rows: usize,
        cols: usize,
        beta: T,
        out: &mut Vec<T>,
        out_off: usize,
    ) -> Result<()> {
        check_len("col_sum (x)", x.len(), x_off + rows * cols)?;
        check_len("col_sum (out)", out.len(), out_off + cols)?;
        let o = &mut out[out_off..out_off + cols];
        let mut acc = vec![T::ZERO; cols];
        if cols > 0 {
            for row in x[x_off..x_off + rows * cols].chunks(cols) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = if beta == T::ZERO {
                alpha * a
            } else {
                beta * *o + alpha * a
            };
        }
        Ok(())
    }

    // ---- issue 4: half-inverse gradients / Gauss–Newton -------------------------------
    fn thin_svd<T: Real>(
        &self,
        a: &Vec<T>,
        la: Lay,
        u: &mut Vec<f64>,
        s: &mut Vec<f64>,
        vt: &mut Vec<f64>,
    ) -> Result<()> {
        check_view("thin_svd (A)", a.len(), la)?;
        let k = la.rows.min(la.cols);
        check_len("thin_svd (U)", u.len(), la.rows * k)?;
        check_len("thin_svd (s)", s.len(), k)?;
        check_len("thin_svd (Vᵀ)", vt.len(), k * la.cols)?;
        thin_svd_ref(
            a,
            la,
            &mut u[..la.rows * k],
            &mut s[..k],
            &mut vt[..k * la.cols],
        )
    }
    // ---- issue 3: second-order optimizers ------------------------------------------
    fn jet_tanh_tangent<T: Real>(
        &self,
        z: &Vec<T>,
        a: &Vec<T>,
        t: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check_len("jet_tanh_tangent (z)", z.len(), shape.len())?;
        check_len("jet_tanh_tangent (a)", a.len(), shape.n * shape.h)?;
        check_len("jet_tanh_tangent (t)", t.len(), shape.len())?;
        check_len("jet_tanh_tangent (coef)", coef.len(), shape.k)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let tp = SharedPtr(t.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            let (zp, tp) = (zp, tp);
            // SAFETY: lengths checked above; `z` and `a` are only read and `t` is a distinct
            // buffer (exclusive borrow); each task touches only rows of samples i0..i1.
            unsafe { tanh_tangent(zp.0, a, tp.0, coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn mul<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &mut Vec<T>,
        y_off: usize,
        len: usize,
    ) -> Result<()> {
        check_len("mul (x)", x.len(), x_off + len)?;
        check_len("mul (y)", y.len(), y_off + len)?;
        mul_ref(&x[x_off..x_off + len], &mut y[y_off..y_off + len]);
        Ok(())
    }

    fn quad_residual<T: Real>(
        &self,
        y: &Vec<T>,
        form: &QuadForm<'_, Self, T>,
        first: usize,
        shape: JetShape,
        r: &mut Vec<T>,
    ) -> Result<()> {
        let lens = QuadLens {
            y: y.len(),
            a: form.a.len(),
            b: form.b.len(),
            d: form.d.len(),
            out: r.len(),
        };
        check_quad(
            "quad_residual",
            lens,
            first,
            shape,
            first + shape.n,
            shape.n,
        )?;
        quad_residual_ref(y, form.a, form.b, form.d, first, shape, &mut r[..shape.n]);
        Ok(())
    }

    fn quad_tangent<T: Real>(
        &self,
        y: &Vec<T>,
        form: &QuadForm<'_, Self, T>,
        yd: &Vec<T>,
        first: usize,
        shape: JetShape,
        t: &mut Vec<T>,
    ) -> Result<()> {
        let lens = QuadLens {
            y: y.len(),
            a: form.a.len(),
            b: form.b.len(),
            d: yd.len(),
            out: t.len(),
        };
        check_quad("quad_tangent", lens, first, shape, shape.len(), shape.n)?;
        quad_tangent_ref(y, form.a, form.b, yd, first, shape, &mut t[..shape.n]);
        Ok(())
    }

    fn quad_seeds<T: Real>(
        &self,
        y: &Vec<T>,
        form: &QuadForm<'_, Self, T>,
        r: &Vec<T>,
        alpha: T,
        beta: T,
        first: usize,
        shape: JetShape,
        g: &mut Vec<T>,
    ) -> Result<()> {
        let lens = QuadLens {
            y: y.len(),
            a: form.a.len(),
            b: form.b.len(),
            d: r.len(),
            out: g.len(),
        };
        check_quad("quad_seeds", lens, first, shape, shape.n, shape.len())?;
        let len = shape.len();
        quad_seeds_ref(
            y,
            form.a,
            form.b,
            r,
            [alpha, beta],
            first,
            shape,
            &mut g[..len],
        );
        Ok(())
    }

    fn row_dot<T: Real>(
        &self,
        x: &Vec<T>,
        lx: Lay,
        y: &Vec<T>,
        ly: Lay,
        beta: T,
        out: &mut Vec<T>,
        out_off: usize,
    ) -> Result<()> {
        check_view("row_dot X", x.len(), lx)?;
        check_view("row_dot Y", y.len(), ly)?;
        if lx.rows != ly.rows || lx.cols != ly.cols {
            return Err(Error::Shape(format!(
                "row_dot: X is {}x{}, Y is {}x{}",
                lx.rows, lx.cols, ly.rows, ly.cols
            )));
        }
        check_len("row_dot (out)", out.len(), out_off + lx.rows)?;
        row_dot_ref(x, lx, y, ly, beta, &mut out[out_off..out_off + lx.rows]);
        Ok(())
    }

    // ---- the KFAC inverse on the device ----------------------------------------------
    fn sym_eig(
        &self,
        a: &Vec<f64>,
        n: usize,
        vals: &mut Vec<f64>,
        vecs: &mut Vec<f64>,
    ) -> Result<()> {
        check_len("sym_eig (A)", a.len(), n * n)?;
        check_len("sym_eig (values)", vals.len(), n)?;
        check_len("sym_eig (vectors)", vecs.len(), n * n)?;
        let e = crate::curvature::linalg::sym_eig(n, &a[..n * n], "sym_eig")?;
        vals[..n].copy_from_slice(&e.vals);
        for k in 0..n {
            let col = e.vecs.col(k);
            for i in 0..n {
                vecs[k * n + i] = col[i];
            }
        }
        Ok(())
    }
    fn eig_fix(&self, vals: &mut Vec<f64>, n: usize, mode: EigFix) -> Result<EigFixed> {
        check_len("eig_fix", vals.len(), n)?;
        Ok(eig_fix_ref(&mut vals[..n], mode))
    }
    fn kron_recip<T: Real>(
        &self,
        sa: &Vec<f64>,
        na: usize,
        sb: &Vec<f64>,
        nb: usize,
        d: &mut Vec<T>,
    ) -> Result<()> {
        check_len("kron_recip (sa)", sa.len(), na)?;
        check_len("kron_recip (sb)", sb.len(), nb)?;
        check_len("kron_recip (d)", d.len(), na * nb)?;
        kron_recip_ref(&sa[..na], &sb[..nb], &mut d[..na * nb]);
        Ok(())
    }
    fn cast<T: Real, U: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &mut Vec<U>,
        y_off: usize,
        len: usize,
    ) -> Result<()> {
        check_len("cast (x)", x.len(), x_off + len)?;
        check_len("cast (y)", y.len(), y_off + len)?;
        y[y_off..y_off + len]
            .iter_mut()
            .zip(&x[x_off..x_off + len])
            .for_each(|(y, &x)| *y = U::from_f64(x.to_f64()));
        Ok(())
    }
    fn add_diag<T: Real>(&self, x: &mut Vec<T>, n: usize, v: T) -> Result<()> {
        check_len("add_diag", x.len(), n * n)?;
        for i in 0..n {
            x[i * n + i] += v;
        }
        Ok(())
    }
    fn spectral_scale(
        &self,
        s: &Vec<f64>,
        c: &mut Vec<f64>,
        k: usize,
        kappa: f64,
        tau: f64,
    ) -> Result<(usize, f64)> {
        check_len("spectral_scale (s)", s.len(), k.max(1))?;
        check_len("spectral_scale (c)", c.len(), k)?;
        Ok(spectral_scale_ref(&s[..k], &mut c[..k], kappa, tau))
    }
    fn bias_border<T: Real>(&self, a: &mut Vec<T>, n: usize, corner: T) -> Result<()> {
        check_len("bias_border", a.len(), n * n)?;
        bias_border_ref(&mut a[..n * n], n, corner);
        Ok(())
    }
}

/// CPU twin of the `eig_fix` kernel ([`Backend::eig_fix`], [`EigFix`]).
pub fn eig_fix_ref(v: &mut [f64], mode: EigFix) -> EigFixed {
    let n = v.len() as f64;
    let mut clamped = 0;
    // a maximum that propagates NaN, like the kernel's
    let max_of = |f: fn(f64) -> f64, v: &[f64]| {
        v.iter().fold(f64::NEG_INFINITY, |m, &x| {
            let x = f(x);
            if m.is_nan() || x.is_nan() {
                f64::NAN
            } else {
                m.max(x)
            }
        })
    };
    let max = match mode {
        EigFix::InvSqrtFloor => {
            let m = max_of(|x| x, v);
            let floor = (n * f64::EPSILON * m).max(f64::MIN_POSITIVE);
            if m > 0.0 {
                for x in v.iter_mut() {
                    if *x < floor {
                        *x = floor;
                        clamped += 1;
                    }
                    *x = 1.0 / x.sqrt();
                }
            }
            m
        }
        EigFix::PseudoInverse => {
            let m = max_of(f64::abs, v);
            let cut = n * f64::EPSILON * m;
            for x in v.iter_mut() {
                if x.abs() > cut && m > 0.0 {
                    *x = 1.0 / *x;
                } else {
                    *x = 0.0;
                    clamped += 1;
                }
            }
            m
        }
        EigFix::NonNegative => {
            let m = max_of(f64::abs, v);
            let noise = -n * 1e3 * f64::EPSILON * m;
            for x in v.iter_mut() {
                if *x < 0.0 {
                    if *x < noise {
                        clamped += 1;
                    }
                    *x = 0.0;
                }
            }
            m
        }
    };
    EigFixed { clamped, max }
}

/// CPU twin of the `spectral_scale` kernel ([`Backend::spectral_scale`]).
pub fn spectral_scale_ref(s: &[f64], c: &mut [f64], kappa: f64, tau: f64) -> (usize, f64) {
    let smax = s.first().copied().unwrap_or(0.0);
    let cut = tau * smax;
    let mut kept = 0;
    for (ci, &si) in c.iter_mut().zip(s) {
        if si > cut && si > 0.0 {
            *ci *= -si.powf(-kappa);
            kept += 1;
        } else {
            *ci = 0.0;
        }
    }
    (kept, smax)
}

/// CPU twin of the `kron_recip` kernel: `d[o·na + i] = 1 / (1 + sb[o]·sa[i])`.
pub fn kron_recip_ref<T: Real>(sa: &[f64], sb: &[f64], d: &mut [T]) {
    let na = sa.len();
    for (o, &b) in sb.iter().enumerate() {
        for (i, &a) in sa.iter().enumerate() {
            d[o * na + i] = T::from_f64(1.0 / (1.0 + b * a));
        }
    }
}

/// CPU twin of the `bias_border` kernel: the last column of the row-major `n × n` `a`
/// from its last row, and the corner.
pub fn bias_border_ref<T: Real>(a: &mut [T], n: usize, corner: T) {
    if n == 0 {
        return;
    }
    for i in 0..n - 1 {
        a[i * n + n - 1] = a[(n - 1) * n + i];
    }
    a[n * n - 1] = corner;
}

/// CPU twin of [`Backend::thin_svd`]: copies the view into a column-major f64 matrix and
/// runs faer's thin SVD (QR first for tall or wide inputs, then bidiagonalisation and
/// a divide-and-conquer bidiagonal SVD). `u`, `s`, `vt` must have exactly `m·k`, `k`
/// and `k·n` elements (k = min(m, n)).
pub fn thin_svd_ref<T: Real>(
    a: &[T],
    la: Lay,
    u: &mut [f64],
    s: &mut [f64],
    vt: &mut [f64],
) -> Result<()> {
    use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
    let (m, n) = (la.rows, la.cols);
    let k = m.min(n);
    check_view("thin_svd (A)", a.len(), la)?;
    if u.len() != m * k || s.len() != k || vt.len() != k * n {
        return Err(Error::Shape(format!(
            "thin_svd of {m}×{n}: U, s, Vᵀ have {}, {}, {} elements, expected {}, {k}, {}",
            u.len(),
            s.len(),
            vt.len(),
            m * k,
            k * n
        )));
    }
    if k == 0 {
        return Ok(());
    }
    let mut bad = None;
    let am = faer::Mat::<f64>::from_fn(m, n, |i, j| {
        let v = a[la.off + i * la.ld + j].to_f64();
        if !v.is_finite() && bad.is_none() {
            bad = Some((i, j, v));
        }
        v
    });
    if let Some((i, j, v)) = bad {
        return Err(Error::NonFinite(format!(
            "entry ({i}, {j}) of the {m}×{n} matrix handed to the SVD is {v}"
        )));
    }
    let mut um = faer::Mat::<f64>::zeros(m, k);
    let mut vm = faer::Mat::<f64>::zeros(n, k);
    let mut sd = faer::diag::Diag::<f64>::zeros(k);
    let par = par_for(m * n * k);
    let mut mem = faer::dyn_stack::MemBuffer::new(svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::Thin,
        par,
        Default::default(),
    ));
    svd(
        am.as_ref(),
        sd.as_mut(),
        Some(um.as_mut()),
        Some(vm.as_mut()),
        par,
        faer::dyn_stack::MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("SVD of a {m}×{n} matrix: {e:?}")))?;
    for c in 0..k {
        s[c] = sd[c];
        for i in 0..m {
            u[i * k + c] = um[(i, c)];
        }
        for j in 0..n {
            vt[c * n + j] = vm[(j, c)];
        }
    }
    Ok(())
}

/// `Σ a_i b_i` with eight independent partial sums, so the loop vectorises instead of
/// waiting on one chain of dependent additions.
#[inline(always)]
fn dot_lanes<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = T::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

/// Rows `r0..r0 + out.len()` of [`row_dot_ref`].
#[inline(always)]
fn row_dot_rows<T: Real>(x: &[T], lx: Lay, y: &[T], ly: Lay, beta: T, out: &mut [T], r0: usize) {
    let cols = lx.cols;
    for (k, o) in out.iter_mut().enumerate() {
        let (rx, ry) = (lx.off + (r0 + k) * lx.ld, ly.off + (r0 + k) * ly.ld);
        let acc = dot_lanes(&x[rx..rx + cols], &y[ry..ry + cols]);
        *o = if beta == T::ZERO {
            acc
        } else {
            beta * *o + acc
        };
    }
}

/// [`row_dot_rows`] compiled for AVX2 where the CPU has it (see [`has_avx2`]): the
/// baseline build's SSE2 code shuffles its eight lanes through 2-wide registers (it took
/// 8% of a heat 4+1d KFAC* step). The same operations in the same order, so the same bits.
fn row_dot_rows_wide<T: Real>(
    x: &[T],
    lx: Lay,
    y: &[T],
    ly: Lay,
    beta: T,
    out: &mut [T],
    r0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn wide<T: Real>(x: &[T], lx: Lay, y: &[T], ly: Lay, b: T, o: &mut [T], r0: usize) {
            row_dot_rows(x, lx, y, ly, b, o, r0)
        }
        if has_avx2() {
            // SAFETY: the CPU has the features `wide` is compiled for.
            return unsafe { wide(x, lx, y, ly, beta, out, r0) };
        }
    }
    row_dot_rows(x, lx, y, ly, beta, out, r0)
}

/// CPU twin of the row-wise dot product kernel: `out[r] = beta·out[r] + X_r · Y_r` for
/// two views with `out.len()` rows.
pub fn row_dot_ref<T: Real>(x: &[T], lx: Lay, y: &[T], ly: Lay, beta: T, out: &mut [T]) {
    const ROWS_PER_TASK: usize = 256;
    out.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(b, o)| row_dot_rows_wide(x, lx, y, ly, beta, o, b * ROWS_PER_TASK));
}

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

/// CPU twin of the elementwise product kernel: `y *= x`.
pub fn mul_ref<T: Real>(x: &[T], y: &mut [T]) {
    if y.len() >= 1 << 16 {
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y *= x));
    } else {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y *= x);
    }
}

/// CPU twin of the tanh-jet tangent kernel ([`Backend::jet_tanh_tangent`]) for samples
/// i0..i1, in place on `t`. Per sample, the value-row tangent `ż` is read before it is
/// overwritten, by the same task.
///
/// # Safety
/// `z` and `t` must be valid for `shape.len()` elements and not overlap; `a` holds at
/// least the `n·h` value rows, `coef` `shape.k` weights.
#[inline(always)]
unsafe fn tanh_tangent_samples<T: Real>(
    z: *const T,
    act: &[T],
    t: *mut T,
    coef: &[T],
    shape: JetShape,
    i0: usize,
    i1: usize,
) {
    let JetShape { n, k, lap, h } = shape;
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
        if lap {
            let row = ((1 + k) * n + i) * h;
            for j in 0..h {
                let lz = *z.add(row + j);
                let lzd = *t.add(row + j);
                *t.add(row + j) =
                    s1[j] * lzd + s2[j] * zd[j] * lz + s3[j] * zd[j] * q[j] + two * s2[j] * x[j];
            }
        }
    }
}

/// CPU twin of the Adam kernel.
pub fn adam_ref<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: AdamStep) {
    let (b1, b2) = (T::from_f64(s.beta1), T::from_f64(s.beta2));
    let lr = T::from_f64(s.lr / s.bc1);
    let rbc2 = T::from_f64(1.0 / s.bc2.sqrt());
    let eps = T::from_f64(s.eps);
    for i in 0..p.len() {
        let gi = g[i];
        m[i] = b1 * m[i] + (T::ONE - b1) * gi;
        v[i] = b2 * v[i] + (T::ONE - b2) * gi * gi;
        p[i] -= lr * m[i] / (v[i].sqrt() * rbc2 + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_scopes_nest_and_restore() {
        assert!(!is_sequential());
        let threads = rayon::current_num_threads();
        assert_eq!(Cpu.chunk_workers(), threads);
        sequential(|| {
            assert!(is_sequential());
            assert_eq!(Cpu.chunk_workers(), 1);
            sequential(|| assert!(is_sequential()));
            // still set after the inner scope ends
            assert!(is_sequential());
        });
        assert!(!is_sequential());
        // restored when the scope unwinds, too
        let _ = std::panic::catch_unwind(|| sequential(|| panic!("inside")));
        assert!(!is_sequential());
    }

    fn naive_gemm(a: &[f64], la: Lay, ta: Tr, b: &[f64], lb: Lay, tb: Tr) -> Vec<f64> {
        let get = |x: &[f64], l: Lay, t: Tr, r: usize, c: usize| match t {
            Tr::N => x[l.off + r * l.ld + c],
            Tr::T => x[l.off + c * l.ld + r],
        };
        let (m, k) = ta.shape(la);
        let (_, n) = tb.shape(lb);
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| get(a, la, ta, i, p) * get(b, lb, tb, p, j))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_for_all_transposes_and_strides() {
        let cpu = Cpu;
        let a: Vec<f64> = (0..200).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..200).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
        for (ta, tb) in [
            (Tr::N, Tr::N),
            (Tr::T, Tr::N),
            (Tr::N, Tr::T),
            (Tr::T, Tr::T),
        ] {
            // op(A): 5x4, op(B): 4x3, stored with padding and offsets.
            let la = match ta {
                Tr::N => Lay {
                    off: 3,
                    rows: 5,
                    cols: 4,
                    ld: 6,
                },
                Tr::T => Lay {
                    off: 3,
                    rows: 4,
                    cols: 5,
                    ld: 7,
                },
            };
            let lb = match tb {
                Tr::N => Lay {
                    off: 1,
                    rows: 4,
                    cols: 3,
                    ld: 3,
                },
                Tr::T => Lay {
                    off: 1,
                    rows: 3,
                    cols: 4,
                    ld: 5,
                },
            };
            let want = naive_gemm(&a, la, ta, &b, lb, tb);
            let mut c = vec![1.0; 40];
            let lc = Lay {
                off: 2,
                rows: 5,
                cols: 3,
                ld: 4,
            };
            cpu.gemm(2.0, &a, la, ta, &b, lb, tb, 0.5, &mut c, lc)
                .unwrap();
            for i in 0..5 {
                for j in 0..3 {
                    assert_eq!(
                        c[2 + i * 4 + j],
                        2.0 * want[i * 3 + j] + 0.5,
                        "({ta:?},{tb:?}) at {i},{j}"
                    );
                }
            }
            // padding untouched
            assert_eq!(c[0], 1.0);
            assert_eq!(c[2 + 3], 1.0);
        }
    }

    #[test]
    fn gemm_rejects_bad_shapes() {
        let cpu = Cpu;
        let a = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let e = cpu.gemm(
            1.0,
            &a,
            Lay::dense(2, 3),
            Tr::N,
            &a,
            Lay::dense(2, 3),
            Tr::N,
            0.0,
            &mut c,
            Lay::dense(2, 2),
        );
        assert!(matches!(e, Err(Error::Shape(_))));
        let e = cpu.gemm(
            1.0,
            &a,
            Lay::dense(3, 3),
            Tr::N,
            &a,
            Lay::dense(3, 3),
            Tr::N,
            0.0,
            &mut c,
            Lay::dense(3, 3),
        );
        assert!(matches!(e, Err(Error::Shape(_))));
    }

    #[test]
    fn syrk_matches_gemm() {
        let cpu = Cpu;
        let a: Vec<f64> = (0..35).map(|i| (i as f64 * 0.37).sin()).collect();
        let la = Lay::dense(7, 5);
        let mut want = vec![0.0; 25];
        cpu.gemm(
            1.5,
            &a,
            la,
            Tr::T,
            &a,
            la,
            Tr::N,
            0.0,
            &mut want,
            Lay::dense(5, 5),
        )
        .unwrap();
        let mut c = vec![2.0; 25];
        cpu.syrk(1.5, &a, la, 0.25, &mut c, Lay::dense(5, 5))
            .unwrap();
        for (x, y) in c.iter().zip(&want) {
            assert!((x - (y + 0.5)).abs() < 1e-13);
        }
    }

    #[test]
    fn col_sum_and_scale_rows() {
        let cpu = Cpu;
        let x: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let mut out = vec![1.0; 5];
        cpu.col_sum(2.0, &x, 0, 3, 3, 1.0, &mut out, 1).unwrap();
        assert_eq!(
            out,
            vec![
                1.0,
                1.0 + 2.0 * 9.0,
                1.0 + 2.0 * 12.0,
                1.0 + 2.0 * 15.0,
                1.0
            ]
        );
        // the 3×3 block that starts at x[3]: column sums 3+6+9, 4+7+10, 5+8+11
        let mut out = vec![0.0; 3];
        cpu.col_sum(1.0, &x, 3, 3, 3, 0.0, &mut out, 0).unwrap();
        assert_eq!(out, vec![18.0, 21.0, 24.0]);
        // 2 samples, k = 1, no Laplacian: rows [v0, v1, d0, d1]
        let mut g = vec![1.0; 8];
        let w = vec![2.0, 3.0];
        cpu.scale_jet_rows(
            &mut g,
            &w,
            JetShape {
                n: 2,
                k: 1,
                lap: false,
                h: 2,
            },
        )
        .unwrap();
        assert_eq!(g, vec![2.0, 2.0, 3.0, 3.0, 2.0, 2.0, 3.0, 3.0]);
    }

    // ---- issue 3 ---------------------------------------------------------------------

    /// The tangent kernel against central differences of the forward kernel along ż,
    /// and against a direct scalar evaluation of the formulas.
    #[test]
    fn jet_tanh_tangent_matches_differences_of_jet_tanh() {
        let cpu = Cpu;
        for (k, lap) in [(3, true), (2, false), (0, false)] {
            let shape = JetShape {
                n: 37,
                k,
                lap,
                h: 5,
            };
            let len = shape.len();
            let z: Vec<f64> = (0..len).map(|i| (i as f64 * 0.731).sin() * 1.3).collect();
            let zd: Vec<f64> = (0..len).map(|i| (i as f64 * 0.377 + 1.0).cos()).collect();
            let coef: Vec<f64> = (0..k).map(|d| 0.5 + d as f64).collect();
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
            if lap {
                let l = 1 + k;
                let q: f64 = (0..k).map(|d| coef[d] * z[at(1 + d)].powi(2)).sum();
                let x: f64 = (0..k).map(|d| coef[d] * z[at(1 + d)] * zd[at(1 + d)]).sum();
                let want =
                    s1 * zd[at(l)] + s2 * zd[at(0)] * z[at(l)] + s3 * zd[at(0)] * q + 2.0 * s2 * x;
                assert!((t[at(l)] - want).abs() < 1e-13);
            }
        }
        // short buffers are refused
        let shape = JetShape {
            n: 2,
            k: 1,
            lap: true,
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

    #[test]
    fn mul_matches_naive_and_checks_ranges() {
        let cpu = Cpu;
        let x: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let mut y = vec![2.0; 8];
        cpu.mul(&x, 3, &mut y, 1, 5).unwrap();
        assert_eq!(y, vec![2.0, 6.0, 8.0, 10.0, 12.0, 14.0, 2.0, 2.0]);
        assert!(cpu.mul(&x, 6, &mut y, 0, 5).is_err());
        assert!(cpu.mul(&x, 0, &mut y, 4, 5).is_err());
        let big: Vec<f64> = (0..100_000).map(|i| (i % 7) as f64).collect();
        let mut sq = big.clone();
        cpu.mul(&big, 0, &mut sq, 0, big.len()).unwrap();
        assert!(sq.iter().zip(&big).all(|(s, b)| *s == b * b));
    }

    #[test]
    fn row_dot_matches_naive() {
        let cpu = Cpu;
        let (rows, cols) = (700, 9);
        let x: Vec<f64> = (0..rows * 12 + 5).map(|i| (i as f64 * 0.3).sin()).collect();
        let y: Vec<f64> = (0..rows * cols + 2)
            .map(|i| (i as f64 * 0.7).cos())
            .collect();
        // X strided (ld 12) with an offset, Y dense
        let lx = Lay {
            off: 5,
            rows,
            cols,
            ld: 12,
        };
        let ly = Lay::at(2, rows, cols);
        let mut out = vec![1.5; rows + 3];
        cpu.row_dot(&x, lx, &y, ly, 2.0, &mut out, 3).unwrap();
        for r in 0..rows {
            let want: f64 = (0..cols)
                .map(|c| x[5 + r * 12 + c] * y[2 + r * cols + c])
                .sum();
            assert!((out[3 + r] - (3.0 + want)).abs() < 1e-13, "row {r}");
        }
        assert_eq!(&out[..3], &[1.5, 1.5, 1.5]);
        let mut o2 = vec![f64::NAN; rows];
        cpu.row_dot(&x, lx, &y, ly, 0.0, &mut o2, 0).unwrap();
        assert!(o2.iter().all(|v| v.is_finite()));
        assert!(cpu
            .row_dot(&x, lx, &y, Lay::at(3, rows, cols), 0.0, &mut o2, 0)
            .is_err());
        assert!(cpu
            .row_dot(&x, lx, &y, Lay::at(0, rows, 8), 0.0, &mut o2, 0)
            .is_err());
        assert!(cpu.row_dot(&x, lx, &y, ly, 0.0, &mut o2, 1).is_err());
    }
}

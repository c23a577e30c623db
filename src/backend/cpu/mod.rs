//! The CPU backend: faer for dense products (multi-threaded through rayon), and fused,
//! rayon-parallel loops for the jet kernels. Its files mirror `kernels/`: the CPU twin of
//! a kernel in `kernels/X.cu` is in `X.rs` here (`jet`, `linalg`, `reduce`, `vector`;
//! `residual` for the quadratic-form residuals), with `par` (threading policy) and `simd`
//! (AVX2 builds) beside them. The twins take the kernels' arguments and use the same
//! formulas (design §1); they are the reference the GPU and the emulated kernels are
//! tested against. This file holds the `Backend` implementation: the op's argument checks
//! (`backend::check`, shared with the CUDA kernel plans), then the twin. Inside a
//! chunk-parallel sweep ([`sequential`]) every operation stays on its thread.
//!
//! Checked by `tests/jet.rs` (forward Laplacian against the autodiff baseline and finite
//! differences), `tests/kernels.rs` and the unit tests of each file.

mod jet;
mod linalg;
mod par;
mod reduce;
mod residual;
mod simd;
mod vector;

pub use self::linalg::{
    bias_border_ref, eig_fix_ref, kron_recip_ref, spectral_scale_ref, thin_svd_ref,
};
pub use self::par::sequential;
pub use self::reduce::row_dot_ref;
pub use self::residual::{quad_residual_ref, quad_seeds_ref, quad_tangent_ref};
pub use self::vector::{adam_ref, mul_ref};

use self::jet::*;
use self::linalg::{mat_mut_t, mat_ref};
use self::par::*;
use super::check;
use super::{AdamStep, Backend, EigFix, EigFixed, JacRows, JetShape, Lay, QuadForm, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;
use faer::linalg::matmul::triangular::BlockStructure;
use faer::Accum;
use rayon::prelude::*;

/// The CPU backend. Cheap to clone; holds no state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

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

    // ---- memory and transfers ----------------------------------------------------------------
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
        check::range("download_range", buf.len(), off, dst.len())?;
        dst.copy_from_slice(&buf[off..off + dst.len()]);
        Ok(())
    }

    fn upload_range<T: Real>(&self, src: &[T], buf: &mut Vec<T>, off: usize) -> Result<()> {
        check::range("upload_range", buf.len(), off, src.len())?;
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
        check::copy(src.len(), src_off, dst.len(), dst_off, len)?;
        dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
        Ok(())
    }

    fn fill<T: Real>(&self, buf: &mut Vec<T>, off: usize, len: usize, value: T) -> Result<()> {
        check::range("fill", buf.len(), off, len)?;
        buf[off..off + len].fill(value);
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
        check::pair("cast", x.len(), x_off, y.len(), y_off, len)?;
        y[y_off..y_off + len]
            .iter_mut()
            .zip(&x[x_off..x_off + len])
            .for_each(|(y, &x)| *y = U::from_f64(x.to_f64()));
        Ok(())
    }

    // ---- dense products ----------------------------------------------------------------------
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
        let (m, nn, ka) = check::gemm_dims([a.len(), b.len(), c.len()], la, ta, lb, tb, lc)?;
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
        let n = check::syrk_dim([a.len(), c.len()], la, lc)?;
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

    // ---- vectors -----------------------------------------------------------------------------
    fn axpby<T: Real>(&self, alpha: T, x: &Vec<T>, beta: T, y: &mut Vec<T>) -> Result<()> {
        check::same_len("axpby", x.len(), y.len())?;
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

    fn mul<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &mut Vec<T>,
        y_off: usize,
        len: usize,
    ) -> Result<()> {
        check::pair("mul", x.len(), x_off, y.len(), y_off, len)?;
        mul_ref(&x[x_off..x_off + len], &mut y[y_off..y_off + len]);
        Ok(())
    }

    fn adam_update<T: Real>(
        &self,
        p: &mut Vec<T>,
        g: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        s: AdamStep,
    ) -> Result<()> {
        check::adam(p.len(), g.len(), m.len(), v.len())?;
        adam_ref(p, g, m, v, s);
        Ok(())
    }

    // ---- reductions --------------------------------------------------------------------------
    fn dot<T: Real>(&self, x: &Vec<T>, y: &Vec<T>) -> Result<f64> {
        check::same_len("dot", x.len(), y.len())?;
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
        check::pair("sq_dist", x.len(), x_off, y.len(), y_off, len)?;
        Ok(x[x_off..x_off + len]
            .iter()
            .zip(&y[y_off..y_off + len])
            .map(|(&a, &b)| (a.to_f64() - b.to_f64()).powi(2))
            .sum())
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
        check::col_sum(x.len(), x_off, rows, cols, out.len(), out_off)?;
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
        check::row_dot(x.len(), lx, y.len(), ly, out.len(), out_off)?;
        row_dot_ref(x, lx, y, ly, beta, &mut out[out_off..out_off + lx.rows]);
        Ok(())
    }

    // ---- jets --------------------------------------------------------------------------------
    fn add_bias<T: Real>(
        &self,
        x: &mut Vec<T>,
        rows: usize,
        cols: usize,
        bias: &Vec<T>,
        bias_off: usize,
    ) -> Result<()> {
        check::add_bias(x.len(), rows, cols, bias.len(), bias_off)?;
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
        let JetShape { n, k, ops, h } = shape;
        check::jet_input(x.len(), x_off, dirs.len(), out.len(), shape)?;
        out[..n * h].copy_from_slice(&x[x_off..x_off + n * h]);
        for d in 0..k {
            let blk = &mut out[(1 + d) * n * h..(2 + d) * n * h];
            if h > 0 {
                blk.chunks_mut(h)
                    .for_each(|r| r.copy_from_slice(&dirs[d * h..(d + 1) * h]));
            }
        }
        out[(1 + k) * n * h..(1 + k + ops) * n * h].fill(T::ZERO);
        Ok(())
    }

    fn jet_broadcast_dirs<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        let JetShape { n, k, ops, h } = shape;
        check::jet_broadcast_dirs(z.len(), wv.len(), shape)?;
        if h == 0 {
            return Ok(());
        }
        for d in 0..k {
            z[(1 + d) * n * h..(2 + d) * n * h]
                .par_chunks_mut(h)
                .for_each(|r| r.copy_from_slice(&wv[d * h..(d + 1) * h]));
        }
        z[(1 + k) * n * h..(1 + k + ops) * n * h].fill(T::ZERO);
        Ok(())
    }

    fn jet_input_tanh<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        check::jet_input_tanh(z.len(), wv.len(), coef.len(), shape)?;
        // Σ_k c_jk wv[k]² (per operator row j) does not depend on the sample.
        let (h, k) = (shape.h, shape.k);
        let mut q = vec![T::ZERO; shape.ops * h];
        for (jj, qj) in q.chunks_exact_mut(h.max(1)).enumerate() {
            for d in 0..k {
                let c = coef[jj * k + d];
                for j in 0..h {
                    let w = wv[d * h + j];
                    qj[j] += c * w * w;
                }
            }
        }
        let p = SharedPtr(z.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above (check::jet_input_tanh); each task writes only
            // the rows of samples i0..i1.
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
        check::jet_tanh(z.len(), a.len(), coef.len(), shape)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let p = SharedPtr(a.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above (check::jet_tanh); `z` is only read and `a` is a
            // distinct buffer (exclusive borrow); each task touches only the rows of its own
            // samples.
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
        check::jet_tanh_inplace(z.len(), coef.len(), shape)?;
        let p = SharedPtr(z.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above (check::jet_tanh_inplace); each task touches
            // only the rows of its own samples i0..i1.
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
        let lens = [z.len(), a.len(), g.len(), coef.len()];
        check::jet_tanh_linear("jet_tanh_backward", lens, "g", shape)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let gp = SharedPtr(g.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            // SAFETY: lengths checked above (check::jet_tanh_linear); `z` and `a` are only
            // read and `g` is a distinct buffer (exclusive borrow); each task touches only
            // rows of samples i0..i1.
            unsafe { tanh_bwd(zp.get(), a, gp.get(), coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn jet_tanh_tangent<T: Real>(
        &self,
        z: &Vec<T>,
        a: &Vec<T>,
        t: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        let lens = [z.len(), a.len(), t.len(), coef.len()];
        check::jet_tanh_linear("jet_tanh_tangent", lens, "t", shape)?;
        let zp = SharedPtr(z.as_ptr() as *mut T);
        let tp = SharedPtr(t.as_mut_ptr());
        par_samples(shape.n, |i0, i1| {
            let (zp, tp) = (zp, tp);
            // SAFETY: lengths checked above (check::jet_tanh_linear); `z` and `a` are only
            // read and `t` is a distinct buffer (exclusive borrow); each task touches only
            // rows of samples i0..i1.
            unsafe { tanh_tangent(zp.0, a, tp.0, coef, shape, i0, i1) }
        });
        Ok(())
    }

    fn scale_jet_rows<T: Real>(&self, g: &mut Vec<T>, w: &Vec<T>, shape: JetShape) -> Result<()> {
        check::scale_jet_rows(g.len(), w.len(), shape)?;
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
        check::scale_jet_rows_to(src.len(), w.len(), dst.len(), shape)?;
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

    // ---- autodiff baseline and per-sample Jacobians ------------------------------------------
    fn ad_tanh_rev<T: Real>(&self, a: &Vec<T>, g: &mut Vec<T>, shape: JetShape) -> Result<()> {
        check::ad_tanh_rev(a.len(), g.len(), shape)?;
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
        let lens = [a.len(), g.len(), scale.len(), out.len()];
        check::jac_rows(lens, shape, fan_out, at)?;
        let (n, s, fi, fo) = (shape.n, shape.s(), shape.h, fan_out);
        if n == 0 {
            return Ok(());
        }
        let p = SharedPtr(out.as_mut_ptr());
        (0..n).into_par_iter().for_each(|i| {
            let row = (at.row0 + i * at.row_stride) * at.ld;
            let base = p.get();
            // SAFETY: check::jac_rows placed the last sample's blocks inside out and both
            // blocks inside a row of ld; distinct samples write distinct rows (row_stride > 0,
            // also checked), so the tasks' writes are disjoint.
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

    // ---- quadratic-form residuals ------------------------------------------------------------
    fn quad_residual<T: Real>(
        &self,
        y: &Vec<T>,
        form: &QuadForm<'_, Self, T>,
        first: usize,
        shape: JetShape,
        r: &mut Vec<T>,
    ) -> Result<()> {
        let lens = [y.len(), form.a.len(), form.b.len(), form.d.len(), r.len()];
        check::quad_residual(lens, first, shape)?;
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
        let lens = [y.len(), form.a.len(), form.b.len(), yd.len(), t.len()];
        check::quad_tangent(lens, first, shape)?;
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
        let lens = [y.len(), form.a.len(), form.b.len(), r.len(), g.len()];
        check::quad_seeds(lens, first, shape)?;
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

    // ---- factorizations ----------------------------------------------------------------------
    fn thin_svd<T: Real>(
        &self,
        a: &Vec<T>,
        la: Lay,
        u: &mut Vec<f64>,
        s: &mut Vec<f64>,
        vt: &mut Vec<f64>,
    ) -> Result<()> {
        check::thin_svd(a.len(), la, u.len(), s.len(), vt.len())?;
        let k = la.rows.min(la.cols);
        thin_svd_ref(
            a,
            la,
            &mut u[..la.rows * k],
            &mut s[..k],
            &mut vt[..k * la.cols],
        )
    }

    fn sym_eig(
        &self,
        a: &Vec<f64>,
        n: usize,
        vals: &mut Vec<f64>,
        vecs: &mut Vec<f64>,
    ) -> Result<()> {
        check::sym_eig(a.len(), n, vals.len(), vecs.len())?;
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

    // ---- spectral steps of the KFAC and HIG inverses -----------------------------------------
    fn eig_fix(&self, vals: &mut Vec<f64>, n: usize, mode: EigFix) -> Result<EigFixed> {
        check::eig_fix(vals.len(), n)?;
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
        check::kron_recip(sa.len(), na, sb.len(), nb, d.len())?;
        kron_recip_ref(&sa[..na], &sb[..nb], &mut d[..na * nb]);
        Ok(())
    }

    fn add_diag<T: Real>(&self, x: &mut Vec<T>, n: usize, v: T) -> Result<()> {
        check::square("add_diag", x.len(), n)?;
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
        check::spectral_scale(s.len(), c.len(), k)?;
        Ok(spectral_scale_ref(&s[..k], &mut c[..k], kappa, tau))
    }

    fn bias_border<T: Real>(&self, a: &mut Vec<T>, n: usize, corner: T) -> Result<()> {
        check::square("bias_border", a.len(), n)?;
        bias_border_ref(&mut a[..n * n], n, corner);
        Ok(())
    }
}

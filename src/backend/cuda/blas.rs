//! Dense products on the GPU with cuBLAS (column-major) for the backend's row-major views.
//!
//! A row-major `r × c` view with leading dimension `ld` is, read column-major, its
//! transpose (`c × r`, same `ld`). So `C = op(A) op(B)` (row-major) is computed as the
//! column-major `Cᵀ = op(B)ᵀ op(A)ᵀ`: cuBLAS gets B's memory as its first operand with
//! B's transpose flag, A's as its second, and m, n swapped. `C = α AᵀA + βC` is the
//! column-major `X Xᵀ` with X = Aᵀ (A's memory, no transpose): cuBLAS syrk writes the
//! column-major lower triangle (the row-major upper one), and the `symmetrize` kernel
//! mirrors it.
//!
//! Checked on a GPU by tests/gpu.rs (forward Laplacian, KFAC factors against the CPU);
//! the argument checks are the CPU backend's.

use super::ops::{self, Dev};
use super::Cuda;
use crate::backend::check::{gemm_dims, syrk_dim};
use crate::backend::{Lay, Tr};
use crate::error::{Error, Result};
use crate::scalar::{DType, Real};
use cudarc::cublas::sys::{self, cublasFillMode_t, cublasOperation_t};

fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::Shape(format!("{what} = {v} exceeds cuBLAS's 32-bit dimensions")))
}

fn op(t: Tr) -> cublasOperation_t {
    match t {
        Tr::N => cublasOperation_t::CUBLAS_OP_N,
        Tr::T => cublasOperation_t::CUBLAS_OP_T,
    }
}

/// Leading dimension cuBLAS accepts for a row-major view (one row may have any `ld`).
fn ld(l: Lay) -> usize {
    l.ld.max(l.cols).max(1)
}

fn check(what: &str, s: sys::cublasStatus_t) -> Result<()> {
    if s == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("{what}: {s:?}")))
    }
}

/// `C = alpha op(A) op(B) + beta C` (see `Backend::gemm`).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<T: Real>(
    cu: &Cuda,
    alpha: T,
    a: Dev<T>,
    la: Lay,
    ta: Tr,
    b: Dev<T>,
    lb: Lay,
    tb: Tr,
    beta: T,
    c: Dev<T>,
    lc: Lay,
) -> Result<()> {
    let (m, n, ka) = gemm_dims([a.len, b.len, c.len], la, ta, lb, tb, lc)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ka == 0 {
        // C = beta C; cuBLAS is not asked about empty inner dimensions
        return scale_view(cu, beta, c, lc);
    }
    let (mm, nn, kk) = (int("n", n)?, int("m", m)?, int("k", ka)?);
    let (lda, ldb, ldc) = (
        int("ldb", ld(lb))?,
        int("lda", ld(la))?,
        int("ldc", ld(lc))?,
    );
    let guard = cu.blas()?;
    let handle = guard.handle();
    cu.bind()?;
    let (pa, pb, pc) = (b.at(lb.off), a.at(la.off), c.at(lc.off));
    // SAFETY: the three views were checked to lie inside their buffers
    // (check::gemm_dims), and cuBLAS reads/writes exactly those views given these
    // dimensions and leading dimensions; alpha and beta are host scalars of the matching precision (the handle
    // is in host pointer mode); the handle is bound to the backend's stream.
    let s = unsafe {
        match T::DTYPE {
            DType::F64 => sys::cublasDgemm_v2(
                *handle,
                op(tb),
                op(ta),
                mm,
                nn,
                kk,
                &alpha.to_f64(),
                pa as *const f64,
                lda,
                pb as *const f64,
                ldb,
                &beta.to_f64(),
                pc as *mut f64,
                ldc,
            ),
            DType::F32 => sys::cublasSgemm_v2(
                *handle,
                op(tb),
                op(ta),
                mm,
                nn,
                kk,
                &(alpha.to_f64() as f32),
                pa as *const f32,
                lda,
                pb as *const f32,
                ldb,
                &(beta.to_f64() as f32),
                pc as *mut f32,
                ldc,
            ),
        }
    };
    check("cuBLAS gemm", s)
}

/// `C = alpha AᵀA + beta C`, both triangles (see `Backend::syrk`).
pub(super) fn syrk<T: Real>(
    cu: &Cuda,
    alpha: T,
    a: Dev<T>,
    la: Lay,
    beta: T,
    c: Dev<T>,
    lc: Lay,
) -> Result<()> {
    let n = syrk_dim([a.len, c.len], la, lc)?;
    if n == 0 {
        return Ok(());
    }
    if la.rows == 0 {
        scale_view(cu, beta, c, lc)?;
        return ops::symmetrize(cu, c, lc, false);
    }
    let (nn, kk) = (int("n", n)?, int("k", la.rows)?);
    let (lda, ldc) = (int("lda", ld(la))?, int("ldc", ld(lc))?);
    let guard = cu.blas()?;
    let handle = guard.handle();
    cu.bind()?;
    let (pa, pc) = (a.at(la.off), c.at(lc.off));
    let lower = cublasFillMode_t::CUBLAS_FILL_MODE_LOWER;
    let no = cublasOperation_t::CUBLAS_OP_N;
    // SAFETY: as for gemm: A (la.rows × n) and C (n × n) lie inside their buffers and
    // cuBLAS touches exactly those views; host scalars in the matching precision.
    let s = unsafe {
        match T::DTYPE {
            DType::F64 => sys::cublasDsyrk_v2(
                *handle,
                lower,
                no,
                nn,
                kk,
                &alpha.to_f64(),
                pa as *const f64,
                lda,
                &beta.to_f64(),
                pc as *mut f64,
                ldc,
            ),
            DType::F32 => sys::cublasSsyrk_v2(
                *handle,
                lower,
                no,
                nn,
                kk,
                &(alpha.to_f64() as f32),
                pa as *const f32,
                lda,
                &(beta.to_f64() as f32),
                pc as *mut f32,
                ldc,
            ),
        }
    };
    drop(guard);
    check("cuBLAS syrk", s)?;
    // column-major lower = row-major upper: mirror it onto the row-major lower triangle
    ops::symmetrize(cu, c, lc, false)
}

/// `C = beta C` on a view, row by row (`beta = 0` writes zeros, ignoring NaN).
fn scale_view<T: Real>(cu: &Cuda, beta: T, c: Dev<T>, lc: Lay) -> Result<()> {
    for r in 0..lc.rows {
        let row = lc.off + r * lc.ld;
        if beta == T::ZERO {
            ops::fill(cu, c, row, lc.cols, T::ZERO)?;
        } else if beta != T::ONE {
            // SAFETY: the row lies inside the checked view of c.
            let d = unsafe { Dev::<T>::new(c.at(row), lc.cols) };
            ops::scale(cu, beta, d)?;
        }
    }
    Ok(())
}

//! The thin SVD on the GPU with cuSOLVER's `gesvd` (f64), for `Backend::thin_svd`.
//!
//! `gesvd` wants a column-major matrix with at least as many rows as columns. The input
//! view is packed into f64 by the `pack_f64` kernel (which also finds non-finite
//! entries):
//! - tall A (m ≥ n): packed transposed, i.e. column-major A; gesvd gives column-major
//!   U (m × n) and Vᵀ (n × n), which `pack_f64` transposes into the row-major outputs;
//! - wide A (m < n): packed as is, i.e. column-major Aᵀ (n × m) = U' Σ V'ᵀ, so A = V' Σ U'ᵀ:
//!   gesvd's column-major V'ᵀ (m × m) is already the row-major U of A and its column-major
//!   U' (n × m) the row-major Vᵀ, written straight into the outputs.
//!
//! The symmetric eigendecomposition of `Backend::sym_eig` (the KFAC inverse) is `syevd`
//! (f64): the row-major lower triangle it is asked to read is the column-major upper one,
//! and the column-major eigenvectors it writes over its input are, read row-major, the
//! rows of `Uᵀ` the trait promises. The input is first copied by `pack_f64`, which also
//! finds non-finite entries.
//!
//! Checked on a GPU by tests/gpu.rs (one HIG step and one KFAC* step against the CPU).

use super::launch::Launcher;
use super::ops::{self, Dev};
use super::Cuda;
use crate::backend::{check, Lay};
use crate::error::{Error, Result};
use crate::scalar::Real;
use cudarc::cusolver::sys;

fn check(what: &str, s: sys::cusolverStatus_t) -> Result<()> {
    if s == sys::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("cuSOLVER {what}: {s:?}")))
    }
}

pub(super) fn thin_svd<T: Real>(
    cu: &Cuda,
    a: Dev<T>,
    la: Lay,
    u: Dev<f64>,
    s: Dev<f64>,
    vt: Dev<f64>,
) -> Result<()> {
    check::thin_svd(a.len, la, u.len, s.len, vt.len)?;
    let (m, n) = (la.rows, la.cols);
    let k = m.min(n);
    if k == 0 {
        return Ok(());
    }
    let tall = m >= n;
    // column-major problem: rows ≥ cols
    let (rows, cols) = if tall { (m, n) } else { (n, m) };
    let int = |what: &str, v: usize| {
        i32::try_from(v).map_err(|_| {
            Error::Shape(format!(
                "thin_svd: {what} = {v} exceeds cuSOLVER's 32-bit sizes"
            ))
        })
    };
    let (ri, ci) = (int("rows", rows)?, int("cols", cols)?);

    // pack (and look for non-finite entries, like the CPU twin)
    let packed = cu.alloc_raw::<f64>(m * n)?;
    if let Some((i, j, v)) = ops::pack_f64(cu, a, la, tall, packed.dev())? {
        return Err(Error::NonFinite(format!(
            "entry ({i}, {j}) of the {m}×{n} matrix handed to the SVD is {v}"
        )));
    }
    // outputs of gesvd: column-major U_c (rows × cols) and VT_c (cols × cols)
    let (uc, vtc) = if tall {
        (
            Some(cu.alloc_raw::<f64>(rows * cols)?),
            Some(cu.alloc_raw::<f64>(cols * cols)?),
        )
    } else {
        (None, None)
    };
    let (uc_ptr, vtc_ptr) = match (&uc, &vtc) {
        (Some(x), Some(y)) => (x.dev().ptr, y.dev().ptr),
        // wide: U' goes to the Vᵀ output, V'ᵀ to the U output (see the module comment)
        _ => (vt.ptr, u.ptr),
    };
    let handle = cu.solver()?;
    cu.bind()?;
    let mut lwork = 0i32;
    // SAFETY: the handle is valid and bound to the backend's stream; lwork is a valid
    // out-pointer.
    check("gesvd_bufferSize", unsafe {
        sys::cusolverDnDgesvd_bufferSize(handle.cu(), ri, ci, &mut lwork)
    })?;
    let work = cu.alloc_raw::<f64>(lwork.max(1) as usize)?;
    let rwork = cu.alloc_raw::<f64>(cols)?;
    let info = cu.alloc_raw::<f64>(1)?; // 8 bytes; holds the i32 devInfo
    let jobs = b'S' as std::ffi::c_schar;
    // SAFETY: packed holds rows·cols f64 (lda = rows); s holds at least k = cols values;
    // the U output holds rows·cols (ldu = rows) and the Vᵀ output cols·cols (ldvt = cols)
    // f64: the temporaries were allocated so, and in the wide case u has m·k = cols·cols
    // and vt has k·n = cols·rows elements (checked above); work/rwork/info are sized as
    // cuSOLVER asks. All on the backend's stream.
    check("gesvd", unsafe {
        sys::cusolverDnDgesvd(
            handle.cu(),
            jobs,
            jobs,
            ri,
            ci,
            packed.dev().ptr as *mut f64,
            ri,
            s.ptr as *mut f64,
            uc_ptr as *mut f64,
            ri,
            vtc_ptr as *mut f64,
            ci,
            work.dev().ptr as *mut f64,
            lwork,
            rwork.dev().ptr as *mut f64,
            info.dev().ptr as *mut i32,
        )
    })?;
    drop(handle);
    let mut dev_info = [0u8; 4];
    // SAFETY: info holds 8 bytes, 4 are read.
    unsafe { cu.read(info.dev().ptr, &mut dev_info)? };
    let dev_info = i32::from_le_bytes(dev_info);
    if dev_info > 0 {
        return Err(Error::Numerical(format!(
            "SVD of a {m}×{n} matrix: {dev_info} superdiagonals did not converge"
        )));
    } else if dev_info < 0 {
        return Err(Error::Numerical(format!(
            "SVD of a {m}×{n} matrix: gesvd parameter {} invalid",
            -dev_info
        )));
    }
    if let (Some(uc), Some(vtc)) = (uc, vtc) {
        // column-major U_c (m × n) read as the row-major n × m view, transposed
        ops::pack_f64(cu, uc.dev(), Lay::dense(cols, rows), true, u)?;
        ops::pack_f64(cu, vtc.dev(), Lay::dense(cols, cols), true, vt)?;
    }
    Ok(())
}

pub(super) fn sym_eig(
    cu: &Cuda,
    a: Dev<f64>,
    n: usize,
    vals: Dev<f64>,
    vecs: Dev<f64>,
) -> Result<()> {
    check::sym_eig(a.len, n, vals.len, vecs.len)?;
    if n == 0 {
        return Ok(());
    }
    let ni = i32::try_from(n)
        .map_err(|_| Error::Shape(format!("sym_eig: n = {n} exceeds cuSOLVER's 32-bit sizes")))?;
    if let Some((i, j, v)) = ops::pack_f64(cu, a, Lay::dense(n, n), false, vecs)? {
        return Err(Error::NonFinite(format!(
            "sym_eig: entry ({i}, {j}) is {v}"
        )));
    }
    let jobz = sys::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR;
    let uplo = sys::cublasFillMode_t::CUBLAS_FILL_MODE_UPPER;
    let handle = cu.solver()?;
    cu.bind()?;
    let mut lwork = 0i32;
    // SAFETY: the handle is valid and bound to the backend's stream; vecs holds n·n f64
    // (lda = n) and vals n (checked above); lwork is a valid out-pointer.
    check("syevd_bufferSize", unsafe {
        sys::cusolverDnDsyevd_bufferSize(
            handle.cu(),
            jobz,
            uplo,
            ni,
            vecs.ptr as *const f64,
            ni,
            vals.ptr as *const f64,
            &mut lwork,
        )
    })?;
    let work = cu.alloc_raw::<f64>(lwork.max(1) as usize)?;
    // 8 bytes; holds the i32 devInfo
    let info = cu.alloc_raw::<f64>(1)?;
    // SAFETY: as above; work holds lwork f64 as cuSOLVER asked, info one i32. All on the
    // backend's stream.
    check("syevd", unsafe {
        sys::cusolverDnDsyevd(
            handle.cu(),
            jobz,
            uplo,
            ni,
            vecs.ptr as *mut f64,
            ni,
            vals.ptr as *mut f64,
            work.dev().ptr as *mut f64,
            lwork,
            info.dev().ptr as *mut i32,
        )
    })?;
    drop(handle);
    let mut dev_info = [0u8; 4];
    // SAFETY: info holds 8 bytes, 4 are read.
    unsafe { cu.read(info.dev().ptr, &mut dev_info)? };
    match i32::from_le_bytes(dev_info) {
        0 => Ok(()),
        k if k > 0 => Err(Error::Numerical(format!(
            "eigendecomposition of a {n}×{n} matrix: {k} off-diagonal elements did not converge"
        ))),
        k => Err(Error::Numerical(format!(
            "eigendecomposition of a {n}×{n} matrix: syevd parameter {} invalid",
            -k
        ))),
    }
}

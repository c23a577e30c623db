//! The CUDA backend (issue 5): the [`Backend`] trait on one NVIDIA GPU through cudarc,
//! which loads the driver, NVRTC, cuBLAS and cuSOLVER at run time, so this crate builds
//! and runs without CUDA installed.
//!
//! - `kernels`: the embedded kernel modules (PTX from nvcc, or source for NVRTC);
//! - `device`: probing the driver and opening the GPU (context, stream, modules);
//! - `launch`, `ops`: launch geometry and kernel plans (`ops/` mirrors `kernels/*.cu`),
//!   shared with the CPU emulation (`backend::emu`) that tests every kernel in `cargo test`;
//! - `host`: the `Backend` methods that are one kernel plan each, written once for this
//!   backend and the emulation (`kernel_ops!`); this file holds the rest (buffers, memory
//!   account, transfers, cuBLAS and cuSOLVER calls);
//! - `blas`, `solver`: cuBLAS gemm/syrk and cuSOLVER gesvd/syevd;
//! - `nvml`: GPU inventory (name, driver, memory);
//! - `loader`: finding the libraries (`KFAC_PINN_CUDA_LIB_DIR`, CUDA 12 and 13 names) and
//!   reporting the files loaded; `cache`: NVRTC results on disk.
//!
//! Buffers are device allocations of their element type; the backend counts the bytes
//! it holds (current and peak, [`Cuda::memory`]). Every operation runs on one stream, in
//! order; host reads synchronise it. Missing libraries and out-of-memory are
//! [`Error::Device`], never panics. Checked on a GPU by tests/gpu.rs; without one, the
//! kernels, the geometry and the plans are checked through the emulation
//! (tests/kernels.rs).

pub mod blas;
pub mod cache;
pub mod device;
pub(crate) mod host;
pub mod kernels;
pub mod launch;
pub mod loader;
pub mod nvml;
pub mod nvrtc;
pub mod ops;
pub mod solver;

use self::device::{drv, no_panic};
use self::host::{kernel_ops, KernelHost, NoScope};
use self::launch::{DeviceLimits, Geometry, KArg, Launcher};
use self::ops::Dev;
use super::{check, AdamStep, Backend, EigFix, EigFixed, JacRows, JetShape, Lay, QuadForm, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;
use cudarc::cublas::CudaBlas;
use cudarc::cusolver::safe::DnHandle;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Bytes of device memory held by a backend's buffers.
#[derive(Debug, Default)]
struct MemStats {
    current: AtomicUsize,
    peak: AtomicUsize,
}

/// Device memory in use by this backend's buffers, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUse {
    pub current: usize,
    pub peak: usize,
}

/// A device buffer of `len` elements of `T`.
pub struct CudaBuf<T> {
    mem: Option<CudaSlice<u8>>,
    ptr: u64,
    len: usize,
    stats: Arc<MemStats>,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for CudaBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuf({} elements at {:#x})", self.len, self.ptr)
    }
}

impl<T> Drop for CudaBuf<T> {
    fn drop(&mut self) {
        let bytes = self.len * std::mem::size_of::<T>();
        self.stats.current.fetch_sub(bytes, Ordering::Relaxed);
        // the CudaSlice frees the memory in stream order
        drop(self.mem.take());
    }
}

impl<T: Real> CudaBuf<T> {
    /// The buffer as the kernel plans see it.
    fn dev(&self) -> Dev<T> {
        // SAFETY: ptr addresses len elements of T, allocated by this buffer and freed only
        // when it drops; the borrow of self outlives the op this Dev is handed to, and the
        // backend methods take `&mut` for every buffer an op writes.
        unsafe { Dev::new(self.ptr, self.len) }
    }
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    limits: DeviceLimits,
    blas: Mutex<CudaBlas>,
    solver: OnceLock<std::result::Result<Mutex<DnHandle>, String>>,
    mem: Arc<MemStats>,
    /// Scratch area of the reductions (f64 words, so 8-byte aligned).
    scratch: Mutex<Option<CudaBuf<f64>>>,
    name: String,
    cc: (i32, i32),
    kernels_from: String,
}

/// The CUDA backend: one GPU, one stream. Cheap to clone (clones share the device).
#[derive(Clone)]
pub struct Cuda {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cuda({})", self.name())
    }
}

impl Cuda {
    /// Open GPU `ordinal` (as numbered by the driver, after `CUDA_VISIBLE_DEVICES`).
    /// Fails with [`Error::Device`] when the driver, the GPU, cuBLAS or the kernels are
    /// unavailable.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        let o = device::open(ordinal)?;
        loader::ensure(loader::Lib::Cublas)?;
        let blas = no_panic("cuBLAS", || {
            CudaBlas::new(o.stream.clone()).map_err(|e| Error::Device(format!("cuBLAS: {e}")))
        })?;
        Ok(Cuda {
            inner: Arc::new(Inner {
                ctx: o.ctx,
                stream: o.stream,
                funcs: o.funcs,
                limits: o.limits,
                blas: Mutex::new(blas),
                solver: OnceLock::new(),
                mem: Arc::new(MemStats::default()),
                scratch: Mutex::new(None),
                name: o.name,
                cc: o.cc,
                kernels_from: o.kernels_from,
            }),
        })
    }

    /// Device memory held by this backend's buffers (current and peak).
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            current: self.inner.mem.current.load(Ordering::Relaxed),
            peak: self.inner.mem.peak.load(Ordering::Relaxed),
        }
    }

    /// Free and total device memory as the driver reports it.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.inner
            .ctx
            .mem_get_info()
            .map_err(|e| drv("cuMemGetInfo", e))
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.cc
    }

    /// How the kernels were loaded (embedded PTX, or NVRTC and why).
    pub fn kernels_from(&self) -> &str {
        &self.inner.kernels_from
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .stream
            .synchronize()
            .map_err(|e| drv("synchronize", e))
    }

    fn bind(&self) -> Result<()> {
        self.inner
            .ctx
            .bind_to_thread()
            .map_err(|e| drv("binding the CUDA context", e))
    }

    fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.inner.stream.cu_stream()
    }

    fn blas(&self) -> Result<MutexGuard<'_, CudaBlas>> {
        let g = self
            .inner
            .blas
            .lock()
            .map_err(|_| Error::Device("cuBLAS handle lock poisoned".into()))?;
        Ok(g)
    }

    /// The cuSOLVER handle, created on first use (only the SVD needs it, so a missing
    /// libcusolver fails the SVD, not the backend).
    fn solver(&self) -> Result<MutexGuard<'_, DnHandle>> {
        let h = self.inner.solver.get_or_init(|| {
            loader::ensure(loader::Lib::Cusolver).map_err(|e| match e {
                Error::Device(m) => m,
                e => e.to_string(),
            })?;
            no_panic("cuSOLVER", || {
                DnHandle::new(self.inner.stream.clone())
                    .map_err(|e| Error::Device(format!("cuSOLVER: {e}")))
            })
            .map(Mutex::new)
            .map_err(|e| e.to_string())
        });
        match h {
            Ok(m) => m
                .lock()
                .map_err(|_| Error::Device("cuSOLVER handle lock poisoned".into())),
            Err(e) => Err(Error::Device(e.clone())),
        }
    }

    /// An uninitialised buffer of `len` elements.
    fn alloc_raw<T: Real>(&self, len: usize) -> Result<CudaBuf<T>> {
        assert_eq!(T::DTYPE.size(), std::mem::size_of::<T>());
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::Device(format!(
                "a buffer of {len} elements overflows the address space"
            ))
        })?;
        let mem = if bytes == 0 {
            None
        } else {
            self.bind()?;
            // SAFETY: the memory is uninitialised; every caller writes it before reading
            // (upload, or alloc's memset).
            match unsafe { self.inner.stream.alloc::<u8>(bytes) } {
                Ok(m) => Some(m),
                Err(e) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                    let m = self.memory();
                    return Err(Error::Device(format!(
                        "out of GPU memory: could not allocate {} ({bytes} bytes) on {}; this run holds {} (peak {})",
                        human(bytes),
                        self.inner.name,
                        human(m.current),
                        human(m.peak)
                    )));
                }
                Err(e) => return Err(drv(&format!("allocating {bytes} bytes"), e)),
            }
        };
        let ptr = match &mem {
            Some(m) => m.device_ptr(&self.inner.stream).0,
            None => 0,
        };
        let st = &self.inner.mem;
        let now = st.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        st.peak.fetch_max(now, Ordering::Relaxed);
        Ok(CudaBuf {
            mem,
            ptr,
            len,
            stats: Arc::clone(st),
            _t: PhantomData,
        })
    }

    fn check_dtype<T: Real>() {
        assert_eq!(T::DTYPE.size(), std::mem::size_of::<T>());
    }
}

fn human(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// The bytes of a slice of f32/f64.
fn bytes_of<T: Real>(v: &[T]) -> &[u8] {
    Cuda::check_dtype::<T>();
    // SAFETY: T is f32 or f64 (size checked): plain data without padding, so its memory is
    // len·size bytes that may be read as u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_of_mut<T: Real>(v: &mut [T]) -> &mut [u8] {
    Cuda::check_dtype::<T>();
    // SAFETY: as above; every bit pattern is a valid f32/f64, so writing bytes is sound.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

impl Launcher for Cuda {
    fn limits(&self) -> DeviceLimits {
        self.inner.limits
    }

    unsafe fn launch(&self, kernel: &str, geom: Geometry, args: &[KArg]) -> Result<()> {
        let f = self
            .inner
            .funcs
            .get(kernel)
            .ok_or_else(|| Error::Device(format!("no kernel named {kernel}")))?;
        let mut b = self.inner.stream.launch_builder(f);
        for a in args {
            match a {
                KArg::Ptr(p) => b.arg(p),
                KArg::I64(v) => b.arg(v),
                KArg::I32(v) => b.arg(v),
                KArg::F32(v) => b.arg(v),
                KArg::F64(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (geom.grid[0], geom.grid[1], geom.grid[2]),
            block_dim: (geom.block[0], geom.block[1], geom.block[2]),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature (the same plans pass
        // the emulation's signature check in tests/kernels.rs) and the pointers are valid
        // for the kernel's accesses by this function's contract.
        unsafe { b.launch(cfg) }.map_err(|e| drv(&format!("launching {kernel}"), e))?;
        Ok(())
    }

    fn with_scratch(&self, bytes: usize, f: &mut dyn FnMut(u64) -> Result<()>) -> Result<()> {
        let mut s = self
            .inner
            .scratch
            .lock()
            .map_err(|_| Error::Device("scratch lock poisoned".into()))?;
        let words = bytes.div_ceil(8).max(1);
        if s.as_ref().is_none_or(|b| b.len < words) {
            // the old area is freed in stream order, after the work that used it
            *s = None;
            *s = Some(self.alloc_raw::<f64>(words.next_power_of_two())?);
        }
        let ptr = s.as_ref().map(|b| b.ptr).unwrap_or(0);
        f(ptr)
    }

    unsafe fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: src addresses dst.len() device bytes (contract); dst is a host buffer of
        // that size, filled before the synchronize below returns.
        unsafe { result::memcpy_dtoh_async(dst, src, self.cu_stream()) }
            .map_err(|e| drv("copying to the host", e))?;
        self.synchronize()
    }

    unsafe fn write(&self, src: &[u8], dst: u64) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: dst addresses src.len() device bytes (contract); a copy from pageable
        // host memory returns once src has been staged, so src may be reused afterwards.
        unsafe { result::memcpy_htod_async(dst, src, self.cu_stream()) }
            .map_err(|e| drv("copying to the device", e))
    }
}

impl KernelHost for Cuda {
    type Scope = NoScope;
    fn op_scope(&self) -> NoScope {
        NoScope
    }
    fn dev<T: Real>(&self, buf: &CudaBuf<T>) -> Dev<T> {
        buf.dev()
    }
    fn dev_mut<T: Real>(&self, buf: &mut CudaBuf<T>) -> Dev<T> {
        buf.dev()
    }
}

impl Backend for Cuda {
    type Buf<T: Real> = CudaBuf<T>;

    fn name(&self) -> String {
        let m = self.memory();
        format!(
            "cuda:0 {} (sm_{}{}, {} SMs, kernels: {}, {} held)",
            self.inner.name,
            self.inner.cc.0,
            self.inner.cc.1,
            self.inner.limits.sm_count,
            self.inner.kernels_from,
            human(m.current)
        )
    }
    fn synchronize(&self) -> Result<()> {
        Cuda::synchronize(self)
    }
    fn memory_use(&self) -> Option<(usize, usize)> {
        let m = self.memory();
        Some((m.current, m.peak))
    }
    fn reset_peak_memory(&self) {
        let cur = self.inner.mem.current.load(Ordering::Relaxed);
        self.inner.mem.peak.store(cur, Ordering::Relaxed);
    }

    // ---- memory and transfers ----------------------------------------------------------------
    fn alloc<T: Real>(&self, len: usize) -> Result<CudaBuf<T>> {
        let b = self.alloc_raw::<T>(len)?;
        if let Some(m) = &b.mem {
            // SAFETY: ptr addresses m.len() bytes of this fresh allocation.
            unsafe { result::memset_d8_async(b.ptr, 0, m.len(), self.cu_stream()) }
                .map_err(|e| drv("zeroing a buffer", e))?;
        }
        Ok(b)
    }
    fn upload<T: Real>(&self, host: &[T]) -> Result<CudaBuf<T>> {
        let b = self.alloc_raw::<T>(host.len())?;
        // SAFETY: b holds exactly host.len() elements.
        unsafe { self.write(bytes_of(host), b.ptr)? };
        Ok(b)
    }
    fn download<T: Real>(&self, buf: &CudaBuf<T>) -> Result<Vec<T>> {
        let mut v = vec![T::ZERO; buf.len];
        self.download_range(buf, 0, &mut v)?;
        Ok(v)
    }
    fn download_range<T: Real>(&self, buf: &CudaBuf<T>, off: usize, dst: &mut [T]) -> Result<()> {
        check::range("download_range", buf.len, off, dst.len())?;
        // SAFETY: the range lies inside buf (check::range above).
        unsafe { self.read(buf.dev().at(off), bytes_of_mut(dst)) }
    }
    fn upload_range<T: Real>(&self, src: &[T], buf: &mut CudaBuf<T>, off: usize) -> Result<()> {
        check::range("upload_range", buf.len, off, src.len())?;
        // SAFETY: the range lies inside buf (check::range above), which is exclusively
        // borrowed.
        unsafe { self.write(bytes_of(src), buf.dev().at(off)) }
    }
    fn len<T: Real>(&self, buf: &CudaBuf<T>) -> usize {
        buf.len
    }
    fn copy<T: Real>(
        &self,
        src: &CudaBuf<T>,
        src_off: usize,
        dst: &mut CudaBuf<T>,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        check::copy(src.len, src_off, dst.len, dst_off, len)?;
        if len == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: both ranges lie inside their buffers (check::copy above); src and dst are
        // distinct buffers (shared and exclusive borrows), so the ranges do not overlap.
        unsafe {
            result::memcpy_dtod_async(
                dst.dev().at(dst_off),
                src.dev().at(src_off),
                len * std::mem::size_of::<T>(),
                self.cu_stream(),
            )
        }
        .map_err(|e| drv("device copy", e))
    }

    // ---- dense products: cuBLAS --------------------------------------------------------------
    fn gemm<T: Real>(
        &self,
        alpha: T,
        a: &CudaBuf<T>,
        la: Lay,
        ta: Tr,
        b: &CudaBuf<T>,
        lb: Lay,
        tb: Tr,
        beta: T,
        c: &mut CudaBuf<T>,
        lc: Lay,
    ) -> Result<()> {
        blas::gemm(
            self,
            alpha,
            a.dev(),
            la,
            ta,
            b.dev(),
            lb,
            tb,
            beta,
            c.dev(),
            lc,
        )
    }
    fn syrk<T: Real>(
        &self,
        alpha: T,
        a: &CudaBuf<T>,
        la: Lay,
        beta: T,
        c: &mut CudaBuf<T>,
        lc: Lay,
    ) -> Result<()> {
        blas::syrk(self, alpha, a.dev(), la, beta, c.dev(), lc)
    }

    // ---- factorizations: cuSOLVER ------------------------------------------------------------
    fn thin_svd<T: Real>(
        &self,
        a: &CudaBuf<T>,
        la: Lay,
        u: &mut CudaBuf<f64>,
        s: &mut CudaBuf<f64>,
        vt: &mut CudaBuf<f64>,
    ) -> Result<()> {
        solver::thin_svd(self, a.dev(), la, u.dev(), s.dev(), vt.dev())
    }
    fn sym_eig(
        &self,
        a: &CudaBuf<f64>,
        n: usize,
        vals: &mut CudaBuf<f64>,
        vecs: &mut CudaBuf<f64>,
    ) -> Result<()> {
        solver::sym_eig(self, a.dev(), n, vals.dev(), vecs.dev())
    }

    // ---- every op that is one kernel plan ----------------------------------------------------
    kernel_ops!();
}

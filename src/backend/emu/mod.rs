//! The CUDA kernels run on the CPU: a [`Backend`] whose elementwise and reduction ops
//! launch the unchanged `kernels/*.cu` (compiled as C++ by build.rs against
//! `kernels/emu/cuda_emu.h`) through the same kernel plans ([`super::cuda::ops`]) and
//! launch geometry ([`super::cuda::launch`]) as the CUDA backend; those ops are written
//! once for both backends (`cuda::host::kernel_ops!`), from this file's `KernelHost`
//! impl. Dense products, the SVD, the eigendecomposition and memory ops are the CPU
//! backend's (cuBLAS and cuSOLVER are not emulated).
//!
//! Every launch is checked for what a GPU would punish but a sequential emulation could
//! let pass (kernels/emu/runtime.cpp does the work): each op names the buffers it hands
//! to its kernels (the [`Dev`]s it makes after entering its `OpScope`, and the scratch
//! area), and the launch runs on copies of them placed against PROT_NONE guard pages,
//! under more than one thread schedule ([`Schedules`]); results that differ between
//! schedules (a race) and accesses outside the buffers (a fault, caught and reported with
//! the kernel's name, the thread and the offset) fail the launch, as does a write to a
//! buffer the op passes read-only.
//!
//! For tests: tests/kernels.rs compares every op of this backend with the CPU backend,
//! and runs the forward Laplacian and optimizer steps on it; tests/emu_checks.rs plants
//! races and out-of-bounds accesses (kernels/emu/selftest.cu) and checks they are caught.
//! It is slow (every GPU thread is a fiber) and not meant for training.

use super::cpu::Cpu;
use super::cuda::host::{kernel_ops, KernelHost};
use super::cuda::launch::{DeviceLimits, Geometry, KArg, Launcher};
use super::cuda::ops::{self, Dev};
use super::{AdamStep, Backend, EigFix, EigFixed, JacRows, JetShape, Lay, QuadForm, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One launch argument as the C++ side reads it (`emu::Arg` in kernels/emu/registry.h).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct EmuArg {
    tag: u32,
    pad: u32,
    bits: u64,
}

impl From<KArg> for EmuArg {
    fn from(a: KArg) -> Self {
        let (tag, bits) = match a {
            KArg::Ptr(p) => (0, p),
            KArg::I64(v) => (1, v as u64),
            KArg::I32(v) => (2, v as u32 as u64),
            KArg::F32(v) => (3, v.to_bits() as u64),
            KArg::F64(v) => (4, v.to_bits()),
        };
        EmuArg { tag, pad: 0, bits }
    }
}

/// One buffer a launch may touch, as the C++ side reads it (`EmuRegion` in
/// kernels/emu/runtime.cpp).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Host address of the first byte.
    pub base: u64,
    /// Length in bytes.
    pub bytes: u64,
    /// 1 when the launch may write it, 0 when it must come back unchanged.
    pub writable: u32,
    pad: u32,
}

impl Region {
    /// `bytes` bytes at `base`, written by the launch or only read.
    pub fn new(base: u64, bytes: usize, writable: bool) -> Region {
        Region {
            base,
            bytes: bytes as u64,
            writable: u32::from(writable),
            pad: 0,
        }
    }
}

thread_local! {
    /// The buffers of the op running on this thread: every [`Dev`] the [`Emu`] made for
    /// it and the scratch area while held. Ops run and launch on the calling thread, so a
    /// thread-local list reaches `Launcher::launch` without changing the shared plans.
    static REGIONS: RefCell<Vec<Region>> = const { RefCell::new(Vec::new()) };
}

/// The extent of one op ([`KernelHost::op_scope`]): starts with an empty buffer list,
/// restores the previous list when dropped (so a raw launch after an op sees no stale
/// buffers).
pub(crate) struct OpScope(Vec<Region>);

impl OpScope {
    fn enter() -> OpScope {
        OpScope(REGIONS.with(|r| std::mem::take(&mut *r.borrow_mut())))
    }
}

impl Drop for OpScope {
    fn drop(&mut self) {
        let prev = std::mem::take(&mut self.0);
        REGIONS.with(|r| *r.borrow_mut() = prev);
    }
}

/// Add a buffer to the running op's list.
fn register(region: Region) {
    REGIONS.with(|r| {
        let mut r = r.borrow_mut();
        // the same buffer twice (an in-place op): one region, writable if either is
        match r
            .iter_mut()
            .find(|x| x.base == region.base && x.bytes == region.bytes)
        {
            Some(x) => x.writable |= region.writable,
            None => r.push(region),
        }
    });
}

/// An input buffer as the kernel plans see it (only read by the op it is handed to);
/// registered with the running op as read-only.
fn input<T: Real>(v: &[T]) -> Dev<T> {
    register(Region::new(
        v.as_ptr() as u64,
        std::mem::size_of_val(v),
        false,
    ));
    // SAFETY: the slice is valid for v.len() elements and stays borrowed across the op
    // call it is made for; ops only read their input buffers (the launch checks it).
    unsafe { Dev::new(v.as_ptr() as u64, v.len()) }
}

/// An output buffer as the kernel plans see it; registered as writable.
fn output<T: Real>(v: &mut [T]) -> Dev<T> {
    register(Region::new(
        v.as_ptr() as u64,
        std::mem::size_of_val(v),
        true,
    ));
    // SAFETY: as for `input`, and the exclusive borrow makes the kernel's writes the only
    // accesses while the op runs.
    unsafe { Dev::new(v.as_mut_ptr() as u64, v.len()) }
}

/// Which thread schedules a launch runs under. A schedule is the order in which the
/// emulation runs the ready threads of a block between barriers (re-drawn every round)
/// and the blocks of the grid: 0 is index order, 1 reverse order, every `s >= 2` a random
/// order seeded by `s`. The first schedule's results are kept; every other must match
/// them (bitwise, or within a tolerance for launches that used float atomics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedules {
    /// Index order only: one run per launch, no race detection (guard pages still apply).
    IndexOrder,
    /// Index order plus one more schedule per launch, by turns: reverse order on even
    /// launches of this [`Emu`], a random order with a new seed on odd ones. Twice the
    /// cost of one run; a kernel launched more than once meets both kinds. The default.
    Rotate,
    /// These schedules on every launch.
    List(Vec<u64>),
}

/// Name of the environment variable that picks the [`Schedules`] of [`Emu::default`]:
/// `rotate` (the default), `index`, or a count `n` in 1..=64 for schedules `0..n` on every
/// launch (e.g. `4`: index order, reverse, and random orders 2 and 3).
pub const SCHEDULES_ENV: &str = "KFAC_EMU_SCHEDULES";

impl Schedules {
    /// Parse a [`SCHEDULES_ENV`] value.
    pub fn parse(s: &str) -> Result<Schedules> {
        match s.trim() {
            "rotate" | "" => Ok(Schedules::Rotate),
            "index" => Ok(Schedules::IndexOrder),
            t => match t.parse::<u64>() {
                Ok(n) if (1..=64).contains(&n) => Ok(Schedules::List((0..n).collect())),
                _ => Err(Error::invalid(
                    SCHEDULES_ENV,
                    format!("{s:?}"),
                    "`rotate`, `index` or a number of schedules from 1 to 64",
                )),
            },
        }
    }

    /// The schedules of launch number `n` of an [`Emu`].
    fn for_launch(&self, n: u64) -> Vec<u64> {
        match self {
            Schedules::IndexOrder => vec![0],
            Schedules::Rotate if n.is_multiple_of(2) => vec![0, 1],
            Schedules::Rotate => vec![0, 2 + n / 2],
            Schedules::List(v) if v.is_empty() => vec![0],
            Schedules::List(v) => v.clone(),
        }
    }
}

#[cfg(kfac_emu)]
mod ffi {
    use super::{EmuArg, Region};
    use std::os::raw::{c_char, c_int};
    extern "C" {
        pub fn kfac_emu_launch_checked(
            name: *const c_char,
            grid: *const u32,
            block: *const u32,
            shared_bytes: usize,
            args: *const EmuArg,
            nargs: usize,
            regions: *const Region,
            nregions: usize,
            schedules: *const u64,
            nschedules: usize,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn kfac_emu_kernel_count() -> usize;
        pub fn kfac_emu_kernel_name(i: usize) -> *const c_char;
    }
}

/// Whether build.rs could compile the emulation (it needs a C++20 compiler).
pub fn available() -> bool {
    cfg!(kfac_emu)
}

/// Names of the kernels registered in the emulation (every `extern "C" __global__` entry
/// point of kernels/*.cu).
pub fn kernel_names() -> Vec<String> {
    #[cfg(kfac_emu)]
    {
        // SAFETY: the registry is a static array; names are NUL-terminated literals and
        // indices below the count are in bounds.
        unsafe {
            (0..ffi::kfac_emu_kernel_count())
                .map(|i| {
                    std::ffi::CStr::from_ptr(ffi::kfac_emu_kernel_name(i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
    }
    #[cfg(not(kfac_emu))]
    Vec::new()
}

/// The emulated device. Cheap to clone (clones share the scratch area and the launch
/// count that [`Schedules::Rotate`] takes turns by).
#[derive(Clone, Debug)]
pub struct Emu {
    limits: DeviceLimits,
    scratch: Arc<Mutex<Vec<u64>>>,
    /// The schedules, or the bad [`SCHEDULES_ENV`] value (reported by every launch).
    schedules: std::result::Result<Schedules, String>,
    launches: Arc<AtomicU64>,
}

impl Default for Emu {
    /// Two "multiprocessors": grids are capped at 16 blocks of 256 threads, so inputs of
    /// a few thousand elements already exercise the kernels' grid-stride loops. The
    /// schedules come from [`SCHEDULES_ENV`] ([`Schedules::Rotate`] when unset).
    fn default() -> Self {
        Emu::with_limits(DeviceLimits { sm_count: 2 })
    }
}

impl Emu {
    /// An emulated device with `limits`; schedules from [`SCHEDULES_ENV`].
    pub fn with_limits(limits: DeviceLimits) -> Self {
        let schedules = match std::env::var(SCHEDULES_ENV) {
            Ok(v) => Schedules::parse(&v).map_err(|e| e.to_string()),
            Err(_) => Ok(Schedules::Rotate),
        };
        Emu {
            limits,
            scratch: Arc::new(Mutex::new(Vec::new())),
            schedules,
            launches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same device running every launch under `schedules` (overrides the environment).
    pub fn with_schedules(mut self, schedules: Schedules) -> Self {
        self.schedules = Ok(schedules);
        self
    }

    /// Launch `kernel` with every check: on guarded copies of `buffers` (each pointer
    /// argument must lie in one of them, and buffers that arguments point into must not
    /// overlap), under this device's schedules. With no buffers the kernel runs once in
    /// place, in index order, with only the checks that need no copies (shared memory
    /// poisoned per block, faults in kernel code reported).
    ///
    /// # Safety
    /// Each buffer must be valid for reads of its bytes (and writes, when writable) and
    /// not accessed otherwise during the call; the kernel's accesses outside the buffers
    /// are caught, but with no buffers, pointer arguments must satisfy
    /// [`Launcher::launch`]'s contract.
    pub unsafe fn launch_on(
        &self,
        kernel: &str,
        geom: Geometry,
        args: &[KArg],
        buffers: &[Region],
    ) -> Result<()> {
        let schedules = match &self.schedules {
            Ok(s) => s.for_launch(self.launches.fetch_add(1, Ordering::Relaxed)),
            Err(msg) => return Err(Error::Device(msg.clone())),
        };
        #[cfg(kfac_emu)]
        {
            let name = std::ffi::CString::new(kernel)
                .map_err(|_| Error::Device(format!("bad kernel name {kernel:?}")))?;
            let args: Vec<EmuArg> = args.iter().map(|&a| a.into()).collect();
            let mut err = vec![0u8; 2048];
            // SAFETY: name is NUL-terminated, grid/block point to 3 u32 each, args,
            // buffers and schedules to as many entries as passed, err to err.len() bytes;
            // the buffers are valid by this function's contract, and the runtime only
            // touches them through copies (reads) and the final write-back of the
            // writable ones.
            let rc = unsafe {
                ffi::kfac_emu_launch_checked(
                    name.as_ptr(),
                    geom.grid.as_ptr(),
                    geom.block.as_ptr(),
                    0,
                    args.as_ptr(),
                    args.len(),
                    buffers.as_ptr(),
                    buffers.len(),
                    schedules.as_ptr(),
                    schedules.len(),
                    err.as_mut_ptr().cast(),
                    err.len(),
                )
            };
            if rc != 0 {
                let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
                return Err(Error::Device(format!(
                    "emulated launch failed: {}",
                    String::from_utf8_lossy(&err[..end])
                )));
            }
            Ok(())
        }
        #[cfg(not(kfac_emu))]
        {
            let _ = (geom, args, buffers, schedules);
            Err(Error::Device(format!(
                "cannot run {kernel}: the CUDA CPU emulation was not built (build.rs found no C++20 compiler)"
            )))
        }
    }

    /// The `symmetrize` kernel (used after cuBLAS syrk on the GPU): mirror one triangle
    /// of the square view `lc` of `c` onto the other.
    pub fn symmetrize<T: Real>(&self, c: &mut [T], lc: Lay, from_lower: bool) -> Result<()> {
        let _op = OpScope::enter();
        ops::symmetrize(self, output(c), lc, from_lower)
    }

    /// The `pack_f64` kernel (used before cuSOLVER on the GPU): the view `la` of `src` as
    /// a dense f64 matrix, row-major or transposed; returns the first non-finite entry.
    pub fn pack_f64<T: Real>(
        &self,
        src: &[T],
        la: Lay,
        transpose: bool,
        dst: &mut [f64],
    ) -> Result<Option<(usize, usize, f64)>> {
        let _op = OpScope::enter();
        ops::pack_f64(self, input(src), la, transpose, output(dst))
    }
}

impl Launcher for Emu {
    fn limits(&self) -> DeviceLimits {
        self.limits
    }

    /// A checked launch ([`Emu::launch_on`]) on the buffers of the running op; outside
    /// an op (a raw launch), once in place, in index order.
    unsafe fn launch(&self, kernel: &str, geom: Geometry, args: &[KArg]) -> Result<()> {
        let regions = REGIONS.with(|r| r.borrow().clone());
        // SAFETY: the regions are the op's live buffers (borrowed by the Backend method
        // that registered them, which is still running) and the held scratch area; the
        // pointer arguments satisfy this function's contract.
        unsafe { self.launch_on(kernel, geom, args, &regions) }
    }

    fn with_scratch(&self, bytes: usize, f: &mut dyn FnMut(u64) -> Result<()>) -> Result<()> {
        let mut s = self
            .scratch
            .lock()
            .map_err(|_| Error::Device("emulation scratch lock poisoned".into()))?;
        let words = bytes.div_ceil(8).max(1);
        if s.len() < words {
            s.resize(words, 0);
        }
        // exactly the bytes asked for: a kernel reaching past them faults
        let base = s.as_mut_ptr() as u64;
        let saved = REGIONS.with(|r| r.borrow().len());
        REGIONS.with(|r| r.borrow_mut().push(Region::new(base, bytes, true)));
        let res = f(base);
        REGIONS.with(|r| r.borrow_mut().truncate(saved));
        res
    }

    unsafe fn read(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        // SAFETY: src addresses dst.len() readable bytes (this function's contract), and
        // host memory cannot overlap the exclusive borrow dst.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn write(&self, src: &[u8], dst: u64) -> Result<()> {
        // SAFETY: dst addresses src.len() writable bytes (this function's contract).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }
}

impl KernelHost for Emu {
    type Scope = OpScope;
    fn op_scope(&self) -> OpScope {
        OpScope::enter()
    }
    fn dev<T: Real>(&self, buf: &Vec<T>) -> Dev<T> {
        input(buf)
    }
    fn dev_mut<T: Real>(&self, buf: &mut Vec<T>) -> Dev<T> {
        output(buf)
    }
}

impl Backend for Emu {
    type Buf<T: Real> = Vec<T>;

    fn name(&self) -> String {
        format!(
            "cuda-emulation (CPU, {} simulated SMs)",
            self.limits.sm_count
        )
    }

    // ---- memory and transfers: the CPU backend's ---------------------------------------------
    fn alloc<T: Real>(&self, len: usize) -> Result<Vec<T>> {
        Cpu.alloc(len)
    }
    fn upload<T: Real>(&self, host: &[T]) -> Result<Vec<T>> {
        Cpu.upload(host)
    }
    fn download<T: Real>(&self, buf: &Vec<T>) -> Result<Vec<T>> {
        Cpu.download(buf)
    }
    fn download_range<T: Real>(&self, buf: &Vec<T>, off: usize, dst: &mut [T]) -> Result<()> {
        Cpu.download_range(buf, off, dst)
    }
    fn upload_range<T: Real>(&self, src: &[T], buf: &mut Vec<T>, off: usize) -> Result<()> {
        Cpu.upload_range(src, buf, off)
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
        Cpu.copy(src, src_off, dst, dst_off, len)
    }

    // ---- dense products and factorizations: the CPU backend's --------------------------------
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
        Cpu.gemm(alpha, a, la, ta, b, lb, tb, beta, c, lc)
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
        Cpu.syrk(alpha, a, la, beta, c, lc)
    }
    fn thin_svd<T: Real>(
        &self,
        a: &Vec<T>,
        la: Lay,
        u: &mut Vec<f64>,
        s: &mut Vec<f64>,
        vt: &mut Vec<f64>,
    ) -> Result<()> {
        Cpu.thin_svd(a, la, u, s, vt)
    }
    fn sym_eig(
        &self,
        a: &Vec<f64>,
        n: usize,
        vals: &mut Vec<f64>,
        vecs: &mut Vec<f64>,
    ) -> Result<()> {
        Cpu.sym_eig(a, n, vals, vecs)
    }

    // ---- every op that is one kernel plan ----------------------------------------------------
    kernel_ops!();
}

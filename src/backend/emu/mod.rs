//! The CUDA kernels run on the CPU: a [`Backend`] whose elementwise and reduction ops
//! launch the unchanged `kernels/*.cu` (compiled as C++ by build.rs against
//! `kernels/emu/cuda_emu.h`) through the same kernel plans ([`super::cuda::ops`]) and
//! launch geometry ([`super::cuda::launch`]) as the CUDA backend. Dense products, the SVD
//! and memory ops are the CPU backend's (cuBLAS and cuSOLVER are not emulated).
//!
//! For tests: tests/kernels.rs compares every op of this backend with the CPU backend,
//! and runs the forward Laplacian and optimizer steps on it. It is slow (every GPU thread
//! is a fiber) and not meant for training.

use super::cpu::Cpu;
use super::cuda::launch::{DeviceLimits, Geometry, KArg, Launcher};
use super::cuda::ops::{self, Dev};
use super::{AdamStep, Backend, EigFix, EigFixed, JacRows, JetShape, Lay, QuadForm, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;
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

#[cfg(kfac_emu)]
mod ffi {
    use super::EmuArg;
    use std::os::raw::{c_char, c_int};
    extern "C" {
        pub fn kfac_emu_launch(
            name: *const c_char,
            grid: *const u32,
            block: *const u32,
            shared_bytes: usize,
            args: *const EmuArg,
            nargs: usize,
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

/// The emulated device. Cheap to clone (clones share the scratch area).
#[derive(Clone, Debug)]
pub struct Emu {
    limits: DeviceLimits,
    scratch: Arc<Mutex<Vec<u64>>>,
}

impl Default for Emu {
    /// Two "multiprocessors": grids are capped at 16 blocks of 256 threads, so inputs of
    /// a few thousand elements already exercise the kernels' grid-stride loops.
    fn default() -> Self {
        Emu::with_limits(DeviceLimits { sm_count: 2 })
    }
}

impl Emu {
    pub fn with_limits(limits: DeviceLimits) -> Self {
        Emu {
            limits,
            scratch: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// An input buffer as the kernel plans see it (only read by the op it is handed to).
    fn dev<T: Real>(&self, v: &[T]) -> Dev<T> {
        // SAFETY: the slice is valid for v.len() elements and stays borrowed across the
        // op call it is made for; ops only read their input buffers.
        unsafe { Dev::new(v.as_ptr() as u64, v.len()) }
    }
    /// An output buffer as the kernel plans see it.
    fn dev_mut<T: Real>(&self, v: &mut [T]) -> Dev<T> {
        // SAFETY: as above, and the exclusive borrow makes the kernel's writes the only
        // accesses while the op runs.
        unsafe { Dev::new(v.as_mut_ptr() as u64, v.len()) }
    }

    /// The `symmetrize` kernel (used after cuBLAS syrk on the GPU): mirror one triangle
    /// of the square view `lc` of `c` onto the other.
    pub fn symmetrize<T: Real>(&self, c: &mut [T], lc: Lay, from_lower: bool) -> Result<()> {
        ops::symmetrize(self, self.dev_mut(c), lc, from_lower)
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
        ops::pack_f64(self, self.dev(src), la, transpose, self.dev_mut(dst))
    }
}

impl Launcher for Emu {
    fn limits(&self) -> DeviceLimits {
        self.limits
    }

    unsafe fn launch(&self, kernel: &str, geom: Geometry, args: &[KArg]) -> Result<()> {
        #[cfg(kfac_emu)]
        {
            let name = std::ffi::CString::new(kernel)
                .map_err(|_| Error::Device(format!("bad kernel name {kernel:?}")))?;
            let args: Vec<EmuArg> = args.iter().map(|&a| a.into()).collect();
            let mut err = vec![0u8; 1024];
            // SAFETY: name is NUL-terminated, grid/block point to 3 u32 each, args to
            // args.len() entries, err to err.len() bytes; the memory the kernel touches is
            // valid by this function's contract.
            let rc = unsafe {
                ffi::kfac_emu_launch(
                    name.as_ptr(),
                    geom.grid.as_ptr(),
                    geom.block.as_ptr(),
                    0,
                    args.as_ptr(),
                    args.len(),
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
            let _ = (geom, args);
            Err(Error::Device(format!(
                "cannot run {kernel}: the CUDA CPU emulation was not built (build.rs found no C++20 compiler)"
            )))
        }
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
        f(s.as_mut_ptr() as u64)
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

impl Backend for Emu {
    type Buf<T: Real> = Vec<T>;

    fn name(&self) -> String {
        format!(
            "cuda-emulation (CPU, {} simulated SMs)",
            self.limits.sm_count
        )
    }

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
    fn fill<T: Real>(&self, buf: &mut Vec<T>, off: usize, len: usize, value: T) -> Result<()> {
        ops::fill(self, self.dev_mut(buf), off, len, value)
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

    fn axpby<T: Real>(&self, alpha: T, x: &Vec<T>, beta: T, y: &mut Vec<T>) -> Result<()> {
        ops::axpby(self, alpha, self.dev(x), beta, self.dev_mut(y))
    }
    fn scale<T: Real>(&self, alpha: T, x: &mut Vec<T>) -> Result<()> {
        ops::scale(self, alpha, self.dev_mut(x))
    }
    fn dot<T: Real>(&self, x: &Vec<T>, y: &Vec<T>) -> Result<f64> {
        ops::dot(self, self.dev(x), self.dev(y))
    }
    fn sq_dist<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &Vec<T>,
        y_off: usize,
        len: usize,
    ) -> Result<f64> {
        ops::sq_dist(self, self.dev(x), x_off, self.dev(y), y_off, len)
    }
    fn adam_update<T: Real>(
        &self,
        p: &mut Vec<T>,
        g: &Vec<T>,
        m: &mut Vec<T>,
        v: &mut Vec<T>,
        step: AdamStep,
    ) -> Result<()> {
        ops::adam(
            self,
            self.dev_mut(p),
            self.dev(g),
            self.dev_mut(m),
            self.dev_mut(v),
            step,
        )
    }

    fn add_bias<T: Real>(
        &self,
        x: &mut Vec<T>,
        rows: usize,
        cols: usize,
        bias: &Vec<T>,
        bias_off: usize,
    ) -> Result<()> {
        ops::add_bias(self, self.dev_mut(x), rows, cols, self.dev(bias), bias_off)
    }
    fn jet_input<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        dirs: &Vec<T>,
        out: &mut Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_input(
            self,
            self.dev(x),
            x_off,
            self.dev(dirs),
            self.dev_mut(out),
            shape,
        )
    }
    fn jet_broadcast_dirs<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_broadcast_dirs(self, self.dev_mut(z), self.dev(wv), shape)
    }
    fn jet_input_tanh<T: Real>(
        &self,
        z: &mut Vec<T>,
        wv: &Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_input_tanh(self, self.dev_mut(z), self.dev(wv), self.dev(coef), shape)
    }
    fn jet_tanh<T: Real>(
        &self,
        z: &Vec<T>,
        a: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_tanh(self, self.dev(z), self.dev_mut(a), self.dev(coef), shape)
    }
    fn jet_tanh_inplace<T: Real>(
        &self,
        z: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        let d = self.dev_mut(z);
        ops::jet_tanh(self, d, d, self.dev(coef), shape)
    }
    fn jet_tanh_backward<T: Real>(
        &self,
        z: &Vec<T>,
        a: &Vec<T>,
        g: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_tanh_backward(
            self,
            self.dev(z),
            self.dev(a),
            self.dev_mut(g),
            self.dev(coef),
            shape,
        )
    }
    fn scale_jet_rows<T: Real>(&self, g: &mut Vec<T>, w: &Vec<T>, shape: JetShape) -> Result<()> {
        ops::scale_jet_rows(self, self.dev_mut(g), self.dev(w), shape)
    }
    fn scale_jet_rows_to<T: Real>(
        &self,
        src: &Vec<T>,
        w: &Vec<T>,
        shape: JetShape,
        dst: &mut Vec<T>,
    ) -> Result<()> {
        ops::scale_jet_rows_to(self, self.dev(src), self.dev(w), shape, self.dev_mut(dst))
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
        ops::col_sum(
            self,
            alpha,
            self.dev(x),
            x_off,
            rows,
            cols,
            beta,
            self.dev_mut(out),
            out_off,
        )
    }
    fn ad_tanh_rev<T: Real>(&self, a: &Vec<T>, g: &mut Vec<T>, shape: JetShape) -> Result<()> {
        ops::ad_tanh_rev(self, self.dev(a), self.dev_mut(g), shape)
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
        ops::jac_rows(
            self,
            self.dev(a),
            self.dev(g),
            shape,
            fan_out,
            self.dev(scale),
            self.dev_mut(out),
            at,
        )
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
    fn jet_tanh_tangent<T: Real>(
        &self,
        z: &Vec<T>,
        a: &Vec<T>,
        t: &mut Vec<T>,
        coef: &Vec<T>,
        shape: JetShape,
    ) -> Result<()> {
        ops::jet_tanh_tangent(
            self,
            self.dev(z),
            self.dev(a),
            self.dev_mut(t),
            self.dev(coef),
            shape,
        )
    }
    fn mul<T: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &mut Vec<T>,
        y_off: usize,
        len: usize,
    ) -> Result<()> {
        ops::mul(self, self.dev(x), x_off, self.dev_mut(y), y_off, len)
    }
    fn quad_residual<T: Real>(
        &self,
        y: &Vec<T>,
        form: &QuadForm<'_, Self, T>,
        first: usize,
        shape: JetShape,
        r: &mut Vec<T>,
    ) -> Result<()> {
        let (a, b, d) = (self.dev(form.a), self.dev(form.b), self.dev(form.d));
        ops::quad_residual(self, self.dev(y), a, b, d, first, shape, self.dev_mut(r))
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
        let (a, b, yd) = (self.dev(form.a), self.dev(form.b), self.dev(yd));
        ops::quad_tangent(self, self.dev(y), a, b, yd, first, shape, self.dev_mut(t))
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
        let (a, b, r) = (self.dev(form.a), self.dev(form.b), self.dev(r));
        let g = self.dev_mut(g);
        ops::quad_seeds(self, self.dev(y), a, b, r, [alpha, beta], first, shape, g)
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
        ops::row_dot(
            self,
            self.dev(x),
            lx,
            self.dev(y),
            ly,
            beta,
            self.dev_mut(out),
            out_off,
        )
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
    fn eig_fix(&self, vals: &mut Vec<f64>, n: usize, mode: EigFix) -> Result<EigFixed> {
        ops::eig_fix(self, self.dev_mut(vals), n, mode)
    }
    fn kron_recip<T: Real>(
        &self,
        sa: &Vec<f64>,
        na: usize,
        sb: &Vec<f64>,
        nb: usize,
        d: &mut Vec<T>,
    ) -> Result<()> {
        ops::kron_recip(self, self.dev(sa), na, self.dev(sb), nb, self.dev_mut(d))
    }
    fn cast<T: Real, U: Real>(
        &self,
        x: &Vec<T>,
        x_off: usize,
        y: &mut Vec<U>,
        y_off: usize,
        len: usize,
    ) -> Result<()> {
        ops::cast(self, self.dev(x), x_off, self.dev_mut(y), y_off, len)
    }
    fn add_diag<T: Real>(&self, x: &mut Vec<T>, n: usize, v: T) -> Result<()> {
        ops::add_diag(self, self.dev_mut(x), n, v)
    }
    fn spectral_scale(
        &self,
        s: &Vec<f64>,
        c: &mut Vec<f64>,
        k: usize,
        kappa: f64,
        tau: f64,
    ) -> Result<(usize, f64)> {
        ops::spectral_scale(self, self.dev(s), self.dev_mut(c), k, kappa, tau)
    }
    fn bias_border<T: Real>(&self, a: &mut Vec<T>, n: usize, corner: T) -> Result<()> {
        ops::bias_border(self, self.dev_mut(a), n, corner)
    }
}

//! The kernel modules of `kernels/*.cu`, embedded by build.rs: one constant per module
//! (`JET`, `REDUCE`, ...) with its entry points, its source (local headers inlined, for
//! NVRTC) and, when nvcc was found at build time, its PTX for [`PTX_ARCH`].
//!
//! Checked by tests/kernels.rs (every entry point is registered in the CPU emulation and
//! the sources compile with NVRTC when libnvrtc is present) and by kernels/check.sh in CI.

/// One kernel module (`kernels/NAME.cu`).
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// File stem, e.g. `"jet"`.
    pub name: &'static str,
    /// `extern "C" __global__` entry points, e.g. `"jet_tanh_f32"`.
    pub entries: &'static [&'static str],
    /// CUDA C++ source with `#include "common.cuh"` inlined.
    pub source: &'static str,
    /// PTX from nvcc at build time, if nvcc was found.
    pub ptx: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

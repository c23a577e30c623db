//! Kernel plans: for every elementwise and reduction op of the [`crate::backend::Backend`]
//! trait, the argument checks (`backend::check`, the CPU backend's, with the same
//! messages), the launch geometry and the argument list of its kernel(s). Generic over the
//! [`Launcher`], so the CUDA backend and the CPU emulation (`backend::emu`) run exactly
//! this code; only the launch itself differs. One file per kernel file, like the CPU
//! twins in `backend/cpu/`: `vector` (kernels/vector.cu), `reduce` (reduce.cu), `jet`
//! (jet.cu), `residual` (the `quad_*` kernels of jet.cu), `autodiff` (autodiff.cu),
//! `linalg` (linalg.cu); this file holds the buffer handle [`Dev`] and the launch helper.
//!
//! Launch arguments are an untyped `&[KArg]`: the truth about a kernel's parameters is its
//! C signature, and a typed Rust descriptor per kernel would be a second hand-written copy
//! checked only against the plan beside it (generating one from the `.cu` signatures would
//! belong in build.rs). The check against the C signature instead runs on every launch of
//! every `cargo test`: the emulation's registry (kernels/emu/registry.h) compares the count
//! and kind (pointer, i64, i32, f32, f64) of the arguments with the kernel's real
//! signature, and tests/kernels.rs runs every plan.
//!
//! Checked by tests/kernels.rs: every op, run through the emulation, against the CPU
//! backend (f32 and f64, ragged and empty sizes, out-of-range arguments).

mod autodiff;
mod jet;
mod linalg;
mod reduce;
mod residual;
mod vector;

pub use self::autodiff::*;
pub use self::jet::*;
pub use self::linalg::*;
pub use self::reduce::*;
pub use self::residual::*;
pub use self::vector::*;

use super::launch::{kernel_name, Geometry, KArg, Launcher};
use crate::error::Result;
use crate::scalar::Real;
use std::marker::PhantomData;

/// A buffer as the kernels see it: a base address and a length in elements.
#[derive(Debug)]
pub struct Dev<T> {
    pub ptr: u64,
    pub len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Dev<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Dev<T> {}

impl<T: Real> Dev<T> {
    /// # Safety
    /// `ptr` must address `len` elements of `T` (device memory for the CUDA backend, host
    /// memory for the emulation) that stay allocated, and are not accessed otherwise,
    /// while the ops this `Dev` is handed to run; the ops only touch elements below `len`.
    pub unsafe fn new(ptr: u64, len: usize) -> Self {
        Dev {
            ptr,
            len,
            _t: PhantomData,
        }
    }
    /// Address of element `off`.
    pub fn at(self, off: usize) -> u64 {
        self.ptr + (off * std::mem::size_of::<T>()) as u64
    }
    /// The buffer as a pointer argument.
    fn arg(self) -> KArg {
        KArg::Ptr(self.ptr)
    }
    /// Element `off` as a pointer argument.
    fn arg_at(self, off: usize) -> KArg {
        KArg::Ptr(self.at(off))
    }
}

/// A grid-stride 1-D launch of `{base}_{T}` over `n` items (none when `n == 0`).
fn launch_linear<L: Launcher + ?Sized, T: Real>(
    l: &L,
    base: &str,
    n: usize,
    args: &[KArg],
) -> Result<()> {
    match Geometry::linear(n, l.limits()) {
        // SAFETY: every caller first ran its op's `backend::check` function, which checks
        // the extents its kernel touches against the `Dev` lengths, and `Dev::new`'s
        // contract makes those elements valid.
        Some(g) => unsafe { l.launch(&kernel_name::<T>(base), g, args) },
        None => Ok(()),
    }
}

//! Threading policy of the CPU backend: products and jet kernels use rayon, except inside
//! a chunk-parallel sweep ([`sequential`]), where each worker keeps its operations on its
//! own thread; small products stay on one thread.
//!
//! Checked by the unit test below and by the sweep tests in `tests/gradient.rs`.

use faer::Par;
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread: rayon's fork/join costs
/// more than it saves on small matrices.
pub(super) const PAR_GEMM_MIN_MACS: usize = 1 << 18;
/// Samples per rayon task in the jet kernels.
pub(super) const SAMPLES_PER_TASK: usize = 16;

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

pub(super) fn is_sequential() -> bool {
    SEQUENTIAL.with(|s| s.get())
}

pub(super) fn par_for(macs: usize) -> Par {
    if macs >= PAR_GEMM_MIN_MACS && rayon::current_num_threads() > 1 && !is_sequential() {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// A raw pointer that rayon tasks may share. Each task writes a disjoint set of
/// indices (the jet rows of its own samples), which is what makes the sharing sound.
#[derive(Clone, Copy)]
pub(super) struct SharedPtr<T>(pub(super) *mut T);

impl<T> SharedPtr<T> {
    /// Taking `self` makes closures capture the whole (Send + Sync) wrapper, not the
    /// raw-pointer field.
    pub(super) fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: only used by the jet kernels below, whose tasks touch disjoint sample rows.
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

/// Run `f(i0, i1)` over sample ranges in parallel.
pub(super) fn par_samples(n: usize, f: impl Fn(usize, usize) + Send + Sync) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    #[allow(unused_imports)]
    use crate::backend::*;

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
}

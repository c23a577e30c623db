//! AVX2 builds of the CPU kernels, picked at run time ([`with_avx2`]). Rust never fuses
//! `a * b + c`, so the wide and the baseline build give the same bits; `tests/kernels.rs`
//! runs whichever this CPU picks against the emulated CUDA kernels.

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
        pub(super) unsafe fn $wide<T: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide<T: Real>($($arg: $ty),*) {
                    // SAFETY: the caller's contract, passed on.
                    unsafe { $kernel($($arg),*) }
                }
                if super::simd::has_avx2() {
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
pub(super) fn has_avx2() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| {
        std::env::var("KFAC_PINN_SIMD").as_deref() != Ok("base")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

pub(super) use with_avx2;

//! The CUDA backend against the CPU backend on a real GPU: the device's library calls
//! (cuBLAS gemm/syrk, cuSOLVER gesvd and syevd), then the whole engine — forward
//! Laplacian, autodiff baseline, gradient, one step of every second-order optimizer in
//! f64 and f32 — and the memory account with recovery from an exhausted device. The
//! cases are the library's (`kfac_pinn::selfcheck`, also `kfac-pinn selfcheck --device
//! cuda`); each test runs one group and fails, listing the failed cases, unless every
//! case of the group passes.
//!
//! The GPU tests are ignored (`#[ignore = "needs an NVIDIA GPU"]`): run them with
//! `cargo test --release --test gpu -- --ignored` on a GPU machine, where a missing GPU is
//! then a failure. The one test that always runs checks that opening GPU 0 either works or
//! fails with a device error that says why; with `KFAC_PINN_REQUIRE_GPU=1` it fails
//! without a GPU.

use kfac_pinn::backend::cuda::Cuda;
use kfac_pinn::backend::Backend;
use kfac_pinn::selfcheck::{self, Reference, Status, Tolerances};
use kfac_pinn::Error;

fn require_gpu() -> bool {
    std::env::var("KFAC_PINN_REQUIRE_GPU").as_deref() == Ok("1")
}

/// GPU 0 (these tests only run with `--ignored`, where a missing GPU is a failure).
fn gpu() -> Cuda {
    Cuda::new(0).unwrap_or_else(|e| panic!("no usable GPU for the ignored GPU tests: {e}"))
}

/// Run `groups` on GPU 0; fail with the failed cases unless all pass, and unless the
/// groups made at least `min_pass` passing comparisons (so a group that silently ran
/// nothing fails too).
fn check(groups: &[&str], min_pass: usize) {
    let g = gpu();
    eprintln!("{} ({:?})", g.name(), g.kernels_from());
    let r = selfcheck::run(&g, Tolerances::CUDA, Reference::Ambient, groups, &mut |c| {
        eprintln!("{}", c.line())
    })
    .unwrap();
    assert!(
        r.all_passed(),
        "failed on {}:\n{}",
        r.summary.device,
        r.failures()
    );
    assert!(
        r.summary.passed >= min_pass,
        "{groups:?}: only {} cases passed, expected at least {min_pass}",
        r.summary.passed
    );
    assert_eq!(
        r.summary.not_applicable,
        0,
        "every case applies to a GPU: {:?}",
        r.cases
            .iter()
            .filter(|c| c.status == Status::Na)
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
}

/// Opening GPU 0 works (and the device computes), or fails with `Error::Device` saying
/// why — never a panic. With `KFAC_PINN_REQUIRE_GPU=1` the failure is a test failure.
#[test]
fn opening_the_gpu_works_or_says_why() {
    match std::panic::catch_unwind(|| Cuda::new(0)) {
        Err(_) => panic!("Cuda::new(0) panicked"),
        Ok(Ok(g)) => {
            let x = g.upload(&[1.0f64, 2.0, 3.0]).unwrap();
            assert_eq!(g.dot(&x, &x).unwrap(), 14.0);
        }
        Ok(Err(e)) => {
            assert!(
                !require_gpu(),
                "KFAC_PINN_REQUIRE_GPU=1 but the CUDA backend is unavailable: {e}"
            );
            let msg = e.to_string();
            assert!(
                matches!(e, Error::Device(_)) && msg.len() > "device error: ".len() + 10,
                "not a device error with a reason: {msg}"
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_forward_laplacian_matches_cpu() {
    // 4 nets (one with a set of two operators, J = 2) × 2 dtypes, and the autodiff
    // baseline
    check(&["forward", "autodiff"], 9);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_gradient_matches_cpu() {
    // loss and gradient of three problems, one with a three-operator jet
    check(&["gradient"], 6);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_optimizer_steps_match_cpu() {
    // parameters and state of 10 optimizers in f64 and f32
    check(&["steps"], 40);
}

/// gemm for all transposes with offsets and padded leading dimensions, and syrk with
/// α/β, against the CPU backend (f64 and f32).
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_gemm_and_syrk_match_cpu() {
    check(&["gemm"], 2 * (16 + 3));
}

/// The cuSOLVER SVD reconstructs tall and wide inputs with orthonormal factors and the
/// CPU's singular values; non-finite input is refused like on the CPU.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_thin_svd_matches_cpu() {
    check(&["svd"], 11);
}

/// The cuSOLVER eigendecomposition (syevd) gives the CPU's eigenvalues and eigenpairs of
/// the matrix whose lower triangle it reads; non-finite input is refused.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_sym_eig_matches_cpu() {
    check(&["eig"], 9);
}

/// Allocation accounting, a clear error when the memory is exhausted, a working backend
/// afterwards, and NVML listing the GPU.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_memory_is_accounted_and_exhaustion_is_an_error() {
    check(&["memory"], 5);
}

//! The CUDA backend against the CPU backend on a real GPU: the device's own kernels and
//! library calls (cuBLAS gemm/syrk, cuSOLVER gesvd and syevd), then the whole engine —
//! forward Laplacian, autodiff baseline, gradient, one KFAC step (Kronecker factors, their
//! inverse and momentum), one KFAC* step, one HIG step, one step of each ENGD variant and
//! of Hessian-free (tests/gpu_cases).
//!
//! Without a usable GPU every test prints why and passes as SKIPPED; with
//! `KFAC_PINN_REQUIRE_GPU=1` a missing GPU is a failure instead.

mod common;
mod gpu_cases;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::cuda::Cuda;
use kfac_pinn::backend::{Backend, Lay, Tr};
use kfac_pinn::Error;

/// GPU 0, or `None` after printing why the test is skipped.
fn gpu(test: &str) -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("KFAC_PINN_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("KFAC_PINN_REQUIRE_GPU=1 but the CUDA backend is unavailable: {e}");
            }
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

/// cuBLAS accumulates in a different order than faer; relative to the largest entry.
const TOL: gpu_cases::Tol = gpu_cases::Tol {
    f64: 1e-10,
    f32: 2e-4,
};

#[test]
fn gpu_forward_laplacian_matches_cpu() {
    let Some(g) = gpu("gpu_forward_laplacian_matches_cpu") else {
        return;
    };
    eprintln!("{}", g.name());
    gpu_cases::forward_laplacian(&g, TOL);
    gpu_cases::autodiff_laplacian(&g, TOL);
}

#[test]
fn gpu_gradient_matches_cpu() {
    let Some(g) = gpu("gpu_gradient_matches_cpu") else {
        return;
    };
    gpu_cases::gradient(&g, TOL);
}

#[test]
fn gpu_optimizer_steps_match_cpu() {
    let Some(g) = gpu("gpu_optimizer_steps_match_cpu") else {
        return;
    };
    gpu_cases::optimizer_steps(
        &g,
        gpu_cases::Tol {
            f64: 1e-7,
            f32: 1e-3,
        },
    );
}

/// gemm for all transposes with offsets and padded leading dimensions, and syrk with
/// α/β, against the CPU backend.
#[test]
fn gpu_gemm_and_syrk_match_cpu() {
    let Some(g) = gpu("gpu_gemm_and_syrk_match_cpu") else {
        return;
    };
    let a = uniform(&mut rng(1), 400, -1.0, 1.0);
    let b = uniform(&mut rng(2), 400, -1.0, 1.0);
    let (ga, gb) = (g.upload(&a).unwrap(), g.upload(&b).unwrap());
    for (ta, tb) in [
        (Tr::N, Tr::N),
        (Tr::T, Tr::N),
        (Tr::N, Tr::T),
        (Tr::T, Tr::T),
    ] {
        for (m, k, n) in [(5, 4, 3), (17, 9, 13), (1, 7, 1), (6, 0, 4)] {
            let la = match ta {
                Tr::N => Lay {
                    off: 3,
                    rows: m,
                    cols: k,
                    ld: k + 2,
                },
                Tr::T => Lay {
                    off: 3,
                    rows: k,
                    cols: m,
                    ld: m + 1,
                },
            };
            let lb = match tb {
                Tr::N => Lay {
                    off: 1,
                    rows: k,
                    cols: n,
                    ld: n,
                },
                Tr::T => Lay {
                    off: 1,
                    rows: n,
                    cols: k,
                    ld: k + 3,
                },
            };
            let lc = Lay {
                off: 2,
                rows: m,
                cols: n,
                ld: n + 1,
            };
            let c0 = uniform(&mut rng(3), 2 + m * (n + 1) + 1, -1.0, 1.0);
            let mut want = c0.clone();
            Cpu.gemm(1.5, &a, la, ta, &b, lb, tb, 0.5, &mut want, lc)
                .unwrap();
            let mut gc = g.upload(&c0).unwrap();
            g.gemm(1.5, &ga, la, ta, &gb, lb, tb, 0.5, &mut gc, lc)
                .unwrap();
            assert_close(
                &format!("gemm {ta:?}{tb:?} {m}x{k}x{n}"),
                &g.download(&gc).unwrap(),
                &want,
                1e-12,
                1e-12,
            );
        }
    }
    for (rows, n, beta) in [(30, 7, 0.0), (5, 12, 0.25), (0, 4, 2.0)] {
        let la = Lay {
            off: 4,
            rows,
            cols: n,
            ld: n + 2,
        };
        let lc = Lay::dense(n, n);
        let c0 = uniform(&mut rng(4), n * n, -1.0, 1.0);
        let mut want = c0.clone();
        Cpu.syrk(0.5, &a, la, beta, &mut want, lc).unwrap();
        let mut gc = g.upload(&c0).unwrap();
        g.syrk(0.5, &ga, la, beta, &mut gc, lc).unwrap();
        assert_close(
            &format!("syrk {rows}x{n} beta {beta}"),
            &g.download(&gc).unwrap(),
            &want,
            1e-12,
            1e-12,
        );
    }
}

/// The cuSOLVER SVD reconstructs tall and wide inputs with orthonormal factors and the
/// CPU's singular values; non-finite input is refused like on the CPU.
#[test]
fn gpu_thin_svd_matches_cpu() {
    let Some(g) = gpu("gpu_thin_svd_matches_cpu") else {
        return;
    };
    for (m, n) in [(9, 4), (4, 9), (6, 6), (1, 5), (5, 1)] {
        let a = uniform(&mut rng((m * n) as u64), m * n + 2, -1.0, 1.0);
        let la = Lay::at(2, m, n);
        let k = m.min(n);
        let (mut u, mut s, mut vt) = (vec![0.0; m * k], vec![0.0; k], vec![0.0; k * n]);
        Cpu.thin_svd(&a, la, &mut u, &mut s, &mut vt).unwrap();
        let ga = g.upload(&a).unwrap();
        let (mut gu, mut gs, mut gv) = (
            g.alloc::<f64>(m * k).unwrap(),
            g.alloc::<f64>(k).unwrap(),
            g.alloc::<f64>(k * n).unwrap(),
        );
        g.thin_svd(&ga, la, &mut gu, &mut gs, &mut gv).unwrap();
        let (u2, s2, v2) = (
            g.download(&gu).unwrap(),
            g.download(&gs).unwrap(),
            g.download(&gv).unwrap(),
        );
        assert_close(&format!("singular values {m}x{n}"), &s2, &s, 1e-12, 1e-13);
        // U diag(s) Vᵀ reproduces A
        let mut rec = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                rec[i * n + j] = (0..k).map(|c| u2[i * k + c] * s2[c] * v2[c * n + j]).sum();
            }
        }
        assert_close(&format!("U S Vt = A {m}x{n}"), &rec, &a[2..], 1e-12, 1e-12);
    }
    let mut a = vec![1.0; 12];
    a[7] = f64::NAN;
    let ga = g.upload(&a).unwrap();
    let (mut gu, mut gs, mut gv) = (
        g.alloc::<f64>(12).unwrap(),
        g.alloc::<f64>(3).unwrap(),
        g.alloc::<f64>(12).unwrap(),
    );
    let e = g
        .thin_svd(&ga, Lay::dense(3, 4), &mut gu, &mut gs, &mut gv)
        .unwrap_err();
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
}

/// The cuSOLVER eigendecomposition (syevd) gives the CPU's eigenvalues and eigenpairs of
/// the matrix whose lower triangle it reads; non-finite input is refused.
#[test]
fn gpu_sym_eig_matches_cpu() {
    let Some(g) = gpu("gpu_sym_eig_matches_cpu") else {
        return;
    };
    for n in [1usize, 5, 33, 129] {
        let x = uniform(&mut rng(n as u64 + 50), n * n, -1.0, 1.0);
        // symmetric in the lower triangle, garbage above it
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = x[i * n + j] + x[j * n + i];
                a[i * n + j] = v;
                a[j * n + i] = if i == j { v } else { 1e3 };
            }
        }
        let (mut vals, mut vecs) = (vec![0.0; n], vec![0.0; n * n]);
        Cpu.sym_eig(&a, n, &mut vals, &mut vecs).unwrap();
        let ga = g.upload(&a).unwrap();
        let (mut gv, mut gu) = (g.alloc::<f64>(n).unwrap(), g.alloc::<f64>(n * n).unwrap());
        g.sym_eig(&ga, n, &mut gv, &mut gu).unwrap();
        let (v2, u2) = (g.download(&gv).unwrap(), g.download(&gu).unwrap());
        assert_close(&format!("eigenvalues n={n}"), &v2, &vals, 1e-11, 1e-12);
        for k in 0..n {
            let u = &u2[k * n..(k + 1) * n];
            for i in 0..n {
                let au: f64 = (0..n)
                    .map(|j| if j <= i { a[i * n + j] } else { a[j * n + i] } * u[j])
                    .sum();
                assert!(
                    (au - v2[k] * u[i]).abs() < 1e-10 * (1.0 + v2[k].abs()),
                    "pair {k}"
                );
            }
        }
    }
    let mut a = vec![1.0; 9];
    a[4] = f64::INFINITY;
    let ga = g.upload(&a).unwrap();
    let (mut gv, mut gu) = (g.alloc::<f64>(3).unwrap(), g.alloc::<f64>(9).unwrap());
    let e = g.sym_eig(&ga, 3, &mut gv, &mut gu).unwrap_err();
    assert!(matches!(e, Error::NonFinite(_)), "{e}");
}

/// Allocation accounting and a clear error when the memory is exhausted.
#[test]
fn gpu_memory_is_accounted_and_exhaustion_is_an_error() {
    let Some(g) = gpu("gpu_memory_is_accounted_and_exhaustion_is_an_error") else {
        return;
    };
    let before = g.memory();
    let b = g.alloc::<f64>(1 << 20).unwrap();
    assert_eq!(g.memory().current, before.current + (8 << 20));
    assert!(g.memory().peak >= before.current + (8 << 20));
    drop(b);
    assert_eq!(g.memory().current, before.current);
    let (_, total) = g.mem_info().unwrap();
    let e = g.alloc::<f64>(2 * total / 8).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Device(_)) && msg.contains("out of GPU memory"),
        "{msg}"
    );
    // the backend is still usable afterwards
    let x = g.upload(&[1.0f64, 2.0, 3.0]).unwrap();
    assert_eq!(g.dot(&x, &x).unwrap(), 14.0);
    // NVML lists the GPU the backend opened
    let info = kfac_pinn::backend::cuda::nvml::device_info().unwrap();
    assert!(!info.gpus.is_empty());
}

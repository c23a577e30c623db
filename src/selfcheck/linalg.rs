//! The dense library calls of a backend (cuBLAS gemm/syrk, cuSOLVER gesvd and syevd on a
//! GPU) against the CPU backend and against their defining identities: gemm in all four
//! transpose cases with offsets and padded leading dimensions (including an empty inner
//! dimension), syrk with α and β, the thin SVD of tall, wide and square inputs (singular
//! values, `U diag(s) Vᵀ = A`), the symmetric eigendecomposition of a matrix whose upper
//! triangle is garbage (eigenvalues, `A u = λ u`), and the refusal of non-finite input.

use super::engine::uniform;
use super::Check;
use crate::backend::cpu::Cpu;
use crate::backend::{Backend, Lay, Tr};
use crate::error::{Error, Result};
use crate::scalar::{convert, Real};

/// gemm and syrk of one element type; `tol` bounds both the relative and the absolute
/// error (inputs are in [-1, 1] and k ≤ 30).
fn gemm_syrk_of<B: Backend, T: Real>(be: &B, ck: &mut Check, tol: f64) -> Result<()> {
    let dtype = T::DTYPE.name();
    let a: Vec<T> = convert(&uniform(1, 400, -1.0, 1.0));
    let b: Vec<T> = convert(&uniform(2, 400, -1.0, 1.0));
    let (ga, gb) = (be.upload(&a)?, be.upload(&b)?);
    let f64s = |v: &[T]| convert::<T, f64>(v);
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
            let c0: Vec<T> = convert(&uniform(3, 2 + m * (n + 1) + 1, -1.0, 1.0));
            let (alpha, beta) = (T::from_f64(1.5), T::from_f64(0.5));
            let want = ck.reference(|| -> Result<Vec<T>> {
                let mut want = c0.clone();
                Cpu.gemm(alpha, &a, la, ta, &b, lb, tb, beta, &mut want, lc)?;
                Ok(want)
            })?;
            let mut gc = be.upload(&c0)?;
            be.gemm(alpha, &ga, la, ta, &gb, lb, tb, beta, &mut gc, lc)?;
            ck.compare(
                format!("gemm {ta:?}{tb:?} {m}x{k}x{n}"),
                dtype,
                &f64s(&be.download(&gc)?),
                &f64s(&want),
                tol,
                tol,
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
        let c0: Vec<T> = convert(&uniform(4, n * n, -1.0, 1.0));
        let (alpha, beta_t) = (T::from_f64(0.5), T::from_f64(beta));
        let want = ck.reference(|| -> Result<Vec<T>> {
            let mut want = c0.clone();
            Cpu.syrk(alpha, &a, la, beta_t, &mut want, lc)?;
            Ok(want)
        })?;
        let mut gc = be.upload(&c0)?;
        be.syrk(alpha, &ga, la, beta_t, &mut gc, lc)?;
        ck.compare(
            format!("syrk {rows}x{n} beta {beta}"),
            dtype,
            &f64s(&be.download(&gc)?),
            &f64s(&want),
            tol,
            tol,
        );
    }
    Ok(())
}

/// gemm for all transposes with offsets and padded leading dimensions, and syrk with
/// α/β, in f64 and f32.
pub fn gemm_syrk<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    gemm_syrk_of::<B, f64>(be, ck, 1e-12)?;
    // f32: a few units in the last place of sums of ≤ 30 products of size ≤ 1
    gemm_syrk_of::<B, f32>(be, ck, 1e-5)
}

/// The thin SVD reconstructs tall and wide inputs with the CPU's singular values;
/// non-finite input is refused like on the CPU.
pub fn thin_svd<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    for (m, n) in [(9, 4), (4, 9), (6, 6), (1, 5), (5, 1)] {
        let a = uniform((m * n) as u64, m * n + 2, -1.0, 1.0);
        let la = Lay::at(2, m, n);
        let k = m.min(n);
        let s_want = ck.reference(|| -> Result<Vec<f64>> {
            let (mut u, mut s, mut vt) = (vec![0.0; m * k], vec![0.0; k], vec![0.0; k * n]);
            Cpu.thin_svd(&a, la, &mut u, &mut s, &mut vt)?;
            Ok(s)
        })?;
        let ga = be.upload(&a)?;
        let (mut gu, mut gs, mut gv) = (
            be.alloc::<f64>(m * k)?,
            be.alloc::<f64>(k)?,
            be.alloc::<f64>(k * n)?,
        );
        be.thin_svd(&ga, la, &mut gu, &mut gs, &mut gv)?;
        let (u2, s2, v2) = (be.download(&gu)?, be.download(&gs)?, be.download(&gv)?);
        ck.compare(
            format!("singular values {m}x{n}"),
            "f64",
            &s2,
            &s_want,
            1e-12,
            1e-13,
        );
        // U diag(s) Vᵀ reproduces A
        let mut rec = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                rec[i * n + j] = (0..k).map(|c| u2[i * k + c] * s2[c] * v2[c * n + j]).sum();
            }
        }
        ck.compare(
            format!("U S Vt = A {m}x{n}"),
            "f64",
            &rec,
            &a[2..],
            1e-12,
            1e-12,
        );
    }
    let mut a = vec![1.0; 12];
    a[7] = f64::NAN;
    let ga = be.upload(&a)?;
    let (mut gu, mut gs, mut gv) = (
        be.alloc::<f64>(12)?,
        be.alloc::<f64>(3)?,
        be.alloc::<f64>(12)?,
    );
    let r = be.thin_svd(&ga, Lay::dense(3, 4), &mut gu, &mut gs, &mut gv);
    refused(ck, "svd of a NaN input is refused", r);
    Ok(())
}

/// Pass when `r` is [`Error::NonFinite`].
fn refused(ck: &mut Check, name: &str, r: Result<()>) {
    match r {
        Err(Error::NonFinite(m)) => ck.expect(name, true, format!("non-finite: {m}")),
        Err(e) => ck.expect(name, false, format!("another error: {e}")),
        Ok(()) => ck.expect(name, false, "accepted the non-finite input"),
    }
}

/// The symmetric eigendecomposition gives the CPU's eigenvalues and eigenpairs of the
/// matrix whose lower triangle it reads; non-finite input is refused.
pub fn sym_eig<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    for n in [1usize, 5, 33, 129] {
        let x = uniform(n as u64 + 50, n * n, -1.0, 1.0);
        // symmetric in the lower triangle, garbage above it
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = x[i * n + j] + x[j * n + i];
                a[i * n + j] = v;
                a[j * n + i] = if i == j { v } else { 1e3 };
            }
        }
        let vals = ck.reference(|| -> Result<Vec<f64>> {
            let (mut vals, mut vecs) = (vec![0.0; n], vec![0.0; n * n]);
            Cpu.sym_eig(&a, n, &mut vals, &mut vecs)?;
            Ok(vals)
        })?;
        let ga = be.upload(&a)?;
        let (mut gv, mut gu) = (be.alloc::<f64>(n)?, be.alloc::<f64>(n * n)?);
        be.sym_eig(&ga, n, &mut gv, &mut gu)?;
        let (v2, u2) = (be.download(&gv)?, be.download(&gu)?);
        ck.compare(
            format!("eigenvalues n={n}"),
            "f64",
            &v2,
            &vals,
            1e-11,
            1e-12,
        );
        // (A u − λ u) / (1 + |λ|) for every pair, against zero: |·| ≤ 1e-10
        let mut res = vec![0.0; n * n];
        for k in 0..n {
            let u = &u2[k * n..(k + 1) * n];
            for i in 0..n {
                let au: f64 = (0..n)
                    .map(|j| if j <= i { a[i * n + j] } else { a[j * n + i] } * u[j])
                    .sum();
                res[k * n + i] = (au - v2[k] * u[i]) / (1.0 + v2[k].abs());
            }
        }
        ck.compare(
            format!("A u = lambda u n={n}"),
            "f64",
            &res,
            &vec![0.0; n * n],
            0.0,
            1e-10,
        );
    }
    let mut a = vec![1.0; 9];
    a[4] = f64::INFINITY;
    let ga = be.upload(&a)?;
    let (mut gv, mut gu) = (be.alloc::<f64>(3)?, be.alloc::<f64>(9)?);
    let r = be.sym_eig(&ga, 3, &mut gv, &mut gu);
    refused(ck, "eig of an infinite input is refused", r);
    Ok(())
}

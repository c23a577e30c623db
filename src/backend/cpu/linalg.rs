//! Dense linear algebra of the CPU backend (twins of `kernels/linalg.cu` and of the cuBLAS
//! and cuSOLVER calls): faer views of row-major layouts, eigenvalue fixes, Kronecker-sum
//! reciprocals, bias borders, spectral scaling and the thin SVD.
//!
//! Checked by the unit tests below (products against naive loops for every transpose and
//! stride) and by `tests/kernels.rs`, `tests/curvature_kfac.rs` and `tests/hig.rs`.

use super::par::par_for;
use crate::backend::check::check_view;
use crate::backend::{EigFix, EigFixed, Lay, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;
use faer::{MatMut, MatRef};

pub(super) fn mat_ref<T: Real>(buf: &[T], lay: Lay, tr: Tr) -> MatRef<'_, T> {
    let s = &buf[lay.off..lay.off + lay.span()];
    let m = MatRef::from_row_major_slice_with_stride(s, lay.rows, lay.cols, lay.ld.max(1));
    match tr {
        Tr::N => m,
        Tr::T => m.transpose(),
    }
}

/// The transpose of a row-major view, as a column-major matrix over the same memory.
///
/// Products are always handed to faer as `Cᵀ = op(B)ᵀ op(A)ᵀ` with this column-major
/// destination: faer 0.24.4's small-matrix kernels (nano-gemm) write out of bounds for
/// some shapes when the destination is row-major (seen under valgrind for 3×3·3×9).
pub(super) fn mat_mut_t<T: Real>(buf: &mut [T], lay: Lay) -> MatMut<'_, T> {
    let span = lay.span();
    let s = &mut buf[lay.off..lay.off + span];
    MatMut::from_column_major_slice_with_stride_mut(s, lay.cols, lay.rows, lay.ld.max(1))
}

/// CPU twin of the `eig_fix` kernel ([`crate::backend::Backend::eig_fix`], [`EigFix`]).
pub fn eig_fix_ref(v: &mut [f64], mode: EigFix) -> EigFixed {
    let n = v.len() as f64;
    let mut clamped = 0;
    // a maximum that propagates NaN, like the kernel's
    let max_of = |f: fn(f64) -> f64, v: &[f64]| {
        v.iter().fold(f64::NEG_INFINITY, |m, &x| {
            let x = f(x);
            if m.is_nan() || x.is_nan() {
                f64::NAN
            } else {
                m.max(x)
            }
        })
    };
    let max = match mode {
        EigFix::InvSqrtFloor => {
            let m = max_of(|x| x, v);
            let floor = (n * f64::EPSILON * m).max(f64::MIN_POSITIVE);
            if m > 0.0 {
                for x in v.iter_mut() {
                    if *x < floor {
                        *x = floor;
                        clamped += 1;
                    }
                    *x = 1.0 / x.sqrt();
                }
            }
            m
        }
        EigFix::PseudoInverse => {
            let m = max_of(f64::abs, v);
            let cut = n * f64::EPSILON * m;
            for x in v.iter_mut() {
                if x.abs() > cut && m > 0.0 {
                    *x = 1.0 / *x;
                } else {
                    *x = 0.0;
                    clamped += 1;
                }
            }
            m
        }
        EigFix::NonNegative => {
            let m = max_of(f64::abs, v);
            let noise = -n * 1e3 * f64::EPSILON * m;
            for x in v.iter_mut() {
                if *x < 0.0 {
                    if *x < noise {
                        clamped += 1;
                    }
                    *x = 0.0;
                }
            }
            m
        }
    };
    EigFixed { clamped, max }
}

/// CPU twin of the `spectral_scale` kernel ([`crate::backend::Backend::spectral_scale`]).
pub fn spectral_scale_ref(s: &[f64], c: &mut [f64], kappa: f64, tau: f64) -> (usize, f64) {
    let smax = s.first().copied().unwrap_or(0.0);
    let cut = tau * smax;
    let mut kept = 0;
    for (ci, &si) in c.iter_mut().zip(s) {
        if si > cut && si > 0.0 {
            *ci *= -si.powf(-kappa);
            kept += 1;
        } else {
            *ci = 0.0;
        }
    }
    (kept, smax)
}

/// CPU twin of the `kron_recip` kernel: `d[o·na + i] = 1 / (1 + sb[o]·sa[i])`.
pub fn kron_recip_ref<T: Real>(sa: &[f64], sb: &[f64], d: &mut [T]) {
    let na = sa.len();
    for (o, &b) in sb.iter().enumerate() {
        for (i, &a) in sa.iter().enumerate() {
            d[o * na + i] = T::from_f64(1.0 / (1.0 + b * a));
        }
    }
}

/// CPU twin of the `bias_border` kernel: the last column of the row-major `n × n` `a`
/// from its last row, and the corner.
pub fn bias_border_ref<T: Real>(a: &mut [T], n: usize, corner: T) {
    if n == 0 {
        return;
    }
    for i in 0..n - 1 {
        a[i * n + n - 1] = a[(n - 1) * n + i];
    }
    a[n * n - 1] = corner;
}

/// CPU twin of [`crate::backend::Backend::thin_svd`]: copies the view into a column-major f64 matrix and
/// runs faer's thin SVD (QR first for tall or wide inputs, then bidiagonalisation and
/// a divide-and-conquer bidiagonal SVD). `u`, `s`, `vt` must have exactly `m·k`, `k`
/// and `k·n` elements (k = min(m, n)).
pub fn thin_svd_ref<T: Real>(
    a: &[T],
    la: Lay,
    u: &mut [f64],
    s: &mut [f64],
    vt: &mut [f64],
) -> Result<()> {
    use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
    let (m, n) = (la.rows, la.cols);
    let k = m.min(n);
    check_view("thin_svd (A)", a.len(), la)?;
    if u.len() != m * k || s.len() != k || vt.len() != k * n {
        return Err(Error::Shape(format!(
            "thin_svd of {m}×{n}: U, s, Vᵀ have {}, {}, {} elements, expected {}, {k}, {}",
            u.len(),
            s.len(),
            vt.len(),
            m * k,
            k * n
        )));
    }
    if k == 0 {
        return Ok(());
    }
    let mut bad = None;
    let am = faer::Mat::<f64>::from_fn(m, n, |i, j| {
        let v = a[la.off + i * la.ld + j].to_f64();
        if !v.is_finite() && bad.is_none() {
            bad = Some((i, j, v));
        }
        v
    });
    if let Some((i, j, v)) = bad {
        return Err(Error::NonFinite(format!(
            "entry ({i}, {j}) of the {m}×{n} matrix handed to the SVD is {v}"
        )));
    }
    let mut um = faer::Mat::<f64>::zeros(m, k);
    let mut vm = faer::Mat::<f64>::zeros(n, k);
    let mut sd = faer::diag::Diag::<f64>::zeros(k);
    let par = par_for(m * n * k);
    let mut mem = faer::dyn_stack::MemBuffer::new(svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::Thin,
        par,
        Default::default(),
    ));
    svd(
        am.as_ref(),
        sd.as_mut(),
        Some(um.as_mut()),
        Some(vm.as_mut()),
        par,
        faer::dyn_stack::MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Numerical(format!("SVD of a {m}×{n} matrix: {e:?}")))?;
    for c in 0..k {
        s[c] = sd[c];
        for i in 0..m {
            u[i * k + c] = um[(i, c)];
        }
        for j in 0..n {
            vt[c * n + j] = vm[(j, c)];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    #[allow(unused_imports)]
    use crate::backend::*;

    fn naive_gemm(a: &[f64], la: Lay, ta: Tr, b: &[f64], lb: Lay, tb: Tr) -> Vec<f64> {
        let get = |x: &[f64], l: Lay, t: Tr, r: usize, c: usize| match t {
            Tr::N => x[l.off + r * l.ld + c],
            Tr::T => x[l.off + c * l.ld + r],
        };
        let (m, k) = ta.shape(la);
        let (_, n) = tb.shape(lb);
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| get(a, la, ta, i, p) * get(b, lb, tb, p, j))
                    .sum();
            }
        }
        out
    }

    #[test]
    fn gemm_matches_naive_for_all_transposes_and_strides() {
        let cpu = Cpu;
        let a: Vec<f64> = (0..200).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..200).map(|i| ((i * 13) % 7) as f64 - 3.0).collect();
        for (ta, tb) in [
            (Tr::N, Tr::N),
            (Tr::T, Tr::N),
            (Tr::N, Tr::T),
            (Tr::T, Tr::T),
        ] {
            // op(A): 5x4, op(B): 4x3, stored with padding and offsets.
            let la = match ta {
                Tr::N => Lay {
                    off: 3,
                    rows: 5,
                    cols: 4,
                    ld: 6,
                },
                Tr::T => Lay {
                    off: 3,
                    rows: 4,
                    cols: 5,
                    ld: 7,
                },
            };
            let lb = match tb {
                Tr::N => Lay {
                    off: 1,
                    rows: 4,
                    cols: 3,
                    ld: 3,
                },
                Tr::T => Lay {
                    off: 1,
                    rows: 3,
                    cols: 4,
                    ld: 5,
                },
            };
            let want = naive_gemm(&a, la, ta, &b, lb, tb);
            let mut c = vec![1.0; 40];
            let lc = Lay {
                off: 2,
                rows: 5,
                cols: 3,
                ld: 4,
            };
            cpu.gemm(2.0, &a, la, ta, &b, lb, tb, 0.5, &mut c, lc)
                .unwrap();
            for i in 0..5 {
                for j in 0..3 {
                    assert_eq!(
                        c[2 + i * 4 + j],
                        2.0 * want[i * 3 + j] + 0.5,
                        "({ta:?},{tb:?}) at {i},{j}"
                    );
                }
            }
            // padding untouched
            assert_eq!(c[0], 1.0);
            assert_eq!(c[2 + 3], 1.0);
        }
    }

    #[test]
    fn gemm_rejects_bad_shapes() {
        let cpu = Cpu;
        let a = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let e = cpu.gemm(
            1.0,
            &a,
            Lay::dense(2, 3),
            Tr::N,
            &a,
            Lay::dense(2, 3),
            Tr::N,
            0.0,
            &mut c,
            Lay::dense(2, 2),
        );
        assert!(matches!(e, Err(Error::Shape(_))));
        let e = cpu.gemm(
            1.0,
            &a,
            Lay::dense(3, 3),
            Tr::N,
            &a,
            Lay::dense(3, 3),
            Tr::N,
            0.0,
            &mut c,
            Lay::dense(3, 3),
        );
        assert!(matches!(e, Err(Error::Shape(_))));
    }

    #[test]
    fn syrk_matches_gemm() {
        let cpu = Cpu;
        let a: Vec<f64> = (0..35).map(|i| (i as f64 * 0.37).sin()).collect();
        let la = Lay::dense(7, 5);
        let mut want = vec![0.0; 25];
        cpu.gemm(
            1.5,
            &a,
            la,
            Tr::T,
            &a,
            la,
            Tr::N,
            0.0,
            &mut want,
            Lay::dense(5, 5),
        )
        .unwrap();
        let mut c = vec![2.0; 25];
        cpu.syrk(1.5, &a, la, 0.25, &mut c, Lay::dense(5, 5))
            .unwrap();
        for (x, y) in c.iter().zip(&want) {
            assert!((x - (y + 0.5)).abs() < 1e-13);
        }
    }
}

//! Small dense linear algebra on the host, in f64 (faer, on faer's own column-major
//! matrices): symmetric eigendecompositions, minimum-norm solves of symmetric systems
//! (the pseudo-inverse, what LAPACK's `gelsd` gives for a symmetric matrix), and the
//! exact inverse of a sum of two Kronecker products of symmetric positive definite
//! factors (Martens & Grosse 2015, App. B).
//!
//! Checked by the unit tests below (against dense products and solves) and by
//! `tests/curvature_kfac.rs`.

use crate::error::{Error, Result};
use faer::{Mat, Side};

/// Eigendecomposition `A = U diag(λ) Uᵀ` of a symmetric `n × n` row-major matrix.
pub struct SymEig {
    pub vals: Vec<f64>,
    /// Eigenvectors as columns.
    pub vecs: Mat<f64>,
}

/// Symmetric eigendecomposition; only the lower triangle of `a` is read. Non-finite
/// entries are reported as [`Error::NonFinite`] (a diverged curvature estimate).
pub fn sym_eig(n: usize, a: &[f64], what: &str) -> Result<SymEig> {
    if a.len() != n * n {
        return Err(Error::Shape(format!(
            "{what}: {} entries for a {n}x{n} matrix",
            a.len()
        )));
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "{what}: entry ({}, {}) is {}",
            i / n,
            i % n,
            a[i]
        )));
    }
    if n == 0 {
        return Ok(SymEig {
            vals: vec![],
            vecs: Mat::zeros(0, 0),
        });
    }
    let m = Mat::<f64>::from_fn(
        n,
        n,
        |i, j| {
            if i >= j {
                a[i * n + j]
            } else {
                a[j * n + i]
            }
        },
    );
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical(format!("{what}: eigendecomposition failed: {e:?}")))?;
    let s = evd.S();
    let vals: Vec<f64> = (0..n).map(|k| s[k]).collect();
    Ok(SymEig {
        vals,
        vecs: evd.U().to_owned(),
    })
}

/// Minimum-norm least-squares solution of `A x = b` for a symmetric `A` (row-major):
/// `x = Σ_{|λ_i| > cut} u_i (u_iᵀ b) / λ_i` with `cut = rcond · max|λ|` and, by default,
/// `rcond = n · ε` (LAPACK `gelsd`'s default). Returns `x` and the numerical rank.
pub fn pinv_solve(
    n: usize,
    a: &[f64],
    b: &[f64],
    rcond: Option<f64>,
    what: &str,
) -> Result<(Vec<f64>, usize)> {
    if b.len() != n {
        return Err(Error::Shape(format!(
            "{what}: right-hand side has {} entries, expected {n}",
            b.len()
        )));
    }
    let e = sym_eig(n, a, what)?;
    Ok(pinv_apply(&e, b, rcond))
}

/// Apply the pseudo-inverse of a decomposed symmetric matrix to `b`.
pub fn pinv_apply(e: &SymEig, b: &[f64], rcond: Option<f64>) -> (Vec<f64>, usize) {
    let n = e.vals.len();
    let amax = e.vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cut = rcond.unwrap_or(n as f64 * f64::EPSILON) * amax;
    let u = e.vecs.as_ref();
    // c = Uᵀ b, scaled by 1/λ where kept
    let mut c = vec![0.0; n];
    let mut rank = 0;
    for (k, ck) in c.iter_mut().enumerate() {
        let lam = e.vals[k];
        if lam.abs() > cut && amax > 0.0 {
            let col = u.col(k);
            let s: f64 = (0..n).map(|i| col[i] * b[i]).sum();
            *ck = s / lam;
            rank += 1;
        }
    }
    let mut x = vec![0.0; n];
    for (k, &ck) in c.iter().enumerate() {
        if ck != 0.0 {
            let col = u.col(k);
            for (i, xi) in x.iter_mut().enumerate() {
                *xi += col[i] * ck;
            }
        }
    }
    (x, rank)
}

/// One side of the Kronecker-sum inverse: `K` with `Kᵀ X1 K = I` and
/// `Kᵀ X2 K = diag(s)` (s = 0 without X2).
pub struct KronSide {
    /// `n × n`, row-major.
    pub k: Vec<f64>,
    pub s: Vec<f64>,
    /// Eigenvalues that had to be raised to keep the factors positive definite.
    pub clamped: usize,
}

/// Simultaneous diagonalisation of a symmetric positive definite `x1` and a symmetric
/// positive semi-definite `x2` (both `n × n`, row-major): `W = U Λ^{-1/2}` from
/// `x1 = U Λ Uᵀ`, then `Wᵀ x2 W = E S Eᵀ` and `K = W E`.
///
/// Eigenvalues of `x1` below `n·ε·λ_max`, and negative eigenvalues of `Wᵀ x2 W`, come from
/// rounding (or an indefinite estimate); they are clamped (to that floor, and to 0) and
/// counted in `clamped` so the caller can warn. A factor that is not positive at all is
/// an error.
pub fn kron_side(n: usize, x1: &[f64], x2: Option<&[f64]>, what: &str) -> Result<KronSide> {
    let e = sym_eig(n, x1, what)?;
    let lmax = e.vals.iter().fold(0.0f64, |m, &v| m.max(v));
    if lmax <= 0.0 || !lmax.is_finite() {
        return Err(Error::Numerical(format!(
            "{what} has no positive eigenvalue (largest {lmax:e}); use a positive damping"
        )));
    }
    let floor = (n as f64 * f64::EPSILON * lmax).max(f64::MIN_POSITIVE);
    let mut clamped = 0;
    // W = U Λ^{-1/2}, column-major
    let mut w = e.vecs;
    for k in 0..n {
        let mut lam = e.vals[k];
        if lam < floor {
            lam = floor;
            clamped += 1;
        }
        let f = 1.0 / lam.sqrt();
        for i in 0..n {
            w[(i, k)] *= f;
        }
    }
    let (kmat, s) = match x2 {
        None => (w, vec![0.0; n]),
        Some(x2) => {
            if let Some(i) = x2.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "{what} (second term): entry {i} is {}",
                    x2[i]
                )));
            }
            let c = Mat::<f64>::from_fn(n, n, |i, j| x2[i * n + j]);
            let m = w.transpose() * &c * &w;
            let mut sym = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    sym[i * n + j] = 0.5 * (m[(i, j)] + m[(j, i)]);
                }
            }
            let e2 = sym_eig(n, &sym, what)?;
            let smax = e2.vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let mut s = e2.vals.clone();
            for v in &mut s {
                if *v < 0.0 {
                    // rounding noise of a semi-definite factor is not worth a warning
                    if *v < -(n as f64) * 1e3 * f64::EPSILON * smax {
                        clamped += 1;
                    }
                    *v = 0.0;
                }
            }
            (&w * &e2.vecs, s)
        }
    };
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            k[i * n + j] = kmat[(i, j)];
        }
    }
    Ok(KronSide { k, s, clamped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize, seed: u64, shift: f64) -> Vec<f64> {
        let r: Vec<f64> = (0..n * n)
            .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.7) * 0.618).sin())
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>()
                    + if i == j { shift } else { 0.0 };
            }
        }
        a
    }

    #[test]
    fn pinv_solve_is_min_norm_for_singular_systems() {
        // A = v vᵀ (rank 1): the min-norm solution of A x = b for b = A y is v (vᵀy)/|v|².
        let v = [1.0, 2.0, -1.0];
        let a: Vec<f64> = (0..9).map(|i| v[i / 3] * v[i % 3]).collect();
        let b: Vec<f64> = (0..3).map(|i| v[i] * 3.0).collect(); // = A y with vᵀy = 3
        let (x, rank) = pinv_solve(3, &a, &b, None, "test").unwrap();
        assert_eq!(rank, 1);
        for i in 0..3 {
            assert!((x[i] - v[i] * 3.0 / 6.0).abs() < 1e-14, "{x:?}");
        }
        // non-singular: the ordinary solution
        let a = spd(4, 3, 0.5);
        let xs = [0.3, -1.0, 2.0, 0.25];
        let b: Vec<f64> = (0..4)
            .map(|i| (0..4).map(|j| a[i * 4 + j] * xs[j]).sum())
            .collect();
        let (x, rank) = pinv_solve(4, &a, &b, None, "test").unwrap();
        assert_eq!(rank, 4);
        for i in 0..4 {
            assert!((x[i] - xs[i]).abs() < 1e-11);
        }
        let mut bad = a.clone();
        bad[5] = f64::NAN;
        assert!(matches!(
            pinv_solve(4, &bad, &b, None, "test"),
            Err(Error::NonFinite(_))
        ));
    }

    #[test]
    fn kron_side_diagonalises_both_factors() {
        let n = 5;
        let x1 = spd(n, 1, 0.1);
        let x2 = spd(n, 2, 0.0);
        let ks = kron_side(n, &x1, Some(&x2), "test").unwrap();
        assert_eq!(ks.clamped, 0);
        let kt_x_k = |x: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; n * n];
            for p in 0..n {
                for q in 0..n {
                    let mut s = 0.0;
                    for i in 0..n {
                        for j in 0..n {
                            s += ks.k[i * n + p] * x[i * n + j] * ks.k[j * n + q];
                        }
                    }
                    out[p * n + q] = s;
                }
            }
            out
        };
        let i1 = kt_x_k(&x1);
        let d2 = kt_x_k(&x2);
        for p in 0..n {
            for q in 0..n {
                let want1 = if p == q { 1.0 } else { 0.0 };
                let want2 = if p == q { ks.s[p] } else { 0.0 };
                assert!((i1[p * n + q] - want1).abs() < 1e-10, "{p},{q}");
                assert!((d2[p * n + q] - want2).abs() < 1e-9 * (1.0 + ks.s[p].abs()));
            }
        }
        // an indefinite first factor is clamped and counted, not NaN
        let mut ind = x1.clone();
        for i in 0..n {
            ind[i * n + i] -= 100.0;
        }
        let ks = kron_side(n, &ind, None, "test");
        match ks {
            Ok(k) => {
                assert!(k.clamped > 0);
                assert!(k.k.iter().all(|v| v.is_finite()));
            }
            Err(Error::Numerical(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(
            kron_side(2, &[0.0; 4], None, "zero"),
            Err(Error::Numerical(_))
        ));
    }
}

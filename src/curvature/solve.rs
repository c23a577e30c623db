//! Minimum-norm solves of symmetric systems on the backend, in f64 whatever the training
//! precision: `x = (A + λI)⁺ b` with the pseudo-inverse cut of [`super::linalg::pinv_apply`]
//! (`rcond = n·ε`, LAPACK `gelsd`'s default), from `Backend::sym_eig` (faer, or cuSOLVER
//! `syevd`) and `Backend::eig_fix`; and the same for a diagonal `A`. ENGD solves its
//! Gramian blocks and ENGD-woodbury its sample-space kernel with it, so neither system
//! leaves the device; only the eigenvalue maximum and the rank come back.
//!
//! Checked by the unit tests below (against the host reference `linalg::pinv_solve` on
//! full-rank, rank-deficient and diagonal systems, and non-finite input) and by
//! tests/optim_second_order.rs (the ENGD directions against dense solves).

use crate::backend::{Backend, EigFix, Lay, Tr};
use crate::error::{Error, Result};
use crate::scalar::Real;

/// Workspace of one `n × n` (or diagonal) minimum-norm solve, reused across steps.
pub struct SymSolve<B: Backend> {
    n: usize,
    diagonal: bool,
    /// `A + λI` (dense only).
    a: B::Buf<f64>,
    /// Eigenvectors as rows (dense only).
    vecs: B::Buf<f64>,
    vals: B::Buf<f64>,
    c: B::Buf<f64>,
    rhs: B::Buf<f64>,
    /// Ones, for the diagonal's damping.
    ones: B::Buf<f64>,
}

impl<B: Backend> SymSolve<B> {
    pub fn new(be: &B, n: usize, diagonal: bool) -> Result<Self> {
        let sq = if diagonal { 0 } else { n * n };
        Ok(SymSolve {
            n,
            diagonal,
            a: be.alloc(sq)?,
            vecs: be.alloc(sq)?,
            vals: be.alloc(n)?,
            c: be.alloc(n)?,
            rhs: be.alloc(n)?,
            ones: be.upload(&vec![1.0; if diagonal { n } else { 0 }])?,
        })
    }

    pub fn size(&self) -> usize {
        self.n
    }

    /// `x[x_off..x_off+n] = (A + λI)⁺ b[b_off..b_off+n]` for the `n × n` row-major matrix
    /// at `a_off` of `a` (only its lower triangle is read), or, for a diagonal solver, the
    /// `n` diagonal entries there. Returns the numerical rank. Non-finite entries of `A`
    /// are an error.
    #[allow(clippy::too_many_arguments)]
    pub fn solve<T: Real>(
        &mut self,
        be: &B,
        a: &B::Buf<T>,
        a_off: usize,
        damping: f64,
        b: &B::Buf<T>,
        b_off: usize,
        x: &mut B::Buf<T>,
        x_off: usize,
        what: &str,
    ) -> Result<usize> {
        let n = self.n;
        if self.diagonal {
            be.cast(a, a_off, &mut self.vals, 0, n)?;
            be.axpby(damping, &self.ones, 1.0, &mut self.vals)?;
        } else {
            be.cast(a, a_off, &mut self.a, 0, n * n)?;
            be.add_diag(&mut self.a, n, damping)?;
            be.sym_eig(&self.a, n, &mut self.vals, &mut self.vecs)
                .map_err(|e| e.context(what))?;
        }
        let f = be.eig_fix(&mut self.vals, n, EigFix::PseudoInverse)?;
        if n > 0 && !f.max.is_finite() {
            return Err(Error::NonFinite(format!(
                "{what}: largest magnitude {}",
                f.max
            )));
        }
        be.cast(b, b_off, &mut self.rhs, 0, n)?;
        if self.diagonal {
            be.mul(&self.vals, 0, &mut self.rhs, 0, n)?;
        } else {
            // x = U diag(1/λ) Uᵀ b over the kept eigenvalues
            let (sq, col) = (Lay::dense(n, n), Lay::dense(n, 1));
            be.gemm(
                1.0,
                &self.vecs,
                sq,
                Tr::N,
                &self.rhs,
                col,
                Tr::N,
                0.0,
                &mut self.c,
                col,
            )?;
            be.mul(&self.vals, 0, &mut self.c, 0, n)?;
            be.gemm(
                1.0,
                &self.vecs,
                sq,
                Tr::T,
                &self.c,
                col,
                Tr::N,
                0.0,
                &mut self.rhs,
                col,
            )?;
        }
        be.cast(&self.rhs, 0, x, x_off, n)?;
        Ok(n - f.clamped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::curvature::linalg::pinv_solve;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, k: usize, seed: u64) -> Vec<f64> {
        // a rank-k Gram matrix
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<f64> = (0..n * k).map(|_| r.random_range(-1.0..1.0)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..k).map(|c| x[i * k + c] * x[j * k + c]).sum();
            }
        }
        a
    }

    #[test]
    fn dense_solves_match_the_host_reference() {
        for (n, k, damping) in [
            (1, 1, 0.0),
            (6, 9, 0.0),
            (8, 3, 0.0),
            (8, 3, 1e-3),
            (30, 40, 1e-6),
        ] {
            let a = random(n, k, n as u64 + 7);
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let mut damped = a.clone();
            for i in 0..n {
                damped[i * n + i] += damping;
            }
            let (want, rank) = pinv_solve(n, &damped, &b, None, "reference").unwrap();
            // the system inside larger buffers, at offsets
            let mut abuf = vec![9.0; n * n + 5];
            abuf[3..3 + n * n].copy_from_slice(&a);
            let mut bbuf = vec![0.0; n + 2];
            bbuf[1..1 + n].copy_from_slice(&b);
            let mut x = vec![-7.0; n + 4];
            let mut s = SymSolve::new(&Cpu, n, false).unwrap();
            let got_rank = s
                .solve(&Cpu, &abuf, 3, damping, &bbuf, 1, &mut x, 2, "test")
                .unwrap();
            assert_eq!(got_rank, rank, "n={n} k={k}");
            assert_eq!(x[..2], [-7.0, -7.0]);
            for i in 0..n {
                let scale = 1.0 + want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(
                    (x[2 + i] - want[i]).abs() <= 1e-9 * scale,
                    "n={n} k={k} x[{i}]: {} vs {}",
                    x[2 + i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn diagonal_solves_drop_the_small_and_refuse_nan() {
        let d = vec![4.0, 1e-20, -2.0, 0.0, 8.0];
        let b = vec![1.0, 1.0, 1.0, 1.0, 1.0];
        let mut s = SymSolve::new(&Cpu, 5, true).unwrap();
        let mut x = vec![0.0; 5];
        let rank = s.solve(&Cpu, &d, 0, 0.0, &b, 0, &mut x, 0, "diag").unwrap();
        assert_eq!(rank, 3);
        assert_eq!(x, vec![0.25, 0.0, -0.5, 0.0, 0.125]);
        // damping lifts the zero and the tiny entry above the cut (−2 + 1 stays)
        let rank = s.solve(&Cpu, &d, 0, 1.0, &b, 0, &mut x, 0, "diag").unwrap();
        assert_eq!(rank, 5);
        assert_eq!(x, vec![0.2, 1.0, -1.0, 1.0, 1.0 / 9.0]);
        let mut bad = d.clone();
        bad[1] = f64::NAN;
        let e = s.solve(&Cpu, &bad, 0, 0.0, &b, 0, &mut x, 0, "diag");
        assert!(matches!(e, Err(Error::NonFinite(_))), "{e:?}");
        let mut dense = SymSolve::new(&Cpu, 2, false).unwrap();
        let e = dense.solve(
            &Cpu,
            &vec![1.0, 0.0, f64::NAN, 1.0],
            0,
            0.0,
            &b,
            0,
            &mut x,
            0,
            "dense",
        );
        assert!(matches!(e, Err(Error::NonFinite(_))), "{e:?}");
    }
}

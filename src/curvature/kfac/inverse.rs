//! The exact inverse of the damped two-term Kronecker sum (design §3), on the backend
//! from f64 symmetric eigendecompositions, applied to the gradient with backend products.
//!
//! Checked by the unit tests below (against the host reference `linalg::kron_side`) and
//! by `tests/curvature_kfac.rs` (against a dense solve); `tests/kernels.rs` runs it through
//! the kernel emulation.

use super::factors::{eye, flat, DeviceFactors};
use crate::backend::{run_workers, Backend, EigFix, JetShape, Lay, Tr};
use crate::error::{Error, Result};
use crate::model::{LayerLayout, Mlp};
use crate::optim::State;
use crate::scalar::Real;

/// One side (A or B) of a layer's inverse: `K` with `Kᵀ X₁ K = I`, `Kᵀ X₂ K = diag(s)`
/// (see [`kron_side`], its host reference), kept as `Kᵀ` in f64 on the backend, with the
/// scratch of its computation.
pub(super) struct Side<B: Backend> {
    pub(super) n: usize,
    /// `Kᵀ`, row-major `n × n`.
    pub(super) kt: B::Buf<f64>,
    pub(super) s: B::Buf<f64>,
    pub(super) x: B::Buf<f64>,
    pub(super) m: B::Buf<f64>,
    pub(super) wt: B::Buf<f64>,
    pub(super) e: B::Buf<f64>,
    pub(super) vals: B::Buf<f64>,
}

impl<B: Backend> Side<B> {
    fn new(be: &B, n: usize) -> Result<Self> {
        Ok(Side {
            n,
            kt: be.upload(&eye(n, 1.0))?,
            s: be.alloc(n)?,
            x: be.alloc(n * n)?,
            m: be.alloc(n * n)?,
            wt: be.alloc(n * n)?,
            e: be.alloc(n * n)?,
            vals: be.alloc(n)?,
        })
    }

    /// Simultaneous diagonalisation of `x1 + λI` and `x2 + λI` (only `x1` without a second
    /// term), every stage a backend op: `x1 + λI = U Λ Uᵀ`, `Wᵀ = Λ^{-1/2} Uᵀ` (clamped
    /// floor), `Wᵀ (x2 + λI) W = E S Eᵀ` (negative s clamped to 0), `Kᵀ = Eᵀ Wᵀ`. Returns the
    /// number of clamped eigenvalues.
    fn update(
        &mut self,
        be: &B,
        x1: &B::Buf<f64>,
        x2: Option<&B::Buf<f64>>,
        damping: f64,
        what: &str,
    ) -> Result<usize> {
        let n = self.n;
        let nn = n * n;
        let sq = Lay::dense(n, n);
        be.copy(x1, 0, &mut self.x, 0, nn)?;
        be.add_diag(&mut self.x, n, damping)?;
        be.sym_eig(&self.x, n, &mut self.vals, &mut self.wt)
            .map_err(|e| e.context(what))?;
        let f = be.eig_fix(&mut self.vals, n, EigFix::InvSqrtFloor)?;
        if n > 0 && !(f.max > 0.0 && f.max.is_finite()) {
            return Err(Error::Numerical(format!(
                "{what} has no positive eigenvalue (largest {:e}); use a positive damping",
                f.max
            )));
        }
        let mut clamped = f.clamped;
        // Wᵀ: row k of Uᵀ scaled by λ_k^{-1/2}
        be.scale_jet_rows(&mut self.wt, &self.vals, JetShape::matrix(n, n))?;
        match x2 {
            None => {
                be.copy(&self.wt, 0, &mut self.kt, 0, nn)?;
                be.fill(&mut self.s, 0, n, 0.0)?;
            }
            Some(x2) => {
                be.copy(x2, 0, &mut self.x, 0, nn)?;
                be.add_diag(&mut self.x, n, damping)?;
                // M = Wᵀ X₂ W (sym_eig reads its lower triangle)
                be.gemm(
                    1.0,
                    &self.wt,
                    sq,
                    Tr::N,
                    &self.x,
                    sq,
                    Tr::N,
                    0.0,
                    &mut self.m,
                    sq,
                )?;
                be.gemm(
                    1.0,
                    &self.m,
                    sq,
                    Tr::N,
                    &self.wt,
                    sq,
                    Tr::T,
                    0.0,
                    &mut self.x,
                    sq,
                )?;
                be.sym_eig(&self.x, n, &mut self.s, &mut self.e)
                    .map_err(|e| e.context(&format!("{what} (second term)")))?;
                clamped += be.eig_fix(&mut self.s, n, EigFix::NonNegative)?.clamped;
                be.gemm(
                    1.0,
                    &self.e,
                    sq,
                    Tr::N,
                    &self.wt,
                    sq,
                    Tr::N,
                    0.0,
                    &mut self.kt,
                    sq,
                )?;
            }
        }
        Ok(clamped)
    }

    /// `K` (row-major) on the host.
    fn host_k(&self, be: &B) -> Result<Vec<f64>> {
        Ok(transpose(self.n, &be.download(&self.kt)?))
    }
}

pub(super) fn transpose(n: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            y[j * n + i] = x[i * n + j];
        }
    }
    y
}

/// Per-layer pieces of the inverse on the backend: the two sides and the scaling in f64,
/// and their copies in the training precision that [`KfacInverse::apply`] uses.
pub(super) struct LayerInverse<B: Backend, T: Real> {
    pub(super) a: Side<B>,
    pub(super) b: Side<B>,
    /// `1 / (1 + s_B s_Aᵀ)`, `fan_out × (fan_in+1)`.
    pub(super) d64: B::Buf<f64>,
    /// `K_Aᵀ`, `K_Bᵀ` and `d` in `T`.
    pub(super) kat: B::Buf<T>,
    pub(super) kbt: B::Buf<T>,
    pub(super) d: B::Buf<T>,
    pub(super) t1: B::Buf<T>,
    pub(super) t2: B::Buf<T>,
}

impl<B: Backend, T: Real> LayerInverse<B, T> {
    /// Refresh the training-precision copies from the f64 pieces.
    fn cast_down(&mut self, be: &B) -> Result<()> {
        let (na, nb) = (self.a.n, self.b.n);
        be.cast(&self.a.kt, 0, &mut self.kat, 0, na * na)?;
        be.cast(&self.b.kt, 0, &mut self.kbt, 0, nb * nb)?;
        be.cast(&self.d64, 0, &mut self.d, 0, na * nb)
    }
}

/// The exact inverse of the damped Kronecker sum, per layer, computed and applied on the
/// backend (f64 eigendecompositions: faer on the CPU, cuSOLVER `syevd` on a GPU). Only
/// the clamped-eigenvalue counts come back to the host during a step.
pub struct KfacInverse<B: Backend, T: Real> {
    pub(super) layers: Vec<LayerLayout>,
    pub(super) inv: Vec<LayerInverse<B, T>>,
    /// Eigenvalues clamped at the last update (0 = none).
    pub clamped: usize,
}

impl<B: Backend, T: Real> KfacInverse<B, T> {
    /// The identity until the first [`KfacInverse::update`].
    pub fn new(be: &B, mlp: &Mlp) -> Result<Self> {
        let layers = mlp.layers();
        let mut inv = Vec::with_capacity(layers.len());
        for l in &layers {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            let mut li = LayerInverse {
                a: Side::new(be, na)?,
                b: Side::new(be, nb)?,
                d64: be.upload(&vec![1.0; nb * na])?,
                kat: be.alloc(na * na)?,
                kbt: be.alloc(nb * nb)?,
                d: be.alloc(nb * na)?,
                t1: be.alloc(nb * na)?,
                t2: be.alloc(nb * na)?,
            };
            li.cast_down(be)?;
            inv.push(li);
        }
        Ok(KfacInverse {
            layers,
            inv,
            clamped: 0,
        })
    }

    /// Recompute the inverse of `Σ_t (A_t+λI)⊗(B_t+λI)` from `factors`. Returns the
    /// number of eigenvalues clamped to keep it positive definite.
    pub fn update(&mut self, be: &B, factors: &DeviceFactors<B>, damping: f64) -> Result<usize> {
        if factors.layers != self.layers {
            return Err(Error::Shape("KFAC factors of a different network".into()));
        }
        let two = factors.num_groups() > 1;
        // the 2·L simultaneous diagonalisations are independent: on the CPU they run in
        // parallel, each on one thread; on a GPU one after another on the stream
        let mut jobs = Vec::with_capacity(2 * self.layers.len());
        for (li, inv) in self.inv.iter_mut().enumerate() {
            let (a1, b1) = (&factors.a[0][li], &factors.b[0][li]);
            let (a2, b2) = if two {
                (Some(&factors.a[1][li]), Some(&factors.b[1][li]))
            } else {
                (None, None)
            };
            jobs.push((&mut inv.a, a1, a2, li, "A"));
            jobs.push((&mut inv.b, b1, b2, li, "B"));
        }
        let clamped = std::sync::atomic::AtomicUsize::new(0);
        let side = |(side, x1, x2, li, what): (&mut Side<B>, _, _, usize, &str)| {
            let what = format!("KFAC {what} factor of layer {li}");
            let c = side.update(be, x1, x2, damping, &what)?;
            clamped.fetch_add(c, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        };
        if be.chunk_workers() > 1 {
            run_workers(jobs, side)?;
        } else {
            jobs.into_iter().try_for_each(side)?;
        }
        for inv in &mut self.inv {
            let (na, nb) = (inv.a.n, inv.b.n);
            be.kron_recip(&inv.a.s, na, &inv.b.s, nb, &mut inv.d64)?;
            inv.cast_down(be)?;
        }
        self.clamped = clamped.into_inner();
        Ok(self.clamped)
    }

    /// `out = alpha · K⁻¹ grad` (flat parameter vectors; `out` must not alias `grad`):
    /// `X = K_B [(K_Bᵀ G̃ K_A) ⊘ (1 + s_B s_Aᵀ)] K_Aᵀ` with `K_Aᵀ`, `K_Bᵀ` stored.
    pub fn apply(
        &mut self,
        be: &B,
        grad: &B::Buf<T>,
        out: &mut B::Buf<T>,
        alpha: f64,
    ) -> Result<()> {
        let alpha = T::from_f64(alpha);
        for (l, inv) in self.layers.iter().zip(self.inv.iter_mut()) {
            let (fi, fo) = (l.fan_in, l.fan_out);
            let na = fi + 1;
            // columns :fi and fi of K_Aᵀ are the rows :fi and fi of K_A, transposed
            let ka_top = Lay {
                off: 0,
                rows: na,
                cols: fi,
                ld: na,
            };
            let ka_bias = Lay {
                off: fi,
                rows: na,
                cols: 1,
                ld: na,
            };
            let gw = Lay::at(l.w_off, fo, fi);
            let gb = Lay {
                off: l.b_off,
                rows: fo,
                cols: 1,
                ld: 1,
            };
            let y = Lay::dense(fo, na);
            let kb = Lay::dense(fo, fo);
            let (one, zero) = (T::ONE, T::ZERO);
            // t1 = G̃ K_A = ∇W K_A[:fi] + ∇b K_A[fi]
            be.gemm(
                one,
                grad,
                gw,
                Tr::N,
                &inv.kat,
                ka_top,
                Tr::T,
                zero,
                &mut inv.t1,
                y,
            )?;
            be.gemm(
                one,
                grad,
                gb,
                Tr::N,
                &inv.kat,
                ka_bias,
                Tr::T,
                one,
                &mut inv.t1,
                y,
            )?;
            // t2 = (K_Bᵀ t1) ⊘ (1 + s_B s_Aᵀ)
            be.gemm(
                one,
                &inv.kbt,
                kb,
                Tr::N,
                &inv.t1,
                y,
                Tr::N,
                zero,
                &mut inv.t2,
                y,
            )?;
            be.mul(&inv.d, 0, &mut inv.t2, 0, fo * na)?;
            // t1 = K_B t2, then X = t1 K_Aᵀ split into the weight and bias blocks
            be.gemm(
                one,
                &inv.kbt,
                kb,
                Tr::T,
                &inv.t2,
                y,
                Tr::N,
                zero,
                &mut inv.t1,
                y,
            )?;
            be.gemm(
                alpha,
                &inv.t1,
                y,
                Tr::N,
                &inv.kat,
                ka_top,
                Tr::N,
                zero,
                out,
                gw,
            )?;
            be.gemm(
                alpha,
                &inv.t1,
                y,
                Tr::N,
                &inv.kat,
                ka_bias,
                Tr::N,
                zero,
                out,
                gb,
            )?;
        }
        Ok(())
    }

    /// Per layer, `K_A`, `K_B` (row-major) and the scaling `d`, downloaded in f64.
    fn host_pieces(&self, be: &B) -> Result<Vec<[Vec<f64>; 3]>> {
        self.inv
            .iter()
            .map(|inv| Ok([inv.a.host_k(be)?, inv.b.host_k(be)?, be.download(&inv.d64)?]))
            .collect()
    }

    /// The dense `P × P` inverse (block diagonal), in the flat parameter order. For tests.
    pub fn to_dense(&self, be: &B) -> Result<Vec<f64>> {
        let p = self.layers.last().map(|l| l.b_off + l.fan_out).unwrap_or(0);
        let mut out = vec![0.0; p * p];
        for (l, [ka, kb, d]) in self.layers.iter().zip(self.host_pieces(be)?) {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            // Inv = M diag(d) Mᵀ with M = K_B ⊗ K_A
            let m = |o: usize, i: usize, pp: usize, qq: usize| kb[o * nb + pp] * ka[i * na + qq];
            for o in 0..nb {
                for i in 0..na {
                    let r = flat(l, o, i);
                    for o2 in 0..nb {
                        for i2 in 0..na {
                            let c = flat(l, o2, i2);
                            let mut s = 0.0;
                            for pp in 0..nb {
                                for qq in 0..na {
                                    s += m(o, i, pp, qq) * d[pp * na + qq] * m(o2, i2, pp, qq);
                                }
                            }
                            out[r * p + c] = s;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Named host arrays for checkpoints: `K_A`, `K_B` (row-major) and `d` per layer.
    pub fn state(&self, be: &B, prefix: &str) -> Result<State> {
        let mut s = Vec::new();
        for (li, [ka, kb, d]) in self.host_pieces(be)?.into_iter().enumerate() {
            s.push((format!("{prefix}KA{li}"), ka));
            s.push((format!("{prefix}KB{li}"), kb));
            s.push((format!("{prefix}D{li}"), d));
        }
        Ok(s)
    }

    pub fn load_state(&mut self, be: &B, prefix: &str, s: &State) -> Result<()> {
        for (li, inv) in self.inv.iter_mut().enumerate() {
            let (na, nb) = (inv.a.n, inv.b.n);
            let ka = crate::optim::state_get(s, &format!("{prefix}KA{li}"), na * na)?;
            let kb = crate::optim::state_get(s, &format!("{prefix}KB{li}"), nb * nb)?;
            let d = crate::optim::state_get(s, &format!("{prefix}D{li}"), nb * na)?;
            be.upload_range(&transpose(na, ka), &mut inv.a.kt, 0)?;
            be.upload_range(&transpose(nb, kb), &mut inv.b.kt, 0)?;
            be.upload_range(d, &mut inv.d64, 0)?;
            inv.cast_down(be)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::curvature::linalg::kron_side;

    fn spd(n: usize, seed: u64, shift: f64) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        // a random Gram matrix plus a shift
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let k = n + 2;
        let x: Vec<f64> = (0..n * k).map(|_| r.random_range(-1.0..1.0)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..k).map(|c| x[i * k + c] * x[j * k + c]).sum::<f64>()
                    + if i == j { shift } else { 0.0 };
            }
        }
        a
    }

    /// The backend's simultaneous diagonalisation equals the host reference `kron_side`:
    /// the same `s`, and the same `K` up to the sign of each column (distinct eigenvalues).
    #[test]
    fn backend_side_matches_the_host_reference() {
        let damping = 1e-3;
        for (n, two) in [(1, true), (4, false), (7, true), (12, true)] {
            let x1 = spd(n, 1, 0.05);
            let x2 = spd(n, 2, 0.0);
            let damped = |x: &[f64]| {
                let mut y = x.to_vec();
                for i in 0..n {
                    y[i * n + i] += damping;
                }
                y
            };
            let want = kron_side(
                n,
                &damped(&x1),
                two.then(|| damped(&x2)).as_deref(),
                "reference",
            )
            .unwrap();
            let mut side = Side::<Cpu>::new(&Cpu, n).unwrap();
            let clamped = side
                .update(&Cpu, &x1, two.then_some(&x2), damping, "test")
                .unwrap();
            assert_eq!(clamped, want.clamped);
            let k = side.host_k(&Cpu).unwrap();
            for (a, b) in side.s.iter().zip(&want.s) {
                assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "s: {a} vs {b}");
            }
            for c in 0..n {
                let dot: f64 = (0..n).map(|r| k[r * n + c] * want.k[r * n + c]).sum();
                let sign = dot.signum();
                for r in 0..n {
                    let (a, b) = (sign * k[r * n + c], want.k[r * n + c]);
                    assert!(
                        (a - b).abs() <= 1e-8 * (1.0 + b.abs()),
                        "n={n} K[{r},{c}]: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// `Backend::sym_eig` gives eigenpairs (rows of Uᵀ) of the matrix whose lower triangle
    /// it was given, in ascending order; non-finite input is an error.
    #[test]
    fn backend_sym_eig_gives_ascending_eigenpairs() {
        let n = 9;
        let mut a = spd(n, 3, 0.2);
        let full = a.clone();
        // garbage in the strict upper triangle must not matter
        for i in 0..n {
            for j in i + 1..n {
                a[i * n + j] = 1e3;
            }
        }
        let (mut vals, mut vecs) = (vec![0.0; n], vec![0.0; n * n]);
        Cpu.sym_eig(&a, n, &mut vals, &mut vecs).unwrap();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{vals:?}");
        for k in 0..n {
            let u = &vecs[k * n..(k + 1) * n];
            let norm: f64 = u.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-12);
            for i in 0..n {
                let au: f64 = (0..n).map(|j| full[i * n + j] * u[j]).sum();
                assert!((au - vals[k] * u[i]).abs() < 1e-10, "pair {k}, row {i}");
            }
        }
        a[3] = f64::NAN;
        let e = Cpu.sym_eig(&a, n, &mut vals, &mut vecs).unwrap_err();
        assert!(matches!(e, Error::NonFinite(_)), "{e}");
        assert!(Cpu.sym_eig(&a, n + 1, &mut vals, &mut vecs).is_err());
    }
}

//! The autodiff baseline: the Laplacian by nested first-order differentiation,
//! forward-over-reverse (one Hessian-vector product per coordinate direction), batched
//! over samples and vectorised over the D directions the way `vmap(hessian)` does it in
//! PyTorch/JAX. It is written independently of the jet code's second-order rules: the
//! Laplacian comes out of the reverse pass (`H e_d` at the input), not from propagated
//! second derivatives. It serves as the reference in tests and the competitor in the
//! `laplacian` benchmark; like PyTorch it keeps the whole batch's tangents alive for the
//! reverse sweep (no chunking), which is where its memory goes.
//!
//! Layout: a block matrix of `(1 + D)·N` rows — primal rows, then one block of N
//! tangent rows per direction `e_d` — so each linear layer is one product for primal
//! and tangents together, and the reverse sweep carries (cotangent, tangent of the
//! cotangent) the same way.
//!
//! Checked by `tests/jet.rs` (agreement with the forward Laplacian and with finite
//! differences of the network).

use crate::backend::{Backend, JetShape, Lay, Tr};
use crate::error::{Error, Result};
use crate::model::Mlp;
use crate::scalar::Real;

/// Result of the baseline for N points and m outputs (sample-major).
#[derive(Clone, Debug)]
pub struct Derivatives {
    pub n: usize,
    pub m: usize,
    pub d: usize,
    /// N × m
    pub u: Vec<f64>,
    /// N × m × D (gradient of each output)
    pub grad: Vec<f64>,
    /// N × m × D × D (Hessian of each output, row-major)
    pub hess: Vec<f64>,
}

impl Derivatives {
    /// `Σ_ij C_ij ∂_ij u_j` for every sample and output: N × m.
    pub fn operator(&self, c: &[f64]) -> Vec<f64> {
        let d = self.d;
        let mut out = vec![0.0; self.n * self.m];
        for (o, h) in out.iter_mut().zip(self.hess.chunks(d * d)) {
            *o = h.iter().zip(c).map(|(h, c)| h * c).sum();
        }
        out
    }
    /// The Laplacian: N × m.
    pub fn laplacian(&self) -> Vec<f64> {
        let d = self.d;
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            c[i * d + i] = 1.0;
        }
        self.operator(&c)
    }
}

/// Forward-over-reverse differentiation of an MLP on a backend.
pub struct Autodiff<B: Backend, T: Real> {
    be: B,
    mlp: Mlp,
    /// Stored activation blocks (primal + tangents) of every layer's input.
    acts: Vec<B::Buf<T>>,
    cot: [B::Buf<T>; 2],
    ones: B::Buf<T>,
    n_alloc: usize,
}

impl<B: Backend, T: Real> Autodiff<B, T> {
    pub fn new(be: B, mlp: Mlp) -> Result<Self> {
        let ones = be.alloc(0)?;
        let cot = [be.alloc(0)?, be.alloc(0)?];
        Ok(Autodiff {
            be,
            mlp,
            acts: vec![],
            cot,
            ones,
            n_alloc: 0,
        })
    }

    fn ensure(&mut self, n: usize) -> Result<()> {
        if n <= self.n_alloc {
            return Ok(());
        }
        let w = self.mlp.widths();
        let d = w[0];
        let rows = (1 + d) * n;
        self.acts = (0..self.mlp.num_layers())
            .map(|l| self.be.alloc(rows * w[l]))
            .collect::<Result<_>>()?;
        let wmax = *w.iter().max().unwrap();
        self.cot = [self.be.alloc(rows * wmax)?, self.be.alloc(rows * wmax)?];
        self.n_alloc = n;
        Ok(())
    }

    /// Bytes of the baseline's live buffers (its peak working set).
    pub fn workspace_bytes(&self) -> usize {
        let b = |x: &B::Buf<T>| self.be.len(x) * std::mem::size_of::<T>();
        self.acts.iter().chain(&self.cot).map(b).sum()
    }

    /// Values, gradients and full Hessians of every output at the `n` points of `x`
    /// (row-major, D columns), all in one batch.
    pub fn derivatives(
        &mut self,
        params: &B::Buf<T>,
        x: &B::Buf<T>,
        n: usize,
    ) -> Result<Derivatives> {
        self.mlp.check_params(self.be.len(params))?;
        let w = self.mlp.widths().to_vec();
        let d = w[0];
        let m = *w.last().unwrap();
        if self.be.len(x) < n * d {
            return Err(Error::Shape(format!(
                "{n} points of dimension {d} need {} values, got {}",
                n * d,
                self.be.len(x)
            )));
        }
        self.ensure(n)?;
        let nl = self.mlp.num_layers();
        let rows = (1 + d) * n;
        let blk = |h: usize| JetShape { n, k: d, ops: 0, h };
        // input block: primal x, tangent block d = e_d for every sample
        let mut eye = vec![T::ZERO; d * d];
        for i in 0..d {
            eye[i * d + i] = T::ONE;
        }
        let eye = self.be.upload(&eye)?;
        self.be.jet_input(x, 0, &eye, &mut self.acts[0], blk(d))?;
        // forward (primal and tangents): z = a Wᵀ (+ b on primal rows), a' = tanh jet
        let mut out = self.be.alloc(rows * m)?;
        for l in 0..nl {
            let lay = self.mlp.layer(l);
            let (head, tail) = self.acts.split_at_mut(l + 1);
            let dst = if l + 1 == nl { &mut out } else { &mut tail[0] };
            self.be.gemm(
                T::ONE,
                &head[l],
                Lay::dense(rows, w[l]),
                Tr::N,
                params,
                Lay::at(lay.w_off, lay.fan_out, lay.fan_in),
                Tr::T,
                T::ZERO,
                dst,
                Lay::dense(rows, w[l + 1]),
            )?;
            self.be.add_bias(dst, n, w[l + 1], params, lay.b_off)?;
            if l + 1 < nl {
                // forward-mode through tanh: a = tanh z, ȧ = (1 − a²) ż
                let no_c = self.be.alloc(d)?;
                self.be.jet_tanh_inplace(dst, &no_c, blk(w[l + 1]))?;
            }
        }
        let out_h = self.be.download(&out)?;
        let mut res = Derivatives {
            n,
            m,
            d,
            u: vec![0.0; n * m],
            grad: vec![0.0; n * m * d],
            hess: vec![0.0; n * m * d * d],
        };
        for i in 0..n {
            for j in 0..m {
                res.u[i * m + j] = out_h[i * m + j].to_f64();
            }
        }
        if self.be.len(&self.ones) != n {
            self.ones = self.be.upload(&vec![T::ONE; n])?;
        }
        // reverse, once per output: seed ḡu = e_j on primal rows, 0 on tangent rows
        for j in 0..m {
            let [c0, c1] = &mut self.cot;
            let mut seed = vec![T::ZERO; rows * m];
            for i in 0..n {
                seed[i * m + j] = T::ONE;
            }
            self.be.upload_range(&seed, c0, 0)?;
            for l in (0..nl).rev() {
                let lay = self.mlp.layer(l);
                let (cur, next) = if (nl - 1 - l).is_multiple_of(2) {
                    (&mut *c0, &mut *c1)
                } else {
                    (&mut *c1, &mut *c0)
                };
                self.be.gemm(
                    T::ONE,
                    cur,
                    Lay::dense(rows, w[l + 1]),
                    Tr::N,
                    params,
                    Lay::at(lay.w_off, lay.fan_out, lay.fan_in),
                    Tr::N,
                    T::ZERO,
                    next,
                    Lay::dense(rows, w[l]),
                )?;
                if l > 0 {
                    self.be.ad_tanh_rev(&self.acts[l], next, blk(w[l]))?;
                }
            }
            let fin = if nl % 2 == 1 {
                &self.cot[1]
            } else {
                &self.cot[0]
            };
            let mut g = vec![T::ZERO; rows * d];
            self.be.download_range(fin, 0, &mut g)?;
            for i in 0..n {
                for a in 0..d {
                    res.grad[(i * m + j) * d + a] = g[i * d + a].to_f64();
                    for b in 0..d {
                        // tangent block a, sample i: (H e_a)_b
                        res.hess[((i * m + j) * d + a) * d + b] =
                            g[((1 + a) * n + i) * d + b].to_f64();
                    }
                }
            }
        }
        Ok(res)
    }
}

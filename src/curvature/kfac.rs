//! Kronecker-factored curvature for PINN losses (DESIGN §3, docs/paper-setups.md §2.1):
//! per layer and per loss term, the input factor `A = 1/(N·S) Σ_{n,s} z̃ z̃ᵀ` (bias-augmented
//! layer inputs of all S jet rows) and the output factor `B = w/N Σ_{n,s} g gᵀ` (g the
//! un-scaled gradient of r_n with respect to the S layer-output rows), and the exact
//! inverse of the damped two-term Kronecker sum `(A_1+λI)⊗(B_1+λI) + (A_2+λI)⊗(B_2+λI)`.
//!
//! The factors come out of the SAME backward pass as the loss gradient ([`KfacPass`]): the
//! seeds are `∂r/∂y` (un-scaled), each layer's cotangent `g` first feeds `B` (syrk), then is
//! scaled row-wise by `r_n·w/N` and accumulated into the gradient. The reverse pass has
//! already propagated `g` to the layer below when the visitor sees it, so scaling in place
//! is safe. `A`'s bias row comes from column sums of the value rows (Z̃ is never formed);
//! its bias column and corner are filled on the host.
//!
//! The inverse ([`KfacInverse`]) is computed on the host in f64 from symmetric
//! eigendecompositions and applied to the gradient with backend products:
//! `X = K_B [(K_Bᵀ G̃ K_A) ⊘ (1 + s_B s_Aᵀ)] K_Aᵀ` for the gradient matrix `G̃ = [∇W | ∇b]`.
//!
//! Checked by `tests/curvature_kfac.rs`: for one sample of a value-only term the factors'
//! Kronecker product equals the exact Gramian block; the factors against a naive host
//! computation from the layer inputs and cotangents; the inverse against a dense solve.

use super::linalg::{kron_side, KronSide};
use super::store::{JacobianStore, StorePiece};
use crate::backend::{Backend, Lay, Tr};
use crate::error::{Error, Result};
use crate::jet::accumulate_grad;
use crate::loss::Objective;
use crate::model::{LayerLayout, Mlp};
use crate::optim::State;
use crate::scalar::{convert, Real};
use rayon::prelude::*;

/// Kronecker factors on the host (f64), per loss term and layer: `A` is
/// `(fan_in+1)²` and `B` is `fan_out²`, both row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct KfacFactors {
    layers: Vec<LayerLayout>,
    /// `[term][layer]`
    a: Vec<Vec<Vec<f64>>>,
    b: Vec<Vec<Vec<f64>>>,
}

fn eye(n: usize, v: f64) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = v;
    }
    m
}

/// Flat parameter index of entry (o, i) of layer `l`'s augmented weight `[W | b]`.
fn flat(l: &LayerLayout, o: usize, i: usize) -> usize {
    if i < l.fan_in {
        l.w_off + o * l.fan_in + i
    } else {
        l.b_off + o
    }
}

impl KfacFactors {
    /// Factors for `n_terms` loss terms (1 or 2), all at the identity or all zero.
    pub fn new(mlp: &Mlp, n_terms: usize, identity: bool) -> Result<Self> {
        check_terms(n_terms)?;
        let layers = mlp.layers();
        let v = if identity { 1.0 } else { 0.0 };
        let a = (0..n_terms)
            .map(|_| layers.iter().map(|l| eye(l.fan_in + 1, v)).collect())
            .collect();
        let b = (0..n_terms)
            .map(|_| layers.iter().map(|l| eye(l.fan_out, v)).collect())
            .collect();
        Ok(KfacFactors { layers, a, b })
    }
    pub fn layers(&self) -> &[LayerLayout] {
        &self.layers
    }
    pub fn num_terms(&self) -> usize {
        self.a.len()
    }
    /// `A` of term `t`, layer `l` (`(fan_in+1)²`, row-major).
    pub fn a(&self, t: usize, l: usize) -> &[f64] {
        &self.a[t][l]
    }
    /// `B` of term `t`, layer `l` (`fan_out²`, row-major).
    pub fn b(&self, t: usize, l: usize) -> &[f64] {
        &self.b[t][l]
    }
    /// Replace the factors of term `t`, layer `l` (row-major `(fan_in+1)²` and `fan_out²`).
    pub fn set(&mut self, t: usize, l: usize, a: Vec<f64>, b: Vec<f64>) -> Result<()> {
        if t >= self.a.len() || l >= self.layers.len() {
            return Err(Error::Shape(format!(
                "no KFAC factors for term {t}, layer {l}"
            )));
        }
        if a.len() != self.a[t][l].len() || b.len() != self.b[t][l].len() {
            return Err(Error::Shape(format!(
                "KFAC factors of layer {l} have {} and {} entries, got {} and {}",
                self.a[t][l].len(),
                self.b[t][l].len(),
                a.len(),
                b.len()
            )));
        }
        self.a[t][l] = a;
        self.b[t][l] = b;
        Ok(())
    }
    /// Exponential moving average `X ← βX + (1−β)X_new` of every factor.
    pub fn ema(&mut self, new: &KfacFactors, beta: f64) -> Result<()> {
        if new.layers != self.layers || new.a.len() != self.a.len() {
            return Err(Error::Shape("KFAC factors of different networks".into()));
        }
        for (x, y) in self
            .a
            .iter_mut()
            .chain(self.b.iter_mut())
            .zip(new.a.iter().chain(&new.b))
        {
            for (xl, yl) in x.iter_mut().zip(y) {
                xl.iter_mut()
                    .zip(yl)
                    .for_each(|(x, &y)| *x = beta * *x + (1.0 - beta) * y);
            }
        }
        Ok(())
    }
    /// The dense `P × P` curvature `Σ_t (A_t+λI)⊗(B_t+λI)` per layer (block diagonal), in
    /// the flat parameter order. For tests and small networks.
    pub fn to_dense(&self, damping: f64) -> Vec<f64> {
        let p = self.layers.last().map(|l| l.b_off + l.fan_out).unwrap_or(0);
        let mut out = vec![0.0; p * p];
        for (li, l) in self.layers.iter().enumerate() {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            for t in 0..self.a.len() {
                let (a, b) = (&self.a[t][li], &self.b[t][li]);
                for o in 0..nb {
                    for o2 in 0..nb {
                        let bv = b[o * nb + o2] + if o == o2 { damping } else { 0.0 };
                        for i in 0..na {
                            for i2 in 0..na {
                                let av = a[i * na + i2] + if i == i2 { damping } else { 0.0 };
                                out[flat(l, o, i) * p + flat(l, o2, i2)] += av * bv;
                            }
                        }
                    }
                }
            }
        }
        out
    }
    /// Named host arrays for checkpoints (prefix distinguishes several factor sets).
    pub fn state(&self, prefix: &str) -> State {
        let mut s = Vec::new();
        for t in 0..self.a.len() {
            for l in 0..self.layers.len() {
                s.push((format!("{prefix}A{t}_{l}"), self.a[t][l].clone()));
                s.push((format!("{prefix}B{t}_{l}"), self.b[t][l].clone()));
            }
        }
        s
    }
    pub fn load_state(&mut self, prefix: &str, s: &State) -> Result<()> {
        for t in 0..self.a.len() {
            for l in 0..self.layers.len() {
                let na = self.a[t][l].len();
                let nb = self.b[t][l].len();
                self.a[t][l] =
                    crate::optim::state_get(s, &format!("{prefix}A{t}_{l}"), na)?.to_vec();
                self.b[t][l] =
                    crate::optim::state_get(s, &format!("{prefix}B{t}_{l}"), nb)?.to_vec();
            }
        }
        Ok(())
    }
}

fn check_terms(n: usize) -> Result<()> {
    if n == 0 || n > 2 {
        return Err(Error::invalid(
            "number of loss terms",
            n,
            "1 or 2 for KFAC (the Kronecker-sum inverse is exact for two terms)",
        ));
    }
    Ok(())
}

/// Backend accumulators for one pass: the gradient and (optionally) the batch's factors.
pub struct KfacPass<B: Backend, T: Real> {
    layers: Vec<LayerLayout>,
    a: Vec<Vec<B::Buf<T>>>,
    b: Vec<Vec<B::Buf<T>>>,
    /// Per-sample row scales `r_n·w/N` of the current chunk.
    scale: B::Buf<T>,
    /// Accumulators of the further workers of a chunk-parallel sweep.
    spares: Vec<Spare<B, T>>,
}

/// One further sweep worker's gradient, factors (per layer) and row scales.
struct Spare<B: Backend, T: Real> {
    grad: B::Buf<T>,
    a: Vec<B::Buf<T>>,
    b: Vec<B::Buf<T>>,
    scale: B::Buf<T>,
}

impl<B: Backend, T: Real> Spare<B, T> {
    fn new(be: &B, layers: &[LayerLayout], np: usize) -> Result<Self> {
        Ok(Spare {
            grad: be.alloc(np)?,
            a: layers
                .iter()
                .map(|l| be.alloc((l.fan_in + 1) * (l.fan_in + 1)))
                .collect::<Result<_>>()?,
            b: layers
                .iter()
                .map(|l| be.alloc(l.fan_out * l.fan_out))
                .collect::<Result<_>>()?,
            scale: be.alloc(0)?,
        })
    }
}

/// What one sweep worker accumulates into.
struct Acc<'a, B: Backend, T: Real> {
    grad: &'a mut B::Buf<T>,
    a: &'a mut [B::Buf<T>],
    b: &'a mut [B::Buf<T>],
    scale: &'a mut B::Buf<T>,
    ss: f64,
    store: Option<&'a mut StorePiece<B, T>>,
}

impl<B: Backend, T: Real> KfacPass<B, T> {
    pub fn new(be: &B, mlp: &Mlp, n_terms: usize) -> Result<Self> {
        check_terms(n_terms)?;
        let layers = mlp.layers();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..n_terms {
            a.push(
                layers
                    .iter()
                    .map(|l| be.alloc((l.fan_in + 1) * (l.fan_in + 1)))
                    .collect::<Result<Vec<_>>>()?,
            );
            b.push(
                layers
                    .iter()
                    .map(|l| be.alloc(l.fan_out * l.fan_out))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok(KfacPass {
            layers,
            a,
            b,
            scale: be.alloc(0)?,
            spares: vec![],
        })
    }

    /// One sweep over every term: returns the loss, writes its gradient to `grad` and,
    /// when `factors` is given, this batch's Kronecker factors (no EMA, no damping). With
    /// `store`, every chunk's layer inputs and un-scaled cotangents are also kept for
    /// later Jacobian-vector products (if the store applies; see [`JacobianStore`]).
    pub fn run(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        grad: &mut B::Buf<T>,
        mut factors: Option<&mut KfacFactors>,
        mut store: Option<&mut JacobianStore<B, T>>,
    ) -> Result<f64> {
        let be = obj.backend().clone();
        if obj.num_terms() != self.a.len() {
            return Err(Error::Shape(format!(
                "KFAC was set up for {} loss terms, the objective has {}",
                self.a.len(),
                obj.num_terms()
            )));
        }
        obj.mlp().check_params(be.len(grad))?;
        let np = be.len(grad);
        be.fill(grad, 0, np, T::ZERO)?;
        let with_factors = factors.is_some();
        let storing = match store.as_deref_mut() {
            Some(st) => st.begin(obj)?,
            None => false,
        };
        if with_factors {
            for x in self.a.iter_mut().chain(self.b.iter_mut()).flatten() {
                let n = be.len(x);
                be.fill(x, 0, n, T::ZERO)?;
            }
        }
        let mut loss = 0.0;
        for t in 0..obj.num_terms() {
            let n_t = obj.term_points(t);
            if n_t == 0 {
                continue;
            }
            let spec = obj.term_spec(t);
            let (w, nr, s) = (spec.weight, spec.residual.n_res(), spec.kind.s());
            let alpha_a = T::from_f64(1.0 / (n_t * s) as f64);
            let alpha_b = T::from_f64(w / n_t as f64);
            let gscale = w / n_t as f64;
            // one accumulator per sweep worker: the first adds into the pass's own buffers,
            // the others into spares, added in afterwards
            let workers = obj.workers(t);
            while self.spares.len() + 1 < workers {
                self.spares.push(Spare::new(&be, &self.layers, np)?);
            }
            let mut pieces: Vec<Option<&mut StorePiece<B, T>>> = match store.as_deref_mut() {
                Some(st) if storing => st.pieces_mut(t).iter_mut().map(Some).collect(),
                _ => (0..workers).map(|_| None).collect(),
            };
            if pieces.len() != workers {
                return Err(Error::Shape(format!(
                    "Jacobian store has {} pieces for term {t}, the sweep {workers} workers",
                    pieces.len()
                )));
            }
            let mut accs = Vec::with_capacity(workers);
            accs.push(Acc {
                grad: &mut *grad,
                a: &mut self.a[t][..],
                b: &mut self.b[t][..],
                scale: &mut self.scale,
                ss: 0.0,
                store: None,
            });
            for sp in self.spares.iter_mut().take(workers - 1) {
                if with_factors {
                    for x in sp.a.iter_mut().chain(sp.b.iter_mut()) {
                        let n = be.len(x);
                        be.fill(x, 0, n, T::ZERO)?;
                    }
                }
                accs.push(Acc {
                    grad: &mut sp.grad,
                    a: &mut sp.a[..],
                    b: &mut sp.b[..],
                    scale: &mut sp.scale,
                    ss: 0.0,
                    store: None,
                });
            }
            for (acc, piece) in accs.iter_mut().zip(pieces.iter_mut()) {
                acc.store = piece.take();
            }
            obj.sweep_par(params, t, &mut accs, |acc, pass| {
                acc.ss += pass.sum_sq()?;
                let (n, first) = (pass.n, pass.first);
                for q in 0..nr {
                    // row scales r_n·w/N for the gradient; un-scaled seeds ∂r_q/∂y: the
                    // cotangents are the g of B
                    pass.component_residuals(q, gscale, acc.scale)?;
                    pass.backward_component(q, |be, v| {
                        let l = v.index;
                        let (fi, fo) = (v.layout.fan_in, v.layout.fan_out);
                        if with_factors {
                            if q == 0 {
                                // A: inputs of all S rows; the bias row from the value rows
                                let lc = Lay {
                                    off: 0,
                                    rows: fi,
                                    cols: fi,
                                    ld: fi + 1,
                                };
                                let fa = &mut acc.a[l];
                                be.syrk(alpha_a, v.a, v.a_lay(), T::ONE, fa, lc)?;
                                be.col_sum(alpha_a, v.a, n, fi, T::ONE, fa, fi * (fi + 1))?;
                            }
                            be.syrk(
                                alpha_b,
                                v.g,
                                v.g_lay(),
                                T::ONE,
                                &mut acc.b[l],
                                Lay::dense(fo, fo),
                            )?;
                        }
                        if let Some(st) = acc.store.as_deref_mut() {
                            st.record(be, l, first, n, v.a, v.g)?;
                        }
                        // gradient: g · r_n w/N, then Gᵀ Z̃
                        let sh = v.out_shape();
                        be.scale_jet_rows(v.g, acc.scale, sh)?;
                        accumulate_grad(be, &v, T::ONE, acc.grad)
                    })?;
                }
                Ok(())
            })?;
            let ss: f64 = accs.iter().map(|a| a.ss).sum();
            drop(accs);
            if with_factors {
                for sp in self.spares.iter().take(workers - 1) {
                    for (x, y) in sp.a.iter().zip(self.a[t].iter_mut()) {
                        be.axpby(T::ONE, x, T::ONE, y)?;
                    }
                    for (x, y) in sp.b.iter().zip(self.b[t].iter_mut()) {
                        be.axpby(T::ONE, x, T::ONE, y)?;
                    }
                }
            }
            loss += w * ss / (2.0 * n_t as f64);
            if let Some(f) = factors.as_deref_mut() {
                for (li, l) in self.layers.iter().enumerate() {
                    let na = l.fan_in + 1;
                    let mut a: Vec<f64> = convert(&be.download(&self.a[t][li])?);
                    // bias column from the bias row; corner = (value rows)/(N·S) = 1/S
                    for i in 0..l.fan_in {
                        a[i * na + l.fan_in] = a[l.fan_in * na + i];
                    }
                    a[na * na - 1] = 1.0 / s as f64;
                    f.a[t][li] = a;
                    f.b[t][li] = convert(&be.download(&self.b[t][li])?);
                }
            }
        }
        if let Some(f) = factors {
            // terms without points contribute nothing
            for t in 0..obj.num_terms() {
                if obj.term_points(t) == 0 {
                    for li in 0..self.layers.len() {
                        f.a[t][li].fill(0.0);
                        f.b[t][li].fill(0.0);
                    }
                }
            }
        }
        // the spares' gradients (they accumulate over all terms)
        for sp in &mut self.spares {
            be.axpby(T::ONE, &sp.grad, T::ONE, grad)?;
            be.fill(&mut sp.grad, 0, np, T::ZERO)?;
        }
        if storing {
            if let Some(st) = store {
                st.finish()?;
            }
        }
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        Ok(loss)
    }
}

/// Per-layer pieces of the inverse on the backend, with host copies for `to_dense` and
/// checkpoints.
struct LayerInverse<B: Backend, T: Real> {
    ka: B::Buf<T>,
    kb: B::Buf<T>,
    /// `1 / (1 + s_B s_Aᵀ)`, `fan_out × (fan_in+1)`.
    d: B::Buf<T>,
    t1: B::Buf<T>,
    t2: B::Buf<T>,
    host_ka: Vec<f64>,
    host_kb: Vec<f64>,
    host_d: Vec<f64>,
}

/// The exact inverse of the damped Kronecker sum, per layer.
pub struct KfacInverse<B: Backend, T: Real> {
    layers: Vec<LayerLayout>,
    inv: Vec<LayerInverse<B, T>>,
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
            let host_ka = eye(na, 1.0);
            let host_kb = eye(nb, 1.0);
            let host_d = vec![1.0; nb * na];
            inv.push(LayerInverse {
                ka: be.upload(&convert::<f64, T>(&host_ka))?,
                kb: be.upload(&convert::<f64, T>(&host_kb))?,
                d: be.upload(&convert::<f64, T>(&host_d))?,
                t1: be.alloc(nb * na)?,
                t2: be.alloc(nb * na)?,
                host_ka,
                host_kb,
                host_d,
            });
        }
        Ok(KfacInverse {
            layers,
            inv,
            clamped: 0,
        })
    }

    /// Recompute the inverse of `Σ_t (A_t+λI)⊗(B_t+λI)` from `factors` (f64, host).
    /// Returns the number of eigenvalues clamped to keep it positive definite.
    pub fn update(&mut self, be: &B, factors: &KfacFactors, damping: f64) -> Result<usize> {
        if factors.layers != self.layers {
            return Err(Error::Shape("KFAC factors of a different network".into()));
        }
        let damp = |x: &[f64], n: usize| {
            let mut y = x.to_vec();
            for i in 0..n {
                y[i * n + i] += damping;
            }
            y
        };
        // the 2·L simultaneous diagonalisations are independent: run them in parallel
        let two = factors.num_terms() > 1;
        let sides: Vec<Result<KronSide>> = (0..2 * self.layers.len())
            .into_par_iter()
            .map(|job| {
                let (li, is_a) = (job / 2, job % 2 == 0);
                let l = &self.layers[li];
                let (n, x, what) = if is_a {
                    (l.fan_in + 1, &factors.a, "A")
                } else {
                    (l.fan_out, &factors.b, "B")
                };
                let x1 = damp(&x[0][li], n);
                let x2 = two.then(|| damp(&x[1][li], n));
                kron_side(
                    n,
                    &x1,
                    x2.as_deref(),
                    &format!("KFAC {what} factor of layer {li}"),
                )
            })
            .collect();
        let mut sides = sides.into_iter();
        let mut clamped = 0;
        for li in 0..self.layers.len() {
            let l = self.layers[li];
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            let sa = sides.next().expect("A side")?;
            let sb = sides.next().expect("B side")?;
            clamped += sa.clamped + sb.clamped;
            let mut d = vec![0.0; nb * na];
            for o in 0..nb {
                for i in 0..na {
                    d[o * na + i] = 1.0 / (1.0 + sb.s[o] * sa.s[i]);
                }
            }
            let inv = &mut self.inv[li];
            be.upload_range(&convert::<f64, T>(&sa.k), &mut inv.ka, 0)?;
            be.upload_range(&convert::<f64, T>(&sb.k), &mut inv.kb, 0)?;
            be.upload_range(&convert::<f64, T>(&d), &mut inv.d, 0)?;
            inv.host_ka = sa.k;
            inv.host_kb = sb.k;
            inv.host_d = d;
        }
        self.clamped = clamped;
        Ok(clamped)
    }

    /// `out = alpha · K⁻¹ grad` (flat parameter vectors; `out` must not alias `grad`).
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
            let ka_top = Lay {
                off: 0,
                rows: fi,
                cols: na,
                ld: na,
            };
            let ka_bias = Lay {
                off: fi * na,
                rows: 1,
                cols: na,
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
            // t1 = G̃ K_A = ∇W K_A[:fi] + ∇b K_A[fi]
            be.gemm(
                T::ONE,
                grad,
                gw,
                Tr::N,
                &inv.ka,
                ka_top,
                Tr::N,
                T::ZERO,
                &mut inv.t1,
                y,
            )?;
            be.gemm(
                T::ONE,
                grad,
                gb,
                Tr::N,
                &inv.ka,
                ka_bias,
                Tr::N,
                T::ONE,
                &mut inv.t1,
                y,
            )?;
            // t2 = (K_Bᵀ t1) ⊘ (1 + s_B s_Aᵀ)
            be.gemm(
                T::ONE,
                &inv.kb,
                kb,
                Tr::T,
                &inv.t1,
                y,
                Tr::N,
                T::ZERO,
                &mut inv.t2,
                y,
            )?;
            be.mul(&inv.d, 0, &mut inv.t2, 0, fo * na)?;
            // t1 = K_B t2, then X = t1 K_Aᵀ split into the weight and bias blocks
            be.gemm(
                T::ONE,
                &inv.kb,
                kb,
                Tr::N,
                &inv.t2,
                y,
                Tr::N,
                T::ZERO,
                &mut inv.t1,
                y,
            )?;
            be.gemm(
                alpha,
                &inv.t1,
                y,
                Tr::N,
                &inv.ka,
                ka_top,
                Tr::T,
                T::ZERO,
                out,
                gw,
            )?;
            be.gemm(
                alpha,
                &inv.t1,
                y,
                Tr::N,
                &inv.ka,
                ka_bias,
                Tr::T,
                T::ZERO,
                out,
                gb,
            )?;
        }
        Ok(())
    }

    /// The dense `P × P` inverse (block diagonal), in the flat parameter order. For tests.
    pub fn to_dense(&self) -> Vec<f64> {
        let p = self.layers.last().map(|l| l.b_off + l.fan_out).unwrap_or(0);
        let mut out = vec![0.0; p * p];
        for (l, inv) in self.layers.iter().zip(&self.inv) {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            // column (p, q) of K_B ⊗ K_A, scaled by sqrt-free d: Inv = M diag(d) Mᵀ
            let m = |o: usize, i: usize, pp: usize, qq: usize| {
                inv.host_kb[o * nb + pp] * inv.host_ka[i * na + qq]
            };
            for o in 0..nb {
                for i in 0..na {
                    let r = flat(l, o, i);
                    for o2 in 0..nb {
                        for i2 in 0..na {
                            let c = flat(l, o2, i2);
                            let mut s = 0.0;
                            for pp in 0..nb {
                                for qq in 0..na {
                                    s += m(o, i, pp, qq)
                                        * inv.host_d[pp * na + qq]
                                        * m(o2, i2, pp, qq);
                                }
                            }
                            out[r * p + c] = s;
                        }
                    }
                }
            }
        }
        out
    }

    pub fn state(&self, prefix: &str) -> State {
        let mut s = Vec::new();
        for (li, inv) in self.inv.iter().enumerate() {
            s.push((format!("{prefix}KA{li}"), inv.host_ka.clone()));
            s.push((format!("{prefix}KB{li}"), inv.host_kb.clone()));
            s.push((format!("{prefix}D{li}"), inv.host_d.clone()));
        }
        s
    }

    pub fn load_state(&mut self, be: &B, prefix: &str, s: &State) -> Result<()> {
        for (li, (l, inv)) in self.layers.iter().zip(self.inv.iter_mut()).enumerate() {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            inv.host_ka = crate::optim::state_get(s, &format!("{prefix}KA{li}"), na * na)?.to_vec();
            inv.host_kb = crate::optim::state_get(s, &format!("{prefix}KB{li}"), nb * nb)?.to_vec();
            inv.host_d = crate::optim::state_get(s, &format!("{prefix}D{li}"), nb * na)?.to_vec();
            be.upload_range(&convert::<f64, T>(&inv.host_ka), &mut inv.ka, 0)?;
            be.upload_range(&convert::<f64, T>(&inv.host_kb), &mut inv.kb, 0)?;
            be.upload_range(&convert::<f64, T>(&inv.host_d), &mut inv.d, 0)?;
        }
        Ok(())
    }
}

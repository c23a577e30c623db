//! Kronecker-factored curvature for PINN losses (design §3, docs/paper-setups.md §2.1):
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
//! The factors live on the backend in f64 ([`DeviceFactors`]; the pass casts its batch
//! factors there and fills A's bias border; the moving average is an axpby). The inverse
//! ([`KfacInverse`]) is computed there too, from f64 symmetric eigendecompositions
//! (`Backend::sym_eig`: faer, or cuSOLVER `syevd`) and small kernels, and applied to the
//! gradient with backend products: `X = K_B [(K_Bᵀ G̃ K_A) ⊘ (1 + s_B s_Aᵀ)] K_Aᵀ` for the
//! gradient matrix `G̃ = [∇W | ∇b]`. A step reads back only the clamped-eigenvalue counts.
//!
//! Checked by `tests/curvature_kfac.rs`: for one sample of a value-only term the factors'
//! Kronecker product equals the exact Gramian block; the factors against a naive host
//! computation from the layer inputs and cotangents; the inverse against a dense solve
//! and against the host reference `linalg::kron_side`; tests/kernels.rs runs the same
//! inverse through the kernel emulation.

use super::store::{JacobianStore, StorePiece};
use crate::backend::{run_workers, Backend, EigFix, JetShape, Lay, Tr};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, accumulate_grad_from};
use crate::loss::Objective;
use crate::model::{LayerLayout, Mlp};
use crate::optim::State;
use crate::scalar::Real;

/// Kronecker factors on the host (f64), per loss term and layer: `A` is
/// `(fan_in+1)²` and `B` is `fan_out²`, both row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct KfacFactors {
    layers: Vec<LayerLayout>,
    /// `[term][layer]`
    a: Vec<Vec<Vec<f64>>>,
    b: Vec<Vec<Vec<f64>>>,
}

/// Visit every factor of `x` (all A, then all B, term by term and layer by layer) with the
/// matching factor of `y`; both sets must belong to the same network and terms.
fn zip_factors<X, Y>(
    x: (&mut [Vec<X>], &mut [Vec<X>]),
    y: (&[Vec<Y>], &[Vec<Y>]),
    mut f: impl FnMut(&mut X, &Y) -> Result<()>,
) -> Result<()> {
    for (xt, yt) in
        x.0.iter_mut()
            .chain(x.1.iter_mut())
            .zip(y.0.iter().chain(y.1))
    {
        for (xl, yl) in xt.iter_mut().zip(yt) {
            f(xl, yl)?;
        }
    }
    Ok(())
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
        zip_factors((&mut self.a, &mut self.b), (&new.a, &new.b), |x, y| {
            x.iter_mut()
                .zip(y)
                .for_each(|(x, &y)| *x = beta * *x + (1.0 - beta) * y);
            Ok(())
        })
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

/// Kronecker factors on the backend, in f64 whatever the training precision (their moving
/// average and the inverse need it); same layout as [`KfacFactors`], the host copy used
/// for checkpoints and tests.
pub struct DeviceFactors<B: Backend> {
    layers: Vec<LayerLayout>,
    /// `[term][layer]`
    a: Vec<Vec<B::Buf<f64>>>,
    b: Vec<Vec<B::Buf<f64>>>,
}

impl<B: Backend> DeviceFactors<B> {
    /// Factors for `n_terms` loss terms (1 or 2), all at the identity or all zero.
    pub fn new(be: &B, mlp: &Mlp, n_terms: usize, identity: bool) -> Result<Self> {
        Self::upload(be, &KfacFactors::new(mlp, n_terms, identity)?)
    }
    pub fn upload(be: &B, host: &KfacFactors) -> Result<Self> {
        let up = |x: &Vec<Vec<Vec<f64>>>| -> Result<Vec<Vec<B::Buf<f64>>>> {
            x.iter()
                .map(|t| t.iter().map(|m| be.upload(m)).collect())
                .collect()
        };
        Ok(DeviceFactors {
            layers: host.layers.clone(),
            a: up(&host.a)?,
            b: up(&host.b)?,
        })
    }
    pub fn download(&self, be: &B) -> Result<KfacFactors> {
        let down = |x: &Vec<Vec<B::Buf<f64>>>| -> Result<Vec<Vec<Vec<f64>>>> {
            x.iter()
                .map(|t| t.iter().map(|m| be.download(m)).collect())
                .collect()
        };
        Ok(KfacFactors {
            layers: self.layers.clone(),
            a: down(&self.a)?,
            b: down(&self.b)?,
        })
    }
    /// Overwrite the factors with a host copy of the same network and number of terms.
    pub fn load(&mut self, be: &B, host: &KfacFactors) -> Result<()> {
        if host.layers != self.layers || host.a.len() != self.a.len() {
            return Err(Error::Shape("KFAC factors of different networks".into()));
        }
        zip_factors((&mut self.a, &mut self.b), (&host.a, &host.b), |x, y| {
            be.upload_range(y, x, 0)
        })
    }
    pub fn num_terms(&self) -> usize {
        self.a.len()
    }
    /// Exponential moving average `X ← βX + (1−β)X_new` of every factor.
    pub fn ema(&mut self, be: &B, new: &DeviceFactors<B>, beta: f64) -> Result<()> {
        if new.layers != self.layers || new.a.len() != self.a.len() {
            return Err(Error::Shape("KFAC factors of different networks".into()));
        }
        zip_factors((&mut self.a, &mut self.b), (&new.a, &new.b), |x, y| {
            be.axpby(1.0 - beta, y, beta, x)
        })
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
        mut factors: Option<&mut DeviceFactors<B>>,
        mut store: Option<&mut JacobianStore<B, T>>,
    ) -> Result<f64> {
        let be = obj.backend().clone();
        if let Some(f) = factors.as_deref() {
            if f.a.len() != self.a.len() || f.layers != self.layers {
                return Err(Error::Shape(
                    "KFAC factors of a different network or number of terms".into(),
                ));
            }
        }
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
                    pass.backward_component(q, |be, mut v| {
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
                                be.syrk(alpha_a, v.a(), v.a_lay(), T::ONE, fa, lc)?;
                                be.col_sum(alpha_a, v.a(), 0, n, fi, T::ONE, fa, fi * (fi + 1))?;
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
                        // gradient: g · r_n w/N, then Gᵀ Z̃
                        let sh = v.out_shape();
                        match acc.store.as_deref_mut() {
                            Some(st) => {
                                // the store takes the input jet and the un-scaled cotangent
                                // (buffer swaps, no copies); the gradient reads them there
                                let (a, g) = st.record(be, first, n, &mut v)?;
                                be.scale_jet_rows_to(g, acc.scale, sh, v.g)?;
                                accumulate_grad_from(
                                    be,
                                    v.layout,
                                    v.shape,
                                    v.g,
                                    a,
                                    T::ONE,
                                    acc.grad,
                                )
                            }
                            None => {
                                be.scale_jet_rows(v.g, acc.scale, sh)?;
                                accumulate_grad(be, &v, T::ONE, acc.grad)
                            }
                        }
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
                // into the f64 factors, on the backend: A's bias column from its bias row,
                // corner = (value rows)/(N·S) = 1/S
                for (li, l) in self.layers.iter().enumerate() {
                    let (na, nb) = (l.fan_in + 1, l.fan_out);
                    be.cast(&self.a[t][li], 0, &mut f.a[t][li], 0, na * na)?;
                    be.bias_border(&mut f.a[t][li], na, 1.0 / s as f64)?;
                    be.cast(&self.b[t][li], 0, &mut f.b[t][li], 0, nb * nb)?;
                }
            }
        }
        if let Some(f) = factors {
            // terms without points contribute nothing
            for t in 0..obj.num_terms() {
                if obj.term_points(t) == 0 {
                    for x in f.a[t].iter_mut().chain(f.b[t].iter_mut()) {
                        let n = be.len(x);
                        be.fill(x, 0, n, 0.0)?;
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

/// One side (A or B) of a layer's inverse: `K` with `Kᵀ X₁ K = I`, `Kᵀ X₂ K = diag(s)`
/// (see [`kron_side`], its host reference), kept as `Kᵀ` in f64 on the backend, with the
/// scratch of its computation.
struct Side<B: Backend> {
    n: usize,
    /// `Kᵀ`, row-major `n × n`.
    kt: B::Buf<f64>,
    s: B::Buf<f64>,
    x: B::Buf<f64>,
    m: B::Buf<f64>,
    wt: B::Buf<f64>,
    e: B::Buf<f64>,
    vals: B::Buf<f64>,
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
        let rows = JetShape {
            n,
            k: 0,
            lap: false,
            h: n,
        };
        be.scale_jet_rows(&mut self.wt, &self.vals, rows)?;
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

fn transpose(n: usize, x: &[f64]) -> Vec<f64> {
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
struct LayerInverse<B: Backend, T: Real> {
    a: Side<B>,
    b: Side<B>,
    /// `1 / (1 + s_B s_Aᵀ)`, `fan_out × (fan_in+1)`.
    d64: B::Buf<f64>,
    /// `K_Aᵀ`, `K_Bᵀ` and `d` in `T`.
    kat: B::Buf<T>,
    kbt: B::Buf<T>,
    d: B::Buf<T>,
    t1: B::Buf<T>,
    t2: B::Buf<T>,
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
        let two = factors.num_terms() > 1;
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

//! The KFAC pass (design §3): one reverse sweep through the forward-Laplacian jets that
//! accumulates the loss gradient and, optionally, the batch's Kronecker factors, per sweep
//! worker, and can keep the layer inputs and cotangents for Jacobian-vector products
//! ([`super::super::JacobianStore`]).
//!
//! Checked by `tests/curvature_kfac.rs` and `tests/gradient.rs` (the gradient against
//! finite differences).

use super::super::store::{JacobianStore, StorePiece};
use super::factors::{check_terms, DeviceFactors};
use crate::backend::{Backend, Lay};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, accumulate_grad_from};
use crate::loss::Objective;
use crate::model::{LayerLayout, Mlp};
use crate::scalar::Real;

/// Backend accumulators for one pass: the gradient and (optionally) the batch's factors.
pub struct KfacPass<B: Backend, T: Real> {
    pub(super) layers: Vec<LayerLayout>,
    pub(super) a: Vec<Vec<B::Buf<T>>>,
    pub(super) b: Vec<Vec<B::Buf<T>>>,
    /// Per-sample row scales `r_n·w/N` of the current chunk.
    pub(super) scale: B::Buf<T>,
    /// Accumulators of the further workers of a chunk-parallel sweep.
    pub(super) spares: Vec<Spare<B, T>>,
}

/// One further sweep worker's gradient, factors (per layer) and row scales.
pub(super) struct Spare<B: Backend, T: Real> {
    pub(super) grad: B::Buf<T>,
    pub(super) a: Vec<B::Buf<T>>,
    pub(super) b: Vec<B::Buf<T>>,
    pub(super) scale: B::Buf<T>,
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
pub(super) struct Acc<'a, B: Backend, T: Real> {
    pub(super) grad: &'a mut B::Buf<T>,
    pub(super) a: &'a mut [B::Buf<T>],
    pub(super) b: &'a mut [B::Buf<T>],
    pub(super) scale: &'a mut B::Buf<T>,
    pub(super) ss: f64,
    pub(super) store: Option<&'a mut StorePiece<B, T>>,
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

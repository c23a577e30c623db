//! The KFAC pass (design §3): one reverse sweep through the forward-Laplacian jets, seeded
//! with the un-scaled `∂r/∂y`, that accumulates the loss gradient and, optionally, the
//! batch's Kronecker factors, and can keep the layer inputs and cotangents for
//! Jacobian-vector products ([`super::super::JacobianStore`]). [`KfacPass`] is the sweep
//! with factors (KFAC, KFAC*); [`GradStorePass`] the same sweep for the gradient and the
//! store alone (Hessian-free).
//!
//! With coefficients (design §7) every chunk also records its share of their gradient and
//! Gauss–Newton block, summed after the sweep ([`KfacPass::coef_block`]).
//!
//! A pass reads as a list of stages: check the set-up, start the store, then per term
//! sweep the chunks (each worker into its own accumulators, [`WorkerAccs`]) and commit
//! the term's factors; last add the workers' gradients and finish the store.
//!
//! Checked by `tests/curvature_kfac.rs` (factors against a naive computation, one and
//! three workers, the store's products against the dense Jacobian) and
//! `tests/gradient.rs` (the gradient against finite differences).

use super::super::store::{JacobianStore, StorePiece};
use super::factors::{factor_groups, DeviceFactors};
use crate::backend::{Backend, Lay};
use crate::error::{Error, Result};
use crate::jet::{accumulate_grad, accumulate_grad_from, LayerView};
use crate::loss::{ChunkPass, Objective, WorkerAcc, WorkerAccs, WorkerShare};
use crate::model::{LayerLayout, Mlp};
use crate::scalar::Real;

/// One sweep worker's own buffers besides its gradient: the row scales `r_n·w/N` of its
/// current chunk and its shares of the current term's factors `A` and `B`, per layer
/// (none in a gradient-only pass).
struct Share<B: Backend, T: Real> {
    scale: B::Buf<T>,
    a: Vec<B::Buf<T>>,
    b: Vec<B::Buf<T>>,
}

impl<B: Backend, T: Real> Share<B, T> {
    fn new(be: &B, layers: &[LayerLayout]) -> Result<Self> {
        Ok(Share {
            scale: be.alloc(0)?,
            a: layers
                .iter()
                .map(|l| be.alloc((l.fan_in + 1) * (l.fan_in + 1)))
                .collect::<Result<_>>()?,
            b: layers
                .iter()
                .map(|l| be.alloc(l.fan_out * l.fan_out))
                .collect::<Result<_>>()?,
        })
    }
}

impl<B: Backend, T: Real> WorkerShare<B> for Share<B, T> {
    fn zero(&mut self, be: &B) -> Result<()> {
        for x in self.a.iter_mut().chain(self.b.iter_mut()) {
            let n = be.len(x);
            be.fill(x, 0, n, T::ZERO)?;
        }
        Ok(())
    }
    fn add_to(&self, be: &B, total: &mut Self) -> Result<()> {
        for (x, y) in self.a.iter().zip(total.a.iter_mut()) {
            be.axpby(T::ONE, x, T::ONE, y)?;
        }
        for (x, y) in self.b.iter().zip(total.b.iter_mut()) {
            be.axpby(T::ONE, x, T::ONE, y)?;
        }
        Ok(())
    }
}

/// One worker's accumulators during a term's sweep, and its piece of the store.
type Worker<'a, B, T> = (
    WorkerAcc<'a, B, T, Share<B, T>>,
    Option<&'a mut StorePiece<B, T>>,
);

/// What every chunk of one term's sweep uses: the scale factors and whether the factors
/// are accumulated.
struct TermScales<T> {
    /// `A = alpha_a Σ z̃ z̃ᵀ` with `alpha_a = 1/(N·S)` (summed over the group's terms).
    alpha_a: T,
    /// `B = alpha_b Σ g gᵀ` with `alpha_b = w/N`.
    alpha_b: T,
    /// The gradient's row scales are `r_n·w/N`.
    gscale: f64,
    n_res: usize,
    factors: bool,
}

/// The sweep that [`KfacPass`] and [`GradStorePass`] share.
struct Sweep<B: Backend, T: Real> {
    /// The layers the workers' factor shares are made for (none: a gradient-only pass).
    layers: Vec<LayerLayout>,
    accs: WorkerAccs<B, T, Share<B, T>>,
    /// The coefficients' Gauss–Newton block of the last sweep (`K × K`; empty without).
    coef_block: Vec<f64>,
}

impl<B: Backend, T: Real> Sweep<B, T> {
    fn new(layers: Vec<LayerLayout>) -> Self {
        Sweep {
            layers,
            accs: WorkerAccs::default(),
            coef_block: vec![],
        }
    }

    /// One sweep over every term: returns the loss, writes its gradient to `grad`, and
    /// with `factors` the batch's factors (one set per factor group), with `store` the
    /// kept layer inputs and cotangents (if the store applies).
    fn run(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        grad: &mut B::Buf<T>,
        mut factors: Option<&mut DeviceFactors<B>>,
        store: Option<&mut JacobianStore<B, T>>,
    ) -> Result<f64> {
        let be = obj.backend().clone();
        self.accs.start(obj, grad)?;
        obj.start_coefs();
        let mut store = begin_store(obj, store)?;
        let mut per_term = vec![0.0; obj.num_terms()];
        for (g, terms) in factor_groups(obj.num_terms())?.iter().enumerate() {
            let pool = GroupRows::of(obj, terms);
            let mut swept = false;
            for &t in terms {
                if obj.term_points(t) == 0 {
                    // terms without points contribute nothing
                    continue;
                }
                let pieces = store.as_deref_mut().map(|st| st.pieces_mut(t));
                let on = (factors.is_some(), swept);
                let ss = self.sweep_term(obj, params, t, grad, &pool, on, pieces)?;
                per_term[t] = obj.term_loss(t, ss);
                swept = true;
            }
            if let Some(f) = factors.as_deref_mut() {
                if swept {
                    self.commit_factors(&be, &pool, g, f)?;
                } else {
                    zero_group_factors(&be, f, g)?;
                }
            }
        }
        self.accs.add_grads(&be, grad)?;
        self.coef_block = obj.finish_coefs(grad)?;
        if let Some(st) = store {
            st.finish()?;
        }
        obj.total_loss(&per_term)
    }

    /// Sweep term `t` chunk by chunk over its workers, each adding into its own
    /// accumulators (and recording into its piece of the store, when given). `on` is
    /// (accumulate factors, add to the shares of earlier terms of the group). Returns the
    /// term's `Σ ‖r_n‖²`.
    #[allow(clippy::too_many_arguments)]
    fn sweep_term(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        t: usize,
        grad: &mut B::Buf<T>,
        pool: &GroupRows,
        (factors, pooled): (bool, bool),
        pieces: Option<&mut [StorePiece<B, T>]>,
    ) -> Result<f64> {
        if factors && self.layers.is_empty() {
            return Err(Error::Shape(
                "KFAC factors asked of a gradient-only pass".into(),
            ));
        }
        let be = obj.backend().clone();
        let workers = obj.workers(t);
        let pieces = worker_pieces(pieces, t, workers)?;
        let (n_t, spec) = (obj.term_points(t), obj.term_spec(t));
        let scales = TermScales {
            alpha_a: T::from_f64(1.0 / pool.rows as f64),
            alpha_b: T::from_f64(spec.weight / n_t as f64),
            gscale: spec.weight / n_t as f64,
            n_res: spec.residual.n_res(),
            factors,
        };
        let layers = &self.layers;
        let accs = self
            .accs
            .term(&be, grad, workers, pooled, || Share::new(&be, layers))?;
        let mut states: Vec<Worker<'_, B, T>> = accs.into_iter().zip(pieces).collect();
        obj.sweep_par(params, t, &mut states, |(acc, piece), pass| {
            sweep_chunk(&scales, acc, piece.as_deref_mut(), pass)
        })?;
        Ok(states.iter().map(|(acc, _)| acc.ss).sum())
    }

    /// Into the f64 factors of group `g`, on the backend: the workers' shares summed, then
    /// A's bias column from its bias row, corner = (value rows)/(jet rows) of the group
    /// (`1/S` for one term).
    fn commit_factors(
        &mut self,
        be: &B,
        pool: &GroupRows,
        g: usize,
        f: &mut DeviceFactors<B>,
    ) -> Result<()> {
        let corner = pool.samples as f64 / pool.rows as f64;
        let total = self.accs.total_share(be)?;
        for (li, l) in self.layers.iter().enumerate() {
            let (na, nb) = (l.fan_in + 1, l.fan_out);
            be.cast(&total.a[li], 0, &mut f.a[g][li], 0, na * na)?;
            be.bias_border(&mut f.a[g][li], na, corner)?;
            be.cast(&total.b[li], 0, &mut f.b[g][li], 0, nb * nb)?;
        }
        Ok(())
    }
}

/// The samples and jet rows of a factor group's terms: its factor `A` is the mean of
/// `z̃ z̃ᵀ` over all of them (design §6).
struct GroupRows {
    samples: usize,
    rows: usize,
}

impl GroupRows {
    fn of<B: Backend, T: Real>(obj: &Objective<B, T>, terms: &[usize]) -> Self {
        let samples = terms.iter().map(|&t| obj.term_points(t)).sum();
        let rows = terms
            .iter()
            .map(|&t| obj.term_points(t) * obj.term_spec(t).kind.s())
            .sum();
        GroupRows { samples, rows }
    }
}

/// The store, if given and it applies to `obj`, started for a new pass.
fn begin_store<'a, B: Backend, T: Real>(
    obj: &Objective<B, T>,
    store: Option<&'a mut JacobianStore<B, T>>,
) -> Result<Option<&'a mut JacobianStore<B, T>>> {
    match store {
        Some(st) => Ok(st.begin(obj)?.then_some(st)),
        None => Ok(None),
    }
}

/// Each of a term's `workers` workers' piece of the store (none without one).
fn worker_pieces<B: Backend, T: Real>(
    pieces: Option<&mut [StorePiece<B, T>]>,
    t: usize,
    workers: usize,
) -> Result<Vec<Option<&mut StorePiece<B, T>>>> {
    let Some(pieces) = pieces else {
        return Ok((0..workers).map(|_| None).collect());
    };
    if pieces.len() != workers {
        return Err(Error::Shape(format!(
            "Jacobian store has {} pieces for term {t}, the sweep {workers} workers",
            pieces.len()
        )));
    }
    Ok(pieces.iter_mut().map(Some).collect())
}

/// Group `g`'s factors set to zero (none of its terms has points).
fn zero_group_factors<B: Backend>(be: &B, f: &mut DeviceFactors<B>, g: usize) -> Result<()> {
    for x in f.a[g].iter_mut().chain(f.b[g].iter_mut()) {
        let n = be.len(x);
        be.fill(x, 0, n, 0.0)?;
    }
    Ok(())
}

/// One worker's chunk: its squared residuals, then per residual component the row scales
/// `r_n·w/N` and a reverse pass seeded with the un-scaled `∂r_q/∂y`, whose cotangents are
/// the g of B; every visited layer feeds the factor shares, then the gradient.
fn sweep_chunk<B: Backend, T: Real>(
    c: &TermScales<T>,
    acc: &mut WorkerAcc<'_, B, T, Share<B, T>>,
    mut piece: Option<&mut StorePiece<B, T>>,
    pass: &mut ChunkPass<'_, B, T>,
) -> Result<()> {
    acc.ss += pass.sum_sq()?;
    pass.record_coefs()?;
    let (n, first) = (pass.n, pass.first);
    let Share { scale, a, b } = &mut *acc.share;
    let grad = &mut *acc.grad;
    for q in 0..c.n_res {
        pass.component_residuals(q, c.gscale, scale)?;
        pass.backward_component(q, |be, mut v| {
            if c.factors {
                let l = v.index;
                add_factor_shares(be, c, q == 0, n, &v, &mut a[l], &mut b[l])?;
            }
            add_scaled_grad(be, first, n, &mut v, scale, grad, piece.as_deref_mut())
        })?;
    }
    Ok(())
}

/// A layer's additions to the factor shares: `B` from the cotangents and, with `with_a`
/// (once per chunk), `A` from the inputs of all S rows (the bias row from the value rows).
fn add_factor_shares<B: Backend, T: Real>(
    be: &B,
    c: &TermScales<T>,
    with_a: bool,
    n: usize,
    v: &LayerView<'_, B, T>,
    fa: &mut B::Buf<T>,
    fb: &mut B::Buf<T>,
) -> Result<()> {
    let (fi, fo) = (v.layout.fan_in, v.layout.fan_out);
    if with_a {
        let lc = Lay {
            off: 0,
            rows: fi,
            cols: fi,
            ld: fi + 1,
        };
        let k = v.shape.k;
        if v.index == 0 && k > 0 {
            // The first layer's input jet is the points' jet: n value rows x_i, then K
            // blocks of n rows that all equal the direction v_k, then zero operator rows.
            // So Σ_rows a aᵀ = Σ_i x_i x_iᵀ + n Σ_k v_k v_kᵀ: n + K rows instead of n·S
            // (at D = 1,000 the exact jet's S = 1,002 made this product dominate a step).
            be.syrk(c.alpha_a, v.a(), Lay::dense(n, fi), T::ONE, fa, lc)?;
            let dirs = Lay {
                off: n * fi,
                rows: k,
                cols: fi,
                ld: n * fi,
            };
            let alpha_n = c.alpha_a * T::from_f64(n as f64);
            be.syrk(alpha_n, v.a(), dirs, T::ONE, fa, lc)?;
        } else {
            be.syrk(c.alpha_a, v.a(), v.a_lay(), T::ONE, fa, lc)?;
        }
        be.col_sum(c.alpha_a, v.a(), 0, n, fi, T::ONE, fa, fi * (fi + 1))?;
    }
    be.syrk(c.alpha_b, v.g, v.g_lay(), T::ONE, fb, Lay::dense(fo, fo))
}

/// A layer's addition to the gradient: its cotangents scaled by `r_n·w/N`, then `Gᵀ Z̃`.
/// With a store piece, the piece first takes the input jet and the un-scaled cotangent
/// (buffer swaps, no copies) and the gradient reads them there.
fn add_scaled_grad<B: Backend, T: Real>(
    be: &B,
    first: usize,
    n: usize,
    v: &mut LayerView<'_, B, T>,
    scale: &B::Buf<T>,
    grad: &mut B::Buf<T>,
    piece: Option<&mut StorePiece<B, T>>,
) -> Result<()> {
    let sh = v.out_shape();
    match piece {
        Some(st) => {
            let (a, g) = st.record(be, first, n, v)?;
            be.scale_jet_rows_to(g, scale, sh, v.g)?;
            accumulate_grad_from(be, v.layout, v.shape, v.g, a, T::ONE, grad)
        }
        None => {
            be.scale_jet_rows(v.g, scale, sh)?;
            accumulate_grad(be, v, T::ONE, grad)
        }
    }
}

/// The loss gradient and (optionally) the batch's Kronecker factors from one sweep.
pub struct KfacPass<B: Backend, T: Real> {
    n_terms: usize,
    sweep: Sweep<B, T>,
}

impl<B: Backend, T: Real> KfacPass<B, T> {
    /// A pass for `mlp` and `n_terms` loss terms (factors per group, [`factor_groups`]).
    pub fn new(mlp: &Mlp, n_terms: usize) -> Result<Self> {
        factor_groups(n_terms)?;
        Ok(KfacPass {
            n_terms,
            sweep: Sweep::new(mlp.layers()),
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
        factors: Option<&mut DeviceFactors<B>>,
        store: Option<&mut JacobianStore<B, T>>,
    ) -> Result<f64> {
        self.check_setup(obj, factors.as_deref())?;
        self.sweep.run(obj, params, grad, factors, store)
    }

    /// The Gauss–Newton block of the coefficients from the last [`Self::run`]:
    /// `Σ_t w_t/N_t Σ_n (∂r_n/∂coef)ᵀ(∂r_n/∂coef)`, `K × K` row-major (empty without
    /// coefficients). Exact, not Kronecker-factored (design §7).
    pub fn coef_block(&self) -> &[f64] {
        &self.sweep.coef_block
    }

    /// The pass, the factors and the objective must be of one network and number of terms.
    fn check_setup(&self, obj: &Objective<B, T>, factors: Option<&DeviceFactors<B>>) -> Result<()> {
        if let Some(f) = factors {
            if f.a.len() != factor_groups(self.n_terms)?.len() || f.layers != self.sweep.layers {
                return Err(Error::Shape(
                    "KFAC factors of a different network or number of terms".into(),
                ));
            }
        }
        if obj.num_terms() != self.n_terms {
            return Err(Error::Shape(format!(
                "KFAC was set up for {} loss terms, the objective has {}",
                self.n_terms,
                obj.num_terms()
            )));
        }
        if obj.mlp().layers() != self.sweep.layers {
            return Err(Error::Shape(
                "KFAC pass of a different network than the objective's".into(),
            ));
        }
        Ok(())
    }
}

/// The loss gradient from the KFAC pass's sweep without factors, keeping every chunk's
/// layer inputs and un-scaled cotangents in a [`JacobianStore`] for later `J v` and `G v`
/// products (Hessian-free's conjugate gradients), for any number of terms.
pub struct GradStorePass<B: Backend, T: Real> {
    sweep: Sweep<B, T>,
}

impl<B: Backend, T: Real> Default for GradStorePass<B, T> {
    fn default() -> Self {
        GradStorePass {
            sweep: Sweep::new(vec![]),
        }
    }
}

impl<B: Backend, T: Real> GradStorePass<B, T> {
    /// Returns the loss and writes its gradient to `grad`; `store` keeps the pass if it
    /// applies (else it is left invalid and products need passes of their own).
    pub fn run(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        grad: &mut B::Buf<T>,
        store: &mut JacobianStore<B, T>,
    ) -> Result<f64> {
        self.sweep.run(obj, params, grad, None, Some(store))
    }
}

//! Gramians `G = JᵀJ` of the scaled residual Jacobian (ENGD's curvature): full (`P × P`),
//! per-layer blocks, or the diagonal, accumulated chunk by chunk from per-chunk Jacobian
//! rows (`Backend::jac_rows`) with symmetric rank-k products, so the whole `M × P`
//! Jacobian is never held. The same sweep gives the loss and its gradient `Jᵀ r̃`.
//! An exponential moving average `G ← βG + (1−β)G_new` is built in.
//!
//! Checked by `tests/curvature_kfac.rs`: every kind against `JᵀJ` from the dense
//! Jacobian, and the gradient against `Objective::loss_grad`.

use crate::backend::{Backend, JacRows, Lay, Tr};
use crate::error::{Error, Result};
use crate::loss::{ChunkPass, Objective};
use crate::model::Mlp;
use crate::optim::State;
use crate::scalar::{convert, Real};

/// Which part of the Gramian is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GramianKind {
    /// The whole `P × P` matrix.
    Full,
    /// One block per layer (its weights and bias), and one for the coefficients of an
    /// inverse problem; zero elsewhere.
    Layer,
    /// The diagonal.
    Diagonal,
}

/// Write the scaled Jacobian rows of one chunk into `j` (row-major, `p` columns) from row
/// `row0` on: row `row0 + i·n_res + q` is `c · ∂r_{i,q}/∂θ`. One reverse pass per
/// residual component. `scale` is scratch of at least `pass.n` elements. With
/// coefficients (design §7) the last K columns are `c · ∂r/∂coef` (zero for a term that
/// does not read them).
pub fn chunk_jacobian<B: Backend, T: Real>(
    pass: &mut ChunkPass<'_, B, T>,
    c: f64,
    scale: &mut B::Buf<T>,
    j: &mut B::Buf<T>,
    row0: usize,
    p: usize,
) -> Result<()> {
    let be = pass.engine.backend().clone();
    let nr = pass.n_res;
    let n = pass.n;
    be.fill(scale, 0, n, T::from_f64(c))?;
    for q in 0..nr {
        pass.backward_component(q, |be, v| {
            let at = JacRows {
                row0: row0 + q,
                row_stride: nr,
                ld: p,
                w_off: v.layout.w_off,
                b_off: v.layout.b_off,
            };
            be.jac_rows(v.a(), v.g, v.shape, v.layout.fan_out, scale, j, at)
        })?;
    }
    let k = pass.n_coef();
    if k > 0 {
        let rows = n * nr;
        let dc = pass.coef_jac()?;
        let mut vals = vec![T::ZERO; k];
        for i in 0..rows {
            vals.fill(T::ZERO);
            for (v, d) in vals
                .iter_mut()
                .zip(dc.get(i * k..(i + 1) * k).unwrap_or(&[]))
            {
                *v = T::from_f64(c * d);
            }
            be.upload_range(&vals, j, (row0 + i) * p + p - k)?;
        }
    }
    Ok(())
}

/// A Gramian estimate on the backend, with its EMA.
pub struct Gramian<B: Backend, T: Real> {
    kind: GramianKind,
    p: usize,
    /// `(parameter offset, size)` of each block (one block for Full and Diagonal).
    blocks: Vec<(usize, usize)>,
    /// Offset of each block's storage in `data`.
    data_off: Vec<usize>,
    data: B::Buf<T>,
    jc: B::Buf<T>,
    sq: B::Buf<T>,
    r: B::Buf<T>,
    scale: B::Buf<T>,
}

impl<B: Backend, T: Real> Gramian<B, T> {
    /// A Gramian at the identity (`identity`) or zero.
    pub fn new(be: &B, mlp: &Mlp, kind: GramianKind, identity: bool) -> Result<Self> {
        let p = mlp.num_params();
        let blocks: Vec<(usize, usize)> = match kind {
            GramianKind::Full | GramianKind::Diagonal => vec![(0, p)],
            GramianKind::Layer => {
                let mut b: Vec<_> = mlp.layers().iter().map(|l| (l.off(), l.len())).collect();
                // the coefficients' dense block (design §7)
                if mlp.num_coefs() > 0 {
                    b.push((mlp.num_net_params(), mlp.num_coefs()));
                }
                b
            }
        };
        let mut data_off = Vec::with_capacity(blocks.len());
        let mut len = 0;
        for &(_, n) in &blocks {
            data_off.push(len);
            len += if kind == GramianKind::Diagonal {
                n
            } else {
                n * n
            };
        }
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        if bytes > 16 << 30 {
            return Err(Error::Device(format!(
                "the {kind:?} Gramian would take {:.1} GiB for {p} parameters; use engd-layer, engd-diag or a Kronecker-factored method",
                bytes as f64 / (1u64 << 30) as f64
            )));
        }
        let mut g = Gramian {
            kind,
            p,
            blocks,
            data_off,
            data: be.alloc(len)?,
            jc: be.alloc(0)?,
            sq: be.alloc(0)?,
            r: be.alloc(0)?,
            scale: be.alloc(0)?,
        };
        g.reset(be, identity)?;
        Ok(g)
    }

    pub fn kind(&self) -> GramianKind {
        self.kind
    }
    /// `(parameter offset, size)` of each block.
    pub fn blocks(&self) -> &[(usize, usize)] {
        &self.blocks
    }

    /// Block `b`'s storage on the backend: the buffer and the offset of its `n × n`
    /// row-major matrix (`n` diagonal entries for [`GramianKind::Diagonal`]).
    pub fn block_data(&self, b: usize) -> (&B::Buf<T>, usize) {
        (&self.data, self.data_off[b])
    }

    /// Set to the identity or zero.
    pub fn reset(&mut self, be: &B, identity: bool) -> Result<()> {
        let len = be.len(&self.data);
        be.fill(&mut self.data, 0, len, T::ZERO)?;
        if identity {
            for (b, &(_, n)) in self.blocks.iter().enumerate() {
                let off = self.data_off[b];
                if self.kind == GramianKind::Diagonal {
                    be.fill(&mut self.data, off, n, T::ONE)?;
                } else {
                    for i in 0..n {
                        be.fill(&mut self.data, off + i * n + i, 1, T::ONE)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `G ← βG + (1−β) JᵀJ` at `params`; writes the loss gradient `Jᵀ r̃` to `grad` and
    /// returns the loss `½‖r̃‖²`.
    pub fn update(
        &mut self,
        obj: &mut Objective<B, T>,
        params: &B::Buf<T>,
        beta: f64,
        grad: &mut B::Buf<T>,
    ) -> Result<f64> {
        let be = obj.backend().clone();
        let p = self.p;
        obj.mlp().check_params(be.len(grad))?;
        be.fill(grad, 0, p, T::ZERO)?;
        if beta == 0.0 {
            let len = be.len(&self.data);
            be.fill(&mut self.data, 0, len, T::ZERO)?;
        } else {
            be.scale(T::from_f64(beta), &mut self.data)?;
        }
        let alpha = T::from_f64(1.0 - beta);
        let mut loss = 0.0;
        for t in 0..obj.num_terms() {
            let n_t = obj.term_points(t);
            if n_t == 0 {
                continue;
            }
            let c = (obj.term_spec(t).weight / n_t as f64).sqrt();
            let nr = obj.term_spec(t).residual.n_res();
            let Gramian {
                kind,
                blocks,
                data_off,
                data,
                jc,
                sq,
                r,
                scale,
                ..
            } = self;
            obj.sweep(params, t, |pass| {
                let rows = pass.n * nr;
                if be.len(jc) < rows * p {
                    *jc = be.alloc(rows * p)?;
                    if *kind == GramianKind::Diagonal {
                        *sq = be.alloc(rows * p)?;
                    }
                }
                if be.len(scale) < pass.n {
                    *scale = be.alloc(pass.n)?;
                }
                if be.len(r) < rows {
                    *r = be.alloc(rows)?;
                }
                chunk_jacobian(pass, c, scale, jc, 0, p)?;
                // gradient Jᵀ r̃ and loss
                loss += 0.5 * c * c * pass.sum_sq()?;
                pass.scaled_residuals(c, r)?;
                let jl = Lay {
                    off: 0,
                    rows,
                    cols: p,
                    ld: p,
                };
                be.gemm(
                    T::ONE,
                    jc,
                    jl,
                    Tr::T,
                    r,
                    Lay::dense(rows, 1),
                    Tr::N,
                    T::ONE,
                    grad,
                    Lay::dense(p, 1),
                )?;
                // curvature
                match kind {
                    GramianKind::Full => be.syrk(alpha, jc, jl, T::ONE, data, Lay::dense(p, p))?,
                    GramianKind::Layer => {
                        for (b, &(off, n)) in blocks.iter().enumerate() {
                            let view = Lay {
                                off,
                                rows,
                                cols: n,
                                ld: p,
                            };
                            be.syrk(alpha, jc, view, T::ONE, data, Lay::at(data_off[b], n, n))?;
                        }
                    }
                    GramianKind::Diagonal => {
                        be.copy(jc, 0, sq, 0, rows * p)?;
                        be.mul(jc, 0, sq, 0, rows * p)?;
                        be.col_sum(alpha, sq, 0, rows, p, T::ONE, data, 0)?;
                    }
                }
                Ok(())
            })?;
        }
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        Ok(loss)
    }

    /// Block `b` on the host (f64): `n × n` row-major, or the `n` diagonal entries.
    pub fn block_host(&self, be: &B, b: usize) -> Result<Vec<f64>> {
        let n = self.blocks[b].1;
        let len = if self.kind == GramianKind::Diagonal {
            n
        } else {
            n * n
        };
        let mut h = vec![T::ZERO; len];
        be.download_range(&self.data, self.data_off[b], &mut h)?;
        Ok(convert(&h))
    }

    /// The dense `P × P` matrix (zeros outside the kept part). For tests and small nets.
    pub fn to_dense(&self, be: &B) -> Result<Vec<f64>> {
        let p = self.p;
        let mut out = vec![0.0; p * p];
        for (b, &(off, n)) in self.blocks.iter().enumerate() {
            let h = self.block_host(be, b)?;
            for i in 0..n {
                if self.kind == GramianKind::Diagonal {
                    out[(off + i) * p + off + i] = h[i];
                } else {
                    for j in 0..n {
                        out[(off + i) * p + off + j] = h[i * n + j];
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn state(&self, be: &B, name: &str) -> Result<State> {
        Ok(vec![(name.to_string(), convert(&be.download(&self.data)?))])
    }

    pub fn load_state(&mut self, be: &B, name: &str, s: &State) -> Result<()> {
        let len = be.len(&self.data);
        let v = crate::optim::state_get(s, name, len)?;
        be.upload_range(&convert::<f64, T>(v), &mut self.data, 0)
    }
}

//! The dense, scaled residual Jacobian of a least-squares objective: rows sample-major
//! (term by term; within a term sample n's `n_res` components are consecutive), scaled
//! by `sqrt(w/N_term)` so that `L = ½‖r̃‖²`, `∇L = Jᵀ r̃` and the Gramian is `G = JᵀJ`.
//! One reverse pass per residual component and chunk; each layer's block of every row is
//! an outer-product sum over the sample's S jet rows (Backend::jac_rows).
//!
//! Checked by `tests/curvature.rs`: Jᵀ r̃ equals the loss gradient, and J against finite
//! differences of the residuals.

use super::gramian::chunk_jacobian;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::loss::Objective;
use crate::scalar::{convert, Real};

/// `M × P` Jacobian (row-major) and the scaled residuals, both on the backend, with the
/// scratch of their assembly; [`jacobian_into`] reuses all of it while the shape holds.
pub struct Jacobian<B: Backend, T: Real> {
    pub rows: usize,
    pub cols: usize,
    pub j: B::Buf<T>,
    /// Scaled residuals r̃ (length M).
    pub r: B::Buf<T>,
    r_chunk: B::Buf<T>,
    scale: B::Buf<T>,
}

impl<B: Backend, T: Real> Jacobian<B, T> {
    /// An empty Jacobian, sized by the first [`jacobian_into`].
    pub fn empty(be: &B) -> Result<Self> {
        Ok(Jacobian {
            rows: 0,
            cols: 0,
            j: be.alloc(0)?,
            r: be.alloc(0)?,
            r_chunk: be.alloc(0)?,
            scale: be.alloc(0)?,
        })
    }
    /// The scaled residuals on the host.
    pub fn r_host(&self, be: &B) -> Result<Vec<f64>> {
        Ok(convert(&be.download(&self.r)?))
    }
}

/// Refuse Jacobians above this many bytes with a clear message instead of thrashing.
const MAX_JACOBIAN_BYTES: usize = 16 << 30;

/// Assemble the scaled residual Jacobian at `params` into fresh buffers.
pub fn jacobian<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
) -> Result<Jacobian<B, T>> {
    let mut jac = Jacobian::empty(obj.backend())?;
    jacobian_into(obj, params, &mut jac)?;
    Ok(jac)
}

/// Assemble the scaled residual Jacobian at `params` into `out` (rows and residuals where
/// the jets are: seeds and residuals of quadratic-form problems never leave the
/// backend), reallocating only when the number of residuals or parameters changed.
pub fn jacobian_into<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
    out: &mut Jacobian<B, T>,
) -> Result<()> {
    let be = obj.backend().clone();
    let p = obj.mlp().num_params();
    let m = obj.num_residuals();
    if (m, p) != (out.rows, out.cols) {
        let bytes = m.saturating_mul(p).saturating_mul(std::mem::size_of::<T>());
        if bytes > MAX_JACOBIAN_BYTES {
            return Err(Error::Device(format!(
                "the dense Jacobian would take {:.1} GiB ({m} residuals × {p} parameters); use a matrix-free or Kronecker-factored method",
                bytes as f64 / (1u64 << 30) as f64
            )));
        }
        out.j = be.alloc(m * p)?;
        out.r = be.alloc(m)?;
        out.rows = m;
        out.cols = p;
    }
    let Jacobian {
        j,
        r,
        r_chunk,
        scale,
        ..
    } = out;
    let mut row0 = 0;
    for t in 0..obj.num_terms() {
        let n_t = obj.term_points(t);
        let nr = obj.term_spec(t).residual.n_res();
        let c = (obj.term_spec(t).weight / n_t.max(1) as f64).sqrt();
        obj.sweep(params, t, |pass| {
            if be.len(scale) < pass.n {
                *scale = be.alloc(pass.n)?;
            }
            let base = row0 + pass.first * nr;
            pass.scaled_residuals(c, r_chunk)?;
            be.copy(r_chunk, 0, r, base, pass.n * nr)?;
            chunk_jacobian(pass, c, scale, j, base, p)
        })?;
        row0 += n_t * nr;
    }
    Ok(())
}

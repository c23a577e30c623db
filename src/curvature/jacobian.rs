//! The dense, scaled residual Jacobian of a least-squares objective: rows sample-major
//! (term by term; within a term sample n's `n_res` components are consecutive), scaled
//! by `sqrt(w/N_term)` so that `L = ½‖r̃‖²`, `∇L = Jᵀ r̃` and the Gramian is `G = JᵀJ`.
//! One reverse pass per residual component and chunk; each layer's block of every row is
//! an outer-product sum over the sample's S jet rows (Backend::jac_rows).
//!
//! Checked by `tests/curvature.rs`: Jᵀ r̃ equals the loss gradient, and J against finite
//! differences of the residuals.

use crate::backend::{Backend, JacRows};
use crate::error::{Error, Result};
use crate::loss::Objective;
use crate::scalar::Real;

/// `M × P` Jacobian (row-major, on the backend) and the scaled residuals.
pub struct Jacobian<B: Backend, T: Real> {
    pub rows: usize,
    pub cols: usize,
    pub j: B::Buf<T>,
    /// Scaled residuals r̃ (host, length M).
    pub r: Vec<f64>,
}

/// Refuse Jacobians above this many bytes with a clear message instead of thrashing.
const MAX_JACOBIAN_BYTES: usize = 16 << 30;

/// Assemble the scaled residual Jacobian at `params`.
pub fn jacobian<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
) -> Result<Jacobian<B, T>> {
    let be = obj.backend().clone();
    let p = obj.mlp().num_params();
    let m = obj.num_residuals();
    let bytes = m.saturating_mul(p).saturating_mul(std::mem::size_of::<T>());
    if bytes > MAX_JACOBIAN_BYTES {
        return Err(Error::Device(format!(
            "the dense Jacobian would take {:.1} GiB ({m} residuals × {p} parameters); use a matrix-free or Kronecker-factored method",
            bytes as f64 / (1u64 << 30) as f64
        )));
    }
    let mut j = be.alloc::<T>(m * p)?;
    let mut r = vec![0.0; m];
    let mut row0 = 0;
    for t in 0..obj.num_terms() {
        let n_t = obj.term_points(t);
        let nr = obj.term_spec(t).residual.n_res();
        let c = (obj.term_spec(t).weight / n_t.max(1) as f64).sqrt();
        obj.sweep(params, t, |pass| {
            let scale = be.upload(&vec![T::from_f64(c); pass.n])?;
            let (n, first) = (pass.n, pass.first);
            let rc = pass.r()?;
            for i in 0..n {
                for q in 0..nr {
                    r[row0 + (first + i) * nr + q] = c * rc[i * nr + q];
                }
            }
            for q in 0..nr {
                let seeds = pass.component_seeds(q, |_| 1.0)?;
                let first = pass.first;
                pass.backward(&seeds, |be, v| {
                    let at = JacRows {
                        row0: row0 + first * nr + q,
                        row_stride: nr,
                        ld: p,
                        w_off: v.layout.w_off,
                        b_off: v.layout.b_off,
                    };
                    be.jac_rows(v.a, v.g, v.shape, v.layout.fan_out, &scale, &mut j, at)
                })?;
            }
            Ok(())
        })?;
        row0 += n_t * nr;
    }
    Ok(Jacobian {
        rows: m,
        cols: p,
        j,
        r,
    })
}

//! Matrix-free products with the scaled residual Jacobian `J` (rows as in
//! [`super::jacobian`]: term by term, sample-major, scaled by `sqrt(w/N)`) and the Gramian
//! `G = JᵀJ`: `J v` by the tangent pass through the stored jets, `Jᵀ w` by the reverse
//! pass with seeds `w·∂r/∂y`, and `G v` by both in one sweep (one forward, one tangent and
//! one backward pass per chunk). Nothing of size `M × P` or `P × P` is formed.
//!
//! With coefficients (design §7) the Jacobian has their K columns too: `J v` adds
//! `(∂r/∂coef)·v_coef` and `Jᵀ w` gets the entries `Σ w·∂r/∂coef`, both on the host from
//! the chunk's `∂r/∂coef` (such terms run on the host anyway).
//!
//! Checked by `tests/curvature_kfac.rs` against the dense Jacobian and Gramian, and by
//! `tests/inverse.rs` with coefficients.

use crate::backend::{Backend, Lay};
use crate::error::Result;
use crate::jet::accumulate_grad;
use crate::loss::{ChunkPass, Objective};
use crate::scalar::Real;

/// Output-jet seeds `Σ_q coef[i, q] · ∂r_{i,q}/∂y` of a chunk (`n × S·m`).
pub fn combine_seeds<B: Backend, T: Real>(
    pass: &mut ChunkPass<'_, B, T>,
    coef: &[f64],
) -> Result<Vec<f64>> {
    let (sm, nr, n) = (pass.s_m, pass.n_res, pass.n);
    let jac = pass.jac()?;
    let mut s = vec![0.0; n * sm];
    for i in 0..n {
        let out = &mut s[i * sm..(i + 1) * sm];
        for q in 0..nr {
            let c = coef[i * nr + q];
            if c != 0.0 {
                let j = &jac[(i * nr + q) * sm..][..sm];
                out.iter_mut().zip(j).for_each(|(o, &jv)| *o += c * jv);
            }
        }
    }
    Ok(s)
}

/// `J v` of a chunk, un-scaled (`n × n_res`, host): the tangent pass, plus the
/// coefficients' part `(∂r/∂coef)·v_coef` where the term reads them.
fn tangent_with_coefs<B: Backend, T: Real>(
    pass: &mut ChunkPass<'_, B, T>,
    v: &B::Buf<T>,
    v_coef: &[f64],
) -> Result<Vec<f64>> {
    let mut rt = pass.residual_tangent(v)?;
    if pass.uses_coefs() {
        let ct = pass.coef_tangent(v_coef)?;
        rt.iter_mut().zip(&ct).for_each(|(a, b)| *a += b);
    }
    Ok(rt)
}

/// Scale `sqrt(w/N)` of the rows of term `t`.
fn row_scale<B: Backend, T: Real>(obj: &Objective<B, T>, t: usize) -> f64 {
    (obj.term_spec(t).weight / obj.term_points(t).max(1) as f64).sqrt()
}

/// `J v` (length M, host).
pub fn jvp<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
    v: &B::Buf<T>,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0; obj.num_residuals()];
    let vc = obj.coef_part(v)?;
    let mut row0 = 0;
    for t in 0..obj.num_terms() {
        let c = row_scale(obj, t);
        let nr = obj.term_spec(t).residual.n_res();
        obj.sweep(params, t, |pass| {
            let rt = tangent_with_coefs(pass, v, &vc)?;
            let base = row0 + pass.first * nr;
            for (o, r) in out[base..base + rt.len()].iter_mut().zip(&rt) {
                *o = c * r;
            }
            Ok(())
        })?;
        row0 += obj.term_points(t) * nr;
    }
    Ok(out)
}

/// `out = Jᵀ w` for `w` of length M (host).
pub fn vjp<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
    w: &[f64],
    out: &mut B::Buf<T>,
) -> Result<()> {
    let be = obj.backend().clone();
    let m = obj.num_residuals();
    if w.len() != m {
        return Err(crate::Error::Shape(format!(
            "Jᵀw: w has {} entries, J has {m} rows",
            w.len()
        )));
    }
    obj.mlp().check_params(be.len(out))?;
    let np = be.len(out);
    be.fill(out, 0, np, T::ZERO)?;
    let mut oc = vec![0.0; obj.num_coefs()];
    let mut row0 = 0;
    for t in 0..obj.num_terms() {
        let c = row_scale(obj, t);
        let nr = obj.term_spec(t).residual.n_res();
        obj.sweep(params, t, |pass| {
            let base = row0 + pass.first * nr;
            let coef: Vec<f64> = w[base..base + pass.n * nr].iter().map(|x| c * x).collect();
            let seeds = combine_seeds(pass, &coef)?;
            let vc = pass.coef_vjp(&coef)?;
            oc.iter_mut().zip(&vc).for_each(|(a, b)| *a += b);
            pass.backward(&seeds, |be, v| accumulate_grad(be, &v, T::ONE, out))
        })?;
        row0 += obj.term_points(t) * nr;
    }
    obj.set_coef_part(out, &oc)
}

/// `out = G v = Jᵀ J v`: per chunk one forward, one tangent and one backward pass. For
/// quadratic-form residuals `J v` and the seeds stay on the backend.
pub fn gvp<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
    v: &B::Buf<T>,
    out: &mut B::Buf<T>,
) -> Result<()> {
    let be = obj.backend().clone();
    obj.mlp().check_params(be.len(out))?;
    let np = be.len(out);
    be.fill(out, 0, np, T::ZERO)?;
    let vc = obj.coef_part(v)?;
    let mut oc = vec![0.0; vc.len()];
    // J·v of a chunk, on the backend where the residuals are
    let mut jv = be.alloc(0)?;
    for t in 0..obj.num_terms() {
        let c2 = row_scale(obj, t).powi(2);
        obj.sweep(params, t, |pass| {
            if pass.on_backend() {
                pass.residual_tangent_to(v, &mut jv)?;
                return pass
                    .backward_weighted(&jv, c2, |be, v| accumulate_grad(be, &v, T::ONE, out));
            }
            let mut rt = tangent_with_coefs(pass, v, &vc)?;
            rt.iter_mut().for_each(|x| *x *= c2);
            let seeds = combine_seeds(pass, &rt)?;
            let g = pass.coef_vjp(&rt)?;
            oc.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
            pass.backward(&seeds, |be, v| accumulate_grad(be, &v, T::ONE, out))
        })?;
    }
    obj.set_coef_part(out, &oc)
}

/// The Gram matrix `[(J v_i)·(J v_j)]_{ij}` of a few directions (row-major `k × k`), i.e.
/// `v_iᵀ G v_j`, from one forward and `k` tangent passes per chunk (`J v_i` on the backend
/// for quadratic-form residuals; one scalar per pair and chunk comes back).
pub fn jvp_gram<B: Backend, T: Real>(
    obj: &mut Objective<B, T>,
    params: &B::Buf<T>,
    vs: &[&B::Buf<T>],
) -> Result<Vec<f64>> {
    let k = vs.len();
    let mut gram = vec![0.0; k * k];
    let be = obj.backend().clone();
    // J·v_i of a chunk, on the backend where the residuals are
    let mut jv_dev = (0..k).map(|_| be.alloc(0)).collect::<Result<Vec<_>>>()?;
    let mut dot = be.alloc(1)?;
    let vcs = vs
        .iter()
        .map(|v| obj.coef_part(v))
        .collect::<Result<Vec<_>>>()?;
    for t in 0..obj.num_terms() {
        let c2 = row_scale(obj, t).powi(2);
        obj.sweep(params, t, |pass| {
            if pass.on_backend() {
                for (v, out) in vs.iter().zip(jv_dev.iter_mut()) {
                    pass.residual_tangent_to(v, out)?;
                }
                let row = Lay::dense(1, pass.n);
                for a in 0..k {
                    for b in a..k {
                        // one scalar per pair comes back
                        let (x, y) = (&jv_dev[a], &jv_dev[b]);
                        be.row_dot(x, row, y, row, T::ZERO, &mut dot, 0)?;
                        let mut d = [T::ZERO];
                        be.download_range(&dot, 0, &mut d)?;
                        gram[a * k + b] += c2 * d[0].to_f64();
                    }
                }
                return Ok(());
            }
            let jv = vs
                .iter()
                .zip(&vcs)
                .map(|(v, vc)| tangent_with_coefs(pass, v, vc))
                .collect::<Result<Vec<_>>>()?;
            for a in 0..k {
                for b in a..k {
                    let d: f64 = jv[a].iter().zip(&jv[b]).map(|(x, y)| x * y).sum();
                    gram[a * k + b] += c2 * d;
                }
            }
            Ok(())
        })?;
    }
    for a in 0..k {
        for b in 0..a {
            gram[a * k + b] = gram[b * k + a];
        }
    }
    Ok(gram)
}

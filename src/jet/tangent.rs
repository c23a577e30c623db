//! The tangent pass: forward mode in the PARAMETERS through the stored jets of the last
//! forward chunk. For a parameter direction `v` it gives the output-jet tangent
//! `ẏ = (∂y/∂θ) v`, from which matrix-free Jacobian-vector products `J v` follow (the
//! residual Jacobian with respect to the output jet is applied on the backend for
//! quadratic-form residuals, `ChunkPass::residual_tangent_to`, else on the host).
//!
//! Per linear layer `ż = Ȧ Wᵀ + A Ẇᵀ (+ ḃ on value rows)`, and through tanh the
//! linearised jet map of [`crate::backend::Backend::jet_tanh_tangent`]. The first layer's
//! input jet does not depend on θ, so there `ż = A₀ Ẇᵀ + ḃ`.
//!
//! Checked by `tests/curvature_kfac.rs` (the tangent against central differences of the
//! output jet for several nets and operators, and `J v` against the dense Jacobian) and by
//! the kernel's unit test in `backend/cpu/jet.rs`.

use super::JetEngine;
use crate::backend::{Backend, Lay, Tr};
use crate::error::{Error, Result};
use crate::loss::ChunkPass;
use crate::scalar::Real;

impl<B: Backend, T: Real> JetEngine<B, T> {
    /// Output-jet tangent of the last forward chunk (which must have been run with
    /// `store = true`) along the parameter direction `v` (flat parameter layout).
    /// Returned sample-major, in the layout of [`JetEngine::output`]. Uses the engine's
    /// gradient buffers as scratch (their contents are not needed between passes).
    pub fn tangent(&mut self, params: &B::Buf<T>, v: &B::Buf<T>) -> Result<Vec<f64>> {
        self.tangent_in_place(params, v)?;
        let (_, last) = self.output_and_tangent()?;
        self.output_block_to_host(last)
    }

    /// The output jet and, after [`Self::tangent_in_place`], its tangent, both on the
    /// backend in block layout (the tangent in the engine's coordinates: directions not
    /// rotated back for a non-identity operator).
    #[allow(clippy::type_complexity)]
    pub fn output_and_tangent(&self) -> Result<(&B::Buf<T>, &B::Buf<T>)> {
        self.check_stored("tangent")?;
        let t = self
            .train
            .as_ref()
            .expect("stored jets imply training buffers");
        let last = (self.mlp.num_layers() - 1) % 2;
        Ok((&self.y, &t.g[last]))
    }

    /// The tangent pass of [`Self::tangent`], its result left on the backend (see
    /// [`Self::output_and_tangent`]); it overwrites the reverse pass's seed buffer.
    pub fn tangent_in_place(&mut self, params: &B::Buf<T>, v: &B::Buf<T>) -> Result<()> {
        if !self.stored {
            return Err(Error::Shape(
                "the tangent pass needs a forward pass with stored jets".into(),
            ));
        }
        self.mlp.check_params(self.be.len(params))?;
        self.mlp.check_params(self.be.len(v))?;
        let n = self.n_cur;
        let s = self.kind.s();
        let rows = n * s;
        let nl = self.mlp.num_layers();
        let w = self.mlp.widths().to_vec();
        let shape = self.shape(n, 0);
        let be = &self.be;
        let t = self
            .train
            .as_mut()
            .expect("stored jets imply training buffers");
        let [g0, g1] = &mut t.g;
        // layer 0: the input jet is constant in θ
        let l0 = self.mlp.layer(0);
        be.gemm(
            T::ONE,
            &t.a[0],
            Lay::dense(rows, w[0]),
            Tr::N,
            v,
            Lay::at(l0.w_off, l0.fan_out, l0.fan_in),
            Tr::T,
            T::ZERO,
            g0,
            Lay::dense(rows, w[1]),
        )?;
        be.add_bias(g0, n, w[1], v, l0.b_off)?;
        for l in 1..nl {
            // the tangent of layer l's input is in g[(l-1) % 2]; its output goes to g[l % 2]
            let (cur, next) = if l % 2 == 1 {
                (&mut *g0, &mut *g1)
            } else {
                (&mut *g1, &mut *g0)
            };
            let lay = self.mlp.layer(l);
            be.jet_tanh_tangent(&t.z[l - 1], &t.a[l], cur, &self.coef, shape.with_h(w[l]))?;
            let wl = Lay::at(lay.w_off, lay.fan_out, lay.fan_in);
            let out = Lay::dense(rows, w[l + 1]);
            let inp = Lay::dense(rows, w[l]);
            be.gemm(
                T::ONE,
                cur,
                inp,
                Tr::N,
                params,
                wl,
                Tr::T,
                T::ZERO,
                next,
                out,
            )?;
            be.gemm(T::ONE, &t.a[l], inp, Tr::N, v, wl, Tr::T, T::ONE, next, out)?;
            be.add_bias(next, n, w[l + 1], v, lay.b_off)?;
        }
        Ok(())
    }
}

impl<B: Backend, T: Real> ChunkPass<'_, B, T> {
    /// Output-jet tangent of this chunk along the parameter direction `v`
    /// (see [`JetEngine::tangent`]), sample-major (`n × S·m`).
    pub fn tangent(&mut self, v: &B::Buf<T>) -> Result<Vec<f64>> {
        self.engine.tangent(self.params, v)
    }

    /// `(∂r/∂y) ẏ` per sample and residual component (`n × n_res`, unscaled): the
    /// directional derivative of the chunk's residuals along `v`.
    pub fn residual_tangent(&mut self, v: &B::Buf<T>) -> Result<Vec<f64>> {
        let yd = self.tangent(v)?;
        let (sm, nr, n) = (self.s_m, self.n_res, self.n);
        let jac = self.jac()?;
        let mut out = vec![0.0; n * nr];
        for i in 0..n {
            let y = &yd[i * sm..(i + 1) * sm];
            for q in 0..nr {
                let j = &jac[(i * nr + q) * sm..][..sm];
                out[i * nr + q] = j.iter().zip(y).map(|(a, b)| a * b).sum();
            }
        }
        Ok(out)
    }
}

//! The [`Backend`] methods the CUDA backend and its CPU emulation (`backend::emu`) share,
//! written once: every op that is one kernel plan of [`super::ops`] is generated inside
//! both `impl Backend` blocks by [`kernel_ops!`], from how the backend hands its buffers to
//! the plans ([`KernelHost`]). What differs stays hand-written in each backend: memory and
//! transfers, the dense products and factorizations (cuBLAS and cuSOLVER on the GPU, the
//! CPU backend's in the emulation), and the GPU's memory account.
//!
//! Checked by tests/kernels.rs (every generated op of the emulation against the CPU
//! backend, with the emulation's per-op buffer checks) and, on a GPU, tests/gpu.rs.

use super::launch::Launcher;
use super::ops::Dev;
use crate::backend::Backend;
use crate::scalar::Real;

/// A backend whose ops run the kernel plans of [`super::ops`]: how its buffers become the
/// plans' [`Dev`]s, and what brackets one op.
pub(crate) trait KernelHost: Backend + Launcher {
    /// Held for the extent of one op (from before its first [`KernelHost::dev`] to after
    /// its last launch).
    type Scope;
    /// Open the scope of one op. The emulation starts the op's buffer list here (the
    /// buffers its launches are checked against, see `emu::OpScope`); the GPU needs none.
    fn op_scope(&self) -> Self::Scope;
    /// A buffer the op only reads.
    fn dev<T: Real>(&self, buf: &Self::Buf<T>) -> Dev<T>;
    /// A buffer the op writes (the emulation checks that read-only ones come back unchanged).
    fn dev_mut<T: Real>(&self, buf: &mut Self::Buf<T>) -> Dev<T>;
}

/// The scope of an op on the GPU: nothing to set up or restore.
pub(crate) struct NoScope;

/// The [`Backend`] methods that are one kernel plan each, for an `impl Backend` block of a
/// [`KernelHost`]: every method opens the op's scope, then hands its buffers to the plan of
/// the same name in [`super::ops`] (read-only ones through `dev`, written ones through
/// `dev_mut`, in the order of the arguments except where noted). Grouped like the trait.
///
/// The invoking module imports the names the methods use: `ops` (the kernel plans),
/// `KernelHost`, `Real`, `Result`, `AdamStep`, `EigFix`, `EigFixed`, `JacRows`, `JetShape`,
/// `Lay`, `QuadForm`.
macro_rules! kernel_ops {
    () => {
        // ---- memory and transfers --------------------------------------------------------
        fn fill<T: Real>(
            &self,
            buf: &mut Self::Buf<T>,
            off: usize,
            len: usize,
            value: T,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::fill(self, self.dev_mut(buf), off, len, value)
        }
        fn cast<T: Real, U: Real>(
            &self,
            x: &Self::Buf<T>,
            x_off: usize,
            y: &mut Self::Buf<U>,
            y_off: usize,
            len: usize,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::cast(self, self.dev(x), x_off, self.dev_mut(y), y_off, len)
        }

        // ---- vectors -----------------------------------------------------------------------
        fn axpby<T: Real>(
            &self,
            alpha: T,
            x: &Self::Buf<T>,
            beta: T,
            y: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::axpby(self, alpha, self.dev(x), beta, self.dev_mut(y))
        }
        fn scale<T: Real>(&self, alpha: T, x: &mut Self::Buf<T>) -> Result<()> {
            let _op = self.op_scope();
            ops::scale(self, alpha, self.dev_mut(x))
        }
        fn mul<T: Real>(
            &self,
            x: &Self::Buf<T>,
            x_off: usize,
            y: &mut Self::Buf<T>,
            y_off: usize,
            len: usize,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::mul(self, self.dev(x), x_off, self.dev_mut(y), y_off, len)
        }
        fn adam_update<T: Real>(
            &self,
            p: &mut Self::Buf<T>,
            g: &Self::Buf<T>,
            m: &mut Self::Buf<T>,
            v: &mut Self::Buf<T>,
            step: AdamStep,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (p, g) = (self.dev_mut(p), self.dev(g));
            ops::adam(self, p, g, self.dev_mut(m), self.dev_mut(v), step)
        }

        // ---- reductions --------------------------------------------------------------------
        fn dot<T: Real>(&self, x: &Self::Buf<T>, y: &Self::Buf<T>) -> Result<f64> {
            let _op = self.op_scope();
            ops::dot(self, self.dev(x), self.dev(y))
        }
        fn sq_dist<T: Real>(
            &self,
            x: &Self::Buf<T>,
            x_off: usize,
            y: &Self::Buf<T>,
            y_off: usize,
            len: usize,
        ) -> Result<f64> {
            let _op = self.op_scope();
            ops::sq_dist(self, self.dev(x), x_off, self.dev(y), y_off, len)
        }
        fn col_sum<T: Real>(
            &self,
            alpha: T,
            x: &Self::Buf<T>,
            x_off: usize,
            rows: usize,
            cols: usize,
            beta: T,
            out: &mut Self::Buf<T>,
            out_off: usize,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (x, out) = (self.dev(x), self.dev_mut(out));
            ops::col_sum(self, alpha, x, x_off, rows, cols, beta, out, out_off)
        }
        fn row_dot<T: Real>(
            &self,
            x: &Self::Buf<T>,
            lx: Lay,
            y: &Self::Buf<T>,
            ly: Lay,
            beta: T,
            out: &mut Self::Buf<T>,
            out_off: usize,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (x, y, out) = (self.dev(x), self.dev(y), self.dev_mut(out));
            ops::row_dot(self, x, lx, y, ly, beta, out, out_off)
        }

        // ---- forward Laplacian jets --------------------------------------------------------
        fn add_bias<T: Real>(
            &self,
            x: &mut Self::Buf<T>,
            rows: usize,
            cols: usize,
            bias: &Self::Buf<T>,
            bias_off: usize,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::add_bias(self, self.dev_mut(x), rows, cols, self.dev(bias), bias_off)
        }
        fn jet_input<T: Real>(
            &self,
            x: &Self::Buf<T>,
            x_off: usize,
            dirs: &Self::Buf<T>,
            out: &mut Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (x, dirs, out) = (self.dev(x), self.dev(dirs), self.dev_mut(out));
            ops::jet_input(self, x, x_off, dirs, out, shape)
        }
        fn jet_broadcast_dirs<T: Real>(
            &self,
            z: &mut Self::Buf<T>,
            wv: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::jet_broadcast_dirs(self, self.dev_mut(z), self.dev(wv), shape)
        }
        fn jet_input_tanh<T: Real>(
            &self,
            z: &mut Self::Buf<T>,
            wv: &Self::Buf<T>,
            coef: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (z, wv, coef) = (self.dev_mut(z), self.dev(wv), self.dev(coef));
            ops::jet_input_tanh(self, z, wv, coef, shape)
        }
        fn jet_tanh<T: Real>(
            &self,
            z: &Self::Buf<T>,
            a: &mut Self::Buf<T>,
            coef: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (z, a, coef) = (self.dev(z), self.dev_mut(a), self.dev(coef));
            ops::jet_tanh(self, z, a, coef, shape)
        }
        /// The out-of-place plan with `a == z` (it checks the in-place op's lengths then).
        fn jet_tanh_inplace<T: Real>(
            &self,
            z: &mut Self::Buf<T>,
            coef: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let z = self.dev_mut(z);
            ops::jet_tanh(self, z, z, self.dev(coef), shape)
        }
        fn jet_tanh_backward<T: Real>(
            &self,
            z: &Self::Buf<T>,
            a: &Self::Buf<T>,
            g: &mut Self::Buf<T>,
            coef: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (z, a, g, coef) = (self.dev(z), self.dev(a), self.dev_mut(g), self.dev(coef));
            ops::jet_tanh_backward(self, z, a, g, coef, shape)
        }
        fn jet_tanh_tangent<T: Real>(
            &self,
            z: &Self::Buf<T>,
            a: &Self::Buf<T>,
            t: &mut Self::Buf<T>,
            coef: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (z, a, t, coef) = (self.dev(z), self.dev(a), self.dev_mut(t), self.dev(coef));
            ops::jet_tanh_tangent(self, z, a, t, coef, shape)
        }
        fn scale_jet_rows<T: Real>(
            &self,
            g: &mut Self::Buf<T>,
            w: &Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::scale_jet_rows(self, self.dev_mut(g), self.dev(w), shape)
        }
        fn scale_jet_rows_to<T: Real>(
            &self,
            src: &Self::Buf<T>,
            w: &Self::Buf<T>,
            shape: JetShape,
            dst: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (src, w, dst) = (self.dev(src), self.dev(w), self.dev_mut(dst));
            ops::scale_jet_rows_to(self, src, w, shape, dst)
        }

        // ---- autodiff baseline and per-sample Jacobians ------------------------------------
        fn ad_tanh_rev<T: Real>(
            &self,
            a: &Self::Buf<T>,
            g: &mut Self::Buf<T>,
            shape: JetShape,
        ) -> Result<()> {
            let _op = self.op_scope();
            ops::ad_tanh_rev(self, self.dev(a), self.dev_mut(g), shape)
        }
        fn jac_rows<T: Real>(
            &self,
            a: &Self::Buf<T>,
            g: &Self::Buf<T>,
            shape: JetShape,
            fan_out: usize,
            scale: &Self::Buf<T>,
            out: &mut Self::Buf<T>,
            at: JacRows,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (a, g) = (self.dev(a), self.dev(g));
            let (scale, out) = (self.dev(scale), self.dev_mut(out));
            ops::jac_rows(self, a, g, shape, fan_out, scale, out, at)
        }

        // ---- quadratic-form residuals (the form's buffers first) --------------------------
        fn quad_residual<T: Real>(
            &self,
            y: &Self::Buf<T>,
            form: &QuadForm<'_, Self, T>,
            first: usize,
            shape: JetShape,
            r: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (a, b, d) = (self.dev(form.a), self.dev(form.b), self.dev(form.d));
            let (y, r) = (self.dev(y), self.dev_mut(r));
            ops::quad_residual(self, y, a, b, d, first, shape, r)
        }
        fn quad_tangent<T: Real>(
            &self,
            y: &Self::Buf<T>,
            form: &QuadForm<'_, Self, T>,
            yd: &Self::Buf<T>,
            first: usize,
            shape: JetShape,
            t: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (a, b, yd) = (self.dev(form.a), self.dev(form.b), self.dev(yd));
            let (y, t) = (self.dev(y), self.dev_mut(t));
            ops::quad_tangent(self, y, a, b, yd, first, shape, t)
        }
        /// Buffers in the order `a, b, r, g, y`.
        fn quad_seeds<T: Real>(
            &self,
            y: &Self::Buf<T>,
            form: &QuadForm<'_, Self, T>,
            r: &Self::Buf<T>,
            alpha: T,
            beta: T,
            first: usize,
            shape: JetShape,
            g: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (a, b, r) = (self.dev(form.a), self.dev(form.b), self.dev(r));
            let (g, y) = (self.dev_mut(g), self.dev(y));
            ops::quad_seeds(self, y, a, b, r, [alpha, beta], first, shape, g)
        }

        // ---- spectral steps of the KFAC and HIG inverses -----------------------------------
        fn eig_fix(&self, vals: &mut Self::Buf<f64>, n: usize, mode: EigFix) -> Result<EigFixed> {
            let _op = self.op_scope();
            ops::eig_fix(self, self.dev_mut(vals), n, mode)
        }
        fn kron_recip<T: Real>(
            &self,
            sa: &Self::Buf<f64>,
            na: usize,
            sb: &Self::Buf<f64>,
            nb: usize,
            d: &mut Self::Buf<T>,
        ) -> Result<()> {
            let _op = self.op_scope();
            let (sa, sb, d) = (self.dev(sa), self.dev(sb), self.dev_mut(d));
            ops::kron_recip(self, sa, na, sb, nb, d)
        }
        fn add_diag<T: Real>(&self, x: &mut Self::Buf<T>, n: usize, v: T) -> Result<()> {
            let _op = self.op_scope();
            ops::add_diag(self, self.dev_mut(x), n, v)
        }
        fn spectral_scale(
            &self,
            s: &Self::Buf<f64>,
            c: &mut Self::Buf<f64>,
            k: usize,
            kappa: f64,
            tau: f64,
        ) -> Result<(usize, f64)> {
            let _op = self.op_scope();
            ops::spectral_scale(self, self.dev(s), self.dev_mut(c), k, kappa, tau)
        }
        fn bias_border<T: Real>(&self, a: &mut Self::Buf<T>, n: usize, corner: T) -> Result<()> {
            let _op = self.op_scope();
            ops::bias_border(self, self.dev_mut(a), n, corner)
        }
    };
}
pub(crate) use kernel_ops;

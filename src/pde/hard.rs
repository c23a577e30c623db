//! Exact (hard) Dirichlet and initial conditions (issue 19): the solution is
//! `u = g + φ·N` per constrained field, with `N` the network's output, `φ` a distance
//! function that vanishes on the condition's pieces ([`crate::geometry::distance`]) and
//! `g` an extension of the boundary data into the domain. The conditions then hold for
//! every `N`, so their loss terms are dropped.
//!
//! The transform is part of the residual ([`HardResidual`]): it maps the network's output
//! jet `y_N` to the jet of `u` along the term's directions `v_k` (weights `c_jk`),
//!
//! ```text
//! u = g + φN,   ∂_k u = ∂_k g + (∂_k φ) N + φ ∂_k N,
//! L_j u = L_j g + (L_j φ) N + 2 Σ_k c_jk (∂_k φ)(∂_k N) + φ L_j N,
//! ```
//!
//! and calls the inner residual (written for `u`) on it. The map is affine in `y_N`, so
//! the Gauss–Newton seeds are the inner ones times its matrix, a linear PDE stays linear,
//! and every optimizer (KFAC and KFAC* included) runs unchanged. The inner residual's
//! quadratic form composes with the map when it is linear (its `b = 0`); otherwise the
//! wrapped residual runs on the host. The same transform turns network values into `u`
//! wherever errors are measured ([`HardBc::apply`], used by the evaluator).
//!
//! Checked by `tests/hard_bc.rs`: the wrapped residual's jet against finite differences
//! of `u = g + φN` computed from the network directly (a Laplacian and a heat operator),
//! its seeds against finite differences of the residual, its quadratic form against its
//! `eval`, and the reported L2 error of a hard-BC run against `g + φN` by hand.

use super::Residual;
use crate::geometry::distance::{with_line, Dual2, DualFn, Phi};
use crate::jet::JetKind;
use std::cell::RefCell;
use std::sync::Arc;

/// One field with an exact condition: `u_f = g + φ N_f`.
#[derive(Clone)]
pub struct HardField {
    pub field: usize,
    pub phi: Arc<Phi>,
    /// The data's extension (None: zero data).
    pub g: Option<DualFn>,
}

/// The exact conditions of a problem: which fields, their `φ` and `g`.
#[derive(Clone)]
pub struct HardBc {
    /// Number of fields (the network's outputs).
    pub m: usize,
    pub fields: Vec<HardField>,
    /// One line per field for summaries: how `φ` and `g` are built.
    pub note: String,
}

impl std::fmt::Debug for HardBc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardBc")
            .field("m", &self.m)
            .field(
                "fields",
                &self.fields.iter().map(|h| h.field).collect::<Vec<_>>(),
            )
            .field("note", &self.note)
            .finish()
    }
}

/// `f`'s value, slope and curvature along `dir` at `x` (the value alone without `dir`).
#[inline]
fn line_jet(f: impl Fn(&[Dual2]) -> Dual2, x: &[f64], dir: Option<&[f64]>) -> Dual2 {
    with_line(x, dir, f)
}

impl HardBc {
    /// `(g, φ)` of field entry `h` at `x` (values only).
    pub fn values(&self, h: &HardField, x: &[f64]) -> (f64, f64) {
        let phi = line_jet(|p| h.phi.eval(p), x, None).v;
        let g = h.g.as_ref().map_or(0.0, |g| line_jet(|p| g(p), x, None).v);
        (g, phi)
    }

    /// Network outputs to solutions in place: `y` holds `n × m` values at the points `x`
    /// (`n × d`), and each constrained field becomes `g + φ N`.
    pub fn apply(&self, x: &[f64], y: &mut [f64]) {
        let n = y.len() / self.m.max(1);
        if n == 0 {
            return;
        }
        let d = x.len() / n;
        for (xi, yi) in x.chunks(d).zip(y.chunks_mut(self.m)) {
            for h in &self.fields {
                let (g, phi) = self.values(h, xi);
                yi[h.field] = g + phi * yi[h.field];
            }
        }
    }

    /// The per-point `(g, φ)` of every field at the points `x` (`n × d`), as two
    /// `n × m` arrays (`g = 0`, `φ = 1` for unconstrained fields): `u = g + φ N`.
    pub fn tables(&self, x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() / d;
        let (mut g, mut phi) = (vec![0.0; n * self.m], vec![1.0; n * self.m]);
        for (i, xi) in x.chunks(d).enumerate() {
            for h in &self.fields {
                let (gv, pv) = self.values(h, xi);
                g[i * self.m + h.field] = gv;
                phi[i * self.m + h.field] = pv;
            }
        }
        (g, phi)
    }

    /// `inner` (a residual of `u` on the jet `kind`) as a residual of the network's jet.
    pub fn wrap(self: &Arc<Self>, kind: &JetKind, inner: Arc<dyn Residual>) -> Arc<dyn Residual> {
        Arc::new(HardResidual {
            map: JetMap::new(self, kind),
            inner,
        })
    }

    /// Network output jets to solution jets in place: `y` holds `n` samples' jets of
    /// kind `kind` (`S·m` entries each, row-major `row · m + field`, as
    /// [`crate::jet::JetEngine::forward`] returns them) at the points `x` (`n × d`).
    pub fn apply_jets(self: &Arc<Self>, kind: &JetKind, x: &[f64], y: &mut [f64]) {
        let map = JetMap::new(self, kind);
        let sm = kind.s() * self.m;
        let n = y.len() / sm.max(1);
        if n == 0 {
            return;
        }
        let d = x.len() / n;
        let nf = self.fields.len();
        let (mut phi, mut g) = (vec![0.0; nf * map.phi_len()], vec![0.0; nf * map.g_len()]);
        let mut u = vec![0.0; sm];
        for (xi, yi) in x.chunks(d).zip(y.chunks_mut(sm)) {
            map.jets(xi, &mut phi, &mut g);
            map.to_u(yi, &phi, &g, &mut u);
            yi.copy_from_slice(&u);
        }
    }
}

/// The affine map from the network's output jet to the jet of `u = g + φN` along a jet
/// kind's rows (module header): the rows' and operators' directions and weights.
struct JetMap {
    hard: Arc<HardBc>,
    /// R × D directions of the jet's derivative rows, K × D directions of the operators
    /// and their J × K weights, and M (K × R) with `∂_{v_k} = Σ_r M_kr ∂_{row r}`.
    rows: Vec<f64>,
    opd: Vec<f64>,
    coef: Vec<f64>,
    mix: Vec<f64>,
    /// The rows are the operators' directions (M = I).
    same: bool,
    dim: usize,
    r: usize,
    kop: usize,
    j: usize,
}

impl JetMap {
    fn new(hard: &Arc<HardBc>, kind: &JetKind) -> Self {
        // the jet's derivative rows run along the operator's directions, except for an
        // operator factorised by its eigendecomposition, whose rows are rotated back to
        // the coordinate axes (the gradient); `mix` writes ∂_{v_k} in terms of the rows
        let (rows, opd, coef, dim) = match kind {
            JetKind::Value => (vec![], vec![], vec![], 0),
            JetKind::Full(op) if !op.is_identity() => {
                let d = op.dim();
                let mut eye = vec![0.0; d * d];
                for i in 0..d {
                    eye[i * d + i] = 1.0;
                }
                (eye, op.dirs().to_vec(), op.coef().to_vec(), d)
            }
            JetKind::Full(op) => (
                op.dirs().to_vec(),
                op.dirs().to_vec(),
                op.coef().to_vec(),
                op.dim(),
            ),
            JetKind::Set(set) => (
                set.dirs().to_vec(),
                set.dirs().to_vec(),
                set.coef().to_vec(),
                set.dim(),
            ),
        };
        let same = rows == opd;
        let (nr, nk) = (rows.len() / dim.max(1), opd.len() / dim.max(1));
        // M (K × R): identity when the rows are the directions, V when they are the axes
        let mut mix = vec![0.0; nk * nr];
        for k in 0..nk {
            if same {
                mix[k * nr + k] = 1.0;
            } else {
                mix[k * nr..(k + 1) * nr].copy_from_slice(&opd[k * dim..(k + 1) * dim]);
            }
        }
        JetMap {
            hard: hard.clone(),
            rows,
            opd,
            coef,
            mix,
            same,
            dim,
            r: kind.k(),
            kop: nk,
            j: kind.ops(),
        }
    }
}

/// A residual of `u = g + φN` as a residual of the network's output jet (module header).
pub struct HardResidual {
    map: JetMap,
    inner: Arc<dyn Residual>,
}

/// Per-thread scratch (the `u` jet, the jets of `g` and `φ`): residuals run per sample,
/// so nothing is allocated after the first call.
#[derive(Default)]
struct Scratch {
    u: Vec<f64>,
    phi: Vec<f64>,
    g: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl JetMap {
    /// Entries of `φ`'s per-field block: `[φ, ∂_r φ (R), L_j φ (J), w_jr (J × R)]` with
    /// `w_jr = 2 Σ_k c_jk (∂_{v_k} φ) M_kr` (the cross term's weight of `∂_r N`).
    fn phi_len(&self) -> usize {
        1 + self.r + self.j + self.j * self.r
    }
    /// Entries of `g`'s per-field block: `[g, ∂_r g (R), L_j g (J)]`.
    fn g_len(&self) -> usize {
        1 + self.r + self.j
    }

    /// The blocks of `φ` and `g` of every constrained field at `x`.
    fn jets(&self, x: &[f64], phi: &mut [f64], g: &mut [f64]) {
        let (r, j, kop, dim) = (self.r, self.j, self.kop, self.dim);
        let (pl, gl) = (self.phi_len(), self.g_len());
        for (q, h) in self.hard.fields.iter().enumerate() {
            let (pj, gj) = (&mut phi[q * pl..(q + 1) * pl], &mut g[q * gl..(q + 1) * gl]);
            pj.fill(0.0);
            gj.fill(0.0);
            pj[0] = line_jet(|p| h.phi.eval(p), x, None).v;
            if let Some(gf) = &h.g {
                gj[0] = line_jet(|p| gf(p), x, None).v;
            }
            // along the operators' directions: curvature (and slopes, the rows' when the
            // rows are these directions)
            for k in 0..kop {
                let dir = &self.opd[k * dim..(k + 1) * dim];
                let pv = line_jet(|p| h.phi.eval(p), x, Some(dir));
                if self.same {
                    pj[1 + k] = pv.d;
                }
                for jj in 0..j {
                    let c = self.coef[jj * kop + k];
                    pj[1 + r + jj] += c * pv.dd;
                    for rr in 0..r {
                        pj[1 + r + j + jj * r + rr] += 2.0 * c * pv.d * self.mix[k * r + rr];
                    }
                }
                if let Some(gf) = &h.g {
                    let gv = line_jet(|p| gf(p), x, Some(dir));
                    if self.same {
                        gj[1 + k] = gv.d;
                    }
                    for jj in 0..j {
                        gj[1 + r + jj] += self.coef[jj * kop + k] * gv.dd;
                    }
                }
            }
            if !self.same {
                for rr in 0..r {
                    let dir = &self.rows[rr * dim..(rr + 1) * dim];
                    pj[1 + rr] = line_jet(|p| h.phi.eval(p), x, Some(dir)).d;
                    if let Some(gf) = &h.g {
                        gj[1 + rr] = line_jet(|p| gf(p), x, Some(dir)).d;
                    }
                }
            }
        }
    }

    /// The jet of `u` from the network's jet `y` (`S·m` entries).
    fn to_u(&self, y: &[f64], phi: &[f64], g: &[f64], u: &mut [f64]) {
        let (r, j, m) = (self.r, self.j, self.hard.m);
        let (pl, gl) = (self.phi_len(), self.g_len());
        u.copy_from_slice(y);
        for (q, h) in self.hard.fields.iter().enumerate() {
            let (p, gq, f) = (
                &phi[q * pl..(q + 1) * pl],
                &g[q * gl..(q + 1) * gl],
                h.field,
            );
            let n = y[f];
            u[f] = gq[0] + p[0] * n;
            for rr in 0..r {
                let c = (1 + rr) * m + f;
                u[c] = gq[1 + rr] + p[1 + rr] * n + p[0] * y[c];
            }
            for jj in 0..j {
                let c = (1 + r + jj) * m + f;
                let mut v = gq[1 + r + jj] + p[1 + r + jj] * n + p[0] * y[c];
                for rr in 0..r {
                    v += p[1 + r + j + jj * r + rr] * y[(1 + rr) * m + f];
                }
                u[c] = v;
            }
        }
    }

    /// A row of `∂res/∂u` (`S·m` entries) to `∂res/∂y_N` in place (the transpose of the
    /// map's matrix applied to the row).
    fn row_to_n(&self, phi: &[f64], row: &mut [f64]) {
        let (r, j, m) = (self.r, self.j, self.hard.m);
        let pl = self.phi_len();
        for (q, h) in self.hard.fields.iter().enumerate() {
            let (p, f) = (&phi[q * pl..(q + 1) * pl], h.field);
            // read the u-entries first: each N-entry mixes several of them
            let mut val = p[0] * row[f];
            for rr in 0..r {
                val += p[1 + rr] * row[(1 + rr) * m + f];
            }
            for jj in 0..j {
                val += p[1 + r + jj] * row[(1 + r + jj) * m + f];
            }
            for rr in 0..r {
                let c = (1 + rr) * m + f;
                let mut v = p[0] * row[c];
                for jj in 0..j {
                    v += p[1 + r + j + jj * r + rr] * row[(1 + r + jj) * m + f];
                }
                row[c] = v;
            }
            for jj in 0..j {
                row[(1 + r + jj) * m + f] *= p[0];
            }
            row[f] = val;
        }
    }
}

impl HardResidual {
    /// Runs `inner` on the `u` jet of `y` and maps its Jacobian rows back.
    fn with_u(
        &self,
        x: &[f64],
        y: &[f64],
        jac: Option<&mut [f64]>,
        inner: impl FnOnce(&[f64], Option<&mut [f64]>),
    ) {
        SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let sc = &mut *sc;
            let nf = self.map.hard.fields.len();
            sc.phi.resize(nf * self.map.phi_len(), 0.0);
            sc.g.resize(nf * self.map.g_len(), 0.0);
            sc.u.resize(y.len(), 0.0);
            self.map.jets(x, &mut sc.phi, &mut sc.g);
            self.map.to_u(y, &sc.phi, &sc.g, &mut sc.u);
            match jac {
                Some(jm) => {
                    inner(&sc.u, Some(&mut *jm));
                    for row in jm.chunks_mut(y.len()) {
                        self.map.row_to_n(&sc.phi, row);
                    }
                }
                None => inner(&sc.u, None),
            }
        });
    }
}

impl Residual for HardResidual {
    fn n_res(&self) -> usize {
        self.inner.n_res()
    }
    fn is_linear(&self) -> bool {
        self.inner.is_linear()
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        self.with_u(x, y, jac, |u, j| self.inner.eval(x, u, r, j));
    }
    fn n_coef(&self) -> usize {
        self.inner.n_coef()
    }
    fn eval_coef(
        &self,
        x: &[f64],
        y: &[f64],
        coef: &[f64],
        r: &mut [f64],
        jac: Option<&mut [f64]>,
        dcoef: Option<&mut [f64]>,
    ) {
        self.with_u(x, y, jac, |u, j| {
            self.inner.eval_coef(x, u, coef, r, j, dcoef)
        });
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], b: &mut [f64]) -> Option<f64> {
        // r = d + Σ a_c u_c with u = G + T y_N: d' = d + a·G, a' = Tᵀ a (linear only)
        let c = a.len();
        let (mut au, mut bu) = (vec![0.0; c], vec![0.0; c]);
        let d = self.inner.quad_form(x, &mut au, &mut bu)?;
        if bu.iter().any(|&v| v != 0.0) {
            return None;
        }
        let nf = self.map.hard.fields.len();
        let (mut phi, mut g) = (
            vec![0.0; nf * self.map.phi_len()],
            vec![0.0; nf * self.map.g_len()],
        );
        self.map.jets(x, &mut phi, &mut g);
        // G: the jet of u at N = 0
        let mut big_g = vec![0.0; c];
        self.map.to_u(&vec![0.0; c], &phi, &g, &mut big_g);
        let shift: f64 = au.iter().zip(&big_g).map(|(p, q)| p * q).sum();
        self.map.row_to_n(&phi, &mut au);
        for (ai, v) in a.iter_mut().zip(&au) {
            *ai += v;
        }
        // b stays zero: the composed form is linear
        let _ = b;
        Some(d + shift)
    }
}

/// Most pieces a transfinite interpolation blends (stack arrays per sample).
pub const MAX_BLEND: usize = 16;

/// The point of the carrier of `phi`'s piece that `x` projects to, into `out`: a plane
/// (`x − φ(x) n`, `n` of unit length), a segment's line (orthogonal projection), a
/// sphere (radially; the centre must lie outside the domain). None for other kinds.
fn project(phi: &Phi, x: &[Dual2], out: &mut [Dual2]) -> Option<()> {
    match phi {
        Phi::Plane { n, .. } => {
            let f = phi.eval(x);
            let nn: f64 = n.iter().map(|v| v * v).sum();
            for i in 0..x.len() {
                out[i] = x[i] - f * (n[i] / nn);
            }
        }
        Phi::Segment { a, b } => {
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let l = dx.hypot(dy);
            let (tx, ty) = (dx / l, dy / l);
            let s = (x[0] - a[0]) * tx + (x[1] - a[1]) * ty;
            out[0] = s * tx + a[0];
            out[1] = s * ty + a[1];
        }
        Phi::Sphere { c, r, .. } => {
            let mut q = Dual2::c(0.0);
            for (xi, ci) in x.iter().zip(c) {
                q = q + (*xi - *ci).sq();
            }
            let s = q.sqrt().recip() * *r;
            for i in 0..x.len() {
                out[i] = (x[i] - c[i]) * s + c[i];
            }
        }
        Phi::Shift { offset, inner } => {
            out[..*offset].copy_from_slice(&x[..*offset]);
            project(inner, &x[*offset..], &mut out[*offset..])?;
        }
        Phi::All(_) | Phi::Custom(_) => return None,
    }
    Some(())
}

/// The dimension a projectable φ acts in.
fn phi_dim(p: &Phi) -> Option<usize> {
    match p {
        Phi::Plane { n, .. } => Some(n.len()),
        Phi::Sphere { c, .. } => Some(c.len()),
        Phi::Segment { .. } => Some(2),
        Phi::Shift { offset, inner } => Some(offset + phi_dim(inner)?),
        Phi::All(_) | Phi::Custom(_) => None,
    }
}

/// Transfinite interpolation of boundary data: `g = Σ_i w_i g_i(P_i x)` with
/// `w_i = Π_{j≠i} φ_j / Σ_k Π_{j≠k} φ_k` (1 on piece i, 0 on the others) and `P_i` the
/// projection onto piece i's carrier; `data[i]` is None for zero data. `g` takes the
/// data on every piece and is smooth inside, but is not the solution there. At most
/// [`MAX_BLEND`] pieces, each a plane, segment, sphere or shifted one; otherwise an
/// error naming the problem.
pub fn transfinite(phis: Vec<Phi>, data: Vec<Option<DualFn>>) -> crate::Result<DualFn> {
    if phis.len() != data.len() || phis.is_empty() || phis.len() > MAX_BLEND {
        return Err(crate::Error::invalid(
            "transfinite interpolation",
            format!("{} pieces and {} data", phis.len(), data.len()),
            format!("1 to {MAX_BLEND} pieces, each with its data"),
        ));
    }
    let probe = [Dual2::c(0.0); crate::geometry::distance::STACK_DIM];
    for p in &phis {
        let mut out = probe;
        let ok = phi_dim(p)
            .filter(|&dim| dim <= probe.len())
            .and_then(|dim| project(p, &probe[..dim], &mut out[..dim]));
        if ok.is_none() {
            return Err(crate::Error::invalid(
                "transfinite interpolation piece",
                format!("{p:?}"),
                "a plane, segment or sphere piece (a projection onto its carrier)",
            ));
        }
    }
    Ok(Arc::new(move |x: &[Dual2]| {
        let n = phis.len();
        let mut v = [Dual2::c(0.0); MAX_BLEND];
        for (vi, p) in v.iter_mut().zip(&phis) {
            *vi = p.eval(x);
        }
        let mut buf = [Dual2::c(0.0); crate::geometry::distance::STACK_DIM];
        let px = &mut buf[..x.len()];
        let (mut num, mut den) = (Dual2::c(0.0), Dual2::c(0.0));
        for i in 0..n {
            let mut w = Dual2::c(1.0);
            for (j, vj) in v[..n].iter().enumerate() {
                if j != i {
                    w = w * *vj;
                }
            }
            den = den + w;
            if let Some(g) = &data[i] {
                project(&phis[i], x, px).expect("checked at construction");
                num = num + w * g(px);
            }
        }
        num / den
    }))
}

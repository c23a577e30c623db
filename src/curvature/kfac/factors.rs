//! Kronecker factors (design §3): the host copy [`KfacFactors`] (f64, per term and layer;
//! moving average, dense reconstruction for tests) and the backend copy
//! [`DeviceFactors`] that the optimizers keep between steps.
//!
//! Checked by `tests/curvature_kfac.rs` (factors against a naive computation from layer
//! inputs and cotangents; `A ⊗ B` against the exact Gramian block where it is exact).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{LayerLayout, Mlp};
use crate::optim::State;

/// Kronecker factors on the host (f64), per factor group and layer: `A` is
/// `(fan_in+1)²` and `B` is `fan_out²`, both row-major. The groups are the first loss
/// term and the pool of all others ([`factor_groups`]; with one or two terms, a group is
/// a term).
#[derive(Clone, Debug, PartialEq)]
pub struct KfacFactors {
    pub(super) layers: Vec<LayerLayout>,
    /// `[group][layer]`
    pub(super) a: Vec<Vec<Vec<f64>>>,
    pub(super) b: Vec<Vec<Vec<f64>>>,
}

/// Visit every factor of `x` (all A, then all B, term by term and layer by layer) with the
/// matching factor of `y`; both sets must belong to the same network and terms.
pub(super) fn zip_factors<X, Y>(
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

pub(super) fn eye(n: usize, v: f64) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = v;
    }
    m
}

/// Flat parameter index of entry (o, i) of layer `l`'s augmented weight `[W | b]`.
pub(super) fn flat(l: &LayerLayout, o: usize, i: usize) -> usize {
    if i < l.fan_in {
        l.w_off + o * l.fan_in + i
    } else {
        l.b_off + o
    }
}

impl KfacFactors {
    /// Factors for an objective of `n_terms` loss terms (one group per term for one or
    /// two terms, two groups for more), all at the identity or all zero.
    pub fn new(mlp: &Mlp, n_terms: usize, identity: bool) -> Result<Self> {
        let n_groups = factor_groups(n_terms)?.len();
        let layers = mlp.layers();
        let v = if identity { 1.0 } else { 0.0 };
        let a = (0..n_groups)
            .map(|_| layers.iter().map(|l| eye(l.fan_in + 1, v)).collect())
            .collect();
        let b = (0..n_groups)
            .map(|_| layers.iter().map(|l| eye(l.fan_out, v)).collect())
            .collect();
        Ok(KfacFactors { layers, a, b })
    }
    pub fn layers(&self) -> &[LayerLayout] {
        &self.layers
    }
    pub fn num_groups(&self) -> usize {
        self.a.len()
    }
    /// `A` of group `t`, layer `l` (`(fan_in+1)²`, row-major).
    pub fn a(&self, t: usize, l: usize) -> &[f64] {
        &self.a[t][l]
    }
    /// `B` of group `t`, layer `l` (`fan_out²`, row-major).
    pub fn b(&self, t: usize, l: usize) -> &[f64] {
        &self.b[t][l]
    }
    /// Replace the factors of group `t`, layer `l` (row-major `(fan_in+1)²` and `fan_out²`).
    pub fn set(&mut self, t: usize, l: usize, a: Vec<f64>, b: Vec<f64>) -> Result<()> {
        if t >= self.a.len() || l >= self.layers.len() {
            return Err(Error::Shape(format!(
                "no KFAC factors for group {t}, layer {l}"
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
    pub(super) layers: Vec<LayerLayout>,
    /// `[group][layer]`
    pub(super) a: Vec<Vec<B::Buf<f64>>>,
    pub(super) b: Vec<Vec<B::Buf<f64>>>,
}

impl<B: Backend> DeviceFactors<B> {
    /// Factors for an objective of `n_terms` loss terms (see [`KfacFactors::new`]).
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
    /// Overwrite the factors with a host copy of the same network and number of groups.
    pub fn load(&mut self, be: &B, host: &KfacFactors) -> Result<()> {
        if host.layers != self.layers || host.a.len() != self.a.len() {
            return Err(Error::Shape("KFAC factors of different networks".into()));
        }
        zip_factors((&mut self.a, &mut self.b), (&host.a, &host.b), |x, y| {
            be.upload_range(y, x, 0)
        })
    }
    pub fn num_groups(&self) -> usize {
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

/// The factor groups of an objective with `n_terms` loss terms, as the terms of each:
/// the first term (the PDE residual) alone, and all further terms (boundary, initial and
/// data conditions) pooled, since the Kronecker-sum inverse is exact for two Kronecker
/// products (design §6). A pooled group's factors are those of one batch made of all its
/// terms' jet rows.
pub fn factor_groups(n_terms: usize) -> Result<Vec<Vec<usize>>> {
    match n_terms {
        0 => Err(Error::invalid(
            "number of loss terms",
            0,
            "at least 1 for KFAC",
        )),
        1 => Ok(vec![vec![0]]),
        n => Ok(vec![vec![0], (1..n).collect()]),
    }
}

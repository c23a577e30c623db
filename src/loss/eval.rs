//! The error of a network against known values on fixed evaluation points: the
//! relative and absolute L2 errors over all outputs (reduced on the backend, one scalar
//! per chunk comes back), and for systems per field and per named group of fields (on
//! the host from the downloaded outputs). With exact boundary conditions the network's
//! outputs are `N` and the solution is `u = g + φN` ([`crate::pde::hard`]): the evaluator
//! then holds `g` and `φ` at its points and measures every error on `u`, on the host.
//!
//! Checked by `tests/train.rs` (errors against a host computation from the network's
//! values) and the unit tests below (per-field and group errors of known outputs).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::jet::{JetEngine, JetKind};
use crate::model::Mlp;
use crate::scalar::{convert, Real};

/// Evaluates a network's values on fixed points and their error against known values.
pub struct Evaluator<B: Backend, T: Real> {
    engine: JetEngine<B, T>,
    x: B::Buf<T>,
    n: usize,
    /// The reference on the backend, and `Σ u*²` (f64, from the host values).
    reference_dev: B::Buf<T>,
    ref_sq: f64,
    /// The reference on the host (`N × m`), for per-field errors.
    reference: Vec<f64>,
    /// `(g, φ)` at the points (`N × m` each) when outputs are `N` of `u = g + φN`.
    transform: Option<(Vec<f64>, Vec<f64>)>,
}

/// Absolute and relative L2 errors: `sqrt(mean (u − u*)²)` and that over `sqrt(mean u*²)`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct L2Error {
    pub abs: f64,
    pub rel: f64,
}

impl<B: Backend, T: Real> Evaluator<B, T> {
    /// `x`: row-major points; `reference`: the exact outputs there (`N × m`).
    pub fn new(be: B, mlp: Mlp, x: &[f64], reference: Vec<f64>) -> Result<Self> {
        let d = mlp.input_dim();
        let n = x.len() / d;
        if reference.len() != n * mlp.output_dim() {
            return Err(Error::Shape(format!(
                "{} reference values for {n} points with {} outputs",
                reference.len(),
                mlp.output_dim()
            )));
        }
        let xb = be.upload(&convert::<f64, T>(x))?;
        let reference_dev = be.upload(&convert::<f64, T>(&reference))?;
        let ref_sq = reference.iter().map(|b| b * b).sum();
        let engine = JetEngine::new(be, mlp, JetKind::Value, None)?;
        Ok(Evaluator {
            engine,
            x: xb,
            n,
            reference_dev,
            ref_sq,
            reference,
            transform: None,
        })
    }
    /// Measure errors on `u = g + φN` with `g`, `φ` given at the points (`N × m` each,
    /// `g = 0`, `φ = 1` for fields without an exact condition).
    pub fn set_output_transform(&mut self, g: Vec<f64>, phi: Vec<f64>) -> Result<()> {
        let len = self.reference.len();
        if g.len() != len || phi.len() != len {
            return Err(Error::Shape(format!(
                "output transform has {} and {} values for {len} outputs",
                g.len(),
                phi.len()
            )));
        }
        self.transform = Some((g, phi));
        Ok(())
    }
    /// The solution at the points (`N × m`): the network's outputs, or `g + φN` with an
    /// output transform.
    pub fn values(&mut self, params: &B::Buf<T>) -> Result<Vec<f64>> {
        let mut y = self.engine.forward(params, &self.x, self.n)?;
        if let Some((g, phi)) = &self.transform {
            for ((yi, gi), pi) in y.iter_mut().zip(g).zip(phi) {
                *yi = gi + pi * *yi;
            }
        }
        Ok(y)
    }
    /// The errors, reduced where the values are (one scalar per chunk comes back; on the
    /// host from [`Self::values`] with an output transform).
    pub fn l2(&mut self, params: &B::Buf<T>) -> Result<L2Error> {
        let m = self.engine.mlp().output_dim();
        if self.transform.is_some() {
            let y = self.values(params)?;
            let se: f64 = y
                .iter()
                .zip(&self.reference)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            return Ok(L2Error::from_sums(se, self.ref_sq, self.n * m));
        }
        let be = self.engine.backend().clone();
        let mut se = 0.0;
        let mut first = 0;
        while first < self.n {
            let c = self.engine.chunk().min(self.n - first);
            self.engine
                .forward_chunk(params, &self.x, first, c, false)?;
            let y = self.engine.output_buf();
            se += be.sq_dist(y, 0, &self.reference_dev, first * m, c * m)?;
            first += c;
        }
        Ok(L2Error::from_sums(se, self.ref_sq, self.n * m))
    }

    /// Errors per output field, and over the fields of `group` together, from the
    /// outputs downloaded to the host.
    pub fn field_errors(&mut self, params: &B::Buf<T>, group: &[usize]) -> Result<FieldErrors> {
        let m = self.engine.mlp().output_dim();
        if let Some(&f) = group.iter().find(|&&f| f >= m) {
            return Err(Error::Shape(format!(
                "error group names output {f} of a network with {m} outputs"
            )));
        }
        let y = self.values(params)?;
        let mut se = vec![0.0; m];
        let mut sr = vec![0.0; m];
        for (yr, rr) in y.chunks(m).zip(self.reference.chunks(m)) {
            for f in 0..m {
                se[f] += (yr[f] - rr[f]).powi(2);
                sr[f] += rr[f] * rr[f];
            }
        }
        let fields = (0..m)
            .map(|f| L2Error::from_sums(se[f], sr[f], self.n))
            .collect();
        let sum = |v: &[f64]| group.iter().map(|&f| v[f]).sum::<f64>();
        let group = (!group.is_empty())
            .then(|| L2Error::from_sums(sum(&se), sum(&sr), self.n * group.len()));
        Ok(FieldErrors { fields, group })
    }
}

/// Per-field errors of a system, and the error over a named group of its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldErrors {
    pub fields: Vec<L2Error>,
    pub group: Option<L2Error>,
}

impl L2Error {
    /// From `Σ (u − u*)²` and `Σ u*²` over `n` values (relative NaN when `u* = 0`).
    pub fn from_sums(se: f64, ref_sq: f64, n: usize) -> L2Error {
        let n = n.max(1) as f64;
        let abs = (se / n).sqrt();
        L2Error {
            abs,
            rel: if ref_sq > 0.0 {
                abs / (ref_sq / n).sqrt()
            } else {
                f64::NAN
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;

    #[test]
    fn field_and_group_errors_of_known_outputs() {
        // a linear net (no hidden layer) with outputs (x, 2x, 0) against (x, x, 1)
        let mlp = Mlp::new(&[1, 3]).unwrap();
        let mut p = vec![0.0; mlp.num_params()];
        p[0] = 1.0;
        p[1] = 2.0;
        let x = [0.5, -1.0, 2.0];
        let reference: Vec<f64> = x.iter().flat_map(|&v| [v, v, 1.0]).collect();
        let mut ev = Evaluator::<Cpu, f64>::new(Cpu, mlp, &x, reference).unwrap();
        let e = ev.field_errors(&p, &[0, 1]).unwrap();
        let sx2: f64 = x.iter().map(|v| v * v).sum();
        assert_eq!(e.fields[0].abs, 0.0);
        assert!((e.fields[1].rel - 1.0).abs() < 1e-15);
        assert!((e.fields[2].abs - 1.0).abs() < 1e-15);
        // the group (u, v): Σ se = Σx², Σ ref² = 2Σx²
        let g = e.group.unwrap();
        assert!((g.rel - 0.5f64.sqrt()).abs() < 1e-15);
        assert!((g.abs - (sx2 / 6.0).sqrt()).abs() < 1e-15);
        // the backend's reduction over all outputs agrees with the field sums
        let all = ev.l2(&p).unwrap();
        assert!((all.abs - ((sx2 + 3.0) / 9.0).sqrt()).abs() < 1e-15);
        assert!(ev.field_errors(&p, &[3]).is_err());
    }
}

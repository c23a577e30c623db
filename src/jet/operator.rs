//! The constant-coefficient second-order operators that the jet carries (design §1):
//! one [`Operator`] `Σ_ij C_ij ∂_ij u` as directions `v_k` and weights `c_k` with
//! `C = Σ_k c_k v_k v_kᵀ`, or an [`OperatorSet`] of J operators that share their
//! directions (weights `c_jk`, a J × K matrix), for systems that need several operator
//! terms of one field (a full and a spatial Laplacian, mixed terms such as `∂_x∂_y v`).
//!
//! For one operator the Laplacian is `V = I`, `c = 1`; the heat equation zeroes the weight
//! of the time direction; a general symmetric `C` is factorised by its
//! eigendecomposition, so the directions are orthonormal and the gradient is recovered as
//! `∇u = Vᵀ ∂_V u`. A set keeps the D coordinate axes as its first directions (so the
//! first D derivatives are the gradient) and adds `e_i + e_j` only for the pairs that some
//! `C` couples, by polarisation:
//! `Σ_ij C_ij ∂_ij = Σ_i (C_ii − Σ_{j≠i} C_ij) ∂²_{e_i} + Σ_{i<j} C_ij ∂²_{e_i+e_j}`.
//!
//! Checked by the unit tests below (factorisations reproduce `C`, bad input is refused
//! with messages that name it) and by `tests/jet.rs` (the jet's operator rows against
//! finite differences and the autodiff baseline).

use crate::error::{Error, Result};
use std::sync::OnceLock;

#[derive(Clone, Debug)]
pub struct Operator {
    dim: usize,
    /// K × D, row k = direction v_k. The coordinate axes (D × D) are made on first use
    /// only: a randomized estimator of a Laplacian at D = 10,000 never needs them.
    dirs: OnceLock<Vec<f64>>,
    /// K weights.
    coef: Vec<f64>,
    identity: bool,
    /// Directions drawn at random ([`super::RandomOperator`]): the jet's derivative rows
    /// stay along them (never rotated back to the axes; K may differ from D).
    sampled: bool,
}

impl PartialEq for Operator {
    fn eq(&self, o: &Self) -> bool {
        // the axes' directions are implied (and perhaps not made yet)
        self.dim == o.dim
            && self.coef == o.coef
            && self.identity == o.identity
            && self.sampled == o.sampled
            && (self.identity || self.dirs() == o.dirs())
    }
}

fn filled(dirs: Vec<f64>) -> OnceLock<Vec<f64>> {
    let l = OnceLock::new();
    let _ = l.set(dirs);
    l
}

impl Operator {
    /// The Laplacian in `dim` dimensions.
    pub fn laplacian(dim: usize) -> Self {
        Self::weighted(vec![1.0; dim]).expect("ones are finite")
    }

    /// `Σ_d c_d ∂_dd` (coordinate directions).
    pub fn weighted(coef: Vec<f64>) -> Result<Self> {
        if let Some((i, c)) = coef.iter().enumerate().find(|(_, c)| !c.is_finite()) {
            return Err(Error::invalid(
                format!("operator coefficient {i}"),
                c,
                "a finite number",
            ));
        }
        Ok(Operator {
            dim: coef.len(),
            dirs: OnceLock::new(),
            coef,
            identity: true,
            sampled: false,
        })
    }

    /// `Σ_ij C_ij ∂_ij` for a symmetric `dim × dim` matrix `c` (row-major).
    pub fn from_matrix(dim: usize, c: &[f64]) -> Result<Self> {
        check_symmetric(dim, c, "")?;
        // Diagonal matrices keep coordinate directions (exact, and the cheap path).
        let diagonal = (0..dim).all(|i| (0..dim).all(|j| i == j || c[i * dim + j] == 0.0));
        if diagonal {
            return Self::weighted((0..dim).map(|i| c[i * dim + i]).collect());
        }
        let m = faer::Mat::<f64>::from_fn(dim, dim, |i, j| c[i * dim + j]);
        let evd = m.self_adjoint_eigen(faer::Side::Lower).map_err(|e| {
            Error::Numerical(format!("eigendecomposition of the operator matrix: {e:?}"))
        })?;
        let u = evd.U();
        let s = evd.S();
        let mut dirs = vec![0.0; dim * dim];
        let mut coef = vec![0.0; dim];
        for k in 0..dim {
            coef[k] = s[k];
            for d in 0..dim {
                dirs[k * dim + d] = u[(d, k)];
            }
        }
        Ok(Operator {
            dim,
            dirs: filled(dirs),
            coef,
            identity: false,
            sampled: false,
        })
    }

    /// An operator of `k = coef.len()` drawn directions (`dirs`, `k × dim`), whose jet
    /// rows stay along them: [`super::RandomOperator`] makes these.
    pub(crate) fn sampled(dim: usize, dirs: Vec<f64>, coef: Vec<f64>) -> Self {
        debug_assert_eq!(dirs.len(), dim * coef.len());
        Operator {
            dim,
            dirs: filled(dirs),
            coef,
            identity: false,
            sampled: true,
        }
    }

    /// The directions and weights of a sampled operator, to be overwritten in place by
    /// the next draw.
    pub(crate) fn sampled_parts_mut(&mut self) -> (&mut [f64], &mut [f64]) {
        let dirs = self
            .dirs
            .get_mut()
            .expect("a sampled operator holds its directions");
        (dirs, &mut self.coef)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Number of directions K (= D unless sampled).
    pub fn k(&self) -> usize {
        self.coef.len()
    }
    /// K × D directions, row-major (the axes are made on the first call).
    pub fn dirs(&self) -> &[f64] {
        self.dirs.get_or_init(|| {
            let dim = self.dim;
            let mut dirs = vec![0.0; dim * dim];
            for d in 0..dim {
                dirs[d * dim + d] = 1.0;
            }
            dirs
        })
    }
    pub fn coef(&self) -> &[f64] {
        &self.coef
    }
    /// Directions are the coordinate axes.
    pub fn is_identity(&self) -> bool {
        self.identity
    }
    /// Directions were drawn at random (an unbiased estimator of an operator).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }
    /// The jet's derivative rows are rotated back to the coordinate axes on output
    /// (orthonormal eigen-directions of a full matrix `C`); false for the axes and for
    /// drawn directions, whose rows the residual reads as they are.
    pub fn rotates(&self) -> bool {
        !self.identity && !self.sampled
    }
    /// The coefficient matrix `C = Σ_k c_k v_k v_kᵀ`.
    pub fn matrix(&self) -> Vec<f64> {
        let d = self.dim;
        let mut c = vec![0.0; d * d];
        let v = self.dirs();
        for k in 0..self.k() {
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] += self.coef[k] * v[k * d + i] * v[k * d + j];
                }
            }
        }
        c
    }
}

/// Checks that `c` is a finite symmetric `dim × dim` matrix; `what` prefixes the names
/// in messages (`"operator 1: "` for the second matrix of a set).
fn check_symmetric(dim: usize, c: &[f64], what: &str) -> Result<()> {
    if c.len() != dim * dim {
        return Err(Error::Shape(format!(
            "{what}operator matrix has {} entries, expected {dim}x{dim} = {}",
            c.len(),
            dim * dim
        )));
    }
    for i in 0..dim {
        for j in 0..dim {
            let (a, b) = (c[i * dim + j], c[j * dim + i]);
            if !a.is_finite() {
                return Err(Error::invalid(
                    format!("{what}C[{i}][{j}]"),
                    a,
                    "a finite number",
                ));
            }
            if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                return Err(Error::invalid(
                    format!("{what}C[{i}][{j}]"),
                    a,
                    format!(
                        "equal to C[{j}][{i}] = {b} (the coefficient matrix must be symmetric)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// J second-order operators `L_j u = Σ_k c_jk ∂²_{v_k} u` on one jet, sharing the K
/// directions `v_k`: the D coordinate axes first, then `e_i + e_j` for each pair `i < j`
/// that some operator couples (module header). The jet of a sample is then
/// `[u, ∂_1 u, …, ∂_K u, L_1 u, …, L_J u]`, its first D derivatives the gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorSet {
    dim: usize,
    /// K × D, row k = direction v_k.
    dirs: Vec<f64>,
    /// J × K, row j = the weights of operator j.
    coef: Vec<f64>,
    /// The coordinate pairs `(i, j)`, `i < j`, of directions D.. (`e_i + e_j`).
    pairs: Vec<(usize, usize)>,
}

impl OperatorSet {
    /// The operators `Σ_ij C_ij ∂_ij` of the symmetric `dim × dim` matrices `mats`
    /// (row-major), in that order. Any number of matrices, none included (a jet of values
    /// and gradients).
    pub fn from_matrices<M: AsRef<[f64]>>(dim: usize, mats: &[M]) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid(
                "operator set dimension",
                0,
                "at least one input dimension",
            ));
        }
        for (j, c) in mats.iter().enumerate() {
            check_symmetric(dim, c.as_ref(), &format!("operator {j}: "))?;
        }
        // pairs coupled by some operator, in lexicographic order
        let mut pairs = vec![];
        for i in 0..dim {
            for j in i + 1..dim {
                if mats.iter().any(|c| c.as_ref()[i * dim + j] != 0.0) {
                    pairs.push((i, j));
                }
            }
        }
        let k = dim + pairs.len();
        let mut dirs = vec![0.0; k * dim];
        for d in 0..dim {
            dirs[d * dim + d] = 1.0;
        }
        for (p, &(i, j)) in pairs.iter().enumerate() {
            dirs[(dim + p) * dim + i] = 1.0;
            dirs[(dim + p) * dim + j] = 1.0;
        }
        // polarisation: Σ_ij C_ij ∂_ij = Σ_i (C_ii − Σ_{j≠i} C_ij) ∂²_{e_i} + Σ_{i<j} C_ij ∂²_{e_i+e_j}
        let mut coef = vec![0.0; mats.len() * k];
        for (jo, c) in mats.iter().enumerate() {
            let c = c.as_ref();
            let row = &mut coef[jo * k..(jo + 1) * k];
            for i in 0..dim {
                let off: f64 = (0..dim).filter(|&j| j != i).map(|j| c[i * dim + j]).sum();
                row[i] = c[i * dim + i] - off;
            }
            for (p, &(i, j)) in pairs.iter().enumerate() {
                row[dim + p] = c[i * dim + j];
            }
        }
        Ok(OperatorSet {
            dim,
            dirs,
            coef,
            pairs,
        })
    }

    /// Diagonal operators `Σ_d w_jd ∂_dd`, one per row of `weights` (each of `dim`
    /// entries): e.g. the full and the spatial Laplacian of a time-dependent problem.
    pub fn diagonal<W: AsRef<[f64]>>(dim: usize, weights: &[W]) -> Result<Self> {
        let mut mats = vec![];
        for (j, w) in weights.iter().enumerate() {
            let w = w.as_ref();
            if w.len() != dim {
                return Err(Error::Shape(format!(
                    "operator {j}: {} weights for {dim} dimensions",
                    w.len()
                )));
            }
            let mut c = vec![0.0; dim * dim];
            for d in 0..dim {
                c[d * dim + d] = w[d];
            }
            mats.push(c);
        }
        Self::from_matrices(dim, &mats)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Number of directions K (D coordinate axes, then the coupled pairs).
    pub fn k(&self) -> usize {
        self.dim + self.pairs.len()
    }
    /// Number of operators J.
    pub fn ops(&self) -> usize {
        self.coef.len() / self.k()
    }
    /// K × D directions, row-major.
    pub fn dirs(&self) -> &[f64] {
        &self.dirs
    }
    /// J × K weights, row-major (row j = operator j).
    pub fn coef(&self) -> &[f64] {
        &self.coef
    }
    /// The coordinate pairs `(i, j)` of the directions after the first D (`e_i + e_j`).
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }
    /// The coefficient matrix of operator `j`, `C_j = Σ_k c_jk v_k v_kᵀ`.
    pub fn matrix(&self, j: usize) -> Vec<f64> {
        let (d, k) = (self.dim, self.k());
        let mut c = vec![0.0; d * d];
        for kk in 0..k {
            let w = self.coef[j * k + kk];
            for a in 0..d {
                for b in 0..d {
                    c[a * d + b] += w * self.dirs[kk * d + a] * self.dirs[kk * d + b];
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_set_polarisation_round_trips() {
        let lap = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let mixed = [0.0, 0.5, 0.0, 0.5, 2.0, -0.3, 0.0, -0.3, 0.0];
        let set = OperatorSet::from_matrices(3, &[&lap[..], &mixed[..]]).unwrap();
        assert_eq!(set.ops(), 2);
        assert_eq!(set.pairs(), &[(0, 1), (1, 2)]);
        assert_eq!(set.k(), 5);
        for (j, c) in [&lap[..], &mixed[..]].into_iter().enumerate() {
            for (a, b) in set.matrix(j).iter().zip(c) {
                assert!((a - b).abs() < 1e-14, "{j}: {a} vs {b}");
            }
        }
        // coordinate axes first, then e_0 + e_1 and e_1 + e_2
        assert_eq!(&set.dirs()[..9], &lap[..]);
        assert_eq!(&set.dirs()[9..], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // the Laplacian needs no pair direction
        assert_eq!(&set.coef()[..5], &[1.0, 1.0, 1.0, 0.0, 0.0]);
        // diagonal operators only: no pairs, J rows of the weights
        let d = OperatorSet::diagonal(2, &[vec![1.0, 1.0], vec![0.0, 1.0]]).unwrap();
        assert_eq!((d.k(), d.ops()), (2, 2));
        assert_eq!(d.coef(), &[1.0, 1.0, 0.0, 1.0]);
        // no operators at all: a gradient jet
        let g = OperatorSet::from_matrices::<Vec<f64>>(2, &[]).unwrap();
        assert_eq!((g.k(), g.ops()), (2, 0));
    }

    #[test]
    fn operator_set_rejects_bad_input() {
        let msg = |r: Result<OperatorSet>| r.unwrap_err().to_string();
        let e = msg(OperatorSet::from_matrices(
            2,
            &[vec![1.0; 4], vec![1.0, 2.0, 0.0, 1.0]],
        ));
        assert!(
            e.contains("operator 1: C[0][1]") && e.contains("symmetric"),
            "{e}"
        );
        let e = msg(OperatorSet::from_matrices(2, &[vec![1.0; 3]]));
        assert!(
            e.contains("operator 0") && e.contains("3 entries") && e.contains("2x2"),
            "{e}"
        );
        let e = msg(OperatorSet::from_matrices(
            2,
            &[vec![1.0, f64::NAN, f64::NAN, 1.0]],
        ));
        assert!(
            e.contains("operator 0: C[0][1]") && e.contains("finite"),
            "{e}"
        );
        let e = msg(OperatorSet::from_matrices::<Vec<f64>>(0, &[]));
        assert!(e.contains("dimension") && e.contains("Got 0"), "{e}");
        let e = msg(OperatorSet::diagonal(3, &[vec![1.0, 1.0]]));
        assert!(
            e.contains("operator 0") && e.contains("2 weights for 3"),
            "{e}"
        );
    }

    #[test]
    fn matrix_factorisation_round_trips() {
        let c = [2.0, 0.5, 0.0, 0.5, 1.0, -0.3, 0.0, -0.3, 0.7];
        let op = Operator::from_matrix(3, &c).unwrap();
        assert!(!op.is_identity());
        for (a, b) in op.matrix().iter().zip(&c) {
            assert!((a - b).abs() < 1e-12);
        }
        // orthonormal directions
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..3)
                    .map(|i| op.dirs()[a * 3 + i] * op.dirs()[b * 3 + i])
                    .sum();
                assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn asymmetric_matrix_is_rejected() {
        let e = Operator::from_matrix(2, &[1.0, 2.0, 0.0, 1.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("C[0][1]") && e.contains("symmetric"), "{e}");
    }
}

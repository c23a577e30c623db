//! The constant-coefficient second-order operator `Σ_ij C_ij ∂_ij u` that the jet carries,
//! as directions `v_k` and weights `c_k` with `C = Σ_k c_k v_k v_kᵀ` (design §1).
//!
//! The Laplacian is `V = I`, `c = 1`; the heat equation zeroes the weight of the time
//! direction; a general symmetric `C` is factorised by its eigendecomposition, so the
//! directions are orthonormal and the gradient is recovered as `∇u = Vᵀ ∂_V u`.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    dim: usize,
    /// K × D, row k = direction v_k.
    dirs: Vec<f64>,
    /// K weights.
    coef: Vec<f64>,
    identity: bool,
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
        let dim = coef.len();
        let mut dirs = vec![0.0; dim * dim];
        for d in 0..dim {
            dirs[d * dim + d] = 1.0;
        }
        Ok(Operator {
            dim,
            dirs,
            coef,
            identity: true,
        })
    }

    /// `Σ_ij C_ij ∂_ij` for a symmetric `dim × dim` matrix `c` (row-major).
    pub fn from_matrix(dim: usize, c: &[f64]) -> Result<Self> {
        if c.len() != dim * dim {
            return Err(Error::Shape(format!(
                "operator matrix has {} entries, expected {dim}x{dim} = {}",
                c.len(),
                dim * dim
            )));
        }
        for i in 0..dim {
            for j in 0..dim {
                let (a, b) = (c[i * dim + j], c[j * dim + i]);
                if !a.is_finite() {
                    return Err(Error::invalid(format!("C[{i}][{j}]"), a, "a finite number"));
                }
                if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                    return Err(Error::invalid(
                        format!("C[{i}][{j}]"),
                        a,
                        format!(
                            "equal to C[{j}][{i}] = {b} (the coefficient matrix must be symmetric)"
                        ),
                    ));
                }
            }
        }
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
            dirs,
            coef,
            identity: false,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Number of directions K (= D).
    pub fn k(&self) -> usize {
        self.coef.len()
    }
    pub fn dirs(&self) -> &[f64] {
        &self.dirs
    }
    pub fn coef(&self) -> &[f64] {
        &self.coef
    }
    /// Directions are the coordinate axes.
    pub fn is_identity(&self) -> bool {
        self.identity
    }
    /// The coefficient matrix `C = Σ_k c_k v_k v_kᵀ`.
    pub fn matrix(&self) -> Vec<f64> {
        let d = self.dim;
        let mut c = vec![0.0; d * d];
        for k in 0..self.k() {
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] += self.coef[k] * self.dirs[k * d + i] * self.dirs[k * d + j];
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

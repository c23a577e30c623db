//! The randomized forward Laplacian (stochastic Taylor mode, design §9): an unbiased
//! estimate of `Σ_ij C_ij ∂_ij u` from K random directions instead of the D (or more)
//! directions of the exact operator.
//!
//! For a positive semi-definite `C = Σ_j c_j v_j v_jᵀ` (the [`Operator`]'s own
//! directions and weights, `c_j ≥ 0`) let `w = Σ_j √c_j z_j v_j` with independent `z_j`
//! of mean 0 and variance 1 (Rademacher ±1, or standard normal). Then `E[w wᵀ] = C`, so
//! `∂²_w u = wᵀ H w` has mean `tr(C H) = Σ_ij C_ij ∂_ij u`, and the mean of K independent
//! draws, `(1/K) Σ_k ∂²_{w_k} u`, is an unbiased estimate whose variance falls as 1/K.
//! A negative semi-definite `C` is `−(−C)`; a `C` with weights of both signs is refused
//! (its split into two sets is not implemented). For the Laplacian and Rademacher
//! directions the variance of one draw is `2 Σ_{i≠j} H_ij²` (the diagonal is exact),
//! for Gaussian directions `2 ‖H‖_F²`.
//!
//! A drawn operator is an ordinary [`Operator`] of `lead + K` directions: the first
//! `lead` are coordinate axes that the residual reads exactly (the time derivative of the
//! heat equation) with weight 0, the K drawn ones have weight `±1/K`. Its jet rows are
//! never rotated back to the axes ([`Operator::is_sampled`]).
//!
//! Checked by the unit tests below (parsing, refusals, `E[w wᵀ] = C` over many draws) and
//! `tests/randlap.rs` (the estimate's mean against the exact Laplacian of a network, its
//! variance against the closed forms above and its 1/K decay, training with it).

use super::Operator;
use crate::error::{Error, Result};
use rand::Rng;

/// How the random directions are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Entries ±1 with equal probability (Hutchinson; the lower variance).
    #[default]
    Rademacher,
    /// Standard normal entries.
    Gaussian,
}

/// The second-order operator estimator of a run: exact, or K random directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Estimator {
    #[default]
    Exact,
    Random {
        k: usize,
        dist: Direction,
    },
}

const EXPECTED: &str =
    "`exact`, `random:K` or `random:K:gauss` with K ≥ 1 directions (e.g. random:64)";

impl Estimator {
    /// `exact`, `random:K`, `random:K:rademacher` or `random:K:gauss`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::invalid("laplacian", s, EXPECTED);
        let t = s.trim();
        if t == "exact" {
            return Ok(Estimator::Exact);
        }
        let Some(rest) = t.strip_prefix("random:") else {
            return Err(bad());
        };
        let (k, dist) = match rest.split_once(':') {
            Some((k, d)) => (k, d),
            None => (rest, "rademacher"),
        };
        let dist = match dist {
            "rademacher" => Direction::Rademacher,
            "gauss" | "gaussian" => Direction::Gaussian,
            _ => return Err(bad()),
        };
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        if k == 0 {
            return Err(Error::invalid(
                "laplacian",
                s,
                "random:K with K ≥ 1 directions (random:0 estimates nothing)",
            ));
        }
        Ok(Estimator::Random { k, dist })
    }

    pub fn is_exact(&self) -> bool {
        *self == Estimator::Exact
    }
}

impl std::fmt::Display for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Estimator::Exact => write!(f, "exact"),
            Estimator::Random {
                k,
                dist: Direction::Rademacher,
            } => write!(f, "random:{k}"),
            Estimator::Random {
                k,
                dist: Direction::Gaussian,
            } => write!(f, "random:{k}:gauss"),
        }
    }
}

/// The square-root factor `R` of `±C = Rᵀ R` that directions are drawn through.
#[derive(Clone, Debug)]
enum Factor {
    /// Coordinate directions: `w_d = √|c_d| z_d` (O(D) per direction).
    Axes(Vec<f64>),
    /// `m` rows `√|c_j| v_j` (eigen-directions of a full `C`): `w = Σ_j z_j r_j`.
    Rows { m: usize, rows: Vec<f64> },
}

/// Draws unbiased K-direction estimators of one operator (module header); the current
/// draw is an [`Operator`] that jet engines take as it is.
#[derive(Clone, Debug)]
pub struct RandomOperator {
    lead: usize,
    k: usize,
    dist: Direction,
    factor: Factor,
    op: Operator,
    /// Scratch for one direction's random entries.
    z: Vec<f64>,
}

impl RandomOperator {
    /// An estimator of `base` with `k` random directions, after `lead` coordinate axes that
    /// are kept exact (their weights in `base` must be 0: a residual reads their first
    /// derivatives, e.g. `u_t`). Refuses K = 0, K larger than the number of dimensions the
    /// operator acts on (the exact operator is then cheaper: use it), an operator with
    /// weights of both signs, and a zero operator. The operator holds zero directions
    /// until the first [`Self::draw`].
    pub fn new(base: &Operator, lead: usize, k: usize, dist: Direction) -> Result<Self> {
        let est = Estimator::Random { k, dist }.to_string();
        if k == 0 {
            return Err(Error::invalid(
                "laplacian",
                est,
                "random:K with K ≥ 1 directions (random:0 estimates nothing)",
            ));
        }
        let dim = base.dim();
        let coef = base.coef();
        if lead > 0 && (!base.is_identity() || coef[..lead.min(dim)].iter().any(|&c| c != 0.0)) {
            return Err(Error::invalid(
                "laplacian",
                est,
                format!(
                    "an operator without weight on the first {lead} coordinate(s), which the \
                     residual reads exactly (use `exact` for this problem)"
                ),
            ));
        }
        let active: Vec<usize> = (0..coef.len())
            .filter(|&j| (!base.is_identity() || j >= lead) && coef[j] != 0.0)
            .collect();
        let pos = active.iter().any(|&j| coef[j] > 0.0);
        let neg = active.iter().any(|&j| coef[j] < 0.0);
        if pos && neg {
            return Err(Error::invalid(
                "laplacian",
                est,
                "an operator whose coefficient matrix is positive or negative semi-definite \
                 (this one has weights of both signs; use `exact`)",
            ));
        }
        if active.is_empty() {
            return Err(Error::invalid(
                "laplacian",
                est,
                "an operator with a non-zero coefficient (this one is zero; use `exact`)",
            ));
        }
        let m = active.len();
        if k > m {
            return Err(Error::invalid(
                "laplacian",
                est,
                format!(
                    "K at most {m}, the number of directions the exact operator needs \
                     (it is then cheaper: use `exact`)"
                ),
            ));
        }
        let sign = if neg { -1.0 } else { 1.0 };
        let factor = if base.is_identity() {
            Factor::Axes(
                (0..dim)
                    .map(|d| if d < lead { 0.0 } else { coef[d].abs().sqrt() })
                    .collect(),
            )
        } else {
            let mut rows = vec![0.0; m * dim];
            for (r, &j) in active.iter().enumerate() {
                let s = coef[j].abs().sqrt();
                for d in 0..dim {
                    rows[r * dim + d] = s * base.dirs()[j * dim + d];
                }
            }
            Factor::Rows { m, rows }
        };
        let kt = lead + k;
        let mut dirs = vec![0.0; kt * dim];
        let mut c = vec![0.0; kt];
        for j in 0..lead {
            dirs[j * dim + j] = 1.0;
        }
        for w in &mut c[lead..] {
            *w = sign / k as f64;
        }
        let zlen = match &factor {
            Factor::Axes(_) => dim,
            Factor::Rows { m, .. } => *m,
        };
        Ok(RandomOperator {
            lead,
            k,
            dist,
            factor,
            op: Operator::sampled(dim, dirs, c),
            z: vec![0.0; zlen],
        })
    }

    /// Number of drawn directions K.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Number of exact coordinate directions before the drawn ones.
    pub fn lead(&self) -> usize {
        self.lead
    }
    pub fn estimator(&self) -> Estimator {
        Estimator::Random {
            k: self.k,
            dist: self.dist,
        }
    }
    /// The current draw.
    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// Draw K fresh directions from `rng` (the draws depend only on the RNG's state, so a
    /// run resumed with its RNG draws the same ones).
    pub fn draw<R: Rng + ?Sized>(&mut self, rng: &mut R) -> &Operator {
        let dim = self.op.dim();
        let (lead, dist) = (self.lead, self.dist);
        let (dirs, _) = self.op.sampled_parts_mut();
        for kk in 0..self.k {
            fill_unit(dist, rng, &mut self.z);
            let w = &mut dirs[(lead + kk) * dim..(lead + kk + 1) * dim];
            match &self.factor {
                Factor::Axes(s) => {
                    for ((w, s), z) in w.iter_mut().zip(s).zip(&self.z) {
                        *w = s * z;
                    }
                }
                Factor::Rows { m, rows } => {
                    w.fill(0.0);
                    for j in 0..*m {
                        let z = self.z[j];
                        for (w, r) in w.iter_mut().zip(&rows[j * dim..(j + 1) * dim]) {
                            *w += z * r;
                        }
                    }
                }
            }
        }
        &self.op
    }
}

/// Independent entries of mean 0 and variance 1.
fn fill_unit<R: Rng + ?Sized>(dist: Direction, rng: &mut R, z: &mut [f64]) {
    match dist {
        Direction::Rademacher => {
            for block in z.chunks_mut(64) {
                let bits: u64 = rng.random();
                for (i, v) in block.iter_mut().enumerate() {
                    *v = if bits >> i & 1 == 1 { 1.0 } else { -1.0 };
                }
            }
        }
        Direction::Gaussian => crate::rng::normals(rng, z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_and_prints() {
        assert_eq!(Estimator::parse("exact").unwrap(), Estimator::Exact);
        let r = Estimator::parse("random:64").unwrap();
        assert_eq!(
            r,
            Estimator::Random {
                k: 64,
                dist: Direction::Rademacher
            }
        );
        assert_eq!(r.to_string(), "random:64");
        let g = Estimator::parse("random:8:gauss").unwrap();
        assert_eq!(g.to_string(), "random:8:gauss");
        assert_eq!(Estimator::parse(&g.to_string()).unwrap(), g);
        for bad in [
            "random:0",
            "random:",
            "random:x",
            "rand:4",
            "random:4:cauchy",
            "",
        ] {
            let e = Estimator::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("laplacian") && e.contains("random:K"),
                "{bad}: {e}"
            );
        }
        let e = Estimator::parse("random:0").unwrap_err().to_string();
        assert!(e.contains("K ≥ 1"), "{e}");
    }

    #[test]
    fn refuses_what_it_cannot_estimate() {
        let lap = Operator::laplacian(4);
        let msg = |r: Result<RandomOperator>| r.unwrap_err().to_string();
        let e = msg(RandomOperator::new(&lap, 0, 5, Direction::Rademacher));
        assert!(e.contains("random:5") && e.contains("at most 4"), "{e}");
        let e = msg(RandomOperator::new(&lap, 0, 0, Direction::Rademacher));
        assert!(e.contains("K ≥ 1"), "{e}");
        // the time axis of a Laplacian carries weight: it cannot be kept apart
        let e = msg(RandomOperator::new(&lap, 1, 2, Direction::Rademacher));
        assert!(e.contains("first 1 coordinate"), "{e}");
        let mixed = Operator::weighted(vec![1.0, -1.0]).unwrap();
        let e = msg(RandomOperator::new(&mixed, 0, 1, Direction::Rademacher));
        assert!(e.contains("both signs"), "{e}");
        let zero = Operator::weighted(vec![0.0, 0.0]).unwrap();
        let e = msg(RandomOperator::new(&zero, 0, 1, Direction::Rademacher));
        assert!(e.contains("zero"), "{e}");
        // heat: time weight 0, three space dimensions -> K ≤ 3
        let heat = Operator::weighted(vec![0.0, 1.0, 1.0, 1.0]).unwrap();
        assert!(RandomOperator::new(&heat, 1, 3, Direction::Rademacher).is_ok());
        let e = msg(RandomOperator::new(&heat, 1, 4, Direction::Rademacher));
        assert!(e.contains("at most 3"), "{e}");
    }

    /// `E[Σ_k c_k w_k w_kᵀ] = C` over many draws, for a weighted operator with a kept
    /// time axis, a full (eigen-factorised) PSD matrix and a negative one, both laws.
    #[test]
    fn draws_reproduce_the_coefficient_matrix_on_average() {
        let full = [2.0, 0.5, 0.0, 0.5, 1.0, -0.3, 0.0, -0.3, 0.7];
        let neg: Vec<f64> = full.iter().map(|v| -v).collect();
        let cases = [
            (Operator::weighted(vec![0.0, 1.0, 2.0]).unwrap(), 1),
            (Operator::from_matrix(3, &full).unwrap(), 0),
            (Operator::from_matrix(3, &neg).unwrap(), 0),
        ];
        for dist in [Direction::Rademacher, Direction::Gaussian] {
            for (base, lead) in &cases {
                let mut ro = RandomOperator::new(base, *lead, 2, dist).unwrap();
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
                let draws = 20000;
                let (mut mean, mut sq) = ([0.0; 9], [0.0; 9]);
                for _ in 0..draws {
                    let op = ro.draw(&mut rng);
                    assert!(op.is_sampled() && !op.rotates());
                    assert_eq!(op.k(), lead + 2);
                    for ((m, s), c) in mean.iter_mut().zip(&mut sq).zip(op.matrix()) {
                        *m += c / draws as f64;
                        *s += c * c / draws as f64;
                    }
                    // the kept axis is e_0 with weight 0
                    if *lead == 1 {
                        assert_eq!(&op.dirs()[..3], &[1.0, 0.0, 0.0]);
                        assert_eq!(op.coef()[0], 0.0);
                        assert_eq!(op.dirs()[3], 0.0);
                    }
                }
                // within 5 standard errors (from the sample variance) of C
                for (i, (a, b)) in mean.iter().zip(base.matrix()).enumerate() {
                    let se = ((sq[i] - a * a).max(0.0) / draws as f64).sqrt();
                    let tol = 5.0 * se + 1e-9;
                    assert!((a - b).abs() < tol, "{dist:?} {i}: {a} vs {b}");
                }
            }
        }
    }
}

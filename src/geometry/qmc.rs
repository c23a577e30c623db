//! Points in the unit cube `[0, 1)^d`: uniform random, scrambled Sobol, shifted Halton
//! and Latin hypercube. Quasi-random sets lower the integration noise of a loss that is a
//! mean over points; randomising them (a random digital shift for Sobol, a random
//! Cranley–Patterson rotation for Halton, random strata for the Latin hypercube) keeps
//! each draw an unbiased estimate, makes fresh draws differ, and takes every random bit
//! from the caller's generator, so runs stay reproducible from the data seed and resume
//! bit for bit.
//!
//! Sobol: Gray-code construction with 32-bit direction numbers from primitive
//! polynomials over GF(2) and initial values `m_i` (Joe and Kuo's table, "new-joe-kuo-6",
//! the first [`SOBOL_MAX_DIM`] dimensions); the first dimension is van der Corput's.
//!
//! Checked by `tests/qmc.rs`: the first unscrambled Sobol points against published
//! values, the table's polynomials primitive and its `m_i` valid, every dimension
//! stratified (one point per interval of length 2^-m among the first 2^m points, also
//! after scrambling), the first two dimensions a (0, m, 2)-net, Halton's radical inverses,
//! the Latin hypercube's strata, uniform marginals, and the dimension limit as an error.

use crate::error::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How training points are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    /// Independent uniform points.
    #[default]
    Uniform,
    /// Scrambled (random digital shift) Sobol points.
    Sobol,
    /// Halton points with a random rotation.
    Halton,
    /// A Latin hypercube.
    Lhs,
}

impl PointKind {
    pub const NAMES: [&'static str; 4] = ["uniform", "sobol", "halton", "lhs"];

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "uniform" | "random" => PointKind::Uniform,
            "sobol" => PointKind::Sobol,
            "halton" => PointKind::Halton,
            "lhs" | "latin-hypercube" => PointKind::Lhs,
            _ => return Err(Error::unknown("point kind", s, &Self::NAMES)),
        })
    }
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Dimensions of the Sobol table (the first is van der Corput's).
pub const SOBOL_MAX_DIM: usize = 21;

/// Joe–Kuo's initial direction numbers for dimensions 2, 3, …: degree `s` of the
/// primitive polynomial, its inner coefficients `a` (bit `s − 1 − i` is the coefficient
/// of `x^{s−i}`), and `m_1 … m_s`.
const JOE_KUO: [(u32, u32, &[u32]); SOBOL_MAX_DIM - 1] = [
    (1, 0, &[1]),
    (2, 1, &[1, 3]),
    (3, 1, &[1, 3, 1]),
    (3, 2, &[1, 1, 1]),
    (4, 1, &[1, 1, 3, 3]),
    (4, 4, &[1, 3, 5, 13]),
    (5, 2, &[1, 1, 5, 5, 17]),
    (5, 4, &[1, 1, 5, 5, 5]),
    (5, 7, &[1, 1, 7, 11, 19]),
    (5, 11, &[1, 1, 5, 1, 1]),
    (5, 13, &[1, 1, 1, 3, 11]),
    (5, 14, &[1, 3, 5, 5, 31]),
    (6, 1, &[1, 3, 3, 9, 7, 49]),
    (6, 13, &[1, 1, 1, 15, 21, 21]),
    (6, 16, &[1, 3, 1, 13, 27, 49]),
    (6, 19, &[1, 1, 1, 15, 7, 5]),
    (6, 22, &[1, 3, 1, 15, 13, 25]),
    (6, 25, &[1, 1, 5, 5, 19, 61]),
    (7, 1, &[1, 3, 7, 11, 23, 15, 103]),
    (7, 4, &[1, 3, 7, 13, 13, 15, 69]),
];

/// The table's entry for dimension `j ≥ 1` (polynomial degree, coefficients, `m_i`).
pub fn sobol_table(j: usize) -> Option<(u32, u32, &'static [u32])> {
    (j >= 1).then(|| JOE_KUO.get(j - 1).copied()).flatten()
}

const BITS: usize = 32;

/// The largest double below 1 (a jitter must not round a point up to 1).
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// Direction numbers `V[k]` (as 32-bit fractions) of dimension `j`.
fn directions(j: usize) -> [u32; BITS] {
    let mut v = [0u32; BITS];
    match sobol_table(j) {
        None => {
            for (k, vk) in v.iter_mut().enumerate() {
                *vk = 1 << (BITS - 1 - k);
            }
        }
        Some((s, a, m)) => {
            let s = s as usize;
            for k in 0..BITS {
                v[k] = if k < s {
                    m[k] << (BITS - 1 - k)
                } else {
                    let mut x = v[k - s] ^ (v[k - s] >> s);
                    for i in 1..s {
                        if (a >> (s - 1 - i)) & 1 == 1 {
                            x ^= v[k - i];
                        }
                    }
                    x
                };
            }
        }
    }
    v
}

fn check_sobol(d: usize, n: usize) -> Result<()> {
    if d > SOBOL_MAX_DIM {
        return Err(Error::invalid(
            "sobol dimension",
            d,
            format!(
                "at most {SOBOL_MAX_DIM} (the direction-number table's size; use halton or \
                 lhs points in more dimensions)"
            ),
        ));
    }
    if n as u64 > 1u64 << BITS {
        return Err(Error::invalid("sobol points", n, "at most 2^32"));
    }
    Ok(())
}

/// The first `n` points of the `d`-dimensional Sobol sequence (unscrambled, starting at
/// the origin), as 32-bit integers (`n × d`, row-major; divide by 2^32).
pub fn sobol_bits(n: usize, d: usize) -> Result<Vec<u32>> {
    check_sobol(d, n)?;
    let dirs: Vec<[u32; BITS]> = (0..d).map(directions).collect();
    let mut out = vec![0u32; n * d];
    let mut x = vec![0u32; d];
    for i in 1..n {
        let c = i.trailing_zeros() as usize;
        for (xj, v) in x.iter_mut().zip(&dirs) {
            *xj ^= v[c];
        }
        out[i * d..(i + 1) * d].copy_from_slice(&x);
    }
    Ok(out)
}

/// Radical inverse of `i` in base `b` (van der Corput).
pub fn radical_inverse(mut i: u64, b: u64) -> f64 {
    let (mut f, mut r) = (1.0, 0.0);
    let inv = 1.0 / b as f64;
    while i > 0 {
        f *= inv;
        r += f * (i % b) as f64;
        i /= b;
    }
    r
}

/// The first `d` primes.
pub fn primes(d: usize) -> Vec<u64> {
    let mut p = Vec::with_capacity(d);
    let mut k = 2u64;
    while p.len() < d {
        if p.iter()
            .take_while(|&&q| q * q <= k)
            .all(|&q| !k.is_multiple_of(q))
        {
            p.push(k);
        }
        k += 1;
    }
    p
}

/// `n` points in `[0, 1)^d` of the given kind (`n × d`, row-major), every random bit from
/// `rng`.
pub fn unit_points(kind: PointKind, n: usize, d: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    let mut u = vec![0.0; n * d];
    let scale = 1.0 / (1u64 << BITS) as f64;
    match kind {
        PointKind::Uniform => u.iter_mut().for_each(|v| *v = rng.random_range(0.0..1.0)),
        PointKind::Sobol => {
            let bits = sobol_bits(n, d)?;
            // a random digital shift per dimension keeps the net structure; a jitter
            // below 2^-32 fills the remaining bits of the double
            let shift: Vec<u32> = (0..d).map(|_| rng.random()).collect();
            for (i, (o, b)) in u.iter_mut().zip(&bits).enumerate() {
                let jitter: f64 = rng.random_range(0.0..1.0);
                *o = ((((b ^ shift[i % d]) as f64) + jitter) * scale).min(BELOW_ONE);
            }
        }
        PointKind::Halton => {
            let p = primes(d);
            let shift: Vec<f64> = (0..d).map(|_| rng.random_range(0.0..1.0)).collect();
            for i in 0..n {
                for j in 0..d {
                    let v = radical_inverse(i as u64, p[j]) + shift[j];
                    u[i * d + j] = if v >= 1.0 { v - 1.0 } else { v };
                }
            }
        }
        PointKind::Lhs => {
            let mut perm: Vec<usize> = (0..n).collect();
            for j in 0..d {
                for i in (1..n).rev() {
                    perm.swap(i, rng.random_range(0..=i));
                }
                for i in 0..n {
                    let jitter: f64 = rng.random_range(0.0..1.0);
                    u[i * d + j] = ((perm[i] as f64 + jitter) / n as f64).min(BELOW_ONE);
                }
            }
        }
    }
    Ok(u)
}

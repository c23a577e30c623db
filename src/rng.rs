//! Standard normal variates for the crate's samplers (random Laplacian directions,
//! high-dimensional coefficients and points, shape sampling), from any `rand` generator so
//! every stream stays reproducible from its seed.
//!
//! Checked by the unit tests below (moments of many draws) and, through its callers, by
//! `tests/randlap.rs` and `tests/geometry.rs`.

use rand::Rng;

/// Fills `out` with standard normals, two per pair of uniforms (Box–Muller; `1 − U`
/// keeps the logarithm finite). An odd length uses the cosine half of the last pair.
pub fn normals<R: Rng + ?Sized>(rng: &mut R, out: &mut [f64]) {
    for pair in out.chunks_mut(2) {
        let u1 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        pair[0] = r * c;
        if let Some(v) = pair.get_mut(1) {
            *v = r * s;
        }
    }
}

/// One standard normal (the cosine half of a Box–Muller pair).
pub fn gaussian<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let mut z = [0.0];
    normals(rng, &mut z);
    z[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn moments_of_many_draws_match_the_standard_normal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut z = vec![0.0; 200_001];
        normals(&mut rng, &mut z);
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n / (var * var);
        // standard errors: 1/√n ≈ 2.2e-3 for the mean, √(2/n) ≈ 3.2e-3 for the variance,
        // √(24/n) ≈ 1.1e-2 for the kurtosis; 5σ bounds
        assert!(mean.abs() < 1.2e-2, "mean {mean}");
        assert!((var - 1.0).abs() < 1.6e-2, "variance {var}");
        assert!((kurt - 3.0).abs() < 6e-2, "kurtosis {kurt}");
        // the pairs are uncorrelated
        let c = z
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| p[0] * p[1])
            .sum::<f64>()
            / (n / 2.0);
        assert!(c.abs() < 1.6e-2, "pair correlation {c}");
    }

    #[test]
    fn gaussian_is_the_first_normal_of_the_same_stream() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut b = a.clone();
        let mut z = [0.0; 2];
        normals(&mut a, &mut z);
        assert_eq!(gaussian(&mut b), z[0]);
    }
}

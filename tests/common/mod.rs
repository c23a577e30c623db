//! Shared test helpers: tolerance checks that grow with the value's size and print the
//! first mismatches (llm.c style), random inputs.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Assert `|got - want| <= atol + rtol·|want|` elementwise; on failure print the first
/// mismatches with their indices and the worst relative error.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        worst = worst.max(err / (atol + rtol * w.abs()).max(f64::MIN_POSITIVE));
        if err.is_nan() || err > tol {
            bad.push((i, g, w, err));
        }
    }
    if !bad.is_empty() {
        let mut msg = format!("{what}: {} of {} entries out of tolerance (rtol {rtol:e}, atol {atol:e}; worst err/tol {worst:.3e}); first:\n", bad.len(), got.len());
        for (i, g, w, e) in bad.iter().take(8) {
            msg += &format!("  [{i}] got {g:.17e} want {w:.17e} |err| {e:.3e}\n");
        }
        panic!("{msg}");
    }
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut impl Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

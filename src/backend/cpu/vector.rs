//! Elementwise vector updates of the CPU backend (twins of `kernels/vector.cu`): the
//! elementwise product and the Adam step.
//!
//! Checked by the unit test below and `tests/kernels.rs`.

use crate::backend::AdamStep;
use crate::scalar::Real;
use rayon::prelude::*;

/// CPU twin of the elementwise product kernel: `y *= x`.
pub fn mul_ref<T: Real>(x: &[T], y: &mut [T]) {
    if y.len() >= 1 << 16 {
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y *= x));
    } else {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y *= x);
    }
}

/// CPU twin of the Adam kernel.
pub fn adam_ref<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: AdamStep) {
    let (b1, b2) = (T::from_f64(s.beta1), T::from_f64(s.beta2));
    let lr = T::from_f64(s.lr / s.bc1);
    let rbc2 = T::from_f64(1.0 / s.bc2.sqrt());
    let eps = T::from_f64(s.eps);
    for i in 0..p.len() {
        let gi = g[i];
        m[i] = b1 * m[i] + (T::ONE - b1) * gi;
        v[i] = b2 * v[i] + (T::ONE - b2) * gi * gi;
        p[i] -= lr * m[i] / (v[i].sqrt() * rbc2 + eps);
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::Cpu;
    #[allow(unused_imports)]
    use crate::backend::*;

    #[test]
    fn mul_matches_naive_and_checks_ranges() {
        let cpu = Cpu;
        let x: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let mut y = vec![2.0; 8];
        cpu.mul(&x, 3, &mut y, 1, 5).unwrap();
        assert_eq!(y, vec![2.0, 6.0, 8.0, 10.0, 12.0, 14.0, 2.0, 2.0]);
        assert!(cpu.mul(&x, 6, &mut y, 0, 5).is_err());
        assert!(cpu.mul(&x, 0, &mut y, 4, 5).is_err());
        let big: Vec<f64> = (0..100_000).map(|i| (i % 7) as f64).collect();
        let mut sq = big.clone();
        cpu.mul(&big, 0, &mut sq, 0, big.len()).unwrap();
        assert!(sq.iter().zip(&big).all(|(s, b)| *s == b * b));
    }
}

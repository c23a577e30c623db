//! Reductions and row-wise products of the CPU backend (twins of `kernels/reduce.cu`):
//! row dot products with lane-parallel sums, and their AVX2 build.
//!
//! Checked by the unit tests below and `tests/kernels.rs`.

use crate::backend::Lay;
use crate::scalar::Real;
use rayon::prelude::*;

/// `Σ a_i b_i` with eight independent partial sums, so the loop vectorises instead of
/// waiting on one chain of dependent additions.
#[inline(always)]
pub(super) fn dot_lanes<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = T::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + s
}

/// Rows `r0..r0 + out.len()` of [`row_dot_ref`].
#[inline(always)]
pub(super) fn row_dot_rows<T: Real>(
    x: &[T],
    lx: Lay,
    y: &[T],
    ly: Lay,
    beta: T,
    out: &mut [T],
    r0: usize,
) {
    let cols = lx.cols;
    for (k, o) in out.iter_mut().enumerate() {
        let (rx, ry) = (lx.off + (r0 + k) * lx.ld, ly.off + (r0 + k) * ly.ld);
        let acc = dot_lanes(&x[rx..rx + cols], &y[ry..ry + cols]);
        *o = if beta == T::ZERO {
            acc
        } else {
            beta * *o + acc
        };
    }
}

/// [`row_dot_rows`] compiled for AVX2 where the CPU has it (see [`has_avx2`]): the
/// baseline build's SSE2 code shuffles its eight lanes through 2-wide registers (it took
/// 8% of a heat 4+1d KFAC* step). The same operations in the same order, so the same bits.
pub(super) fn row_dot_rows_wide<T: Real>(
    x: &[T],
    lx: Lay,
    y: &[T],
    ly: Lay,
    beta: T,
    out: &mut [T],
    r0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn wide<T: Real>(x: &[T], lx: Lay, y: &[T], ly: Lay, b: T, o: &mut [T], r0: usize) {
            row_dot_rows(x, lx, y, ly, b, o, r0)
        }
        if super::simd::has_avx2() {
            // SAFETY: the CPU has the features `wide` is compiled for.
            return unsafe { wide(x, lx, y, ly, beta, out, r0) };
        }
    }
    row_dot_rows(x, lx, y, ly, beta, out, r0)
}

/// CPU twin of the row-wise dot product kernel: `out[r] = beta·out[r] + X_r · Y_r` for
/// two views with `out.len()` rows.
pub fn row_dot_ref<T: Real>(x: &[T], lx: Lay, y: &[T], ly: Lay, beta: T, out: &mut [T]) {
    const ROWS_PER_TASK: usize = 256;
    out.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(b, o)| row_dot_rows_wide(x, lx, y, ly, beta, o, b * ROWS_PER_TASK));
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::Cpu;
    #[allow(unused_imports)]
    use crate::backend::*;

    #[test]
    fn col_sum_and_scale_rows() {
        let cpu = Cpu;
        let x: Vec<f64> = (0..12).map(|i| i as f64).collect();
        let mut out = vec![1.0; 5];
        cpu.col_sum(2.0, &x, 0, 3, 3, 1.0, &mut out, 1).unwrap();
        assert_eq!(
            out,
            vec![
                1.0,
                1.0 + 2.0 * 9.0,
                1.0 + 2.0 * 12.0,
                1.0 + 2.0 * 15.0,
                1.0
            ]
        );
        // the 3×3 block that starts at x[3]: column sums 3+6+9, 4+7+10, 5+8+11
        let mut out = vec![0.0; 3];
        cpu.col_sum(1.0, &x, 3, 3, 3, 0.0, &mut out, 0).unwrap();
        assert_eq!(out, vec![18.0, 21.0, 24.0]);
        // 2 samples, k = 1, no Laplacian: rows [v0, v1, d0, d1]
        let mut g = vec![1.0; 8];
        let w = vec![2.0, 3.0];
        cpu.scale_jet_rows(
            &mut g,
            &w,
            JetShape {
                n: 2,
                k: 1,
                ops: 0,
                h: 2,
            },
        )
        .unwrap();
        assert_eq!(g, vec![2.0, 2.0, 3.0, 3.0, 2.0, 2.0, 3.0, 3.0]);
    }

    /// `row_dot` on strided views against a naive loop.
    #[test]
    fn row_dot_matches_naive() {
        let cpu = Cpu;
        let (rows, cols) = (700, 9);
        let x: Vec<f64> = (0..rows * 12 + 5).map(|i| (i as f64 * 0.3).sin()).collect();
        let y: Vec<f64> = (0..rows * cols + 2)
            .map(|i| (i as f64 * 0.7).cos())
            .collect();
        // X strided (ld 12) with an offset, Y dense
        let lx = Lay {
            off: 5,
            rows,
            cols,
            ld: 12,
        };
        let ly = Lay::at(2, rows, cols);
        let mut out = vec![1.5; rows + 3];
        cpu.row_dot(&x, lx, &y, ly, 2.0, &mut out, 3).unwrap();
        for r in 0..rows {
            let want: f64 = (0..cols)
                .map(|c| x[5 + r * 12 + c] * y[2 + r * cols + c])
                .sum();
            assert!((out[3 + r] - (3.0 + want)).abs() < 1e-13, "row {r}");
        }
        assert_eq!(&out[..3], &[1.5, 1.5, 1.5]);
        let mut o2 = vec![f64::NAN; rows];
        cpu.row_dot(&x, lx, &y, ly, 0.0, &mut o2, 0).unwrap();
        assert!(o2.iter().all(|v| v.is_finite()));
        assert!(cpu
            .row_dot(&x, lx, &y, Lay::at(3, rows, cols), 0.0, &mut o2, 0)
            .is_err());
        assert!(cpu
            .row_dot(&x, lx, &y, Lay::at(0, rows, 8), 0.0, &mut o2, 0)
            .is_err());
        assert!(cpu.row_dot(&x, lx, &y, ly, 0.0, &mut o2, 1).is_err());
    }
}

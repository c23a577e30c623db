//! Every CUDA kernel, run on the CPU through the emulation (`kfac_pinn::backend::emu`: the
//! unchanged kernels/*.cu compiled as C++, with the CUDA backend's launch geometry and
//! kernel plans), against its CPU twin (the `Cpu` backend op), in f32 and f64, on sizes
//! that are not multiples of the block size, larger than one grid (so the grid-stride
//! loops wrap), and empty. Then the emulator itself (warp shuffles, shared memory,
//! deadlock detection), the whole engine on emulated kernels (the library's self-check
//! cases), and the kernel sources through NVRTC and the PTX embedded by nvcc (ignored:
//! they need libnvrtc / an nvcc build; .ci/run runs them with `--ignored` in each loader
//! layout).

#![allow(clippy::needless_range_loop)]

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::cuda::kernels::MODULES;
use kfac_pinn::backend::cuda::launch::{Geometry, KArg, Launcher};
use kfac_pinn::backend::emu::{self, Emu};
use kfac_pinn::backend::{AdamStep, Backend, JacRows, JetShape, Lay};
use kfac_pinn::scalar::{convert, DType, Real};

/// Tolerances of one element type: |got − want| ≤ ATOL + RTOL·|want|.
fn tol<T: Real>() -> (f64, f64) {
    match T::DTYPE {
        DType::F64 => (1e-13, 1e-13),
        DType::F32 => (2e-6, 2e-6),
    }
}

fn emu() -> Emu {
    assert!(
        emu::available(),
        "the CUDA CPU emulation was not built (build.rs needs a C++20 compiler, e.g. g++)"
    );
    Emu::default()
}

fn data<T: Real>(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<T> {
    convert(&uniform(&mut rng(seed), n, lo, hi))
}

fn f64s<T: Real>(v: &[T]) -> Vec<f64> {
    convert(v)
}

/// Compare two buffers elementwise with the element type's tolerance.
fn same<T: Real>(what: &str, got: &[T], want: &[T]) {
    let (rtol, atol) = tol::<T>();
    let what = format!("{what} ({})", T::DTYPE.name());
    assert_close(&what, &f64s(got), &f64s(want), rtol, atol);
}

/// Run `f` for f32 and f64.
macro_rules! both {
    ($f:ident) => {
        $f::<f32>();
        $f::<f64>();
    };
}

/// Sizes: empty, one, ragged, and more than the emulated device's capped grid
/// (16 blocks × 256 threads), so the grid-stride loops wrap.
const SIZES: [usize; 6] = [0, 1, 255, 257, 4099, 10_007];

// ---- the registry ---------------------------------------------------------------------------

#[test]
fn every_kernel_is_registered_in_the_emulation() {
    emu();
    let mut emulated = emu::kernel_names();
    emulated.sort();
    let mut declared: Vec<String> = MODULES
        .iter()
        .flat_map(|m| m.entries.iter().map(|e| e.to_string()))
        .collect();
    declared.sort();
    // the emulation also registers its own self-test kernels (kernels/emu/selftest.cu)
    let emulated: Vec<String> = emulated
        .into_iter()
        .filter(|n| !n.starts_with("emu_"))
        .collect();
    assert_eq!(emulated, declared);
    // every templated op exists in both precisions
    for name in &declared {
        if let Some(base) = name.strip_suffix("_f32") {
            assert!(
                declared.contains(&format!("{base}_f64")),
                "{name} has no f64 twin"
            );
        }
    }
    for m in MODULES {
        assert!(
            !m.entries.is_empty(),
            "module {} has no entry point",
            m.name
        );
        assert!(
            !m.source.contains("#include \""),
            "module {}: local includes must be inlined for NVRTC",
            m.name
        );
    }
}

#[test]
fn launches_with_wrong_arguments_are_refused() {
    let e = emu();
    let mut x = vec![1.0f32; 4];
    let g = Geometry::linear(4, e.limits()).unwrap();
    // SAFETY: x holds 4 elements and the kernel is told n = 4; the mismatched launches
    // are refused before the kernel runs.
    unsafe {
        let p = KArg::Ptr(x.as_mut_ptr() as u64);
        assert!(e.launch("scale_f32", g, &[p, KArg::I64(4)]).is_err());
        assert!(e
            .launch("scale_f32", g, &[p, KArg::I64(4), KArg::F64(2.0)])
            .is_err());
        assert!(e.launch("no_such_kernel", g, &[]).is_err());
        e.launch("scale_f32", g, &[p, KArg::I64(4), KArg::F32(2.0)])
            .unwrap();
    }
    assert_eq!(x, vec![2.0; 4]);
}

// ---- vectors ----------------------------------------------------------------------------------

fn vector_ops<T: Real>() {
    let e = emu();
    for (si, &n) in SIZES.iter().enumerate() {
        let x: Vec<T> = data(n, 10 + si as u64, -2.0, 2.0);
        let y0: Vec<T> = data(n, 20 + si as u64, -2.0, 2.0);
        // fill, with a range inside a larger buffer
        let (mut a, mut b) = (y0.clone(), y0.clone());
        let (off, len) = (n / 3, n - n / 3 - n / 5);
        Cpu.fill(&mut a, off, len, T::from_f64(0.75)).unwrap();
        e.fill(&mut b, off, len, T::from_f64(0.75)).unwrap();
        same(&format!("fill n={n}"), &b, &a);
        // scale
        let (mut a, mut b) = (y0.clone(), y0.clone());
        Cpu.scale(T::from_f64(-1.5), &mut a).unwrap();
        e.scale(T::from_f64(-1.5), &mut b).unwrap();
        same(&format!("scale n={n}"), &b, &a);
        // axpby, with beta = 1, a general beta and beta = 0
        for beta in [1.0, 0.3, 0.0] {
            let (mut a, mut b) = (y0.clone(), y0.clone());
            Cpu.axpby(T::from_f64(0.7), &x, T::from_f64(beta), &mut a)
                .unwrap();
            e.axpby(T::from_f64(0.7), &x, T::from_f64(beta), &mut b)
                .unwrap();
            same(&format!("axpby beta={beta} n={n}"), &b, &a);
        }
        // mul with offsets
        let (mut a, mut b) = (y0.clone(), y0.clone());
        let len = n.saturating_sub(n / 4);
        Cpu.mul(&x, n - len, &mut a, 0, len).unwrap();
        e.mul(&x, n - len, &mut b, 0, len).unwrap();
        same(&format!("mul n={n}"), &b, &a);
        // adam, three steps so the moments matter
        let (mut pa, mut pb) = (y0.clone(), y0.clone());
        let (mut ma, mut mb) = (vec![T::ZERO; n], vec![T::ZERO; n]);
        let (mut va, mut vb) = (vec![T::ZERO; n], vec![T::ZERO; n]);
        for t in 1..=3 {
            let s = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                bc1: 1.0 - 0.9f64.powi(t),
                bc2: 1.0 - 0.999f64.powi(t),
            };
            Cpu.adam_update(&mut pa, &x, &mut ma, &mut va, s).unwrap();
            e.adam_update(&mut pb, &x, &mut mb, &mut vb, s).unwrap();
        }
        same(&format!("adam p n={n}"), &pb, &pa);
        same(&format!("adam m n={n}"), &mb, &ma);
        same(&format!("adam v n={n}"), &vb, &va);
    }
    // shape errors like the CPU's
    let mut y = vec![T::ZERO; 5];
    let x = vec![T::ZERO; 6];
    assert!(e.axpby(T::ONE, &x, T::ONE, &mut y).is_err());
    assert!(e.fill(&mut y, 3, 3, T::ONE).is_err());
    assert!(e.mul(&x, 2, &mut y, 0, 5).is_err());
    let (mut m, mut v) = (vec![T::ZERO; 5], vec![T::ZERO; 4]);
    let s = AdamStep {
        lr: 1.0,
        beta1: 0.9,
        beta2: 0.9,
        eps: 1e-8,
        bc1: 0.1,
        bc2: 0.1,
    };
    assert!(e.adam_update(&mut y, &x, &mut m, &mut v, s).is_err());
}

#[test]
fn vector_kernels_match_cpu() {
    both!(vector_ops);
}

// ---- reductions ---------------------------------------------------------------------------------

fn dot_op<T: Real>() {
    let e = emu();
    for (si, &n) in SIZES.iter().chain(&[70_001]).enumerate() {
        let x: Vec<T> = data(n, 30 + si as u64, -1.0, 1.0);
        let y: Vec<T> = data(n, 40 + si as u64, -1.0, 1.0);
        let want = Cpu.dot(&x, &y).unwrap();
        let got = e.dot(&x, &y).unwrap();
        // both accumulate f64 products of the same f64-converted factors; only the
        // summation order differs
        let mag: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a.to_f64() * b.to_f64()).abs())
            .sum();
        assert_close(
            &format!("dot n={n} ({})", T::DTYPE.name()),
            &[got],
            &[want],
            0.0,
            1e-15 * mag + 1e-300,
        );
    }
    assert!(e.dot(&vec![T::ZERO; 3], &vec![T::ZERO; 4]).is_err());
    // squared distances of ranges at offsets (the L2 error's reduction)
    for (si, &n) in SIZES.iter().chain(&[70_001]).enumerate() {
        let x: Vec<T> = data(n + 3, 50 + si as u64, -1.0, 1.0);
        let y: Vec<T> = data(n + 1, 60 + si as u64, -1.0, 1.0);
        let want = Cpu.sq_dist(&x, 3, &y, 1, n).unwrap();
        let got = e.sq_dist(&x, 3, &y, 1, n).unwrap();
        let direct: f64 = (0..n)
            .map(|i| (x[3 + i].to_f64() - y[1 + i].to_f64()).powi(2))
            .sum();
        assert_close(
            &format!("sq_dist n={n} ({})", T::DTYPE.name()),
            &[got, want],
            &[direct, direct],
            0.0,
            // the worst-case bound of summing n non-negative terms in another order
            n as f64 * f64::EPSILON * direct + 1e-300,
        );
    }
    assert!(e
        .sq_dist(&vec![T::ZERO; 3], 1, &vec![T::ZERO; 4], 0, 3)
        .is_err());
    assert!(Cpu
        .sq_dist(&vec![T::ZERO; 3], 0, &vec![T::ZERO; 4], 2, 3)
        .is_err());
}

#[test]
fn dot_kernel_matches_cpu() {
    both!(dot_op);
}

fn col_sum_op<T: Real>() {
    let e = emu();
    let (_, atol) = tol::<T>();
    for (rows, cols) in [
        (0, 5),
        (1, 1),
        (100, 1),
        (5000, 3),
        (7, 70),
        (513, 33),
        (3, 0),
    ] {
        // three leading elements that are not part of the block (read at x_off = 3)
        let x: Vec<T> = data(3 + rows * cols, (rows * 31 + cols) as u64, -1.0, 1.0);
        for (alpha, beta, x_off) in [(1.0, 0.0, 0), (0.5, 1.0, 3), (-2.0, 0.25, 1)] {
            let out0: Vec<T> = data(cols + 4, 99, -1.0, 1.0);
            let (mut a, mut b) = (out0.clone(), out0.clone());
            let (al, be) = (T::from_f64(alpha), T::from_f64(beta));
            Cpu.col_sum(al, &x, x_off, rows, cols, be, &mut a, 2)
                .unwrap();
            e.col_sum(al, &x, x_off, rows, cols, be, &mut b, 2).unwrap();
            // partitioned sums: the error grows with the number of rows summed
            let (rtol, _) = tol::<T>();
            assert_close(
                &format!(
                    "col_sum {rows}x{cols} α={alpha} β={beta} ({})",
                    T::DTYPE.name()
                ),
                &f64s(&b),
                &f64s(&a),
                rtol,
                atol * (1.0 + rows as f64 * alpha.abs()),
            );
        }
        // beta = 0 ignores NaN in the output, like the CPU
        let mut b = vec![T::from_f64(f64::NAN); cols];
        e.col_sum(T::ONE, &x, 0, rows, cols, T::ZERO, &mut b, 0)
            .unwrap();
        assert!(
            b.iter().all(|v| v.is_finite()),
            "col_sum beta=0 {rows}x{cols}"
        );
    }
    let mut out = vec![T::ZERO; 3];
    assert!(e
        .col_sum(T::ONE, &vec![T::ZERO; 5], 0, 2, 3, T::ZERO, &mut out, 0)
        .is_err());
    assert!(e
        .col_sum(T::ONE, &vec![T::ZERO; 6], 1, 2, 3, T::ZERO, &mut out, 0)
        .is_err());
    assert!(e
        .col_sum(T::ONE, &vec![T::ZERO; 6], 0, 2, 3, T::ZERO, &mut out, 1)
        .is_err());
}

#[test]
fn col_sum_kernels_match_cpu() {
    both!(col_sum_op);
}

fn row_dot_op<T: Real>() {
    let e = emu();
    for (rows, cols) in [(0, 4), (1, 1), (700, 9), (37, 100), (130, 33), (1000, 0)] {
        let ldx = cols + 3;
        let x: Vec<T> = data(rows * ldx + 5, rows as u64 + 1, -1.0, 1.0);
        let y: Vec<T> = data(rows * cols + 2, cols as u64 + 7, -1.0, 1.0);
        let lx = Lay {
            off: 5,
            rows,
            cols,
            ld: ldx,
        };
        let ly = Lay::at(2, rows, cols);
        for beta in [0.0, 1.0, -0.5] {
            let out0: Vec<T> = data(rows + 3, 5, -1.0, 1.0);
            let (mut a, mut b) = (out0.clone(), out0.clone());
            let be = T::from_f64(beta);
            Cpu.row_dot(&x, lx, &y, ly, be, &mut a, 3).unwrap();
            e.row_dot(&x, lx, &y, ly, be, &mut b, 3).unwrap();
            let (rtol, atol) = tol::<T>();
            assert_close(
                &format!("row_dot {rows}x{cols} β={beta} ({})", T::DTYPE.name()),
                &f64s(&b),
                &f64s(&a),
                rtol,
                atol * (1.0 + cols as f64),
            );
        }
    }
    let mut out = vec![T::ZERO; 10];
    let x = vec![T::ZERO; 40];
    assert!(e
        .row_dot(
            &x,
            Lay::dense(10, 4),
            &x,
            Lay::dense(10, 3),
            T::ZERO,
            &mut out,
            0
        )
        .is_err());
    assert!(e
        .row_dot(
            &x,
            Lay::dense(10, 4),
            &x,
            Lay::dense(10, 4),
            T::ZERO,
            &mut out,
            1
        )
        .is_err());
}

#[test]
fn row_dot_kernel_matches_cpu() {
    both!(row_dot_op);
}

// ---- jets --------------------------------------------------------------------------------------

/// Jet shapes: empty, tiny, ragged, no directions, no operator row, one, two and three
/// operator rows (the general path of the kernels), and n·h above one grid.
fn shapes() -> Vec<JetShape> {
    let s = |n, k, ops, h| JetShape { n, k, ops, h };
    vec![
        s(0, 2, 1, 5),
        s(1, 1, 1, 1),
        s(37, 3, 1, 5),
        s(5, 0, 0, 7),
        s(5, 0, 1, 7),
        s(300, 2, 1, 13),
        s(20, 4, 0, 300),
        s(9, 3, 1, 0),
        s(23, 3, 2, 6),
        s(40, 5, 3, 9),
        s(3, 2, 2, 1),
        s(0, 3, 2, 4),
    ]
}

fn jet_ops<T: Real>() {
    let e = emu();
    for (si, sh) in shapes().into_iter().enumerate() {
        let seed = 100 + 10 * si as u64;
        let len = sh.len();
        let nh = sh.n * sh.h;
        // J × K weights of both signs (mixed operators have negative ones)
        let coef: Vec<T> = data(sh.ops * sh.k, seed, -0.7, 1.5);
        let z: Vec<T> = data(len, seed + 1, -1.5, 1.5);
        let wv: Vec<T> = data(sh.k * sh.h, seed + 2, -1.0, 1.0);
        let tag = |op: &str| format!("{op} n={} k={} ops={} h={}", sh.n, sh.k, sh.ops, sh.h);

        // add_bias on the value rows
        let bias: Vec<T> = data(sh.h + 2, seed + 3, -1.0, 1.0);
        let (mut a, mut b) = (z.clone(), z.clone());
        Cpu.add_bias(&mut a, sh.n, sh.h, &bias, 2).unwrap();
        e.add_bias(&mut b, sh.n, sh.h, &bias, 2).unwrap();
        same(&tag("add_bias"), &b, &a);

        // jet_input from an offset into the points
        let x: Vec<T> = data(nh + 3, seed + 4, -1.0, 1.0);
        let (mut a, mut b) = (z.clone(), z.clone());
        Cpu.jet_input(&x, 3, &wv, &mut a, sh).unwrap();
        e.jet_input(&x, 3, &wv, &mut b, sh).unwrap();
        same(&tag("jet_input"), &b, &a);

        // jet_broadcast_dirs
        let (mut a, mut b) = (z.clone(), z.clone());
        Cpu.jet_broadcast_dirs(&mut a, &wv, sh).unwrap();
        e.jet_broadcast_dirs(&mut b, &wv, sh).unwrap();
        same(&tag("jet_broadcast_dirs"), &b, &a);

        // jet_input_tanh
        let (mut a, mut b) = (z.clone(), z.clone());
        Cpu.jet_input_tanh(&mut a, &wv, &coef, sh).unwrap();
        e.jet_input_tanh(&mut b, &wv, &coef, sh).unwrap();
        same(&tag("jet_input_tanh"), &b, &a);

        // jet_tanh out of place and in place
        let mut a = vec![T::ZERO; len];
        let mut b = vec![T::from_f64(9.0); len];
        Cpu.jet_tanh(&z, &mut a, &coef, sh).unwrap();
        e.jet_tanh(&z, &mut b, &coef, sh).unwrap();
        same(&tag("jet_tanh"), &b, &a);
        let act = a.clone();
        let mut c = z.clone();
        e.jet_tanh_inplace(&mut c, &coef, sh).unwrap();
        same(&tag("jet_tanh_inplace"), &c, &a);

        // jet_tanh_backward
        let g0: Vec<T> = data(len, seed + 5, -1.0, 1.0);
        let (mut a, mut b) = (g0.clone(), g0.clone());
        Cpu.jet_tanh_backward(&z, &act, &mut a, &coef, sh).unwrap();
        e.jet_tanh_backward(&z, &act, &mut b, &coef, sh).unwrap();
        same(&tag("jet_tanh_backward"), &b, &a);

        // jet_tanh_tangent
        let (mut a, mut b) = (g0.clone(), g0.clone());
        Cpu.jet_tanh_tangent(&z, &act, &mut a, &coef, sh).unwrap();
        e.jet_tanh_tangent(&z, &act, &mut b, &coef, sh).unwrap();
        same(&tag("jet_tanh_tangent"), &b, &a);

        // scale_jet_rows
        let w: Vec<T> = data(sh.n, seed + 6, -2.0, 2.0);
        let (mut a, mut b) = (g0.clone(), g0.clone());
        Cpu.scale_jet_rows(&mut a, &w, sh).unwrap();
        e.scale_jet_rows(&mut b, &w, sh).unwrap();
        same(&tag("scale_jet_rows"), &b, &a);
        // out of place: the in-place result, and the rows written out (sample i = r mod n)
        let mut want = vec![T::ZERO; len];
        for (r, (o, x)) in want
            .chunks_mut(sh.h.max(1))
            .zip(g0.chunks(sh.h.max(1)))
            .enumerate()
        {
            for (o, x) in o.iter_mut().zip(x) {
                *o = *x * w[r % sh.n.max(1)];
            }
        }
        let (mut c, mut d) = (vec![T::from_f64(7.0); len], vec![T::from_f64(7.0); len]);
        Cpu.scale_jet_rows_to(&g0, &w, sh, &mut c).unwrap();
        e.scale_jet_rows_to(&g0, &w, sh, &mut d).unwrap();
        same(&tag("scale_jet_rows_to (cpu)"), &c, &a);
        same(&tag("scale_jet_rows_to (emu)"), &d, &a);
        same(&tag("scale_jet_rows_to (formula)"), &c, &want);

        // One operator row against the general path: the same operator twice (J = 2, the
        // second row's cotangent zero) gives the one-row results, on both backends.
        if sh.ops == 1 {
            general_path_matches_one_row(sh, &z, &coef, &act, &g0, &tag("general path"));
        }
    }
    // J = 2 needs 2·K weights
    let sh2 = JetShape {
        n: 3,
        k: 2,
        ops: 2,
        h: 4,
    };
    let mut full2 = vec![T::ZERO; sh2.len()];
    assert!(e
        .jet_tanh_inplace(&mut full2, &vec![T::ONE; 2], sh2)
        .is_err());
    assert!(Cpu
        .jet_tanh_inplace(&mut full2, &vec![T::ONE; 2], sh2)
        .is_err());
    assert!(e
        .jet_tanh_inplace(&mut full2, &vec![T::ONE; 4], sh2)
        .is_ok());
    // short buffers are refused, like on the CPU
    let sh = JetShape {
        n: 3,
        k: 2,
        ops: 1,
        h: 4,
    };
    let short = vec![T::ZERO; sh.len() - 1];
    let mut full = vec![T::ZERO; sh.len()];
    let coef = vec![T::ONE; 2];
    assert!(e.jet_tanh(&short, &mut full, &coef, sh).is_err());
    assert!(e
        .jet_tanh_inplace(&mut full, &coef[..1].to_vec(), sh)
        .is_err());
    assert!(e
        .jet_tanh_backward(&full.clone(), &full.clone(), &mut short.clone(), &coef, sh)
        .is_err());
    assert!(e
        .jet_input_tanh(&mut full, &vec![T::ZERO; 7], &coef, sh)
        .is_err());
    assert!(e.scale_jet_rows(&mut full, &vec![T::ZERO; 2], sh).is_err());
    let w3 = vec![T::ONE; 3];
    for src_short in [true, false] {
        let (src, mut dst) = if src_short {
            (short.clone(), full.clone())
        } else {
            (full.clone(), short.clone())
        };
        assert!(e.scale_jet_rows_to(&src, &w3, sh, &mut dst).is_err());
        assert!(Cpu.scale_jet_rows_to(&src, &w3, sh, &mut dst).is_err());
    }
    assert!(e.add_bias(&mut full, 30, 2, &coef, 1).is_err());
}

/// [`jet_ops`]'s check of the general (any J) kernels against the one-row ones: `sh` has
/// one operator row; the jets get a copy of it as a second row (`block2`), the
/// coefficients a copy of their row, and cotangents a zero second row.
fn general_path_matches_one_row<T: Real>(
    sh: JetShape,
    z: &Vec<T>,
    coef: &Vec<T>,
    act: &Vec<T>,
    g0: &[T],
    what: &str,
) {
    let e = emu();
    let sh2 = JetShape { ops: 2, ..sh };
    let blk = sh.n * sh.h;
    let len = sh.len();
    let block2 = |x: &[T], fill: Option<T>| -> Vec<T> {
        let mut v = x[..len].to_vec();
        match fill {
            Some(f) => v.extend(std::iter::repeat_n(f, blk)),
            None => v.extend_from_slice(&x[len - blk..len]),
        }
        v
    };
    let coef2: Vec<T> = coef.iter().chain(coef).copied().collect();
    let z2 = block2(z, None);
    let act2 = block2(act, None);
    // forward: both rows equal the one-row result's operator row
    let mut a2 = vec![T::ZERO; sh2.len()];
    Cpu.jet_tanh(&z2, &mut a2, &coef2, sh2).unwrap();
    same(&format!("{what} jet_tanh"), &a2, &block2(act, None));
    let mut b2 = z2.clone();
    e.jet_tanh_inplace(&mut b2, &coef2, sh2).unwrap();
    same(&format!("{what} jet_tanh (emu)"), &b2, &a2);
    // reverse: a zero cotangent on the second row
    let mut g1 = g0.to_vec();
    Cpu.jet_tanh_backward(z, act, &mut g1, coef, sh).unwrap();
    let g2_in = block2(g0, Some(T::ZERO));
    for (name, g2) in [("cpu", true), ("emu", false)] {
        let mut g2v = g2_in.clone();
        if g2 {
            Cpu.jet_tanh_backward(&z2, &act2, &mut g2v, &coef2, sh2)
                .unwrap();
        } else {
            e.jet_tanh_backward(&z2, &act2, &mut g2v, &coef2, sh2)
                .unwrap();
        }
        same(
            &format!("{what} jet_tanh_backward ({name})"),
            &g2v,
            &block2(&g1, Some(T::ZERO)),
        );
    }
    // tangent: a copy of the operator row's tangent on the second row
    let mut t1 = g0.to_vec();
    Cpu.jet_tanh_tangent(z, act, &mut t1, coef, sh).unwrap();
    for (name, cpu) in [("cpu", true), ("emu", false)] {
        let mut t2 = block2(g0, None);
        if cpu {
            Cpu.jet_tanh_tangent(&z2, &act2, &mut t2, &coef2, sh2)
                .unwrap();
        } else {
            e.jet_tanh_tangent(&z2, &act2, &mut t2, &coef2, sh2)
                .unwrap();
        }
        same(
            &format!("{what} jet_tanh_tangent ({name})"),
            &t2,
            &block2(&t1, None),
        );
    }
    // the fused first layer
    let wv: Vec<T> = (0..sh.k * sh.h)
        .map(|i| T::from_f64((i as f64 * 0.37).sin()))
        .collect();
    let (mut i1, mut i2) = (z.to_vec(), z2.clone());
    Cpu.jet_input_tanh(&mut i1, &wv, coef, sh).unwrap();
    e.jet_input_tanh(&mut i2, &wv, &coef2, sh2).unwrap();
    same(&format!("{what} jet_input_tanh"), &i2, &block2(&i1, None));
}

#[test]
fn jet_kernels_match_cpu() {
    both!(jet_ops);
}

fn quad_ops<T: Real>() {
    use kfac_pinn::backend::QuadForm;
    let e = emu();
    let first = 3;
    let mut shapes = shapes();
    shapes.push(JetShape {
        n: 0,
        k: 2,
        ops: 1,
        h: 1,
    });
    for (si, sh) in shapes.into_iter().enumerate() {
        let seed = 500 + 10 * si as u64;
        let (n, m, c) = (sh.n, sh.h, sh.s() * sh.h);
        let tag = |op: &str| format!("{op} n={n} k={} ops={} m={m}", sh.k, sh.ops);
        let y: Vec<T> = data(sh.len(), seed, -1.5, 1.5);
        let a: Vec<T> = data((first + n) * c, seed + 1, -1.0, 1.0);
        let b: Vec<T> = data(c, seed + 2, -1.0, 1.0);
        let d: Vec<T> = data(first + n, seed + 3, -1.0, 1.0);
        let form = QuadForm::<Cpu, T> {
            a: &a,
            b: &b,
            d: &d,
        };
        let eform = QuadForm::<Emu, T> {
            a: &a,
            b: &b,
            d: &d,
        };
        // residuals: CPU, emulated kernel, and the formula written out
        let (mut rc, mut re) = (vec![T::ZERO; n + 1], vec![T::ZERO; n + 1]);
        Cpu.quad_residual(&y, &form, first, sh, &mut rc).unwrap();
        e.quad_residual(&y, &eform, first, sh, &mut re).unwrap();
        same(&tag("quad_residual"), &re, &rc);
        for i in 0..n {
            let mut want = d[first + i].to_f64();
            for s in 0..sh.s() {
                for j in 0..m {
                    let v = y[(s * n + i) * m + j].to_f64();
                    let cc = s * m + j;
                    want += (a[(first + i) * c + cc].to_f64() + b[cc].to_f64() * v) * v;
                }
            }
            let got = rc[i].to_f64();
            assert!(
                (got - want).abs() <= 64.0 * T::EPS.to_f64() * (1.0 + want.abs()) * c as f64,
                "{}: sample {i}: {got} vs {want}",
                tag("quad_residual formula")
            );
        }
        // seeds with the gradient's and the Jacobian's scalings
        for (alpha, beta) in [(0.37, 0.0), (0.0, 1.0)] {
            let (al, be_) = (T::from_f64(alpha), T::from_f64(beta));
            let (mut gc, mut ge) = (vec![T::ZERO; sh.len() + 2], vec![T::ZERO; sh.len() + 2]);
            Cpu.quad_seeds(&y, &form, &rc, al, be_, first, sh, &mut gc)
                .unwrap();
            e.quad_seeds(&y, &eform, &rc, al, be_, first, sh, &mut ge)
                .unwrap();
            same(&tag("quad_seeds"), &ge, &gc);
        }
        // the tangent: CPU, emulated kernel, and the derivative of the residual (exact for
        // a quadratic: r(y + ẏ) − r(y − ẏ) = 2·(∂r/∂y)·ẏ)
        let yd: Vec<T> = data(sh.len(), seed + 4, -1.0, 1.0);
        let (mut tc, mut te) = (vec![T::ZERO; n + 1], vec![T::ZERO; n + 1]);
        Cpu.quad_tangent(&y, &form, &yd, first, sh, &mut tc)
            .unwrap();
        e.quad_tangent(&y, &eform, &yd, first, sh, &mut te).unwrap();
        same(&tag("quad_tangent"), &te, &tc);
        let shifted = |sign: f64| -> Vec<f64> {
            let ys: Vec<T> = y
                .iter()
                .zip(&yd)
                .map(|(&a, &b)| T::from_f64(a.to_f64() + sign * b.to_f64()))
                .collect();
            let mut r = vec![T::ZERO; n];
            Cpu.quad_residual(&ys, &form, first, sh, &mut r).unwrap();
            f64s(&r)
        };
        let (rp, rm) = (shifted(1.0), shifted(-1.0));
        for i in 0..n {
            let want = 0.5 * (rp[i] - rm[i]);
            let got = tc[i].to_f64();
            assert!(
                (got - want).abs() <= 256.0 * T::EPS.to_f64() * (1.0 + want.abs()) * c as f64,
                "{}: sample {i}: {got} vs {want}",
                tag("quad_tangent vs central difference")
            );
        }
        // short buffers are refused
        if n > 0 && m > 0 {
            assert!(e
                .quad_tangent(&y, &eform, &yd[..sh.len() - 1].to_vec(), first, sh, &mut te)
                .is_err());
            let short = vec![T::ZERO; (first + n) * c - 1];
            let bad = QuadForm::<Emu, T> {
                a: &short,
                b: &b,
                d: &d,
            };
            assert!(e.quad_residual(&y, &bad, first, sh, &mut re).is_err());
            assert!(e.quad_residual(&y, &eform, first + 1, sh, &mut re).is_err());
            let mut g = vec![T::ZERO; sh.len() - 1];
            let z = T::ZERO;
            assert!(e
                .quad_seeds(&y, &eform, &rc, z, z, first, sh, &mut g)
                .is_err());
        }
    }
}

#[test]
fn residual_kernels_match_cpu() {
    both!(quad_ops);
}

// ---- autodiff baseline and Jacobian rows -------------------------------------------------------

fn autodiff_ops<T: Real>() {
    let e = emu();
    for (si, sh) in shapes().into_iter().enumerate() {
        let sh = JetShape { ops: 0, ..sh };
        let seed = 300 + 10 * si as u64;
        let act: Vec<T> = data(sh.len(), seed, -0.9, 0.9);
        let g0: Vec<T> = data(sh.len(), seed + 1, -1.0, 1.0);
        let (mut a, mut b) = (g0.clone(), g0.clone());
        Cpu.ad_tanh_rev(&act, &mut a, sh).unwrap();
        e.ad_tanh_rev(&act, &mut b, sh).unwrap();
        same(&format!("ad_tanh_rev {sh:?}"), &b, &a);
    }
    let lap = JetShape {
        n: 2,
        k: 1,
        ops: 1,
        h: 2,
    };
    assert!(e
        .ad_tanh_rev(&vec![T::ZERO; 12], &mut vec![T::ZERO; 12], lap)
        .is_err());

    // Jacobian rows: strided rows with an offset, weights and bias inside wider rows
    for (si, (sh, fo)) in [
        (
            JetShape {
                n: 0,
                k: 2,
                ops: 1,
                h: 3,
            },
            2,
        ),
        (
            JetShape {
                n: 1,
                k: 0,
                ops: 0,
                h: 1,
            },
            1,
        ),
        (
            JetShape {
                n: 13,
                k: 2,
                ops: 1,
                h: 5,
            },
            4,
        ),
        (
            JetShape {
                n: 40,
                k: 3,
                ops: 1,
                h: 9,
            },
            7,
        ),
        (
            JetShape {
                n: 7,
                k: 1,
                ops: 0,
                h: 40,
            },
            30,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 400 + 10 * si as u64;
        let s = sh.s();
        let a: Vec<T> = data(sh.n * s * sh.h, seed, -1.0, 1.0);
        let mut g: Vec<T> = data(sh.n * s * fo, seed + 1, -1.0, 1.0);
        // zero cotangents are skipped on both sides
        for v in g.iter_mut().step_by(5) {
            *v = T::ZERO;
        }
        let scale: Vec<T> = data(sh.n, seed + 2, 0.5, 2.0);
        let w_off = 3;
        let b_off = w_off + fo * sh.h + 2;
        let at = JacRows {
            row0: 1,
            row_stride: 2,
            ld: b_off + fo + 1,
            w_off,
            b_off,
        };
        let rows = 1 + 2 * sh.n + 1;
        let out0: Vec<T> = data(rows * at.ld, seed + 3, 5.0, 6.0);
        let (mut x, mut y) = (out0.clone(), out0.clone());
        Cpu.jac_rows(&a, &g, sh, fo, &scale, &mut x, at).unwrap();
        e.jac_rows(&a, &g, sh, fo, &scale, &mut y, at).unwrap();
        let (rtol, atol) = tol::<T>();
        assert_close(
            &format!("jac_rows {sh:?} fan_out {fo} ({})", T::DTYPE.name()),
            &f64s(&y),
            &f64s(&x),
            rtol,
            atol * s as f64,
        );
    }
    let sh = JetShape {
        n: 2,
        k: 0,
        ops: 0,
        h: 2,
    };
    let bad = JacRows {
        row0: 0,
        row_stride: 0,
        ld: 10,
        w_off: 0,
        b_off: 4,
    };
    let v = vec![T::ZERO; 8];
    assert!(e
        .jac_rows(&v, &v, sh, 2, &v, &mut vec![T::ZERO; 40], bad)
        .is_err());
}

#[test]
fn autodiff_kernels_match_cpu() {
    both!(autodiff_ops);
}

// ---- the helpers of the cuBLAS / cuSOLVER paths ----------------------------------------------

fn linalg_ops<T: Real>() {
    let e = emu();
    for (n, ld, off) in [(0, 0, 0), (1, 1, 0), (5, 7, 3), (70, 70, 0), (33, 40, 1)] {
        let c0: Vec<T> = data(off + n * ld + 2, n as u64, -1.0, 1.0);
        let lc = Lay {
            off,
            rows: n,
            cols: n,
            ld,
        };
        for from_lower in [true, false] {
            let mut c = c0.clone();
            e.symmetrize(&mut c, lc, from_lower).unwrap();
            let mut want = c0.clone();
            for r in 0..n {
                for col in r + 1..n {
                    let (up, lo) = (off + r * ld + col, off + col * ld + r);
                    if from_lower {
                        want[up] = want[lo];
                    } else {
                        want[lo] = want[up];
                    }
                }
            }
            assert_eq!(
                f64s(&c),
                f64s(&want),
                "symmetrize n={n} ld={ld} lower={from_lower}"
            );
        }
    }
    for (rows, cols, ld, off) in [(0, 3, 3, 0), (1, 1, 1, 0), (9, 4, 6, 2), (40, 130, 131, 5)] {
        let src: Vec<T> = data(off + rows * ld + 1, (rows + cols) as u64, -3.0, 3.0);
        let la = Lay {
            off,
            rows,
            cols,
            ld,
        };
        for transpose in [false, true] {
            let mut dst = vec![f64::NAN; rows * cols];
            let bad = e.pack_f64(&src, la, transpose, &mut dst).unwrap();
            assert_eq!(bad, None);
            for r in 0..rows {
                for c in 0..cols {
                    let want = src[off + r * ld + c].to_f64();
                    let at = if transpose {
                        c * rows + r
                    } else {
                        r * cols + c
                    };
                    assert_eq!(dst[at], want, "pack_f64 ({r},{c}) transpose={transpose}");
                }
            }
        }
        if rows * cols > 2 {
            // the FIRST non-finite entry (row-major) is reported
            let mut s2 = src.clone();
            let (r1, c1) = (rows - 1, cols - 1);
            s2[off + r1 * ld + c1] = T::from_f64(f64::NAN);
            s2[off + (rows / 2) * ld + cols / 2] = T::from_f64(f64::INFINITY);
            let mut dst = vec![0.0; rows * cols];
            let bad = e.pack_f64(&s2, la, true, &mut dst).unwrap();
            assert_eq!(bad, Some((rows / 2, cols / 2, f64::INFINITY)));
        }
    }
}

#[test]
fn linalg_helper_kernels_match_naive_loops() {
    both!(linalg_ops);
}

// ---- the KFAC inverse's small kernels ------------------------------------------------------------

fn kfac_inverse_ops<T: Real>() {
    use kfac_pinn::backend::cpu::{bias_border_ref, kron_recip_ref};
    let e = emu();
    for (si, n) in [0usize, 1, 2, 17, 65, 300].into_iter().enumerate() {
        let x0: Vec<T> = data(n * n + 3, 600 + si as u64, -1.0, 1.0);
        // damping: only the diagonal moves, by exactly v
        let v = T::from_f64(0.37);
        let (mut a, mut b) = (x0.clone(), x0.clone());
        Cpu.add_diag(&mut a, n, v).unwrap();
        e.add_diag(&mut b, n, v).unwrap();
        same(&format!("add_diag n={n}"), &b, &a);
        let mut want = x0.clone();
        for i in 0..n {
            want[i * n + i] += v;
        }
        assert_eq!(f64s(&a), f64s(&want), "add_diag n={n} vs the loop");
        // the bias border: last column from the last row, then the corner
        let (mut a, mut b) = (x0.clone(), x0.clone());
        let corner = T::from_f64(0.125);
        Cpu.bias_border(&mut a, n, corner).unwrap();
        e.bias_border(&mut b, n, corner).unwrap();
        same(&format!("bias_border n={n}"), &b, &a);
        let mut want = x0.clone();
        bias_border_ref(&mut want[..n * n], n, corner);
        assert_eq!(f64s(&a), f64s(&want));
        if n > 1 {
            assert_eq!(a[n - 1], a[(n - 1) * n]);
            assert_eq!(a[n * n - 1], corner);
        }
        // the Kronecker-sum scaling, rectangular
        let (na, nb) = (n, (n + 3) / 2);
        let sa = uniform(&mut rng(700 + si as u64), na, 0.0, 5.0);
        let sb = uniform(&mut rng(800 + si as u64), nb, 0.0, 5.0);
        let (mut a, mut b) = (vec![T::ZERO; na * nb], vec![T::ZERO; na * nb]);
        Cpu.kron_recip(&sa, na, &sb, nb, &mut a).unwrap();
        e.kron_recip(&sa, na, &sb, nb, &mut b).unwrap();
        same(&format!("kron_recip {na}x{nb}"), &b, &a);
        let mut want = vec![T::ZERO; na * nb];
        kron_recip_ref(&sa, &sb, &mut want);
        if na * nb > 0 {
            let (o, i) = (nb - 1, na / 2);
            let direct = 1.0 / (1.0 + sb[o] * sa[i]);
            assert!((a[o * na + i].to_f64() - direct).abs() <= 1e-6 * direct);
        }
        assert!(e.kron_recip(&sa, na + 1, &sb, nb, &mut b).is_err() || na * nb == 0);
    }
    // casts, in every direction, and short buffers refused
    for &n in &SIZES {
        let x: Vec<T> = data(n, 900 + n as u64, -3.0, 3.0);
        let mut a = vec![0.0f64; n];
        let mut b = vec![0.0f64; n];
        Cpu.cast(&x, 0, &mut a, 0, n).unwrap();
        e.cast(&x, 0, &mut b, 0, n).unwrap();
        assert_eq!(a, b, "cast to f64 n={n}");
        assert_eq!(a, f64s(&x));
        let mut c = vec![T::ZERO; n];
        let mut d = vec![T::ZERO; n];
        Cpu.cast(&a, 0, &mut c, 0, n).unwrap();
        e.cast(&a, 0, &mut d, 0, n).unwrap();
        assert_eq!(f64s(&c), f64s(&d), "cast from f64 n={n}");
        assert_eq!(f64s(&c), f64s(&x));
        let mut f = vec![0.0f32; n];
        e.cast(&x, 0, &mut f, 0, n).unwrap();
        let want: Vec<f32> = x.iter().map(|v| v.to_f64() as f32).collect();
        assert_eq!(f, want);
        assert!(e.cast(&x, 0, &mut f, 0, n + 1).is_err());
        // a range inside larger buffers
        if n > 4 {
            let mut g = vec![-1.0f64; n + 2];
            e.cast(&x, 3, &mut g, 1, n - 4).unwrap();
            let mut h = vec![-1.0f64; n + 2];
            Cpu.cast(&x, 3, &mut h, 1, n - 4).unwrap();
            assert_eq!(g, h);
            assert_eq!(g[0], -1.0);
            assert_eq!(g[1], x[3].to_f64());
            assert_eq!(g[n - 3], -1.0);
            assert!(e.cast(&x, 5, &mut g, 0, n - 4).is_err());
        }
    }
}

#[test]
fn kfac_inverse_kernels_match_cpu() {
    both!(kfac_inverse_ops);
}

#[test]
fn spectral_scaling_matches_cpu() {
    use kfac_pinn::backend::cpu::spectral_scale_ref;
    let e = emu();
    for (si, k) in [1usize, 3, 40, 300, 1000].into_iter().enumerate() {
        // non-increasing singular values spanning many decades, some exactly zero
        let mut s: Vec<f64> = (0..k)
            .map(|i| 10f64.powf(2.0 - 14.0 * i as f64 / k as f64))
            .collect();
        if k > 3 {
            s[k - 1] = 0.0;
        }
        let c0 = uniform(&mut rng(980 + si as u64), k, -1.0, 1.0);
        for (kappa, tau) in [(0.5, 1e-10), (1.0, 1e-6), (0.5, 0.0)] {
            let (mut a, mut b) = (c0.clone(), c0.clone());
            let ra = Cpu.spectral_scale(&s, &mut a, k, kappa, tau).unwrap();
            let rb = e.spectral_scale(&s, &mut b, k, kappa, tau).unwrap();
            assert_eq!(ra, rb, "k={k} κ={kappa} τ={tau}");
            assert_eq!(a, b, "k={k} κ={kappa} τ={tau}");
            // the definition, written out
            let mut want = c0.clone();
            assert_eq!(spectral_scale_ref(&s, &mut want, kappa, tau), ra);
            let kept = s.iter().filter(|&&v| v > tau * s[0] && v > 0.0).count();
            assert_eq!(ra, (kept, s[0]));
            for i in 0..k {
                let w = if i < kept {
                    -c0[i] * s[i].powf(-kappa)
                } else {
                    0.0
                };
                assert_eq!(a[i], w, "entry {i}");
            }
        }
    }
    assert!(e
        .spectral_scale(&vec![1.0; 2], &mut vec![0.0; 3], 3, 0.5, 0.0)
        .is_err());
}

#[test]
fn eigenvalue_fixes_match_cpu() {
    use kfac_pinn::backend::cpu::eig_fix_ref;
    use kfac_pinn::backend::EigFix;
    let e = emu();
    // more values than the block's threads (reduction across warps and strides), and
    // values straddling the floor / the noise level
    for (si, n) in [1usize, 2, 31, 257, 1000].into_iter().enumerate() {
        let mut v = uniform(&mut rng(950 + si as u64), n, -1.0, 10.0);
        v[n / 2] = 1e-300;
        if n > 2 {
            v[1] = -1e-14;
        }
        for mode in [
            EigFix::InvSqrtFloor,
            EigFix::NonNegative,
            EigFix::PseudoInverse,
        ] {
            let (mut a, mut b) = (v.clone(), v.clone());
            let fa = Cpu.eig_fix(&mut a, n, mode).unwrap();
            let fb = e.eig_fix(&mut b, n, mode).unwrap();
            assert_eq!(fa, fb, "eig_fix {mode:?} n={n}");
            assert_close(&format!("eig_fix {mode:?} n={n}"), &b, &a, 1e-15, 0.0);
            // against the definition, written out
            let mut want = v.clone();
            let fw = eig_fix_ref(&mut want, mode);
            assert_eq!(fw, fa);
            let m = match mode {
                EigFix::InvSqrtFloor => v.iter().cloned().fold(f64::MIN, f64::max),
                _ => v.iter().map(|x| x.abs()).fold(0.0, f64::max),
            };
            assert_eq!(fa.max, m);
            for (i, (&x, &y)) in v.iter().zip(&a).enumerate() {
                match mode {
                    EigFix::InvSqrtFloor => {
                        let floor = (n as f64 * f64::EPSILON * m).max(f64::MIN_POSITIVE);
                        assert_eq!(y, 1.0 / x.max(floor).sqrt(), "entry {i}");
                    }
                    EigFix::NonNegative => assert_eq!(y, x.max(0.0), "entry {i}"),
                    EigFix::PseudoInverse => {
                        let cut = n as f64 * f64::EPSILON * m;
                        let want = if x.abs() > cut { 1.0 / x } else { 0.0 };
                        assert_eq!(y, want, "entry {i}");
                    }
                }
            }
            let want_count = match mode {
                EigFix::InvSqrtFloor => {
                    let floor = (n as f64 * f64::EPSILON * m).max(f64::MIN_POSITIVE);
                    v.iter().filter(|&&x| x < floor).count()
                }
                EigFix::NonNegative => v
                    .iter()
                    .filter(|&&x| x < -(n as f64) * 1e3 * f64::EPSILON * m)
                    .count(),
                EigFix::PseudoInverse => v
                    .iter()
                    .filter(|&&x| x.abs() <= n as f64 * f64::EPSILON * m)
                    .count(),
            };
            assert_eq!(fa.clamped, want_count, "eig_fix {mode:?} n={n} count");
        }
    }
    // nothing positive: values untouched, the maximum reported for the caller's error
    let mut v = vec![-1.0, -2.0, 0.0];
    let f = e.eig_fix(&mut v, 3, EigFix::InvSqrtFloor).unwrap();
    assert_eq!(f.max, 0.0);
    assert_eq!(v, vec![-1.0, -2.0, 0.0]);
    assert!(e.eig_fix(&mut v, 4, EigFix::NonNegative).is_err());
    // a NaN reaches the reported maximum in every mode (so the caller can refuse it)
    for mode in [
        EigFix::InvSqrtFloor,
        EigFix::NonNegative,
        EigFix::PseudoInverse,
    ] {
        let mut v = vec![1.0; 300];
        v[299] = f64::NAN;
        let mut w = v.clone();
        assert!(
            e.eig_fix(&mut v, 300, mode).unwrap().max.is_nan(),
            "{mode:?}"
        );
        assert!(Cpu.eig_fix(&mut w, 300, mode).unwrap().max.is_nan());
    }
}

// ---- the emulator itself -------------------------------------------------------------------------

/// Launch an emulator self-test kernel (kernels/emu/selftest.cu) on one block.
fn selftest(kernel: &str, threads: u32, out: &mut [i64]) -> kfac_pinn::Result<()> {
    let e = emu();
    assert!(out.len() >= threads as usize);
    let g = Geometry {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
    };
    // SAFETY: the self-test kernels write out[threadIdx.x] only, and out has a slot per thread.
    unsafe { e.launch(kernel, g, &[KArg::Ptr(out.as_mut_ptr() as u64)]) }
}

#[test]
fn emulated_warp_shuffles_follow_cuda_semantics() {
    // value of lane l is 100 + l (per warp: 1000·warp + 100 + l)
    let threads = 96;
    let val = |t: usize| (1000 * (t / 32) + 100 + t % 32) as i64;
    let mut out = vec![0i64; threads];
    selftest("emu_shfl_down", threads as u32, &mut out).unwrap();
    for t in 0..threads {
        let src = if t % 32 + 3 < 32 { t + 3 } else { t };
        assert_eq!(out[t], val(src), "shfl_down lane {t}");
    }
    selftest("emu_shfl_xor", threads as u32, &mut out).unwrap();
    for t in 0..threads {
        assert_eq!(
            out[t],
            val(t / 32 * 32 + ((t % 32) ^ 5)),
            "shfl_xor lane {t}"
        );
    }
    selftest("emu_shfl_up_width8", threads as u32, &mut out).unwrap();
    for t in 0..threads {
        let l = t % 32;
        let src = if l % 8 >= 2 { t - 2 } else { t };
        assert_eq!(out[t], val(src), "shfl_up width 8 lane {t}");
    }
    selftest("emu_shfl_idx", threads as u32, &mut out).unwrap();
    for t in 0..threads {
        assert_eq!(out[t], val(t / 32 * 32 + 7), "shfl_idx lane {t}");
    }
    // warp sums via xor butterflies: every lane gets its warp's total
    selftest("emu_warp_sum", threads as u32, &mut out).unwrap();
    for t in 0..threads {
        let w = t / 32;
        let total: i64 = (0..32).map(|l| val(w * 32 + l)).sum();
        assert_eq!(out[t], total, "warp sum lane {t}");
    }
}

#[test]
fn emulated_shared_memory_and_barriers_order_the_block() {
    for threads in [32u32, 64, 256, 1024] {
        let mut out = vec![0i64; threads as usize];
        // thread t writes shared[t] = t², syncs, reads shared[(t + 1) mod threads]
        selftest("emu_shared_rotate", threads, &mut out).unwrap();
        for t in 0..threads as usize {
            let s = (t + 1) % threads as usize;
            assert_eq!(out[t], (s * s) as i64, "threads {threads}, t {t}");
        }
        // block_sum of common.cuh over the thread indices, for every block size
        selftest("emu_block_sum", threads, &mut out).unwrap();
        let n = threads as i64;
        assert_eq!(out[0], n * (n - 1) / 2, "block_sum over {threads} threads");
    }
}

#[test]
fn emulator_reports_what_would_hang_a_gpu() {
    let mut out = vec![0i64; 64];
    let e = selftest("emu_divergent_barrier", 64, &mut out).unwrap_err();
    assert!(e.to_string().contains("deadlock"), "{e}");
    let e = selftest("emu_shfl_with_exited_lane", 64, &mut out).unwrap_err();
    assert!(e.to_string().contains("deadlock"), "{e}");
}

// ---- the whole engine on emulated kernels ---------------------------------------------------------

/// The library's self-check groups (`kfac_pinn::selfcheck`, also `kfac-pinn selfcheck
/// --device emu`) on the emulated backend: every case must pass, and at least `min_pass`
/// must have run. The emulated backend differs from the CPU only in the elementwise
/// kernels (products and SVDs are the CPU's), so its tolerances are tight
/// (`Tolerances::EMU`).
fn emulated_selfcheck(groups: &[&str], min_pass: usize) {
    use kfac_pinn::selfcheck::{self, Reference, Tolerances};
    let r = selfcheck::run(
        &emu(),
        Tolerances::EMU,
        Reference::Ambient,
        groups,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        r.all_passed(),
        "{groups:?} on the emulation:\n{}",
        r.failures()
    );
    assert!(
        r.summary.passed >= min_pass,
        "{groups:?}: only {} cases passed, expected at least {min_pass}",
        r.summary.passed
    );
}

#[test]
fn forward_laplacian_on_emulated_kernels_matches_cpu() {
    // 4 nets (one with a set of two operators, J = 2, with a mixed term) × 2 dtypes, and
    // the autodiff baseline
    emulated_selfcheck(&["forward", "autodiff"], 9);
}

#[test]
fn gradient_on_emulated_kernels_matches_cpu() {
    // loss and gradient of three problems, one with a three-operator jet
    emulated_selfcheck(&["gradient"], 6);
}

#[test]
fn optimizer_steps_on_emulated_kernels_match_cpu() {
    // parameters and state of 10 optimizers in f64 and f32
    emulated_selfcheck(&["steps"], 40);
}

// ---- the sources through NVRTC, and the embedded PTX ------------------------------------------------

/// Every embedded module compiles with NVRTC for compute_75 and to an sm_80 cubin (the
/// run-time fallback of the CUDA backend, run by the backend's own compile function).
/// Needs libnvrtc, not a GPU; CI runs it once per loader layout: the CUDA 12.9 wheel on
/// LD_LIBRARY_PATH and the CUDA 13.0 wheel through KFAC_PINN_CUDA_LIB_DIR (versioned
/// names only, as the wheel ships). `KFAC_PINN_EXPECT_NVRTC=13.0` makes it also check
/// which NVRTC was loaded.
#[test]
#[ignore = "needs libnvrtc (KFAC_PINN_CUDA_LIB_DIR or LD_LIBRARY_PATH); CI runs it with --ignored"]
fn kernel_sources_compile_with_nvrtc() {
    use kfac_pinn::backend::cuda::nvrtc;
    let version = nvrtc::version().unwrap_or_else(|e| panic!("NVRTC is not usable: {e}"));
    if let Ok(want) = std::env::var("KFAC_PINN_EXPECT_NVRTC") {
        assert_eq!(
            format!("{}.{}", version.0, version.1),
            want,
            "NVRTC version"
        );
    }
    for m in MODULES {
        let img = nvrtc::compile(m.source, m.name, nvrtc::Target::Ptx("compute_75"))
            .unwrap_or_else(|e| panic!("NVRTC {version:?} on {}: {e}", m.name));
        let ptx = String::from_utf8_lossy(&img);
        assert!(
            ptx.contains(".target sm_75"),
            "{}: not compute_75 PTX",
            m.name
        );
        for entry in m.entries {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{}: entry {entry} missing from the PTX",
                m.name
            );
        }
        // a real architecture yields a cubin (what the backend loads in the fallback)
        let cubin = nvrtc::compile(m.source, m.name, nvrtc::Target::Cubin("sm_80"))
            .unwrap_or_else(|e| panic!("NVRTC cubin on {}: {e}", m.name));
        assert_eq!(&cubin[..4], b"\x7fELF", "{}: not an ELF cubin", m.name);
    }
}

/// A build with nvcc (build.rs's nvcc branch) embeds PTX for compute_75 in every module,
/// with all its entry points, and ptxas assembles it for sm_75, sm_80 and sm_90. CI builds
/// this test once with the CUDA 13.0 nvcc wheel (NVCC=…) and runs it with that release's
/// ptxas (PTXAS=…, else ptxas on PATH).
#[test]
#[ignore = "needs a build with nvcc (NVCC=/path/to/nvcc cargo test) and ptxas; CI runs it with --ignored"]
fn embedded_ptx_has_every_entry_point() {
    use kfac_pinn::backend::cuda::kernels::{NVCC_VERSION, PTX_ARCH};
    let v = NVCC_VERSION.expect("this test binary was built without nvcc (set NVCC)");
    let ptxas = std::env::var("PTXAS").unwrap_or_else(|_| "ptxas".into());
    let dir = std::env::temp_dir().join(format!("kfac-embedded-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for m in MODULES {
        let ptx = m
            .ptx
            .unwrap_or_else(|| panic!("{v}: module {} has no PTX", m.name));
        assert!(
            ptx.contains(&format!(".target sm_{}", &PTX_ARCH[8..])),
            "{}",
            m.name
        );
        for e in m.entries {
            assert!(ptx.contains(&format!(".entry {e}(")), "{}: {e}", m.name);
        }
        let file = dir.join(format!("{}.ptx", m.name));
        std::fs::write(&file, ptx).unwrap();
        for sm in ["sm_75", "sm_80", "sm_90"] {
            let out = std::process::Command::new(&ptxas)
                .arg(format!("-arch={sm}"))
                .arg("-o")
                .arg(dir.join(format!("{}.{sm}.cubin", m.name)))
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("running {ptxas} (set PTXAS): {e}"));
            assert!(
                out.status.success(),
                "ptxas {sm} on {} ({v}):\n{}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

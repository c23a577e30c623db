//! Quasi-random points (`kfac_pinn::geometry::qmc`): the first unscrambled Sobol points
//! against published values (SciPy's `Sobol(d=3, scramble=False)`, Joe–Kuo directions);
//! the direction table's polynomials primitive over GF(2) and its `m_i` odd and below
//! 2^i; every Sobol dimension stratified among the first 2^m points, before and after
//! scrambling; the first two dimensions a (0, m, 2)-net; Halton's radical inverses;
//! Latin-hypercube strata; uniform marginals for every kind; the dimension limit.

mod common;

use common::rng;
use kfac_pinn::geometry::qmc::{
    primes, radical_inverse, sobol_bits, sobol_table, unit_points, PointKind, SOBOL_MAX_DIM,
};
use kfac_pinn::pde::problem;

#[test]
fn first_sobol_points_match_published_values() {
    let want = [
        [0.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.75, 0.25, 0.25],
        [0.25, 0.75, 0.75],
        [0.375, 0.375, 0.625],
        [0.875, 0.875, 0.125],
        [0.625, 0.125, 0.875],
        [0.125, 0.625, 0.375],
    ];
    let b = sobol_bits(8, 3).unwrap();
    for (i, w) in want.iter().enumerate() {
        for j in 0..3 {
            assert_eq!(
                b[i * 3 + j] as f64 / 2f64.powi(32),
                w[j],
                "point {i}, dim {j}"
            );
        }
    }
}

/// `x^k mod p` over GF(2) (polynomials as bit masks, bit i = coefficient of x^i).
fn xpow_mod(k: u64, p: u64, deg: u32) -> u64 {
    let (mut result, mut base, mut e) = (1u64, 2u64, k);
    let mulmod = |a: u64, b: u64| {
        let mut r = 0u64;
        let mut a = a;
        let mut b = b;
        while b > 0 {
            if b & 1 == 1 {
                r ^= a;
            }
            b >>= 1;
            a <<= 1;
            if a >> deg & 1 == 1 {
                a ^= p;
            }
        }
        r
    };
    while e > 0 {
        if e & 1 == 1 {
            result = mulmod(result, base);
        }
        base = mulmod(base, base);
        e >>= 1;
    }
    result
}

#[test]
fn direction_table_is_valid() {
    let mut seen = vec![];
    for j in 1..SOBOL_MAX_DIM {
        let (s, a, m) = sobol_table(j).unwrap();
        assert_eq!(m.len(), s as usize, "dim {j}");
        for (i, &mi) in m.iter().enumerate() {
            assert!(
                mi % 2 == 1 && mi < 1 << (i + 1),
                "dim {j}: m_{} = {mi}",
                i + 1
            );
        }
        // p(x) = x^s + a_1 x^{s-1} + … + a_{s-1} x + 1
        let p = (1u64 << s) | ((a as u64) << 1) | 1;
        let order = (1u64 << s) - 1;
        assert_eq!(
            xpow_mod(order, p, s),
            1,
            "dim {j}: x^(2^s-1) != 1 mod {p:b}"
        );
        for q in primes(20).into_iter().filter(|q| order.is_multiple_of(*q)) {
            assert_ne!(
                xpow_mod(order / q, p, s),
                1,
                "dim {j}: {p:b} is not primitive"
            );
        }
        assert!(!seen.contains(&p), "dim {j}: polynomial {p:b} repeated");
        seen.push(p);
    }
    assert!(sobol_table(SOBOL_MAX_DIM).is_none());
}

#[test]
fn sobol_dimensions_are_stratified_and_the_first_two_a_net() {
    let m = 10;
    let n = 1 << m;
    let d = SOBOL_MAX_DIM;
    let b = sobol_bits(n, d).unwrap();
    let mut r = rng(4);
    let u = unit_points(PointKind::Sobol, n, d, &mut r).unwrap();
    for j in 0..d {
        for (what, cells) in [
            (
                "unscrambled",
                (0..n)
                    .map(|i| (b[i * d + j] >> (32 - m)) as usize)
                    .collect::<Vec<_>>(),
            ),
            (
                "scrambled",
                (0..n).map(|i| (u[i * d + j] * n as f64) as usize).collect(),
            ),
        ] {
            let mut c = cells.clone();
            c.sort();
            c.dedup();
            assert_eq!(c.len(), n, "dim {j} {what}: not one point per interval");
        }
    }
    for p in 0..=m {
        let q = m - p;
        let mut cells: Vec<(u32, u32)> = (0..n)
            .map(|i| {
                let x = if p == 0 { 0 } else { b[i * d] >> (32 - p) };
                let y = if q == 0 { 0 } else { b[i * d + 1] >> (32 - q) };
                (x, y)
            })
            .collect();
        cells.sort();
        cells.dedup();
        assert_eq!(
            cells.len(),
            n,
            "(0,{m},2)-net fails for intervals 2^-{p} x 2^-{q}"
        );
    }
}

#[test]
fn halton_and_lhs() {
    assert_eq!(primes(6), vec![2, 3, 5, 7, 11, 13]);
    assert_eq!(radical_inverse(6, 2), 0.375); // 110 -> .011
    assert!((radical_inverse(7, 3) - (1.0 / 3.0 + 2.0 / 9.0)).abs() < 1e-15); // 21 -> .12
    let mut r = rng(5);
    // Halton: a rotation of the radical inverses
    let u = unit_points(PointKind::Halton, 64, 3, &mut r).unwrap();
    let shift = u[0];
    for i in 0..64 {
        let want = (radical_inverse(i as u64, 2) + shift).fract();
        assert!((u[i * 3] - want).abs() < 1e-14, "halton point {i}");
    }
    // LHS: one point per stratum in every dimension
    let n = 500;
    let u = unit_points(PointKind::Lhs, n, 4, &mut r).unwrap();
    for j in 0..4 {
        let mut c: Vec<usize> = (0..n).map(|i| (u[i * 4 + j] * n as f64) as usize).collect();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), n, "lhs dim {j}");
    }
}

/// Every kind has uniform marginals: the mean of each coordinate over many independent
/// draws is 1/2 and every value lies in [0, 1).
#[test]
fn every_kind_is_uniform_in_the_cube() {
    let mut r = rng(6);
    for kind in [
        PointKind::Uniform,
        PointKind::Sobol,
        PointKind::Halton,
        PointKind::Lhs,
    ] {
        let (n, d, draws) = (16, 5, 400);
        let mut mean = vec![0.0; d];
        for _ in 0..draws {
            let u = unit_points(kind, n, d, &mut r).unwrap();
            assert!(u.iter().all(|v| (0.0..1.0).contains(v)), "{kind:?}");
            for (k, v) in u.iter().enumerate() {
                mean[k % d] += v / (n * draws) as f64;
            }
        }
        let se = (1.0 / 12.0 / (n * draws) as f64).sqrt();
        for (j, m) in mean.iter().enumerate() {
            assert!((m - 0.5).abs() < 5.0 * se, "{kind:?} dim {j}: mean {m}");
        }
    }
}

#[test]
fn limits_and_names() {
    let e = unit_points(PointKind::Sobol, 4, SOBOL_MAX_DIM + 1, &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sobol dimension") && e.contains("22") && e.contains("halton"),
        "{e}"
    );
    assert!(unit_points(PointKind::Halton, 4, 100, &mut rng(0)).is_ok());
    for n in PointKind::NAMES {
        assert_eq!(PointKind::parse(n).unwrap().as_str(), n);
    }
    let e = PointKind::parse("grid").unwrap_err().to_string();
    assert!(e.contains("grid") && e.contains("sobol"), "{e}");
}

// ---------------------------------------------------------------------------------
// training points of problems

/// Quasi-random points of every built-in box problem and system lie on their terms'
/// regions (same checks as the uniform sampler's), interior Sobol points keep their
/// stratification through the box map, and `uniform` is the plain sampler bit for bit.
#[test]
fn problems_draw_quasi_random_points_on_their_regions() {
    for name in [
        "poisson2d",
        "heat4d",
        "kovasznay",
        "wave1d",
        "poisson-mixed-bc",
    ] {
        let p = problem(name, &Default::default()).unwrap();
        let (lo, hi) = p.bounds().unwrap();
        let d = p.dim();
        for t in 0..p.terms().len() {
            let a = p.sample(t, 64, &mut rng(9)).unwrap();
            let b = p
                .sample_kind(t, 64, PointKind::Uniform, &mut rng(9))
                .unwrap();
            assert_eq!(a, b, "{name} term {t}: uniform kind differs from sample()");
            // where the uniform sampler puts a coordinate on a bound, the quasi-random
            // one must too, in the same proportion up to sampling noise
            let on_bound = |x: &[f64]| {
                x.chunks(d)
                    .filter(|q| (0..d).any(|i| q[i] == lo[i] || q[i] == hi[i]))
                    .count()
            };
            for kind in [PointKind::Sobol, PointKind::Halton, PointKind::Lhs] {
                let x = p.sample_kind(t, 64, kind, &mut rng(3)).unwrap();
                for q in x.chunks(d) {
                    for i in 0..d {
                        assert!(q[i] >= lo[i] && q[i] <= hi[i], "{name} {kind:?} {q:?}");
                    }
                }
                assert_eq!(
                    on_bound(&x) == 0,
                    on_bound(&a) == 0,
                    "{name} term {t} {kind:?}: region differs from the uniform sampler's"
                );
                if t > 0 && on_bound(&a) == 64 {
                    assert_eq!(
                        on_bound(&x),
                        64,
                        "{name} term {t} {kind:?}: off the boundary"
                    );
                }
            }
        }
        // interior Sobol points: one per interval of 1/64 in every coordinate
        let x = p.sample_kind(0, 64, PointKind::Sobol, &mut rng(2)).unwrap();
        for i in 0..d {
            let mut c: Vec<usize> = x
                .chunks(d)
                .map(|q| ((q[i] - lo[i]) / (hi[i] - lo[i]) * 64.0) as usize)
                .collect();
            c.sort();
            c.dedup();
            assert_eq!(c.len(), 64, "{name}: coordinate {i} not stratified");
        }
    }
    // heat: half the boundary points on the initial slice, half on spatial faces
    let p = problem("heat4d", &Default::default()).unwrap();
    let (lo, _) = p.bounds().unwrap();
    let x = p
        .sample_kind(1, 100, PointKind::Sobol, &mut rng(1))
        .unwrap();
    let initial = x.chunks(5).filter(|q| q[0] == lo[0]).count();
    assert!(
        (50..=55).contains(&initial),
        "{initial} initial points of 100"
    );
}

#[test]
fn cli_takes_a_point_kind() {
    let (code, out, err) = common::kfac_pinn(&[
        "train",
        "--problem",
        "poisson2d",
        "--points",
        "sobol:200,40",
        "--steps",
        "3",
        "--optimizer",
        "adam",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"l2_rel\""), "{out}");
    let (code, _, err) = common::kfac_pinn(&[
        "train",
        "--problem",
        "poisson2d",
        "--points",
        "grid",
        "--steps",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("grid") && err.contains("sobol"), "{err}");
    let (code, _, err) = common::kfac_pinn(&[
        "train",
        "--problem",
        "poisson100d",
        "--points",
        "sobol",
        "--steps",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("sobol dimension") && err.contains("100"),
        "{err}"
    );
}

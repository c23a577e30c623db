//! One optimizer step on heat 4+1d (5→64→64→48→48→1, 3000 interior + 500 boundary
//! points, f64, CPU): kfac (with its 31-point grid line search), kfac-star (the quadratic
//! model's Gramian products from the gradient pass's stored layer inputs and cotangents)
//! and engd-layer (per-layer Gramian blocks, host solves).
//! The optimizer state is warmed up by a few steps first; the points stay fixed.
//!
//! Run with `cargo bench --bench optim_step`; other builds on the same machine skew the
//! numbers.

use criterion::{criterion_group, criterion_main, Criterion};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{build, Optimizer, OptimizerConfig};
use kfac_pinn::pde::builtin;
use rand::SeedableRng;
use std::time::Duration;

fn setup() -> (Objective<Cpu, f64>, Vec<f64>) {
    let prob = builtin("heat4d").unwrap();
    let s = prob.setup();
    let mlp = Mlp::new(&s.widths).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), prob.terms(), None).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (t, &n) in s.points.iter().enumerate() {
        obj.set_points(t, prob.sample(t, n, &mut rng).unwrap())
            .unwrap();
    }
    (obj, mlp.init(1))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("heat4d_step");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let cases: [(&str, OptimizerConfig); 3] = [
        (
            "kfac",
            OptimizerConfig {
                damping: Some(4.1e-14),
                ema: Some(0.982),
                momentum: Some(0.766),
                ..Default::default()
            },
        ),
        (
            "kfac-star",
            OptimizerConfig {
                damping: Some(1.96e-10),
                ema: Some(0.982),
                ..Default::default()
            },
        ),
        (
            "engd-layer",
            OptimizerConfig {
                damping: Some(1e-6),
                ema: Some(0.3),
                ..Default::default()
            },
        ),
    ];
    for (name, cfg) in cases {
        let (mut obj, p0) = setup();
        let mut opt: Box<dyn Optimizer<Cpu, f64>> = build(name, &cfg, &obj).unwrap();
        let mut p = p0.clone();
        for _ in 0..3 {
            opt.step(&mut obj, &mut p).unwrap();
        }
        g.bench_function(name, |b| b.iter(|| opt.step(&mut obj, &mut p).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

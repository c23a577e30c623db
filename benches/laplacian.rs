//! Criterion benchmarks of the forward Laplacian against the autodiff baseline and the
//! bare products (throughput in FLOP of the products). Small sizes so that `cargo bench`
//! finishes in minutes on two cores; the paper-size figures come from
//! `kfac-pinn laplacian` (see README).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kfac_pinn::autodiff::Autodiff;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::jet::{JetEngine, JetKind, Operator};
use kfac_pinn::model::Mlp;
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("laplacian");
    g.sample_size(10);
    let n = 256;
    for d in [1usize, 10, 50] {
        let widths = [d, 256, 256, 128, 128, 1];
        let mlp = Mlp::new(&widths).unwrap();
        let p = Cpu.upload(&mlp.init::<f64>(0)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f64> = (0..n * d).map(|_| rng.random()).collect();
        let x = Cpu.upload(&x).unwrap();
        let s = (d + 2) as u64;
        let flop: u64 =
            2 * (n as u64) * (d as u64 * 256 + s * (256 * 256 + 256 * 128 + 128 * 128 + 128));
        g.throughput(Throughput::Elements(flop));
        let mut eng = JetEngine::<Cpu, f64>::new(
            Cpu,
            mlp.clone(),
            JetKind::Full(Operator::laplacian(d)),
            None,
        )
        .unwrap();
        g.bench_with_input(BenchmarkId::new("forward", d), &d, |b, _| {
            b.iter(|| eng.forward(&p, &x, n).unwrap())
        });
        let mut ad = Autodiff::<Cpu, f64>::new(Cpu, mlp.clone()).unwrap();
        g.bench_with_input(BenchmarkId::new("autodiff", d), &d, |b, _| {
            b.iter(|| ad.derivatives(&p, &x, n).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

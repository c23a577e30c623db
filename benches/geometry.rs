//! Sampling shapes (issue 19's target: 1e5 points on a boundary piece of a set-operation
//! shape in under 0.1 s): the hole of a plate with a hole (a difference, the circle's
//! part inside the plate), an edge of the plate (the box face's part outside the hole),
//! the interior of the plate (rejection from the box), and a 5-d ball's interior.
//!
//! Run with `cargo bench --bench geometry`; other builds on the same machine skew the
//! numbers.

use criterion::{criterion_group, criterion_main, Criterion};
use kfac_pinn::geometry::{piece_index, Ball, BoxShape, Difference, Prefixed, Shape, ShapeRef};
use rand::SeedableRng;
use std::sync::Arc;

const N: usize = 100_000;

fn bench(c: &mut Criterion) {
    let plate: ShapeRef = Arc::new(BoxShape::new(vec![0.0, 0.0], vec![1.0, 1.0]).unwrap());
    let hole: ShapeRef =
        Arc::new(Prefixed::new(Arc::new(Ball::new(vec![0.5, 0.5], 0.4).unwrap()), "hole").unwrap());
    let s = Difference::new(plate, hole).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut x, mut n) = (vec![0.0; N * 2], vec![0.0; N * 2]);
    let mut g = c.benchmark_group("geometry_1e5_points");
    g.sample_size(20);
    for piece in ["hole", "x0=min"] {
        let p = piece_index(&s, piece).unwrap();
        g.bench_function(format!("plate_with_hole_{piece}"), |b| {
            b.iter(|| s.sample_piece(p, &mut rng, &mut x, &mut n).unwrap())
        });
    }
    g.bench_function("plate_with_hole_interior", |b| {
        b.iter(|| s.sample_interior(&mut rng, &mut x).unwrap())
    });
    let ball = Ball::new(vec![0.0; 5], 1.0).unwrap();
    let mut x5 = vec![0.0; N * 5];
    g.bench_function("ball5_interior", |b| {
        b.iter(|| ball.sample_interior(&mut rng, &mut x5).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Time the pieces of one training step (developer tool).
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::pde::builtin;
use rand::SeedableRng;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("poisson2d");
    let p = builtin(name).unwrap();
    let s = p.setup();
    let mlp = Mlp::new(&s.widths).unwrap();
    let mut obj = Objective::<Cpu, f64>::new(Cpu, mlp.clone(), p.terms(), None).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (t, &n) in s.points.iter().enumerate() {
        obj.set_points(t, p.sample(t, n, &mut rng).unwrap())
            .unwrap();
    }
    let params: Vec<f64> = mlp.init(1);
    let mut g = vec![0.0; params.len()];
    for _ in 0..3 {
        obj.loss_grad(&params, &mut g).unwrap();
    }
    let reps = 50;
    let t = Instant::now();
    for _ in 0..reps {
        obj.loss_grad(&params, &mut g).unwrap();
    }
    println!(
        "loss_grad: {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
    let t = Instant::now();
    for _ in 0..reps {
        obj.loss(&params).unwrap();
    }
    println!(
        "loss:      {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

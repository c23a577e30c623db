//! Curvature building blocks against independent truth.

mod common;

use common::assert_close;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::curvature::jacobian;
use kfac_pinn::loss::Objective;
use kfac_pinn::pde::builtin;

fn objective(p: &str, w: &[usize], n: &[usize], s: u64) -> (Objective<Cpu, f64>, Vec<f64>) {
    common::objective(p, w, n, s, 24)
}

#[test]
fn jacobian_transpose_residual_is_the_gradient() {
    // residuals and seeds on the backend (quadratic forms), and on the host
    for (problem, on_backend) in [
        ("poisson2d", true),
        ("log-fokker-planck9d", true),
        ("poisson2d", false),
    ] {
        let d = builtin(problem).unwrap().dim();
        let (mut obj, p) = objective(problem, &[d, 6, 4, 1], &[11, 5], 2);
        obj.set_backend_residuals(on_backend).unwrap();
        let jac = jacobian(&mut obj, &p).unwrap();
        let r_host = jac.r_host(&Cpu).unwrap();
        let mut g = vec![0.0; p.len()];
        let loss = obj.loss_grad(&p, &mut g).unwrap();
        let jt_r: Vec<f64> = (0..jac.cols)
            .map(|c| {
                (0..jac.rows)
                    .map(|r| jac.j[r * jac.cols + c] * r_host[r])
                    .sum()
            })
            .collect();
        assert_close(&format!("{problem} Jᵀr̃"), &jt_r, &g, 1e-11, 1e-14);
        let half_r2: f64 = 0.5 * r_host.iter().map(|v| v * v).sum::<f64>();
        assert!((half_r2 - loss).abs() <= 1e-12 * loss);
    }
}

#[test]
fn jacobian_matches_finite_differences_of_residuals() {
    let (mut obj, p) = objective("heat1d", &[2, 5, 3, 1], &[7, 4], 4);
    let jac = jacobian(&mut obj, &p).unwrap();
    common::assert_jacobian_is_fd("heat1d", &mut obj, &p, &jac.j, 1e-6, 1e-9);
    let _ = Cpu.len(&jac.j);
}

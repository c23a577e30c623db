//! Reverse mode through the jet: the loss gradient against central finite differences of
//! the loss (linear and nonlinear residuals, several nets), and the per-layer Z/G
//! matrices against the gradient (∇W = Gᵀ Z̃ with seeds r/N and the bias-augmented Z̃).

mod common;

use common::assert_close;
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::Backend;
use kfac_pinn::loss::Objective;

fn objective(p: &str, w: &[usize], n: &[usize], s: u64) -> (Objective<Cpu, f64>, Vec<f64>) {
    common::objective(p, w, n, s, 40)
}

fn fd_grad(obj: &mut Objective<Cpu, f64>, p: &[f64], h: f64) -> Vec<f64> {
    let mut g = vec![0.0; p.len()];
    for i in 0..p.len() {
        let mut q = p.to_vec();
        q[i] += h;
        let lp = obj.loss(&q).unwrap();
        q[i] -= 2.0 * h;
        let lm = obj.loss(&q).unwrap();
        g[i] = (lp - lm) / (2.0 * h);
    }
    g
}

#[test]
fn loss_gradient_matches_finite_differences() {
    for (problem, widths, n) in [
        ("poisson2d", vec![2, 6, 5, 1], vec![13, 7]),
        ("heat1d", vec![2, 4, 3, 1], vec![11, 6]),
        ("log-fokker-planck9d", vec![10, 5, 4, 1], vec![9, 5]),
        ("poisson5d", vec![5, 3, 1], vec![8, 4]),
    ] {
        let (mut obj, p) = objective(problem, &widths, &n, 3);
        let mut g = vec![0.0; p.len()];
        let l = obj.loss_grad(&p, &mut g).unwrap();
        assert!((l - obj.loss(&p).unwrap()).abs() <= 1e-13 * l.abs());
        let fd = fd_grad(&mut obj, &p, 1e-6);
        let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close(&format!("{problem} gradient"), &g, &fd, 1e-6, 1e-8 * scale);
    }
}

#[test]
fn z_and_g_reproduce_the_gradient() {
    let (mut obj, p) = objective("heat1d", &[2, 5, 4, 1], &[10, 6], 8);
    let mlp = obj.mlp().clone();
    let mut grad = vec![0.0; p.len()];
    obj.loss_grad(&p, &mut grad).unwrap();
    // Σ_terms Σ_chunks Gᵀ Z̃ from the raw layer views, assembled on the host
    let mut acc = vec![0.0; p.len()];
    for t in 0..obj.num_terms() {
        obj.sweep(&p, t, |pass| {
            let seeds = pass.grad_seeds()?;
            pass.backward(&seeds, |be, v| {
                let a = be.download(v.a())?;
                let g = be.download(v.g)?;
                let (fi, fo) = (v.layout.fan_in, v.layout.fan_out);
                let rows = v.rows();
                for r in 0..rows {
                    let value_row = r < v.shape.n;
                    for o in 0..fo {
                        let gv = g[r * fo + o];
                        for i in 0..fi {
                            acc[v.layout.w_off + o * fi + i] += gv * a[r * fi + i];
                        }
                        if value_row {
                            acc[v.layout.b_off + o] += gv; // bias column of Z̃: 1 on value rows
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    }
    assert_close("Gᵀ Z̃", &acc, &grad, 1e-12, 1e-15);
    assert_eq!(mlp.num_params(), acc.len());
}

#[test]
fn non_finite_loss_is_an_error() {
    let (mut obj, mut p) = objective("poisson2d", &[2, 4, 1], &[5, 3], 1);
    let last = p.len() - 1;
    p[last] = f64::NAN;
    let e = obj.loss(&p).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    assert!(obj.set_points(0, vec![0.0, f64::INFINITY]).is_err());
    assert!(obj.set_points(0, vec![0.0, 1.0, 2.0]).is_err());
}

/// The backend's residual kernels (quadratic forms, `Backend::quad_residual`/`quad_seeds`/
/// `quad_tangent`) give the loss, the gradient, the KFAC factors and the Gauss–Newton
/// products of the host evaluation.
#[test]
fn backend_residuals_match_the_host_path() {
    use kfac_pinn::curvature::{gvp, DeviceFactors, KfacPass};
    for (problem, widths, n) in [
        ("poisson2d", vec![2, 6, 5, 1], vec![13, 7]),
        ("heat1d", vec![2, 4, 3, 1], vec![11, 6]),
        ("log-fokker-planck9d", vec![10, 5, 4, 1], vec![9, 5]),
    ] {
        let (mut obj, p) = objective(problem, &widths, &n, 4);
        let mlp = obj.mlp().clone();
        let run = |obj: &mut Objective<Cpu, f64>| {
            let mut g = vec![0.0; p.len()];
            let l = obj.loss_grad(&p, &mut g).unwrap();
            let lv = obj.loss(&p).unwrap();
            let mut pass = KfacPass::<Cpu, f64>::new(&mlp, 2).unwrap();
            let mut f = DeviceFactors::new(&Cpu, &mlp, 2, false).unwrap();
            let mut g2 = vec![0.0; p.len()];
            pass.run(obj, &p, &mut g2, Some(&mut f), None).unwrap();
            // a Gauss–Newton product (J·v and the seeds on the backend, or on the host)
            let v: Vec<f64> = (0..p.len())
                .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
                .collect();
            let mut gv = vec![0.0; p.len()];
            gvp(obj, &p, &v, &mut gv).unwrap();
            (l, lv, g, g2, f.download(&Cpu).unwrap(), gv)
        };
        for t in 0..2 {
            assert!(obj.backend_residuals(t), "{problem}: term {t} on the host");
        }
        let dev = run(&mut obj);
        obj.set_backend_residuals(false).unwrap();
        assert!(!obj.backend_residuals(0));
        let host = run(&mut obj);
        for (a, b, what) in [(dev.0, host.0, "loss"), (dev.1, host.1, "value-pass loss")] {
            assert!(
                (a - b).abs() <= 1e-13 * b.abs(),
                "{problem} {what}: {a} vs {b}"
            );
        }
        assert_close(
            &format!("{problem} gradient"),
            &dev.2,
            &host.2,
            1e-12,
            1e-15,
        );
        assert_close(
            &format!("{problem} KFAC gradient"),
            &dev.3,
            &host.3,
            1e-12,
            1e-15,
        );
        assert_close(&format!("{problem} G·v"), &dev.5, &host.5, 1e-12, 1e-15);
        for t in 0..2 {
            for l in 0..mlp.num_layers() {
                assert_close(
                    &format!("{problem} A"),
                    dev.4.a(t, l),
                    host.4.a(t, l),
                    1e-12,
                    1e-15,
                );
                assert_close(
                    &format!("{problem} B"),
                    dev.4.b(t, l),
                    host.4.b(t, l),
                    1e-12,
                    1e-15,
                );
            }
        }
    }
}

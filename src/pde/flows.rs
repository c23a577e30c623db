//! Built-in systems and boundary-condition problems (issue 18), each with an exact or
//! manufactured solution: Kovasznay flow (steady 2d Navier–Stokes, Re = 20), Stokes flow
//! (manufactured), the Taylor–Green vortex (2+1d Navier–Stokes), the 1+1d wave equation
//! (initial value and rate), Poisson with Dirichlet, Neumann and Robin faces, and 2d
//! linear elasticity (Navier–Cauchy, manufactured; its jet carries three operators,
//! `∂_xx`, `∂_yy` and the mixed `∂_x∂_y`).
//!
//! Sources and boundary data are written in closed form from the solutions; checked by
//! `tests/systems.rs`, which pushes each solution through every term with derivatives by
//! finite differences (independent of these formulas).

use super::problems::{DataResidual, LinearResidual, ScalarFn};
use super::system::{
    gradient_jet, BoxSystem, Face, FieldData, FirstOrder, JetIdx, NavierStokes, Region, SystemTerm,
    VecFn,
};
use super::{ReferenceData, Residual, Setup};
use crate::error::{Error, Result};
use crate::jet::{JetKind, Operator, OperatorSet};
use std::f64::consts::PI;
use std::sync::Arc;

/// Names of the built-in systems.
pub const NAMES: &[&str] = &[
    "kovasznay",
    "stokes",
    "taylor-green",
    "cavity-re100",
    "wave1d",
    "poisson-mixed-bc",
    "elasticity",
];

/// A built-in system by name, or None if `name` is not one.
pub fn build(name: &str) -> Option<Result<BoxSystem>> {
    Some(match name {
        "kovasznay" => kovasznay(),
        "stokes" => stokes(),
        "taylor-green" => taylor_green(),
        "cavity-re100" => cavity(),
        "wave1d" => wave1d(),
        "poisson-mixed-bc" => poisson_mixed(),
        "elasticity" => elasticity(),
        _ => return None,
    })
}

pub(super) fn vf(f: impl Fn(&[f64], &mut [f64]) + Send + Sync + 'static) -> VecFn {
    Arc::new(f)
}

pub(super) fn sf(f: impl Fn(&[f64]) -> f64 + Send + Sync + 'static) -> ScalarFn {
    Arc::new(f)
}

pub(super) fn term(
    name: &str,
    region: Region,
    kind: JetKind,
    residual: Arc<dyn Residual>,
) -> SystemTerm {
    SystemTerm {
        name: name.into(),
        region,
        kind,
        residual,
        weight: 1.0,
    }
}

/// A steady 2d flow's terms: the interior residual `ns` with the Laplacian's jet, the
/// velocity data on every face and the pressure data on `pressure`'s region (both from
/// one function of all three fields), each named.
fn steady_flow_terms(
    ns: NavierStokes,
    (velocity, g): (&str, VecFn),
    (pressure, region): (&str, Region),
) -> Vec<SystemTerm> {
    let data = |fields: Vec<usize>| {
        Arc::new(FieldData {
            fields,
            g: g.clone(),
            m: 3,
        })
    };
    vec![
        term(
            "interior",
            Region::Interior,
            JetKind::Full(Operator::laplacian(2)),
            Arc::new(ns),
        ),
        term(
            velocity,
            Region::Faces(all_faces(0..2)),
            JetKind::Value,
            data(vec![0, 1]),
        ),
        term(pressure, region, JetKind::Value, data(vec![2])),
    ]
}

pub(super) fn setup(widths: &[usize], points: &[usize], eval_points: usize, budget: f64) -> Setup {
    Setup {
        widths: widths.to_vec(),
        points: points.to_vec(),
        resample: 0,
        eval_points,
        budget_seconds: budget,
    }
}

fn all_faces(dims: std::ops::Range<usize>) -> Vec<Face> {
    dims.flat_map(|c| [Face::lower(c), Face::upper(c)])
        .collect()
}

/// Kovasznay's exact steady Navier–Stokes solution at Re = 20 on [−½, 1] × [−½, 3/2]:
/// `u = 1 − e^{λx} cos 2πy`, `v = λ/(2π) e^{λx} sin 2πy`, `p = ½(1 − e^{2λx})`,
/// `λ = Re/2 − √(Re²/4 + 4π²)`. Velocity on every face, pressure on the outlet.
fn kovasznay() -> Result<BoxSystem> {
    let re = 20.0f64;
    let lam = re / 2.0 - (re * re / 4.0 + 4.0 * PI * PI).sqrt();
    let exact = vf(move |x, o| {
        let e = (lam * x[0]).exp();
        o[0] = 1.0 - e * (2.0 * PI * x[1]).cos();
        o[1] = lam / (2.0 * PI) * e * (2.0 * PI * x[1]).sin();
        o[2] = 0.5 * (1.0 - (2.0 * lam * x[0]).exp());
    });
    let ns = NavierStokes {
        d: 2,
        time: false,
        convective: true,
        nu: 1.0 / re,
        source: None,
    };
    Ok(BoxSystem::new(
        "kovasznay",
        "Kovasznay flow: steady Navier–Stokes (u·∇)u + ∇p − Δu/Re = 0, ∇·u = 0, Re = 20, on [−0.5,1]×[−0.5,1.5]; velocity on the faces, pressure on the outlet x = 1",
        vec![-0.5, -0.5],
        vec![1.0, 1.5],
        &["u", "v", "p"],
        steady_flow_terms(ns, ("velocity-faces", exact.clone()), ("outlet-pressure", Region::Faces(vec![Face::upper(0)]))),
        Some(exact),
        setup(&[2, 30, 30, 30, 3], &[1000, 200, 50], 20000, 600.0),
    )?
    .with_error_group("velocity", vec![0, 1]))
}

/// Stokes flow `−Δu + ∇p = f`, `∇·u = 0` on [0,1]² with the manufactured solution
/// `u = π sin²(πx) sin(2πy)`, `v = −π sin(2πx) sin²(πy)` (from the stream function
/// `sin²(πx) sin²(πy)`, divergence-free) and `p = cos(πx) cos(πy)`; velocity on the faces,
/// pressure pinned at the centre.
fn stokes() -> Result<BoxSystem> {
    let exact = vf(|x, o| {
        let (sx, sy) = ((PI * x[0]).sin(), (PI * x[1]).sin());
        o[0] = PI * sx * sx * (2.0 * PI * x[1]).sin();
        o[1] = -PI * (2.0 * PI * x[0]).sin() * sy * sy;
        o[2] = (PI * x[0]).cos() * (PI * x[1]).cos();
    });
    let pi3 = PI * PI * PI;
    // f = −Δu + ∇p with Δu = 2π³ sin(2πy)(2cos 2πx − 1), Δv = −2π³ sin(2πx)(2cos 2πy − 1)
    let source = vf(move |x, o| {
        let (c2x, c2y) = ((2.0 * PI * x[0]).cos(), (2.0 * PI * x[1]).cos());
        let (s2x, s2y) = ((2.0 * PI * x[0]).sin(), (2.0 * PI * x[1]).sin());
        let lap_u = 2.0 * pi3 * s2y * (2.0 * c2x - 1.0);
        let lap_v = -2.0 * pi3 * s2x * (2.0 * c2y - 1.0);
        let px = -PI * (PI * x[0]).sin() * (PI * x[1]).cos();
        let py = -PI * (PI * x[0]).cos() * (PI * x[1]).sin();
        o[0] = -lap_u + px;
        o[1] = -lap_v + py;
        o[2] = 0.0;
    });
    let st = NavierStokes {
        d: 2,
        time: false,
        convective: false,
        nu: 1.0,
        source: Some(source),
    };
    Ok(BoxSystem::new(
        "stokes",
        "Stokes flow −Δu + ∇p = f, ∇·u = 0 on [0,1]², manufactured: u = π sin²(πx) sin(2πy), v = −π sin(2πx) sin²(πy), p = cos(πx) cos(πy); velocity on the faces, p pinned at (½, ½)",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u", "v", "p"],
        steady_flow_terms(st, ("velocity-faces", exact.clone()), ("pressure-pin", Region::Point(vec![0.5, 0.5]))),
        Some(exact),
        setup(&[2, 30, 30, 30, 3], &[1000, 200, 8], 20000, 600.0),
    )?
    .with_error_group("velocity", vec![0, 1]))
}

/// Taylor–Green vortex, 2+1d Navier–Stokes with ν = 0.1 on t ∈ [0,1], (x,y) ∈ [0,2π]²:
/// `u = −cos x sin y F`, `v = sin x cos y F`, `p = −¼(cos 2x + cos 2y) F²`, `F = e^{−2νt}`.
/// Initial velocity at t = 0, all fields on the spatial faces (data from the solution).
fn taylor_green() -> Result<BoxSystem> {
    let nu = 0.1;
    let exact = vf(move |x, o| {
        let f = (-2.0 * nu * x[0]).exp();
        o[0] = -x[1].cos() * x[2].sin() * f;
        o[1] = x[1].sin() * x[2].cos() * f;
        o[2] = -0.25 * ((2.0 * x[1]).cos() + (2.0 * x[2]).cos()) * f * f;
    });
    let ns = NavierStokes {
        d: 2,
        time: true,
        convective: true,
        nu,
        source: None,
    };
    let op = Operator::weighted(vec![0.0, 1.0, 1.0])?;
    Ok(BoxSystem::new(
        "taylor-green",
        "Taylor–Green vortex: u_t + (u·∇)u + ∇p − νΔu = 0, ∇·u = 0, ν = 0.1, t ∈ [0,1], (x,y) ∈ [0,2π]²; u = −cos x sin y e^{−2νt}, v = sin x cos y e^{−2νt}, p = −¼(cos 2x + cos 2y) e^{−4νt}",
        vec![0.0, 0.0, 0.0],
        vec![1.0, 2.0 * PI, 2.0 * PI],
        &["u", "v", "p"],
        vec![
            term("interior", Region::Interior, JetKind::Full(op), Arc::new(ns)),
            term(
                "initial-velocity",
                Region::Initial,
                JetKind::Value,
                Arc::new(FieldData { fields: vec![0, 1], g: exact.clone(), m: 3 }),
            ),
            term(
                "faces",
                Region::Faces(all_faces(1..3)),
                JetKind::Value,
                Arc::new(FieldData { fields: vec![0, 1, 2], g: exact.clone(), m: 3 }),
            ),
        ],
        Some(exact),
        setup(&[3, 30, 30, 30, 3], &[2000, 300, 300], 30000, 600.0),
    )?
    .with_error_group("velocity", vec![0, 1]))
}

/// 1+1d wave equation `u_tt = c² u_xx`, c = 1, on (t, x) ∈ [0,1]², with
/// `u = sin(πx) cos(πt) + ½ sin(3πx) cos(3πt)`: zero data at x = 0, 1, the initial value
/// and a zero initial rate. The jet's operator is `C = diag(1, −c²)`, so its second-order
/// term is the residual itself.
fn wave1d() -> Result<BoxSystem> {
    let c = 1.0f64;
    let u = sf(move |x| {
        (PI * x[1]).sin() * (c * PI * x[0]).cos()
            + 0.5 * (3.0 * PI * x[1]).sin() * (3.0 * c * PI * x[0]).cos()
    });
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    let idx = JetIdx { m: 1, k: 2 };
    BoxSystem::new(
        "wave1d",
        "wave equation u_tt = u_xx on (t,x) ∈ [0,1]², u = 0 at x = 0, 1, u(0,x) = sin(πx) + ½ sin(3πx), u_t(0,x) = 0; u = sin(πx) cos(πt) + ½ sin(3πx) cos(3πt)",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u"],
        vec![
            term(
                "interior",
                Region::Interior,
                JetKind::Full(Operator::weighted(vec![1.0, -c * c])?),
                // −(−1)·(u_tt − c² u_xx) − 0
                Arc::new(LinearResidual { time: None, op_coef: -1.0, k: 2, f: sf(|_| 0.0) }),
            ),
            term(
                "boundary",
                Region::Faces(vec![Face::lower(1), Face::upper(1)]),
                JetKind::Value,
                Arc::new(DataResidual { g: u.clone() }),
            ),
            term("initial", Region::Initial, JetKind::Value, Arc::new(DataResidual { g: u })),
            term(
                "initial-rate",
                Region::Initial,
                gradient_jet(2),
                Arc::new(FirstOrder::initial_rate(0, sf(|_| 0.0), idx)),
            ),
        ],
        Some(exact),
        setup(&[2, 32, 32, 1], &[1000, 100, 100, 100], 20000, 600.0),
    )
}

/// Poisson `−Δu = f` on [0,1]² with `u = sin(πx) sin(πy) + x² + y` and a different
/// condition per face: Dirichlet at x = 0, Neumann at x = 1, Robin `u + ∂u/∂n` at y = 0
/// and `2u + ∂u/∂n` at y = 1 (data from the solution and its gradient).
fn poisson_mixed() -> Result<BoxSystem> {
    let u = sf(|x| (PI * x[0]).sin() * (PI * x[1]).sin() + x[0] * x[0] + x[1]);
    let grad = |x: &[f64]| {
        [
            PI * (PI * x[0]).cos() * (PI * x[1]).sin() + 2.0 * x[0],
            PI * (PI * x[0]).sin() * (PI * x[1]).cos() + 1.0,
        ]
    };
    let idx = JetIdx { m: 1, k: 2 };
    let robin = |name: &str, face: Face, alpha: f64, beta: f64| {
        let u = u.clone();
        let g = sf(move |x| alpha * u(x) + beta * face.normal_sign() * grad(x)[face.coord]);
        term(
            name,
            Region::Faces(vec![face]),
            gradient_jet(2),
            Arc::new(FirstOrder::robin(0, face, alpha, beta, g, idx)),
        )
    };
    let exact = {
        let u = u.clone();
        vf(move |x, o| o[0] = u(x))
    };
    BoxSystem::new(
        "poisson-mixed-bc",
        "−Δu = 2π² sin(πx) sin(πy) − 2 on [0,1]², u = sin(πx) sin(πy) + x² + y; Dirichlet at x = 0, Neumann at x = 1, Robin u + ∂u/∂n at y = 0 and 2u + ∂u/∂n at y = 1",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u"],
        vec![
            term(
                "interior",
                Region::Interior,
                JetKind::Full(Operator::laplacian(2)),
                Arc::new(LinearResidual {
                    time: None,
                    op_coef: 1.0,
                    k: 2,
                    f: sf(|x| 2.0 * PI * PI * (PI * x[0]).sin() * (PI * x[1]).sin() - 2.0),
                }),
            ),
            term(
                "dirichlet-x0",
                Region::Faces(vec![Face::lower(0)]),
                JetKind::Value,
                Arc::new(DataResidual { g: u.clone() }),
            ),
            robin("neumann-x1", Face::upper(0), 0.0, 1.0),
            robin("robin-y0", Face::lower(1), 1.0, 1.0),
            robin("robin-y1", Face::upper(1), 2.0, 1.0),
        ],
        Some(exact),
        setup(&[2, 64, 1], &[900, 40, 40, 40, 40], 9000, 600.0),
    )
}

/// Ghia, Ghia & Shin's (1982) centre-line velocities at Re = 100 (data/ghia1982-re100.csv).
const GHIA_RE100: &str = include_str!("../../data/ghia1982-re100.csv");

/// The shipped Ghia table as reference data (fields u = 0, v = 1).
pub fn ghia_re100() -> Result<ReferenceData> {
    let mut r = ReferenceData {
        source: "U. Ghia, K. N. Ghia, C. T. Shin, J. Comput. Phys. 48 (1982) 387-411, Tables I-II (Re = 100)".into(),
        x: vec![],
        field: vec![],
        value: vec![],
    };
    for (i, line) in GHIA_RE100.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || {
            Error::invalid(
                format!("data/ghia1982-re100.csv line {}", i + 1),
                line,
                "x,y,u|v,value",
            )
        };
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 4 {
            return Err(bad());
        }
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
        r.x.extend([num(f[0])?, num(f[1])?]);
        r.field.push(match f[2] {
            "u" => 0,
            "v" => 1,
            _ => return Err(bad()),
        });
        r.value.push(num(f[3])?);
    }
    Ok(r)
}

/// Lid-driven cavity at Re = 100 on [0,1]²: steady Navier–Stokes with ν = 1/100, no-slip
/// walls and the lid y = 1 moving with u = 1; the pressure pinned to 0 at the centre. No
/// closed-form solution: the error is measured against Ghia et al.'s centre-line table.
fn cavity() -> Result<BoxSystem> {
    let walls = vf(|x, o| {
        o[0] = if x[1] >= 1.0 { 1.0 } else { 0.0 };
        o[1] = 0.0;
        o[2] = 0.0;
    });
    let ns = NavierStokes {
        d: 2,
        time: false,
        convective: true,
        nu: 0.01,
        source: None,
    };
    Ok(BoxSystem::new(
        "cavity-re100",
        "lid-driven cavity, steady Navier–Stokes at Re = 100 on [0,1]², u = 1 on the lid y = 1, no slip elsewhere; compared with Ghia, Ghia & Shin (1982)",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u", "v", "p"],
        steady_flow_terms(ns, ("walls", walls.clone()), ("pressure-pin", Region::Point(vec![0.5, 0.5]))),
        None,
        setup(&[2, 40, 40, 40, 3], &[2000, 400, 8], 1000, 600.0),
    )?
    .with_error_group("velocity", vec![0, 1])
    .with_reference(ghia_re100()?))
}

/// The Navier–Cauchy equations of 2d linear elasticity, `μΔu + (λ+μ)∇(∇·u) + f = 0` for
/// the displacement `u = (u₁, u₂)`, on a jet with the operators `∂_xx`, `∂_yy`, `∂_x∂_y`
/// (an [`OperatorSet`]: directions e_x, e_y, e_x + e_y):
/// `r₁ = (λ+2μ) ∂_xx u₁ + μ ∂_yy u₁ + (λ+μ) ∂_x∂_y u₂ + f₁`,
/// `r₂ = μ ∂_xx u₂ + (λ+2μ) ∂_yy u₂ + (λ+μ) ∂_x∂_y u₁ + f₂`. Linear; evaluated on the
/// host (two components).
struct NavierCauchy {
    lambda: f64,
    mu: f64,
    source: VecFn,
}

impl NavierCauchy {
    /// Two fields, K = 3 directions, operators 0 = ∂_xx, 1 = ∂_yy, 2 = ∂_x∂_y.
    const IDX: JetIdx = JetIdx { m: 2, k: 3 };
    const OPS: usize = 3;

    fn jet() -> Result<OperatorSet> {
        OperatorSet::from_matrices(
            2,
            &[
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
                [0.0, 0.5, 0.5, 0.0],
            ],
        )
    }

    /// The coefficients `(entry, weight)` of component `q`'s residual in the jet.
    fn terms(&self, q: usize) -> [(usize, f64); 3] {
        let (l2m, m, lm) = (self.lambda + 2.0 * self.mu, self.mu, self.lambda + self.mu);
        let ix = Self::IDX;
        let (xx, yy) = if q == 0 { (l2m, m) } else { (m, l2m) };
        [
            (ix.op_j(0, q), xx),
            (ix.op_j(1, q), yy),
            (ix.op_j(2, 1 - q), lm),
        ]
    }
}

impl Residual for NavierCauchy {
    fn n_res(&self) -> usize {
        2
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let mut f = [0.0; 2];
        (self.source)(x, &mut f);
        for (q, rq) in r.iter_mut().enumerate().take(2) {
            *rq = self.terms(q).iter().map(|&(c, w)| w * y[c]).sum::<f64>() + f[q];
        }
        if let Some(jac) = jac {
            let w = Self::IDX.len_ops(Self::OPS);
            jac.fill(0.0);
            for q in 0..2 {
                for (c, v) in self.terms(q) {
                    jac[q * w + c] = v;
                }
            }
        }
    }
}

/// 2d linear elasticity (Navier–Cauchy) `μΔu + (λ+μ)∇(∇·u) + f = 0` on [0,1]² with λ = 1.5,
/// μ = 1 and the manufactured displacement `u₁ = sin(πx) cos(πy)`,
/// `u₂ = sin(2πx) sin(πy)` (not divergence-free, so the grad-div term and its mixed
/// derivatives matter); Dirichlet data on every face.
fn elasticity() -> Result<BoxSystem> {
    let (lambda, mu) = (1.5f64, 1.0f64);
    let exact = vf(|x, o| {
        o[0] = (PI * x[0]).sin() * (PI * x[1]).cos();
        o[1] = (2.0 * PI * x[0]).sin() * (PI * x[1]).sin();
    });
    let pi2 = PI * PI;
    // second derivatives of the solution, then f = −(μΔu + (λ+μ)∇(∇·u))
    let source = vf(move |x, o| {
        let (sx, cx, sy, cy) = (
            (PI * x[0]).sin(),
            (PI * x[0]).cos(),
            (PI * x[1]).sin(),
            (PI * x[1]).cos(),
        );
        let (s2x, c2x) = ((2.0 * PI * x[0]).sin(), (2.0 * PI * x[0]).cos());
        let u1_xx = -pi2 * sx * cy;
        let u1_yy = -pi2 * sx * cy;
        let u1_xy = -pi2 * cx * sy;
        let u2_xx = -4.0 * pi2 * s2x * sy;
        let u2_yy = -pi2 * s2x * sy;
        let u2_xy = 2.0 * pi2 * c2x * cy;
        o[0] = -((lambda + 2.0 * mu) * u1_xx + mu * u1_yy + (lambda + mu) * u2_xy);
        o[1] = -(mu * u2_xx + (lambda + 2.0 * mu) * u2_yy + (lambda + mu) * u1_xy);
    });
    let nc = NavierCauchy { lambda, mu, source };
    BoxSystem::new(
        "elasticity",
        "2d linear elasticity (Navier–Cauchy) μΔu + (λ+μ)∇(∇·u) + f = 0, λ = 1.5, μ = 1, on [0,1]², manufactured: u₁ = sin(πx) cos(πy), u₂ = sin(2πx) sin(πy); displacement on the faces",
        vec![0.0, 0.0],
        vec![1.0, 1.0],
        &["u1", "u2"],
        vec![
            term("interior", Region::Interior, JetKind::Set(NavierCauchy::jet()?), Arc::new(nc)),
            term(
                "displacement-faces",
                Region::Faces(all_faces(0..2)),
                JetKind::Value,
                Arc::new(FieldData { fields: vec![0, 1], g: exact.clone(), m: 2 }),
            ),
        ],
        Some(exact),
        setup(&[2, 30, 30, 30, 2], &[1000, 200], 20000, 600.0),
    )
}

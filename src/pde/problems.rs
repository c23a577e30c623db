//! The paper's PDE problems (design §4; domains, sampling and normalisations from the
//! public experiment code, see docs/paper-setups.md): Poisson 2d/5d/10d/100d, heat 1+1d
//! and 4+1d, log-Fokker–Planck 9+1d. Time, where present, is the first input coordinate.

use super::system::{map_unit, Face};
use super::{Problem, Residual, Setup, TermSpec};
use crate::error::{Error, Result};
use crate::geometry::qmc::unit_points;
use crate::geometry::PointKind;
use crate::jet::{JetKind, Operator};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f64::consts::PI;
use std::sync::Arc;

/// A scalar function of a point (sources, boundary data, exact solutions).
pub(crate) type ScalarFn = Arc<dyn Fn(&[f64]) -> f64 + Send + Sync>;

/// Where the data term's points lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// On the faces of the box: a uniform point with one random coordinate set to its
    /// lower or upper bound (all faces equally likely).
    Faces,
    /// Time-dependent: half on the spatial faces at random times, half at t = lo.
    FacesAndInitial,
    /// Time-dependent: only initial points (t = lo).
    Initial,
}

/// Interior residual of a linear second-order PDE of the form
/// `a_t·u_t − b·L_C u − f(x) = 0` where `L_C u` is the jet's operator term: Poisson is
/// `b = 1` without time (`−L_C u = f`), heat `a_t = 1`, `b = κ` (`u_t − κ L_C u = f`). The
/// one convention for built-in and custom problems (`tests/custom.rs` checks both).
pub(crate) struct LinearResidual {
    /// Coefficient `a_t` of u_t (the jet's first direction), if any.
    pub(crate) time: Option<f64>,
    /// Coefficient `b` of the operator term, entering with a minus sign.
    pub(crate) op_coef: f64,
    /// Number of jet directions (the operator row is `1 + k`).
    pub(crate) k: usize,
    pub(crate) f: ScalarFn,
}

impl Residual for LinearResidual {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let lap = y[1 + self.k];
        let mut v = -self.op_coef * lap - (self.f)(x);
        if let Some(a) = self.time {
            v += a * y[1];
        }
        r[0] = v;
        if let Some(j) = jac {
            j.fill(0.0);
            j[1 + self.k] = -self.op_coef;
            if let Some(a) = self.time {
                j[1] = a;
            }
        }
    }
    /// Reads `u`, the operator row and (time-dependent) `u_t`: the time axis is kept
    /// exact, the operator may be drawn.
    fn sampled(&self, drawn: usize) -> Option<(usize, Arc<dyn Residual>)> {
        let lead = usize::from(self.time.is_some());
        Some((
            lead,
            Arc::new(LinearResidual {
                time: self.time,
                op_coef: self.op_coef,
                k: lead + drawn,
                f: self.f.clone(),
            }),
        ))
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        a[1 + self.k] = -self.op_coef;
        if let Some(t) = self.time {
            a[1] = t;
        }
        Some(-(self.f)(x))
    }
}

/// log-Fokker–Planck residual for drift −x/2 and diffusion √2·I in `d` space
/// dimensions: `q_t − d/2 − ½ x·∇q − ‖∇q‖² − Δq`. The jet carries `2Δq` (operator
/// σσᵀ = 2I on the spatial coordinates), as the paper's code does.
struct LogFokkerPlanckResidual {
    d: usize,
}

impl Residual for LogFokkerPlanckResidual {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let d = self.d;
        let (qt, gq, lap2) = (y[1], &y[2..2 + d], y[2 + d]);
        let xs = &x[1..];
        let mut v = qt - 0.5 * d as f64 - 0.5 * lap2;
        for i in 0..d {
            v -= 0.5 * xs[i] * gq[i] + gq[i] * gq[i];
        }
        r[0] = v;
        if let Some(j) = jac {
            j.fill(0.0);
            j[1] = 1.0;
            for i in 0..d {
                j[2 + i] = -0.5 * xs[i] - 2.0 * gq[i];
            }
            j[2 + d] = -0.5;
        }
    }
    fn is_linear(&self) -> bool {
        false
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], b: &mut [f64]) -> Option<f64> {
        let d = self.d;
        a[1] = 1.0;
        for i in 0..d {
            a[2 + i] = -0.5 * x[1 + i];
            b[2 + i] = -1.0;
        }
        a[2 + d] = -0.5;
        Some(-0.5 * d as f64)
    }
}

/// Dirichlet/initial data `u − g(x)`.
pub(crate) struct DataResidual {
    pub(crate) g: ScalarFn,
}

impl Residual for DataResidual {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        r[0] = y[0] - (self.g)(x);
        if let Some(j) = jac {
            j[0] = 1.0;
        }
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        a[0] = 1.0;
        Some(-(self.g)(x))
    }
}

/// A PDE on a box with Dirichlet or initial data taken from a known solution.
pub struct BoxProblem {
    name: String,
    summary: String,
    lo: Vec<f64>,
    hi: Vec<f64>,
    boundary: Boundary,
    op: Operator,
    interior: Arc<dyn Residual>,
    data: Arc<dyn Residual>,
    exact: Option<ScalarFn>,
    setup: Setup,
}

impl BoxProblem {
    /// A problem from its parts; `lo`/`hi` bound the box (time first if time-dependent).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        summary: impl Into<String>,
        lo: Vec<f64>,
        hi: Vec<f64>,
        boundary: Boundary,
        op: Operator,
        interior: Arc<dyn Residual>,
        data: Arc<dyn Residual>,
        exact: Option<ScalarFn>,
        setup: Setup,
    ) -> Result<Self> {
        super::system::check_box(&lo, &hi)?;
        if op.dim() != lo.len() {
            return Err(Error::Shape(format!(
                "operator dimension {} but the box has {}",
                op.dim(),
                lo.len()
            )));
        }
        if boundary != Boundary::Faces && lo.len() < 2 {
            return Err(Error::Shape(
                "a time-dependent problem needs at least one space dimension".into(),
            ));
        }
        Ok(BoxProblem {
            name: name.into(),
            summary: summary.into(),
            lo,
            hi,
            boundary,
            op,
            interior,
            data,
            exact,
            setup,
        })
    }

    fn uniform(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = rng.random_range(self.lo[i]..self.hi[i]);
        }
    }

    /// Uniform point on a random face among coordinates `first..dim`.
    fn on_face(&self, rng: &mut ChaCha8Rng, first: usize, out: &mut [f64]) {
        self.uniform(rng, out);
        let c = rng.random_range(first..out.len());
        out[c] = if rng.random_bool(0.5) {
            self.hi[c]
        } else {
            self.lo[c]
        };
    }
}

impl Problem for BoxProblem {
    fn name(&self) -> &str {
        &self.name
    }
    fn summary(&self) -> String {
        self.summary.clone()
    }
    fn dim(&self) -> usize {
        self.lo.len()
    }
    fn bounds(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        Some((self.lo.clone(), self.hi.clone()))
    }
    fn terms(&self) -> Vec<TermSpec> {
        vec![
            TermSpec {
                name: "interior".into(),
                kind: JetKind::Full(self.op.clone()),
                residual: self.interior.clone(),
                weight: 1.0,
            },
            TermSpec {
                name: match self.boundary {
                    Boundary::Faces => "boundary",
                    Boundary::FacesAndInitial => "boundary+initial",
                    Boundary::Initial => "initial",
                }
                .into(),
                kind: JetKind::Value,
                residual: self.data.clone(),
                weight: 1.0,
            },
        ]
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let d = self.dim();
        let mut x = vec![0.0; n * d];
        match term {
            0 => x.chunks_mut(d).for_each(|p| self.uniform(rng, p)),
            1 => match self.boundary {
                Boundary::Faces => x.chunks_mut(d).for_each(|p| self.on_face(rng, 0, p)),
                Boundary::FacesAndInitial => {
                    let faces = n / 2;
                    for (i, p) in x.chunks_mut(d).enumerate() {
                        if i < faces {
                            self.on_face(rng, 1, p);
                        } else {
                            self.uniform(rng, p);
                            p[0] = self.lo[0];
                        }
                    }
                }
                Boundary::Initial => x.chunks_mut(d).for_each(|p| {
                    self.uniform(rng, p);
                    p[0] = self.lo[0];
                }),
            },
            _ => return Err(Error::invalid("term", term, "0 (interior) or 1 (boundary)")),
        }
        Ok(x)
    }
    fn sample_kind(
        &self,
        term: usize,
        n: usize,
        kind: PointKind,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        if kind == PointKind::Uniform || term > 1 {
            return self.sample(term, n, rng);
        }
        let d = self.dim();
        let mut x = vec![0.0; n * d];
        let (lo, hi) = (&self.lo, &self.hi);
        // the faces of coordinates `first..d`, each equally likely (as `on_face`)
        let faces = |first: usize| -> (Vec<Face>, Vec<f64>) {
            let fs: Vec<Face> = (first..d)
                .flat_map(|c| [Face::lower(c), Face::upper(c)])
                .collect();
            let w = vec![1.0; fs.len()];
            (fs, w)
        };
        let map = |rng: &mut ChaCha8Rng, x: &mut [f64], f: Option<usize>, init: bool| {
            let u = unit_points(kind, x.len() / d, d, rng)?;
            let fw = f.map(faces);
            let fw = fw.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice()));
            map_unit(&u, lo, hi, fw, init, x);
            Ok::<(), Error>(())
        };
        match (term, self.boundary) {
            (0, _) => map(rng, &mut x, None, false)?,
            (_, Boundary::Faces) => map(rng, &mut x, Some(0), false)?,
            (_, Boundary::Initial) => map(rng, &mut x, None, true)?,
            (_, Boundary::FacesAndInitial) => {
                let (a, b) = x.split_at_mut((n / 2) * d);
                map(rng, a, Some(1), false)?;
                map(rng, b, None, true)?;
            }
        }
        Ok(x)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        match &self.exact {
            Some(f) => {
                out[0] = f(x);
                true
            }
            None => false,
        }
    }
    fn setup(&self) -> Setup {
        self.setup.clone()
    }
}

fn setup(widths: &[usize], n_int: usize, n_bnd: usize, resample: usize, budget: f64) -> Setup {
    Setup {
        widths: widths.to_vec(),
        points: vec![n_int, n_bnd],
        resample,
        eval_points: 10 * n_int,
        budget_seconds: budget,
    }
}

fn f(g: impl Fn(&[f64]) -> f64 + Send + Sync + 'static) -> ScalarFn {
    Arc::new(g)
}

fn poisson(
    name: &str,
    summary: &str,
    d: usize,
    u: ScalarFn,
    rhs: ScalarFn,
    s: Setup,
) -> BoxProblem {
    BoxProblem::new(
        name,
        summary,
        vec![0.0; d],
        vec![1.0; d],
        Boundary::Faces,
        Operator::laplacian(d),
        Arc::new(LinearResidual {
            time: None,
            op_coef: 1.0,
            k: d,
            f: rhs,
        }),
        Arc::new(DataResidual { g: u.clone() }),
        Some(u),
        s,
    )
    .expect("built-in problem is valid")
}

fn heat(name: &str, summary: &str, d: usize, u: ScalarFn, s: Setup) -> BoxProblem {
    let mut c = vec![1.0; d + 1];
    c[0] = 0.0;
    BoxProblem::new(
        name,
        summary,
        vec![0.0; d + 1],
        vec![1.0; d + 1],
        Boundary::FacesAndInitial,
        Operator::weighted(c).expect("finite"),
        Arc::new(LinearResidual {
            time: Some(1.0),
            op_coef: 0.25,
            k: d + 1,
            f: f(|_| 0.0),
        }),
        Arc::new(DataResidual { g: u.clone() }),
        Some(u),
        s,
    )
    .expect("built-in problem is valid")
}

/// Names of the built-in problems.
pub fn builtin_names() -> &'static [&'static str] {
    &[
        "poisson2d",
        "poisson5d",
        "poisson10d",
        "poisson100d",
        "heat1d",
        "heat4d",
        "log-fokker-planck9d",
    ]
}

/// A built-in problem by name.
pub fn builtin(name: &str) -> Result<Arc<dyn Problem>> {
    Ok(Arc::new(match name {
        "poisson2d" => poisson(
            name,
            "-Δu = 2π² sin(πx) sin(πy) on [0,1]², u = 0 on ∂Ω; u = sin(πx) sin(πy)",
            2,
            f(|x| (PI * x[0]).sin() * (PI * x[1]).sin()),
            f(|x| 2.0 * PI * PI * (PI * x[0]).sin() * (PI * x[1]).sin()),
            setup(&[2, 64, 1], 900, 120, 0, 1000.0),
        ),
        "poisson5d" => poisson(
            name,
            "-Δu = π² Σ cos(πx_i) on [0,1]⁵, Dirichlet data from u = Σ cos(πx_i)",
            5,
            f(|x| x.iter().map(|v| (PI * v).cos()).sum()),
            f(|x| PI * PI * x.iter().map(|v| (PI * v).cos()).sum::<f64>()),
            setup(&[5, 64, 1], 3000, 500, 100, 3000.0),
        ),
        "poisson10d" => poisson(
            name,
            "-Δu = 0 on [0,1]¹⁰, u = Σ_k x_{2k-1} x_{2k} / 1.34 (unit L2 norm, as in the paper's code)",
            10,
            f(|x| x.chunks(2).map(|p| p[0] * p[1]).sum::<f64>() / 1.34),
            f(|_| 0.0),
            setup(&[10, 256, 256, 128, 128, 1], 3000, 1000, 100, 6000.0),
        ),
        "poisson100d" => poisson(
            name,
            "-Δu = -200/33.47 on [0,1]¹⁰⁰, u = ‖x‖²/33.47 (unit L2 norm, as in the paper's code)",
            100,
            f(|x| x.iter().map(|v| v * v).sum::<f64>() / 33.47),
            f(|_| -200.0 / 33.47),
            setup(&[100, 768, 768, 512, 512, 1], 500, 2000, 10, 10000.0),
        ),
        "heat1d" => heat(
            name,
            "u_t - ¼u_xx = 0 on (t,x) ∈ [0,1]², u = e^{-π²t/4} sin(πx)",
            1,
            f(|x| (-PI * PI * x[0] / 4.0).exp() * (PI * x[1]).sin()),
            setup(&[2, 64, 1], 900, 120, 0, 1000.0),
        ),
        "heat4d" => heat(
            name,
            "u_t - ¼Δu = 0 on (t,x) ∈ [0,1]×[0,1]⁴, u = e^{-t} Σ sin(2x_i)",
            4,
            f(|x| (-x[0]).exp() * x[1..].iter().map(|v| (2.0 * v).sin()).sum::<f64>()),
            setup(&[5, 64, 64, 48, 48, 1], 3000, 500, 100, 3000.0),
        ),
        "log-fokker-planck9d" => {
            let d = 9;
            let q = f(move |x: &[f64]| {
                let v = 2.0 - (-x[0]).exp();
                let r2: f64 = x[1..].iter().map(|v| v * v).sum();
                -(d as f64) / 2.0 * (2.0 * PI * v).ln() - r2 / (2.0 * v)
            });
            let mut c = vec![2.0; d + 1];
            c[0] = 0.0;
            let mut lo = vec![-5.0; d + 1];
            let mut hi = vec![5.0; d + 1];
            lo[0] = 0.0;
            hi[0] = 1.0;
            BoxProblem::new(
                name,
                "q_t - d/2 - ½x·∇q - ‖∇q‖² - Δq = 0 (log-density of p_t = ∇·(xp/2) + Δp), t ∈ [0,1], x ∈ [-5,5]⁹; q = log N(0, (2 - e^{-t}) I)",
                lo,
                hi,
                Boundary::Initial,
                Operator::weighted(c).expect("finite"),
                Arc::new(LogFokkerPlanckResidual { d }),
                Arc::new(DataResidual { g: q.clone() }),
                Some(q),
                setup(&[10, 256, 256, 128, 128, 1], 3000, 1000, 10, 6000.0),
            )?
        }
        _ => return Err(Error::unknown("problem", name, builtin_names())),
    }))
}

//! Problems: least-squares terms (interior PDE residual, boundary/initial data), their
//! samplers, exact solutions and reference setups (design §4, docs/paper-setups.md).
//!
//! A [`Residual`] maps the output jet of one sample to residual values and their
//! Gauss–Newton seeds (the Jacobian of the residual with respect to the output jet).
//! Inverse problems (design §7) declare unknown scalar coefficients
//! ([`Problem::coefficients`]); residuals that read them say so ([`Residual::n_coef`]) and
//! give their partial derivatives ([`Residual::eval_coef`]). Every other residual keeps
//! the defaults and is untouched.
//!
//! Checked by `tests/problems.rs`: every problem's exact solution, pushed through its own
//! residual with exact derivatives, gives residuals ≈ 0 on its own sampler's points;
//! `tests/inverse.rs`: `∂r/∂coef` against finite differences.

mod book;
pub mod burgers;
pub mod custom;
mod flows;
pub mod hard;
pub mod highdim;
mod inverse;
pub mod observe;
mod problems;
mod shapes;
pub mod system;

pub use problems::{builtin, builtin_names, Boundary, BoxProblem};

/// Names of the built-in systems and boundary-condition problems (Navier–Stokes, Stokes,
/// wave, mixed boundary conditions, problems on shapes, Burgers).
pub fn system_names() -> Vec<&'static str> {
    flows::NAMES
        .iter()
        .chain(shapes::NAMES)
        .chain(burgers::NAMES)
        .copied()
        .collect()
}

/// The problems with exact (hard) Dirichlet conditions: `NAME-hard` is `NAME` with
/// `u = g + φN` (`train --hard-bc` on `NAME`).
pub fn hard_names() -> Vec<&'static str> {
    shapes::HARD_NAMES.to_vec()
}

/// A built-in system by name (see [`system_names`]).
pub fn system(name: &str) -> Result<system::BoxSystem> {
    flows::build(name)
        .or_else(|| shapes::build(name))
        .or_else(|| burgers::build(name))
        .unwrap_or_else(|| Err(crate::Error::unknown("system", name, &system_names())))
}

/// The terms of a problem for a run with the operator estimator `est`: unchanged for
/// `exact`; for `random:K` every term with one second-order operator gets a
/// [`RandomOperator`] (returned with the term's index; the terms hold its first, all-zero
/// draw until the caller draws) and the residual for its jet. Value terms stay as they
/// are. Refused, naming the term: operator sets, residuals that read the gradient
/// ([`Residual::sampled`]), operators the estimator cannot draw for, and a problem
/// without any operator term.
#[allow(clippy::type_complexity)]
pub fn randomize_terms(
    mut terms: Vec<TermSpec>,
    est: Estimator,
) -> Result<(Vec<TermSpec>, Vec<(usize, RandomOperator)>)> {
    let Estimator::Random { k, dist } = est else {
        return Ok((terms, vec![]));
    };
    let mut ops = vec![];
    for (t, spec) in terms.iter_mut().enumerate() {
        let refuse = |why: &str| {
            crate::Error::invalid(
                "laplacian",
                est,
                format!("`exact` for term `{}`: {why}", spec.name),
            )
        };
        match &spec.kind {
            JetKind::Value => {}
            JetKind::Set(_) => {
                return Err(refuse(
                    "it carries a set of operators on shared directions (the randomized \
                     estimator supports one operator per term)",
                ))
            }
            JetKind::Full(op) => {
                let Some((lead, residual)) = spec.residual.sampled(k) else {
                    return Err(refuse(
                        "its residual reads the gradient or other exact directions (the \
                         randomized estimator supports residuals of u, the operator term \
                         and u_t)",
                    ));
                };
                let ro = RandomOperator::new(op, lead, k, dist).map_err(|e| {
                    crate::Error::invalid(
                        "laplacian",
                        est,
                        format!("`exact` for term `{}`: {e}", spec.name),
                    )
                })?;
                spec.kind = JetKind::Full(ro.operator().clone());
                spec.residual = residual;
                ops.push((t, ro));
            }
        }
    }
    if ops.is_empty() {
        return Err(crate::Error::invalid(
            "laplacian",
            est,
            "`exact`: the problem has no term with a second-order operator to estimate",
        ));
    }
    Ok((terms, ops))
}

/// Options that parameterise some problems (e.g. the HIG toy's λ).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemOptions {
    /// Scale of the second output in the `toy-regression` loss.
    pub lambda: Option<f64>,
}

/// Every problem name the CLI accepts.
pub fn problem_names() -> Vec<&'static str> {
    let mut v = builtin_names().to_vec();
    v.extend_from_slice(flows::NAMES);
    v.extend_from_slice(shapes::NAMES);
    v.extend_from_slice(shapes::HARD_NAMES);
    v.extend_from_slice(burgers::NAMES);
    v.extend_from_slice(book::NAMES);
    v.extend_from_slice(inverse::NAMES);
    v.extend_from_slice(highdim::NAMES);
    v
}

/// A problem by name: the paper's PDEs and the HIG book's examples.
pub fn problem(name: &str, opts: &ProblemOptions) -> Result<Arc<dyn Problem>> {
    if let Some(p) = book::build(name, opts) {
        return p;
    }
    if let Some(l) = opts.lambda {
        return Err(crate::Error::invalid(
            "lambda",
            l,
            format!("unset for problem `{name}` (only toy-regression uses it)"),
        ));
    }
    if let Some(p) = flows::build(name)
        .or_else(|| shapes::build(name))
        .or_else(|| burgers::build(name))
    {
        return Ok(Arc::new(p?));
    }
    if let Some(p) = inverse::build(name) {
        return p;
    }
    if let Some(p) = highdim::build(name) {
        return Ok(Arc::new(p?));
    }
    builtin(name).map_err(|_| crate::Error::unknown("problem", name, &problem_names()))
}

use crate::error::Result;
use crate::geometry::PointKind;
use crate::jet::{Estimator, JetKind, RandomOperator};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// Residuals of one least-squares term, per sample.
///
/// `y` is the sample's output jet, `S·m` values laid out as `[u (m), ∂_1 u (m), …,
/// ∂_K u (m), Δ_C u (m)]` (only `u` for value-only terms). `r` receives `n_res()`
/// residuals; `jac`, when given, receives `∂r/∂y` as `n_res() × (S·m)`, row-major.
pub trait Residual: Send + Sync {
    fn n_res(&self) -> usize {
        1
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>);
    /// True if the residual is affine in `y` (linear PDE): the Gauss–Newton model is
    /// then exact.
    fn is_linear(&self) -> bool {
        true
    }
    /// The residual (one component) as a quadratic form of the output jet,
    /// `r = d(x) + Σ_c (a_c(x) + b_c·y_c)·y_c` over the `S·m` entries `c` of `y`: fills `a`
    /// and `b` (zeroed by the caller; `b` must not depend on `x`) and returns `d(x)`, or
    /// None if the residual has no such form. With it, backends compute residuals and
    /// Gauss–Newton seeds where the output jet lives ([`crate::backend::QuadForm`]),
    /// without a round trip to the host. Checked against [`Residual::eval`] in
    /// tests/problems.rs.
    fn quad_form(&self, _x: &[f64], _a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        None
    }
    /// For a randomized operator estimator ([`crate::jet::RandomOperator`], design §9):
    /// how many leading coordinate directions this residual reads besides `u` and the
    /// operator row (kept exact with weight 0, e.g. 1 for `u_t`), and a copy of the
    /// residual for a jet of `k` directions (those axes, then the drawn ones). None (the
    /// default): the residual reads the gradient or otherwise needs the exact directions,
    /// and the randomized estimator is refused for it.
    fn sampled(&self, _drawn: usize) -> Option<(usize, Arc<dyn Residual>)> {
        None
    }
    /// How many of the problem's unknown coefficients ([`Problem::coefficients`]) this
    /// residual reads: 0 (the default) or all of them. A residual that reads them is
    /// evaluated through [`Residual::eval_coef`] on the host.
    fn n_coef(&self) -> usize {
        0
    }
    /// [`Residual::eval`] at the coefficient values `coef`; `dcoef`, when given, receives
    /// `∂r/∂coef` as `n_res() × n_coef()`, row-major. The default (no coefficients) is
    /// `eval`. A residual with coefficients evaluates `eval` at its reference values (the
    /// true ones where known), so that exact-solution checks hold.
    fn eval_coef(
        &self,
        x: &[f64],
        y: &[f64],
        _coef: &[f64],
        r: &mut [f64],
        jac: Option<&mut [f64]>,
        dcoef: Option<&mut [f64]>,
    ) {
        self.eval(x, y, r, jac);
        if let Some(d) = dcoef {
            d.fill(0.0);
        }
    }
}

/// An unknown scalar coefficient of an inverse problem, trained with the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Coefficient {
    pub name: String,
    /// The value training starts from.
    pub initial: f64,
    /// The true value, if known (reported as the recovery error).
    pub truth: Option<f64>,
}

/// One term of a least-squares loss `Σ_terms w/(2N) Σ_n ‖r_n‖²`.
#[derive(Clone)]
pub struct TermSpec {
    pub name: String,
    pub kind: JetKind,
    pub residual: Arc<dyn Residual>,
    /// Multiplies the term's mean (1 for every paper setup).
    pub weight: f64,
}

impl std::fmt::Debug for TermSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("weight", &self.weight)
            .finish()
    }
}

/// Reference values of single fields at points, from the literature.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceData {
    /// Where the values come from (a citation).
    pub source: String,
    /// Points, row-major (`dim()` columns).
    pub x: Vec<f64>,
    /// The field each value belongs to.
    pub field: Vec<usize>,
    pub value: Vec<f64>,
}

impl ReferenceData {
    pub fn len(&self) -> usize {
        self.value.len()
    }
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
    /// Largest `|u_field(x) − value|` over the points, given the network's outputs at
    /// them (`len() × m`, row-major).
    pub fn max_abs_error(&self, outputs: &[f64], m: usize) -> f64 {
        self.field
            .iter()
            .zip(&self.value)
            .enumerate()
            .map(|(i, (&f, v))| (outputs[i * m + f] - v).abs())
            .fold(0.0, f64::max)
    }
}

/// Reference setup of a problem: network and point counts (the paper's, design §4).
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    pub widths: Vec<usize>,
    /// Points per term (same order as [`Problem::terms`]).
    pub points: Vec<usize>,
    /// Resample the training points every this many steps (0 = fixed).
    pub resample: usize,
    pub eval_points: usize,
    /// The paper's wall-clock budget in seconds.
    pub budget_seconds: f64,
}

/// A problem: terms, samplers, and (optionally) the exact solution.
pub trait Problem: Send + Sync {
    fn name(&self) -> &str;
    /// One line: the equation, domain and solution.
    fn summary(&self) -> String;
    /// Network input dimension.
    fn dim(&self) -> usize;
    fn out_dim(&self) -> usize {
        1
    }
    /// Names of the outputs (`u` for one field, `u0, u1, …` when a problem does not name
    /// them).
    fn field_names(&self) -> Vec<String> {
        match self.out_dim() {
            1 => vec!["u".into()],
            m => (0..m).map(|i| format!("u{i}")).collect(),
        }
    }
    /// A named group of fields whose combined error is reported besides the error over
    /// all fields (the velocity of a flow, whose pressure is fixed only up to data).
    fn error_group(&self) -> Option<(String, Vec<usize>)> {
        None
    }
    /// The box the problem lives on (`lo`, `hi`), if it is one.
    fn bounds(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        None
    }
    /// The domain as a shape (masks in plots, cells of exports): a box problem's box by
    /// default, None for problems without a domain (regression).
    fn shape(&self) -> Option<crate::geometry::ShapeRef> {
        let (lo, hi) = self.bounds()?;
        let b = crate::geometry::BoxShape::new(lo, hi).ok()?;
        Some(Arc::new(b))
    }
    /// The terms that hold the equations in the interior (their residuals are what
    /// `export` writes): the first term by default.
    fn interior_terms(&self) -> Vec<usize> {
        vec![0]
    }
    /// Published reference values at points, for problems without a closed-form
    /// solution (the lid-driven cavity's centre-line velocities).
    fn reference_data(&self) -> Option<ReferenceData> {
        None
    }
    fn terms(&self) -> Vec<TermSpec>;
    /// `n` points (row-major, `dim()` columns) for term `term`.
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>>;
    /// `n` points for term `term` drawn as `kind` (quasi-random kinds map unit-cube
    /// points onto the term's region, [`crate::geometry::qmc`]); the default draws
    /// uniform points only.
    fn sample_kind(
        &self,
        term: usize,
        n: usize,
        kind: PointKind,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        match kind {
            PointKind::Uniform => self.sample(term, n, rng),
            k => Err(crate::Error::invalid(
                "points",
                k.as_str(),
                format!("uniform (problem `{}` draws its own points)", self.name()),
            )),
        }
    }
    /// Points for measuring the error (default: like the first term's).
    fn sample_eval(&self, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        self.sample(0, n, rng)
    }
    /// The exact solution at `x` (`out_dim()` values), if known.
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool;
    fn setup(&self) -> Setup;
    /// Unknown scalar coefficients, trained with the network (design §7); none by default.
    fn coefficients(&self) -> Vec<Coefficient> {
        vec![]
    }
    /// Exact conditions `u = g + φN` (issue 19): the network's outputs are `N`, and
    /// every error is measured on `u` ([`hard::HardBc::apply`]). None by default.
    fn hard_bc(&self) -> Option<Arc<hard::HardBc>> {
        None
    }
    /// The terms that are observations of the solution (data inside the domain): without
    /// one, an unknown coefficient is not determined and the run warns.
    fn observation_terms(&self) -> Vec<usize> {
        vec![]
    }
}

//! Custom problems defined in a run config, without recompiling: a PDE on a box with
//! Dirichlet (and, for time-dependent problems, initial) data, all given as expressions;
//! or, with `pde = "system"`, several named fields with one equation each and conditions
//! per face (Dirichlet, Neumann, Robin, initial value and rate): its keys are documented
//! in `system/mod.rs` (and docs/usage.md), the rest of this page is the scalar pdes'.
//!
//! # The `[custom]` table
//!
//! All keys (not all apply to every `pde`; a key the chosen `pde` does not use is an
//! error; `examples/custom-poisson.toml` is a complete run config):
//!
//! ```toml
//! [custom]
//! name = "my-poisson"            # optional, default "custom"
//! dim = 2                        # input dimension, time included when `time = true`
//! domain = [[0, 1], [0, 1]]      # optional, default [0, 1] in every coordinate
//! time = false                   # optional; true: x0 is the time t
//! pde = "poisson"                # "poisson", "heat" or "general"
//! coefficients = [[1.0, 0.5], [0.5, 1.0]]   # optional matrix C (poisson, general)
//! solution = "sin(pi*x0)*sin(pi*x1)"        # optional exact solution u*(x)
//! rhs = "..."                    # poisson/heat: source f(x); derived from `solution` if absent
//! boundary = "0"                 # data g(x); the solution if absent
//! residual = "..."               # general only: F(x, u, ∇u, lap)
//! kappa = 0.25                   # heat only: diffusivity
//! data-on = "faces"              # optional: where the data term's points lie
//! widths = [2, 64, 1]            # optional network, default [dim, 64, 1]
//! points = [900, 120]            # optional: interior and data points (this default)
//! resample = 0                   # optional: resample every this many steps (0 = fixed)
//! eval-points = 9000             # optional: points for the L2 error (default 10 × interior)
//! ```
//!
//! The equations (`x = (x0, …, x{dim-1})`, `u` the network's output):
//! - `pde = "poisson"` (`time = false`): `−∇·(C∇u) = −Σ_ij C_ij ∂_ij u = f` with a constant
//!   symmetric `C` (`coefficients`, default the identity: `−Δu = f`).
//! - `pde = "heat"` (`time = true`): `u_t − κ Δ_x u = f`, Δ_x over x1…x{dim-1}, κ = `kappa`
//!   (required, > 0).
//! - `pde = "general"`: `F(x, u, ∇u, lap) = 0` with `F` the expression `residual`; `lap` is
//!   `Σ_ij C_ij ∂_ij u` with `C` = `coefficients` (default: the identity, or for `time = true`
//!   the identity on the space coordinates and 0 on t, i.e. the spatial Laplacian).
//!   Nonlinear `F` are fine: the Gauss–Newton seeds `∂F/∂u`, `∂F/∂(∂_i u)`, `∂F/∂lap` are
//!   symbolic derivatives of `F`. `rhs` is not used (put the source into `F`).
//!
//! Every problem has a data term `u − g = 0` on points chosen by `data-on`: `"faces"` (the
//! box's faces; the only choice for `time = false`), `"faces-and-initial"` (default for
//! `time = true`: half on the spatial faces at random times, half at t = t_min) or
//! `"initial"` (only t = t_min).
//!
//! Manufactured solutions: give `solution` and leave out `rhs` and/or `boundary`; `f` is
//! then derived by symbolic differentiation (`−Σ C_ij ∂_ij u*` for poisson,
//! `∂_t u* − κ Δ_x u*` for heat) and `g = u*`. With `solution` the L2 error is reported.
//!
//! # Expressions
//!
//! Variables: `x0, x1, …, x{dim-1}`; with `time = true` also `t` (the same as `x0`). In
//! `residual` also `u`, the first derivatives `u_x0, …, u_x{dim-1}` (`u_t` = `u_x0` when
//! `time = true`) and `lap`. One expression may use `t` or `x0`, not both (the same for
//! `u_t`/`u_x0`). Constants: `pi` (also `PI`, `π`), `E`/`e`, `TAU`. Numbers: `2`, `0.5`,
//! `.5`, `1e-3`, `2.5E+2`. Operators `+ - * / ^`; functions `sin cos tan asin acos atan
//! sinh cosh tanh asinh acosh atanh exp ln log (= ln) log2 log10 sqrt cbrt abs signum
//! floor ceil round trunc fract`, and the binary `atan2(a, b) min(a, b) max(a, b)`.
//! Only `+ - * / ^ exp ln log log2 log10 sqrt` and the trigonometric and hyperbolic
//! functions can be differentiated: a `solution` with `abs`, `min`, … needs an explicit
//! `rhs`, and a `residual` must be differentiable in `u`, `u_x*` and `lap`.
//!
//! One trap of the expression syntax (the `exmex` crate): unary minus binds tighter than
//! `^`, so `-x0^2` would mean `(-x0)^2`. Such expressions are rejected; write `-(x0^2)`
//! or `0 - x0^2`. Functions bind tighter than `^` too: `sin(x0)^2` is `(sin x0)^2`.
//!
//! # Errors and checks
//!
//! Unknown keys, expressions that do not parse, unknown variables or functions, shape
//! mismatches (`domain` vs `dim`, `coefficients` not `dim × dim` or not symmetric,
//! `widths`), keys that the chosen `pde` does not use, missing `rhs`/`boundary` without a
//! `solution`: all are errors naming the key. `rhs`, `boundary` and `solution` are checked
//! to be finite at every sampled point (the error names the point); a nonlinear
//! `residual` can only be checked during training (a non-finite loss ends the run).
//!
//! Expressions are parsed and differentiated once, at construction, then evaluated per
//! sample on the host. Checked by `tests/custom.rs`: derived sources against finite
//! differences of the solution (poisson with a non-diagonal C, heat), exact solutions
//! make both residuals ≈ 0 on the sampler's points, the general form reproduces the
//! built-in log-Fokker–Planck and Poisson residuals and seeds, a manufactured problem
//! trains to a small L2 error, and every error case names its key. Systems: see
//! `system/mod.rs` and `tests/custom_systems.rs`.

mod expr;
mod system;

pub use self::system::{
    ConditionKind, ConditionSpec, CustomSystem, ErrorGroupSpec, Exprs, ObservationSpec, Places,
};

use self::expr::*;
use super::problems::{DataResidual, LinearResidual};
use super::{Boundary, BoxProblem, Problem, Residual, Setup, TermSpec};
use crate::error::{check, Error, Result};
use crate::jet::Operator;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which equation a custom problem solves (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PdeKind {
    /// `−∇·(C∇u) = f`, constant symmetric C.
    Poisson,
    /// `u_t − κ Δ_x u = f`.
    Heat,
    /// `F(x, u, ∇u, lap) = 0`.
    General,
    /// Several named fields, equations and conditions per face (`system.rs`).
    System,
}

/// Where the data term's points lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataOn {
    Faces,
    FacesAndInitial,
    Initial,
}

/// The `[custom]` table of a run config (keys in kebab-case; see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CustomSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Vec<[f64; 2]>>,
    #[serde(default)]
    pub time: bool,
    pub pde: PdeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coefficients: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kappa: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rhs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<String>,
    /// One expression (scalar pdes, or a system with one field) or one per field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<Exprs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_on: Option<DataOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resample: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_points: Option<usize>,
    // ---- pde = "system" only (system.rs) ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equations: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<std::collections::BTreeMap<String, String>>,
    /// Named second-order operators `op(name, u)` = `Σ_ij C_ij ∂_ij u`: a symmetric
    /// `dim × dim` matrix per name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operators: Option<std::collections::BTreeMap<String, Vec<Vec<f64>>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_sources: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interior_points: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_faces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_group: Option<ErrorGroupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ConditionSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<Vec<ObservationSpec>>,
}

impl CustomSpec {
    /// Make the relative file paths of the spec (observations) relative to `dir` (the
    /// config file's directory), so that a saved run config finds them from anywhere.
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        for o in self.observations.iter_mut().flatten() {
            if o.file.is_relative() {
                o.file = dir.join(&o.file);
            }
        }
    }

    /// Validate the spec, parse and differentiate its expressions, and build the problem.
    pub fn build(&self) -> Result<Arc<dyn Problem>> {
        Ok(match self.pde {
            PdeKind::System => Arc::new(CustomSystem::new(self)?),
            _ => Arc::new(CustomProblem::new(self)?),
        })
    }
}

/// Parse a spec from TOML text: either a document with a `[custom]` table (other
/// top-level keys, e.g. a run config's, are ignored here) or the table's body itself.
pub fn parse_spec(text: &str) -> Result<CustomSpec> {
    #[derive(Deserialize)]
    struct Doc {
        custom: Option<CustomSpec>,
    }
    let err = |e: toml::de::Error| Error::Format {
        path: "`custom`".into(),
        msg: e.to_string().trim_end().to_string(),
    };
    match toml::from_str::<Doc>(text).map_err(err)? {
        Doc { custom: Some(s) } => Ok(s),
        Doc { custom: None } => toml::from_str::<CustomSpec>(text).map_err(err),
    }
}

/// Deserialize a spec from a TOML value (the `[custom]` table) and build its problem.
pub fn from_toml_table(value: &toml::Value) -> Result<Arc<dyn Problem>> {
    let spec: CustomSpec =
        value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| Error::Format {
                path: "`custom`".into(),
                msg: e.to_string().trim_end().to_string(),
            })?;
    spec.build()
}

// ---------------------------------------------------------------------------------
// residuals

/// `F(x, u, ∇u, lap)` with seeds from its symbolic partial derivatives.
struct GeneralRes {
    f: Expr,
    /// (jet index, ∂F/∂y_index); jet entries F does not use have zero seeds.
    seeds: Vec<(usize, Expr)>,
}

impl Residual for GeneralRes {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        r[0] = self.f.eval(x, y);
        if let Some(j) = jac {
            j.fill(0.0);
            for (k, e) in &self.seeds {
                j[*k] = e.eval(x, y);
            }
        }
    }
    fn is_linear(&self) -> bool {
        // not analysed: the Gauss–Newton model is treated as approximate
        false
    }
}

// ---------------------------------------------------------------------------------
// the problem

/// A custom problem: a [`BoxProblem`] whose samplers also check that the expressions
/// are finite at every point they hand out.
pub struct CustomProblem {
    inner: BoxProblem,
    d: usize,
    /// Source term of poisson/heat (checked on interior points).
    rhs: Option<Arc<Combo>>,
    /// Data (checked on data points).
    data: Arc<Combo>,
    /// Exact solution (checked on evaluation points).
    exact: Option<Arc<Combo>>,
}

/// Error for a key the chosen `pde` does not use.
fn unused(key: &str, pde: PdeKind, hint: &str) -> Error {
    field_err(
        key,
        format!(
            "not used by pde = \"{}\"{hint}",
            match pde {
                PdeKind::Poisson => "poisson",
                PdeKind::Heat => "heat",
                PdeKind::General => "general",
                PdeKind::System => "system",
            }
        ),
    )
}

fn fmt_matrix(c: &[f64], d: usize) -> String {
    let rows: Vec<String> = c
        .chunks(d)
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

impl CustomProblem {
    /// Build a custom problem from its spec, stage by stage; every stage's error names
    /// the key it checks.
    pub fn new(spec: &CustomSpec) -> Result<Self> {
        let (name, d) = check_name_and_dim(spec)?;
        let (lo, hi) = domain(spec)?;
        let boundary = check_keys(spec)?;
        let c = coefficients(spec)?;
        let op = Operator::from_matrix(d, &c)?;
        let x_scope = Scope {
            d,
            time: spec.time,
            jet: false,
        };
        let solution = scalar_solution(spec)?
            .map(|s| Expr::parse("solution", s, x_scope))
            .transpose()?;
        let data = boundary_data(spec, solution.as_ref(), x_scope)?;
        let (interior, eq, rhs) = interior(spec, &c, solution.as_ref(), x_scope)?;
        let setup = setup(spec)?;
        let exact = solution.map(|u| {
            Arc::new(Combo {
                terms: vec![(1.0, u)],
                label: "`custom.solution`".into(),
            })
        });
        let exact_fn = exact.as_ref().map(combo_fn);
        let summary = summary(spec, &eq, &lo, &hi, rhs.is_some());
        let inner = BoxProblem::new(
            name,
            summary,
            lo,
            hi,
            boundary,
            op,
            interior,
            Arc::new(DataResidual { g: combo_fn(&data) }),
            exact_fn,
            setup,
        )?;
        Ok(CustomProblem {
            inner,
            d,
            rhs,
            data,
            exact,
        })
    }
}

/// `name` non-empty, `dim` ≥ 1 (≥ 2 with time).
fn check_name_and_dim(spec: &CustomSpec) -> Result<(String, usize)> {
    let d = spec.dim;
    let name = spec.name.clone().unwrap_or_else(|| "custom".into());
    if name.trim().is_empty() {
        return Err(Error::invalid("custom.name", "\"\"", "a non-empty name"));
    }
    check::at_least("custom.dim", d, 1)?;
    if spec.time {
        check::at_least("custom.dim", d, 2).map_err(|_| {
            Error::invalid(
                "custom.dim",
                d,
                "at least 2 with `time = true` (t and one space coordinate)",
            )
        })?;
    }
    Ok((name, d))
}

/// The box: `domain` intervals, or the unit cube.
fn domain(spec: &CustomSpec) -> Result<(Vec<f64>, Vec<f64>)> {
    let d = spec.dim;
    Ok(match &spec.domain {
        None => (vec![0.0; d], vec![1.0; d]),
        Some(dom) => {
            if dom.len() != d {
                return Err(Error::Shape(format!(
                    "`custom.domain` has {} intervals but `custom.dim` = {d}",
                    dom.len()
                )));
            }
            for (i, [a, b]) in dom.iter().enumerate() {
                if !(a.is_finite() && b.is_finite() && a < b) {
                    return Err(Error::invalid(
                        format!("custom.domain[{i}]"),
                        format!("[{a}, {b}]"),
                        "a finite interval [lower, upper] with lower < upper",
                    ));
                }
            }
            dom.iter().map(|[a, b]| (*a, *b)).unzip()
        }
    })
}

/// Keys the chosen equation does not use are errors; where the data term's points lie.
fn check_keys(spec: &CustomSpec) -> Result<Boundary> {
    let pde = spec.pde;
    match pde {
        PdeKind::Poisson if spec.time => return Err(Error::invalid(
            "custom.time",
            true,
            "false for pde = \"poisson\" (use \"heat\" or \"general\" for time-dependent problems)",
        )),
        PdeKind::Heat if !spec.time => {
            return Err(Error::invalid(
                "custom.time",
                false,
                "true for pde = \"heat\" (x0 is the time t)",
            ))
        }
        _ => {}
    }
    if pde != PdeKind::Heat && spec.kappa.is_some() {
        return Err(unused("kappa", pde, " (only by \"heat\")"));
    }
    if pde == PdeKind::Heat && spec.coefficients.is_some() {
        return Err(unused(
            "coefficients",
            pde,
            " (it uses `kappa`; write anisotropic diffusion as pde = \"general\")",
        ));
    }
    if pde == PdeKind::General && spec.rhs.is_some() {
        return Err(unused("rhs", pde, " (put the source term into `residual`)"));
    }
    if pde != PdeKind::General && spec.residual.is_some() {
        return Err(unused("residual", pde, " (only by \"general\")"));
    }
    let system_keys = [
        ("fields", spec.fields.is_some()),
        ("equations", spec.equations.is_some()),
        ("conditions", spec.conditions.is_some()),
        ("sources", spec.sources.is_some()),
        ("operators", spec.operators.is_some()),
        ("derive-sources", spec.derive_sources.is_some()),
        ("interior-points", spec.interior_points.is_some()),
        ("free-faces", spec.free_faces.is_some()),
        ("error-group", spec.error_group.is_some()),
        ("observations", spec.observations.is_some()),
    ];
    if let Some((key, _)) = system_keys.iter().find(|(_, set)| *set) {
        return Err(unused(key, pde, " (only by \"system\")"));
    }
    Ok(match (spec.data_on, spec.time) {
        (None | Some(DataOn::Faces), false) => Boundary::Faces,
        (Some(_), false) => {
            return Err(Error::invalid(
                "custom.data-on",
                match spec.data_on {
                    Some(DataOn::Initial) => "\"initial\"",
                    _ => "\"faces-and-initial\"",
                },
                "\"faces\" when `time = false`",
            ))
        }
        (None | Some(DataOn::FacesAndInitial), true) => Boundary::FacesAndInitial,
        (Some(DataOn::Faces), true) => Boundary::Faces,
        (Some(DataOn::Initial), true) => Boundary::Initial,
    })
}

/// The scalar pdes' `solution`: one expression (a table of fields is for systems).
fn scalar_solution(spec: &CustomSpec) -> Result<Option<&str>> {
    match &spec.solution {
        None => Ok(None),
        Some(Exprs::One(s)) => Ok(Some(s)),
        Some(Exprs::PerField(_)) => Err(field_err(
            "solution",
            "one expression u*(x) here: a table of fields is for pde = \"system\"",
        )),
    }
}

/// The operator's coefficient matrix C: `coefficients` (square, symmetric, finite), or the
/// (spatial) identity.
fn coefficients(spec: &CustomSpec) -> Result<Vec<f64>> {
    Ok(match &spec.coefficients {
        Some(rows) => sym_matrix("coefficients", rows, spec.dim)?,
        None => identity_like(spec.dim, spec.time),
    })
}

/// The `d × d` matrix of key `custom.{key}` (row-major): square, finite and symmetric.
fn sym_matrix(key: &str, rows: &[Vec<f64>], d: usize) -> Result<Vec<f64>> {
    if rows.len() != d || rows.iter().any(|r| r.len() != d) {
        return Err(Error::Shape(format!(
            "`custom.{key}` must be {d}x{d} (`custom.dim` = {d}); got rows of lengths {:?}",
            rows.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    for (i, row) in rows.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            let b = rows[j][i];
            check::finite(&format!("custom.{key}[{i}][{j}]"), a)?;
            if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                return Err(Error::invalid(
                    format!("custom.{key}[{i}][{j}]"),
                    a,
                    format!("equal to {key}[{j}][{i}] = {b} (C must be symmetric)"),
                ));
            }
        }
    }
    Ok(rows.concat())
}

/// An expression key as a one-term combination.
fn given(field: &str, text: &Option<String>, x_scope: Scope) -> Result<Option<Arc<Combo>>> {
    text.as_deref()
        .map(|s| Expr::parse(field, s, x_scope).map(|e| Arc::new(Combo::single(e))))
        .transpose()
}

/// The data g: `boundary`, or the solution.
fn boundary_data(spec: &CustomSpec, solution: Option<&Expr>, x_scope: Scope) -> Result<Arc<Combo>> {
    Ok(
        match (given("boundary", &spec.boundary, x_scope)?, solution) {
            (Some(g), _) => g,
            (None, Some(u)) => Arc::new(Combo {
                terms: vec![(1.0, u.clone())],
                label: "`custom.solution` (as boundary data)".into(),
            }),
            (None, None) => {
                return Err(field_err(
                    "boundary",
                    "missing: give `boundary` (the data g) or `solution` (g is then the solution)",
                ))
            }
        },
    )
}

/// The interior residual, its equation for the summary, and the source f (poisson, heat).
type Interior = (Arc<dyn Residual>, String, Option<Arc<Combo>>);

/// The interior residual, its equation for the summary, and the source f (given, or
/// derived from the solution) for poisson and heat.
fn interior(
    spec: &CustomSpec,
    c: &[f64],
    solution: Option<&Expr>,
    x_scope: Scope,
) -> Result<Interior> {
    let (d, pde) = (spec.dim, spec.pde);
    let kappa = match pde {
        PdeKind::Heat => Some(check::positive(
            "custom.kappa",
            spec.kappa.ok_or_else(|| {
                field_err(
                    "kappa",
                    "missing: pde = \"heat\" needs the diffusivity `kappa`",
                )
            })?,
        )?),
        _ => None,
    };
    Ok(match pde {
        PdeKind::Poisson | PdeKind::Heat => {
            let f = match (given("rhs", &spec.rhs, x_scope)?, solution) {
                (Some(f), _) => f,
                (None, Some(u)) => Arc::new(derive_rhs(u, c, d, kappa, x_scope)?),
                (None, None) => {
                    return Err(field_err(
                        "rhs",
                        "missing: give `rhs` (the source term f) or `solution` (f is then derived from it)",
                    ))
                }
            };
            // poisson: -lap - f; heat: u_t - κ·lap - f (LinearResidual's convention)
            let (time, op_coef, eq) = match kappa {
                Some(k) => (Some(1.0), k, format!("u_t - {k}·Δ_x u = f")),
                None if c == identity_like(d, false) => (None, 1.0, "-Δu = f".to_string()),
                None => (None, 1.0, format!("-∇·(C∇u) = f, C = {}", fmt_matrix(c, d))),
            };
            let res = LinearResidual {
                time,
                op_coef,
                k: d,
                f: combo_fn(&f),
            };
            (Arc::new(res), eq, Some(f))
        }
        PdeKind::System => {
            return Err(field_err(
                "pde",
                "\"system\" is built by `CustomSystem` (use `CustomSpec::build`)",
            ))
        }
        PdeKind::General => {
            let text = spec.residual.as_deref().ok_or_else(|| {
                field_err(
                    "residual",
                    "missing: pde = \"general\" needs the expression F(x, u, ∇u, lap) = 0",
                )
            })?;
            let scope = Scope {
                d,
                time: spec.time,
                jet: true,
            };
            let f = Expr::parse("residual", text, scope)?;
            let mut seeds = Vec::new();
            for k in 0..d + 2 {
                if let Some(e) = f.partial(&[Src::Y(k)], scope)? {
                    seeds.push((k, e));
                }
            }
            let eq = if c == identity_like(d, spec.time) {
                format!("{text} = 0")
            } else {
                format!("{text} = 0, lap = Σ C_ij ∂_ij u, C = {}", fmt_matrix(c, d))
            };
            (Arc::new(GeneralRes { f, seeds }), eq, None)
        }
    })
}

/// Network, point counts, evaluation points and resampling.
fn setup(spec: &CustomSpec) -> Result<Setup> {
    let d = spec.dim;
    let widths = spec.widths.clone().unwrap_or_else(|| vec![d, 64, 1]);
    if widths.len() < 2 || widths[0] != d || widths.last() != Some(&1) || widths.contains(&0) {
        return Err(Error::invalid(
            "custom.widths",
            format!("{widths:?}"),
            format!("a list of layer widths starting with `dim` = {d} and ending with 1, all > 0"),
        ));
    }
    let points = spec.points.clone().unwrap_or_else(|| vec![900, 120]);
    if points.len() != 2 || points.contains(&0) {
        return Err(Error::invalid(
            "custom.points",
            format!("{points:?}"),
            "two counts > 0: [interior, data]",
        ));
    }
    let eval_points = spec.eval_points.unwrap_or(10 * points[0]);
    check::at_least("custom.eval-points", eval_points, 1)?;
    Ok(Setup {
        widths,
        eval_points,
        points,
        resample: spec.resample.unwrap_or(0),
        budget_seconds: 1000.0,
    })
}

/// One line: the equation, the box, f, g and u as given.
fn summary(spec: &CustomSpec, eq: &str, lo: &[f64], hi: &[f64], has_rhs: bool) -> String {
    let domain = lo
        .iter()
        .zip(hi)
        .map(|(a, b)| format!("[{a}, {b}]"))
        .collect::<Vec<_>>()
        .join("×");
    let show = |key: &str, v: &Option<String>, fallback: &str| match v {
        Some(s) => format!("{key} = {s}"),
        None => format!("{key} {fallback}"),
    };
    let mut summary = format!("{eq} on {domain}");
    if has_rhs {
        summary += &format!("; {}", show("f", &spec.rhs, "derived from the solution"));
    }
    summary += &format!("; {}", show("g", &spec.boundary, "= the solution"));
    if let Some(Exprs::One(s)) = &spec.solution {
        summary += &format!("; u = {s}");
    }
    summary
}

/// The default operator matrix: identity, with 0 on t for time-dependent problems.
fn identity_like(d: usize, time: bool) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in usize::from(time)..d {
        c[i * d + i] = 1.0;
    }
    c
}

/// The source term of a manufactured solution `u`, by symbolic differentiation:
/// `−Σ_ij C_ij ∂_ij u` (poisson, `kappa = None`) or `∂_t u − κ Σ_{i≥1} ∂_ii u` (heat).
fn derive_rhs(u: &Expr, c: &[f64], d: usize, kappa: Option<f64>, scope: Scope) -> Result<Combo> {
    let mut terms = Vec::new();
    let mut add = |coef: f64, wrt: &[Src]| -> Result<()> {
        if coef != 0.0 {
            if let Some(e) = u.partial(wrt, scope)? {
                terms.push((coef, e));
            }
        }
        Ok(())
    };
    match kappa {
        None => {
            for i in 0..d {
                add(-c[i * d + i], &[Src::X(i), Src::X(i)])?;
                for j in i + 1..d {
                    add(-2.0 * c[i * d + j], &[Src::X(i), Src::X(j)])?;
                }
            }
        }
        Some(k) => {
            add(1.0, &[Src::X(0)])?;
            for i in 1..d {
                add(-k, &[Src::X(i), Src::X(i)])?;
            }
        }
    }
    Ok(Combo {
        terms,
        label: "`custom.rhs` (derived from `solution`)".into(),
    })
}

impl Problem for CustomProblem {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn summary(&self) -> String {
        self.inner.summary()
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn terms(&self) -> Vec<TermSpec> {
        self.inner.terms()
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        self.sample_kind(term, n, crate::geometry::PointKind::Uniform, rng)
    }
    fn sample_kind(
        &self,
        term: usize,
        n: usize,
        kind: crate::geometry::PointKind,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<f64>> {
        let x = self.inner.sample_kind(term, n, kind, rng)?;
        match term {
            0 => {
                if let Some(f) = &self.rhs {
                    f.check_finite(&x, self.d)?;
                }
            }
            _ => self.data.check_finite(&x, self.d)?,
        }
        Ok(x)
    }
    fn sample_eval(&self, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let x = self.inner.sample_eval(n, rng)?;
        if let Some(u) = &self.exact {
            u.check_finite(&x, self.d)?;
        }
        Ok(x)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        self.inner.exact(x, out)
    }
    fn setup(&self) -> Setup {
        self.inner.setup()
    }
}

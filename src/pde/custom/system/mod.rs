//! Custom systems (`pde = "system"` in the `[custom]` table): named fields, one expression
//! per equation, a condition per face (Dirichlet, Neumann, Robin, initial value, initial
//! rate, a pinned point), a manufactured solution per field; built into a [`BoxSystem`]
//! (design §6) whose samplers also check that every data expression is finite.
//!
//! # Syntax (see also docs/usage.md and `examples/custom-stokes.toml`)
//!
//! ```toml
//! [custom]
//! pde = "system"
//! dim = 2                               # time included when `time = true` (x0 = t)
//! domain = [[0, 1], [0, 1]]
//! fields = ["u", "v", "p"]              # the network's outputs, in this order
//! equations = ["-lap(u) + p_x0", "-lap(v) + p_x1", "u_x0 + v_x1"]   # each F_k = 0
//! solution = { u = "…", v = "…", p = "…" }   # optional, one expression per field
//! derive-sources = true                 # optional: F_k(x, y) − F_k(x, y*(x)) = 0
//! sources = { f = "…" }                 # optional: named functions of x for `equations`
//! coefficients = [[1, 0], [0, 1]]       # optional: the matrix C of `lap`
//! operators = { dxy = [[0, 0.5], [0.5, 0]] }   # optional: named C's, `op(dxy, u)`
//! interior-points = 2000                # optional (default 2000)
//! free-faces = ["x1=max"]               # optional: faces left without a condition
//! error-group = { name = "velocity", fields = ["u", "v"] }   # optional: also their error
//! widths = [2, 50, 50, 3]               # optional (default [dim, 50, 50, #fields])
//!
//! [[custom.conditions]]
//! on = "faces"          # "faces" | "x{i}=min" | "x{i}=max" | a list of faces | "initial" | "point"
//! kind = "dirichlet"    # dirichlet | neumann | robin | initial-rate
//! fields = ["u", "v"]   # default: every field (neumann/robin/initial-rate: exactly one)
//! value = "0"           # optional: one expression (every listed field) or { u = "…", … }
//! alpha = 1.0           # robin only: α u + β ∂u/∂n = g
//! beta = 1.0            # robin only
//! at = [0.5, 0.5]       # on = "point" only
//! points = 200          # optional (default 200; 8 for a point)
//! weight = 1.0          # optional
//! name = "walls"        # optional, for messages
//!
//! [[custom.observations]]   # optional: data at points (`pde::observe`)
//! file = "probes.csv"   # .csv (header x0…, fields, weight) or .npy; relative to the config
//! fields = ["u"]        # CSV: default every field with a column; .npy: required
//! points = 100          # optional (default all distinct points)
//! weight = 1.0          # optional
//! ```
//!
//! Variables of `equations`: `x0…` (and `t` = `x0` with `time = true`), every field by
//! name, its first derivatives `u_x0, u_x1, …` (`u_t` = `u_x0`), `lap(u)` = `Σ_ij C_ij
//! ∂_ij u` with `C` = `coefficients` (default the identity, or the spatial identity with
//! time), `op(name, u)` = `Σ_ij C_ij ∂_ij u` with `C` = `operators.name`, and the names in
//! `sources`. Data (`value`, `sources`, `solution`) use `x0…`/`t`. Field, source and
//! operator names are letters and digits starting with a letter, no `_` (it starts a
//! derivative), not `t`, `x0…`, `lap`, `op`, a constant or a function, and distinct.
//!
//! With `operators` the interior jet is an [`OperatorSet`] of `lap`'s C (row 0) and the
//! named matrices (rows 1…, in name order), its directions the D axes and `e_i + e_j` for
//! the pairs some matrix couples; without, one [`Operator`] for `lap` as before.
//!
//! Without `value` the data come from `solution` (symbolic derivatives where needed):
//! Dirichlet `u*`, Neumann `∂u*/∂n`, Robin `α u* + β ∂u*/∂n`, initial rate `∂_t u*`.
//! Every face of the box (the spatial faces with `time = true`) needs a condition or an
//! entry in `free-faces`, and a time-dependent system needs an `initial` one (or
//! `"initial"` in `free-faces`): a forgotten face is an error, not a silently free one.
//!
//! Checked by `tests/custom_systems.rs`: custom systems written as expressions reproduce
//! every built-in system's residuals and seeds (Kovasznay, Stokes with derived sources,
//! Taylor–Green, the wave equation, Poisson with mixed conditions, elasticity written with
//! `op(…)`: operator sets compared through the fields' values, gradients and Hessians,
//! whatever the order of their rows); each condition kind
//! and the equations against finite differences of a test function; data derived from a
//! manufactured solution make every term vanish; the custom Stokes system trains step for
//! step like the built-in one, a mixed-condition Poisson system to a small error; every
//! error case names its key.

mod conditions;
mod equations;

use self::conditions::{check_coverage, Built};
use self::equations::{check_ident, SysScope};
use super::expr::{field_err, Combo, Expr};
use super::{check_name_and_dim, coefficients, domain, fmt_matrix, sym_matrix, CustomSpec};
use crate::error::{check, Error, Result};
use crate::jet::{JetKind, Operator, OperatorSet};
use crate::pde::observe::{observation_term, Observations};
use crate::pde::problems::ScalarFn;
use crate::pde::system::{BoxSystem, JetIdx, Region, SystemTerm, VecFn, MAX_FIELDS};
use crate::pde::{Problem, ReferenceData, Setup, TermSpec};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One expression, or one per field (`{ u = "…", v = "…" }`): `solution` and a
/// condition's `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Exprs {
    One(String),
    PerField(BTreeMap<String, String>),
}

/// Where a condition holds: `"faces"`, `"x{i}=min"`, `"initial"`, `"point"`, or a list of
/// faces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Places {
    One(String),
    Many(Vec<String>),
}

/// The kind of a condition (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionKind {
    Dirichlet,
    Neumann,
    Robin,
    InitialRate,
}

impl ConditionKind {
    fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Dirichlet => "dirichlet",
            ConditionKind::Neumann => "neumann",
            ConditionKind::Robin => "robin",
            ConditionKind::InitialRate => "initial-rate",
        }
    }
}

/// `error-group = { name = "velocity", fields = ["u", "v"] }`: fields whose combined
/// error is reported besides the error over all fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorGroupSpec {
    pub name: String,
    pub fields: Vec<String>,
}

/// One `[[custom.conditions]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConditionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub on: Places,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Vec<f64>>,
    pub kind: ConditionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Exprs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// One `[[custom.observations]]` entry: values of fields at points, from a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObservationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A `.csv` or `.npy` file (relative paths: to the config file's directory).
    pub file: std::path::PathBuf,
    /// The observed fields (CSV: default every field with a column; `.npy`: required,
    /// in column order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Points per step (default all; fewer: a random subset each time points are drawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

// ---------------------------------------------------------------------------------
// the problem

/// A function of the point that must be finite at every sampled point of a term.
#[derive(Clone)]
struct Check {
    label: String,
    f: ScalarFn,
}

impl Check {
    fn of(c: &Arc<Combo>) -> Check {
        let c2 = Arc::clone(c);
        Check {
            label: c.label.clone(),
            f: Arc::new(move |x: &[f64]| c2.eval(x)),
        }
    }
    fn run(&self, pts: &[f64], d: usize) -> Result<()> {
        for p in pts.chunks(d) {
            let v = (self.f)(p);
            if !v.is_finite() {
                return Err(Error::NonFinite(format!(
                    "{} evaluates to {v} at x = {p:?}",
                    self.label
                )));
            }
        }
        Ok(())
    }
}

/// A custom system: a [`BoxSystem`] whose samplers check that the data are finite.
pub struct CustomSystem {
    inner: BoxSystem,
    d: usize,
    /// Per term, the data that must be finite at its points.
    checks: Vec<Vec<Check>>,
    /// The solution per field (checked on the evaluation points).
    exact: Vec<Check>,
}

impl Problem for CustomSystem {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn summary(&self) -> String {
        self.inner.summary()
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }
    fn field_names(&self) -> Vec<String> {
        self.inner.field_names()
    }
    fn error_group(&self) -> Option<(String, Vec<usize>)> {
        self.inner.error_group()
    }
    fn bounds(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        self.inner.bounds()
    }
    fn shape(&self) -> Option<crate::geometry::ShapeRef> {
        self.inner.shape()
    }
    fn interior_terms(&self) -> Vec<usize> {
        self.inner.interior_terms()
    }
    fn reference_data(&self) -> Option<ReferenceData> {
        None
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
        for c in self.checks.get(term).into_iter().flatten() {
            c.run(&x, self.d)?;
        }
        Ok(x)
    }
    fn sample_eval(&self, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let x = self.inner.sample_eval(n, rng)?;
        for c in &self.exact {
            c.run(&x, self.d)?;
        }
        Ok(x)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        self.inner.exact(x, out)
    }
    fn setup(&self) -> Setup {
        self.inner.setup()
    }
    fn observation_terms(&self) -> Vec<usize> {
        self.inner.observation_terms()
    }
}

/// Keys of the scalar problems that a system does not use.
fn check_keys(spec: &CustomSpec) -> Result<()> {
    let unused = [
        (
            "kappa",
            spec.kappa.is_some(),
            "write the diffusivity into `equations`",
        ),
        (
            "rhs",
            spec.rhs.is_some(),
            "write sources into `equations`, name them in `sources`, or set `derive-sources = true`",
        ),
        (
            "boundary",
            spec.boundary.is_some(),
            "give each face's data in `[[custom.conditions]]`",
        ),
        (
            "residual",
            spec.residual.is_some(),
            "write one expression per equation in `equations`",
        ),
        (
            "data-on",
            spec.data_on.is_some(),
            "each condition says where it holds with `on`",
        ),
        (
            "points",
            spec.points.is_some(),
            "use `interior-points` and each condition's `points`",
        ),
    ];
    for (key, set, hint) in unused {
        if set {
            return Err(field_err(
                key,
                format!("not used by pde = \"system\" ({hint})"),
            ));
        }
    }
    Ok(())
}

/// Builds a [`CustomSystem`] from the spec, key by key.
struct Builder<'a> {
    spec: &'a CustomSpec,
    d: usize,
    time: bool,
    fields: Vec<String>,
    source_names: Vec<String>,
    c: Vec<f64>,
    /// The names of `operators`, in order (operator rows 1, 2, … of the interior jet).
    ops: Vec<String>,
    /// The interior jet's operator matrices: `lap`'s C, then each of `operators`.
    mats: Vec<Vec<f64>>,
    /// With `operators`, the interior jet's operator set (else one operator, `lap`).
    set: Option<OperatorSet>,
    /// The coordinate pairs of the set's directions after the first D.
    pairs: Vec<(usize, usize)>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// The solution per field.
    solution: Option<Vec<Expr>>,
}

impl Builder<'_> {
    fn x_scope(&self) -> SysScope<'_> {
        SysScope {
            d: self.d,
            time: self.time,
            fields: &self.fields,
            sources: &self.source_names,
            ops: &self.ops,
            k: self.d,
            jet: false,
        }
    }
    /// The variables of `equations`: the interior jet (with an operator set's directions).
    fn jet_scope(&self) -> SysScope<'_> {
        SysScope {
            jet: true,
            k: self.set.as_ref().map_or(self.d, OperatorSet::k),
            ..self.x_scope()
        }
    }
    /// The index of a condition's jet (gradient jets: the D coordinate directions).
    fn idx(&self) -> JetIdx {
        JetIdx {
            m: self.fields.len(),
            k: self.d,
        }
    }

    /// Observation entry `i` as a term (its data checked when read).
    fn observations(&self, i: usize, o: &ObservationSpec) -> Result<Built> {
        let key = |k: &str| format!("observations[{i}].{k}");
        if let Some(f) = &o.fields {
            self.field_list(&key("fields"), f)?;
        }
        let data = Observations::load(
            &o.file,
            &self.fields,
            o.fields.as_deref(),
            &self.lo,
            &self.hi,
            self.time,
        )
        .map_err(|e| match e {
            Error::Format { path, msg } => Error::Format {
                path: format!("custom.observations[{i}].file = {path}"),
                msg,
            },
            e => e,
        })?;
        let points = o.points.unwrap_or(data.len());
        if points == 0 || points > data.len() {
            return Err(Error::invalid(
                format!("custom.{}", key("points")),
                points,
                format!(
                    "1 to {} (the distinct points of {})",
                    data.len(),
                    o.file.display()
                ),
            ));
        }
        let weight = o.weight.unwrap_or(1.0);
        check::positive(&format!("custom.{}", key("weight")), weight)?;
        let name = o
            .name
            .clone()
            .unwrap_or_else(|| format!("observations-{i}"));
        let observed: Vec<&str> = data
            .fields()
            .iter()
            .map(|&f| self.fields[f].as_str())
            .collect();
        let summary = format!(
            "{} observed at {} points ({})",
            observed.join(", "),
            data.len(),
            o.file.display()
        );
        Ok(Built {
            term: observation_term(&name, Arc::new(data), weight),
            points,
            checks: vec![],
            faces: vec![],
            initial: false,
            summary,
        })
    }

    /// A list of field names (the key's value) as indices; every name once.
    fn field_list(&self, key: &str, names: &[String]) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for n in names {
            let f = self.fields.iter().position(|g| g == n).ok_or_else(|| {
                field_err(
                    key,
                    format!("`{n}` is not a field; fields: {}", self.fields.join(", ")),
                )
            })?;
            if out.contains(&f) {
                return Err(field_err(key, format!("field `{n}` listed twice")));
            }
            out.push(f);
        }
        if out.is_empty() {
            return Err(field_err(key, "empty: list at least one field"));
        }
        Ok(out)
    }
}

/// `error-group`: a name (letters, digits, `-`, `_`) and fields of this system.
fn error_group(b: &Builder, g: &ErrorGroupSpec) -> Result<(String, Vec<usize>)> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if g.name.is_empty() || !g.name.chars().all(ok) {
        return Err(field_err(
            "error-group.name",
            format!(
                "`{}` is not a valid name: letters, digits, `-` and `_`, e.g. \"velocity\"",
                g.name
            ),
        ));
    }
    Ok((
        g.name.clone(),
        b.field_list("error-group.fields", &g.fields)?,
    ))
}

/// `fields`: valid names, each once, at most [`MAX_FIELDS`].
fn field_names(spec: &CustomSpec) -> Result<Vec<String>> {
    let names = spec.fields.as_ref().ok_or_else(|| {
        field_err(
            "fields",
            "missing: pde = \"system\" needs the names of its fields, e.g. fields = [\"u\", \"v\", \"p\"]",
        )
    })?;
    if names.is_empty() || names.len() > MAX_FIELDS {
        return Err(field_err(
            "fields",
            format!("{} names: give 1 to {MAX_FIELDS}", names.len()),
        ));
    }
    for (k, n) in names.iter().enumerate() {
        check_ident(&format!("fields[{k}]"), n)?;
        if let Some(j) = names[..k].iter().position(|o| o == n) {
            return Err(field_err(
                &format!("fields[{k}]"),
                format!("`{n}` is also fields[{j}]: every field needs its own name"),
            ));
        }
    }
    Ok(names.clone())
}

/// The names in `sources`: valid, and not a field's.
fn source_names(spec: &CustomSpec, fields: &[String]) -> Result<Vec<String>> {
    let Some(map) = &spec.sources else {
        return Ok(vec![]);
    };
    if spec.derive_sources == Some(true) {
        return Err(field_err(
            "sources",
            "not used with `derive-sources = true` (the derived sources already make the \
             solution exact): give one of them",
        ));
    }
    for n in map.keys() {
        let key = format!("sources.{n}");
        check_ident(&key, n)?;
        if fields.contains(n) {
            return Err(field_err(&key, format!("`{n}` is also a field")));
        }
    }
    Ok(map.keys().cloned().collect())
}

/// `operators`: named symmetric `dim × dim` matrices (in name order), each name valid
/// and not a field's or a source's.
fn operators(
    spec: &CustomSpec,
    fields: &[String],
    sources: &[String],
) -> Result<Vec<(String, Vec<f64>)>> {
    let Some(map) = &spec.operators else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for (n, rows) in map {
        let key = format!("operators.{n}");
        check_ident(&key, n)?;
        if fields.contains(n) {
            return Err(field_err(&key, format!("`{n}` is also a field")));
        }
        if sources.contains(n) {
            return Err(field_err(&key, format!("`{n}` is also a source")));
        }
        out.push((n.clone(), sym_matrix(&key, rows, spec.dim)?));
    }
    Ok(out)
}

impl CustomSystem {
    /// Build a custom system from its spec; every error names its key.
    pub fn new(spec: &CustomSpec) -> Result<Self> {
        let (name, d) = check_name_and_dim(spec)?;
        let (lo, hi) = domain(spec)?;
        check_keys(spec)?;
        let fields = field_names(spec)?;
        let source_names = source_names(spec, &fields)?;
        let c = coefficients(spec)?;
        let op = Operator::from_matrix(d, &c)?;
        let named = operators(spec, &fields, &source_names)?;
        let ops: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let mut mats = vec![c.clone()];
        mats.extend(named.into_iter().map(|(_, m)| m));
        let set = (!ops.is_empty())
            .then(|| OperatorSet::from_matrices(d, &mats))
            .transpose()?;
        let pairs = set.as_ref().map(|s| s.pairs().to_vec()).unwrap_or_default();
        let mut b = Builder {
            spec,
            d,
            time: spec.time,
            fields,
            source_names,
            c,
            ops,
            mats,
            set,
            pairs,
            lo: lo.clone(),
            hi: hi.clone(),
            solution: None,
        };
        b.solution = b.solution()?;
        let (eq, interior_checks, eq_texts) = b.equations()?;
        let conds = spec.conditions.as_deref().unwrap_or_default();
        let obs_specs = spec.observations.as_deref().unwrap_or_default();
        if conds.is_empty() && obs_specs.is_empty() {
            return Err(field_err(
                "conditions",
                "missing: a system needs [[custom.conditions]] on its faces (or \
                 [[custom.observations]] and `free-faces`)",
            ));
        }
        let mut built = conds
            .iter()
            .enumerate()
            .map(|(i, c)| b.condition(i, c))
            .collect::<Result<Vec<_>>>()?;
        check_coverage(spec, d, &built)?;
        for (i, o) in obs_specs.iter().enumerate() {
            built.push(b.observations(i, o)?);
        }
        let m = b.fields.len();
        let interior_points = spec.interior_points.unwrap_or(2000);
        check::at_least("custom.interior-points", interior_points, 1)?;
        let setup = system_setup(spec, d, m, interior_points, &built)?;
        let error_group = spec
            .error_group
            .as_ref()
            .map(|g| error_group(&b, g))
            .transpose()?;
        let exact: Vec<Check> = match &b.solution {
            Some(u) => u
                .iter()
                .map(|e| Check::of(&Arc::new(Combo::single(e.clone()))))
                .collect(),
            None => vec![],
        };
        let exact_fn: Option<VecFn> = (!exact.is_empty()).then(|| {
            let ex = exact.clone();
            Arc::new(move |x: &[f64], o: &mut [f64]| {
                for (o, c) in o.iter_mut().zip(&ex) {
                    *o = (c.f)(x);
                }
            }) as VecFn
        });
        let summary = system_summary(&b, &eq_texts, &built);
        let mut terms = vec![SystemTerm {
            name: "interior".into(),
            region: Region::Interior,
            kind: match &b.set {
                Some(set) => JetKind::Set(set.clone()),
                None => JetKind::Full(op),
            },
            residual: eq,
            weight: 1.0,
        }];
        let mut checks = vec![interior_checks];
        for bt in built {
            terms.push(bt.term);
            checks.push(bt.checks);
        }
        let names: Vec<&str> = b.fields.iter().map(String::as_str).collect();
        let mut inner = BoxSystem::new(name, summary, lo, hi, &names, terms, exact_fn, setup)?;
        if let Some((n, f)) = error_group {
            inner = inner.with_error_group(&n, f);
        }
        Ok(CustomSystem {
            inner,
            d,
            checks,
            exact,
        })
    }
}

/// Network, point counts (interior, then each condition's), evaluation points.
fn system_setup(
    spec: &CustomSpec,
    d: usize,
    m: usize,
    interior: usize,
    built: &[Built],
) -> Result<Setup> {
    let widths = spec.widths.clone().unwrap_or_else(|| vec![d, 50, 50, m]);
    if widths.len() < 2 || widths[0] != d || widths.last() != Some(&m) || widths.contains(&0) {
        return Err(Error::invalid(
            "custom.widths",
            format!("{widths:?}"),
            format!(
                "a list of layer widths starting with `dim` = {d} and ending with the number \
                 of fields, {m}, all > 0"
            ),
        ));
    }
    let mut points = vec![interior];
    points.extend(built.iter().map(|b| b.points));
    let eval_points = spec.eval_points.unwrap_or(10 * interior);
    check::at_least("custom.eval-points", eval_points, 1)?;
    Ok(Setup {
        widths,
        points,
        resample: spec.resample.unwrap_or(0),
        eval_points,
        budget_seconds: 1000.0,
    })
}

/// One line: the equations, the box, the conditions and the solution.
fn system_summary(b: &Builder, eqs: &[String], built: &[Built]) -> String {
    let domain =
        b.lo.iter()
            .zip(&b.hi)
            .map(|(a, c)| format!("[{a}, {c}]"))
            .collect::<Vec<_>>()
            .join("×");
    let d = b.d;
    let mut s = format!(
        "system {}: {} on {domain}",
        b.fields.join(", "),
        eqs.join("; ")
    );
    let identity: Vec<f64> = (0..d * d)
        .map(|k| {
            let (i, j) = (k / d, k % d);
            f64::from(u8::from(i == j && !(b.time && i == 0)))
        })
        .collect();
    if b.c != identity {
        s += &format!(", lap = Σ C_ij ∂_ij, C = {}", fmt_matrix(&b.c, d));
    }
    for (n, c) in b.ops.iter().zip(&b.mats[1..]) {
        s += &format!(", op({n}, ·) = Σ C_ij ∂_ij, C = {}", fmt_matrix(c, d));
    }
    if let Some(m) = &b.spec.sources {
        for (k, v) in m {
            s += &format!(", {k} = {v}");
        }
    }
    let conds: Vec<&str> = built.iter().map(|c| c.summary.as_str()).collect();
    s += &format!("; {}", conds.join("; "));
    match &b.spec.solution {
        Some(Exprs::One(u)) => s += &format!("; solution {} = {u}", b.fields[0]),
        Some(Exprs::PerField(u)) => {
            let parts: Vec<String> = u.iter().map(|(f, e)| format!("{f} = {e}")).collect();
            s += &format!("; solution {}", parts.join(", "));
        }
        None => {}
    }
    s
}

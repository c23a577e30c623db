//! Custom problems defined in a run config, without recompiling: a PDE on a box with
//! Dirichlet (and, for time-dependent problems, initial) data, all given as expressions.
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
//! trains to a small L2 error, and every error case names its key.

use super::problems::{DataResidual, LinearResidual, ScalarFn};
use super::{Boundary, BoxProblem, Problem, Residual, Setup, TermSpec};
use crate::error::{check, Error, Result};
use crate::jet::Operator;
use exmex::{Differentiate, Express, FlatEx, FloatOpsFactory, MakeOperators, MatchLiteral};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
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
}

impl CustomSpec {
    /// Validate the spec, parse and differentiate its expressions, and build the problem.
    pub fn build(&self) -> Result<Arc<dyn Problem>> {
        Ok(Arc::new(CustomProblem::new(self)?))
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
// expressions

/// exmex's float operators plus the constant `pi`.
#[derive(Clone, Debug)]
struct Ops;

impl MakeOperators<f64> for Ops {
    fn make<'a>() -> Vec<exmex::Operator<'a, f64>> {
        let mut ops = FloatOpsFactory::<f64>::make();
        ops.push(exmex::Operator::make_constant("pi", std::f64::consts::PI));
        ops
    }
}

/// Number literals: exmex's `\.?[0-9]+(\.[0-9]+)?` plus an optional exponent `e±k`.
#[derive(Clone, Debug)]
struct Literal;

impl MatchLiteral for Literal {
    fn is_literal(text: &str) -> Option<&str> {
        let b = text.as_bytes();
        let digits = |mut i: usize| {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            (i > s).then_some(i)
        };
        let mut i = digits(usize::from(b.first() == Some(&b'.')))?;
        if b.get(i) == Some(&b'.') && b[0] != b'.' {
            if let Some(j) = digits(i + 1) {
                i = j;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if let Some(k) = digits(j) {
                i = k;
            }
        }
        Some(&text[..i])
    }
}

type Flat = FlatEx<f64, Ops, Literal>;

/// Where a variable's value comes from: a coordinate of the point or an entry of the
/// output jet `[u, ∂_0 u, …, ∂_{D-1} u, lap]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    X(usize),
    Y(usize),
}

/// The variables an expression may use.
#[derive(Clone, Copy)]
struct Scope {
    d: usize,
    time: bool,
    /// `u`, `u_x*`, `lap` allowed (the general residual).
    jet: bool,
}

impl Scope {
    fn lookup(&self, name: &str) -> Option<Src> {
        let index = |s: &str| -> Option<usize> {
            // canonical decimal only, so `x01` is not a second name for `x1`
            let i: usize = s.parse().ok()?;
            (i < self.d && i.to_string() == s).then_some(i)
        };
        if let Some(i) = name.strip_prefix('x').and_then(index) {
            return Some(Src::X(i));
        }
        if self.time && name == "t" {
            return Some(Src::X(0));
        }
        if !self.jet {
            return None;
        }
        match name {
            "u" => Some(Src::Y(0)),
            "lap" => Some(Src::Y(1 + self.d)),
            "u_t" if self.time => Some(Src::Y(1)),
            _ => name
                .strip_prefix("u_x")
                .and_then(index)
                .map(|i| Src::Y(1 + i)),
        }
    }

    fn allowed(&self) -> String {
        let list = |p: &str| match self.d {
            1 => format!("{p}0"),
            2 => format!("{p}0, {p}1"),
            d => format!("{p}0, …, {p}{}", d - 1),
        };
        let mut s = list("x");
        if self.time {
            s += ", t (= x0)";
        }
        if self.jet {
            s += ", u, ";
            s += &list("u_x");
            if self.time {
                s += ", u_t (= u_x0)";
            }
            s += ", lap";
        }
        s
    }
}

/// A parsed expression with its variables mapped to their sources once.
#[derive(Clone, Debug)]
struct Expr {
    /// The key it came from, for messages.
    field: String,
    flat: Flat,
    /// Per exmex variable (in `flat.var_names()` order), its source.
    vars: Vec<Src>,
}

fn field_err(field: &str, msg: impl Into<String>) -> Error {
    Error::Format {
        path: format!("`custom.{field}`"),
        msg: msg.into(),
    }
}

/// Names of exmex's functions (unary operators and the named binary ones).
fn functions() -> Vec<&'static str> {
    Ops::make()
        .iter()
        .filter(|o| o.constant().is_none() && o.repr().chars().all(char::is_alphanumeric))
        .map(|o| o.repr())
        .collect()
}

/// Checks exmex's own error messages do not make clear: unknown functions, and unary
/// minus before `^` (exmex reads `-x^2` as `(-x)^2`).
fn lint(field: &str, text: &str) -> Result<()> {
    let funcs = functions();
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let skip_ws = |mut j: usize| {
        while j < n && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    // index after the balanced group opening at `j` (or n if unbalanced)
    let skip_group = |mut j: usize, open: char, close: char| {
        let mut depth = 0usize;
        while j < n {
            if c[j] == open {
                depth += 1;
            } else if c[j] == close {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            j += 1;
        }
        n
    };
    let number = |mut j: usize| {
        while j < n && (c[j].is_ascii_digit() || c[j] == '.') {
            j += 1;
        }
        if j < n && (c[j] == 'e' || c[j] == 'E') {
            let mut k = j + 1;
            if k < n && (c[k] == '+' || c[k] == '-') {
                k += 1;
            }
            if k < n && c[k].is_ascii_digit() {
                j = k;
                while j < n && c[j].is_ascii_digit() {
                    j += 1;
                }
            }
        }
        j
    };
    let mut after_operand = false;
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' {
            let s = i;
            while i < n && ident(c[i]) {
                i += 1;
            }
            let word: String = c[s..i].iter().collect();
            let j = skip_ws(i);
            let is_func = funcs.contains(&word.as_str());
            if j < n && c[j] == '(' && !is_func {
                return Err(field_err(
                    field,
                    format!(
                        "unknown function `{word}` in `{text}`; known: {}",
                        funcs.join(", ")
                    ),
                ));
            }
            after_operand = !is_func;
        } else if ch.is_ascii_digit() || ch == '.' {
            i = number(i);
            after_operand = true;
        } else if ch == '{' {
            i = skip_group(i, '{', '}');
            after_operand = true;
        } else if ch == ')' {
            i += 1;
            after_operand = true;
        } else if ch == '-' && !after_operand {
            // a unary minus: find the end of its operand and look for `^`
            let mut j = skip_ws(i + 1);
            while j < n && (c[j] == '-' || c[j] == '+') {
                j = skip_ws(j + 1);
            }
            if j < n && (c[j].is_alphabetic() || c[j] == '_') {
                while j < n && ident(c[j]) {
                    j += 1;
                }
                let k = skip_ws(j);
                if k < n && c[k] == '(' {
                    j = skip_group(k, '(', ')');
                }
            } else if j < n && (c[j].is_ascii_digit() || c[j] == '.') {
                j = number(j);
            } else if j < n && c[j] == '(' {
                j = skip_group(j, '(', ')');
            } else if j < n && c[j] == '{' {
                j = skip_group(j, '{', '}');
            }
            let k = skip_ws(j);
            if k < n && c[k] == '^' {
                let snippet: String = c[i..(k + 1)].iter().collect();
                let operand: String = c[(i + 1)..j].iter().collect::<String>();
                return Err(field_err(
                    field,
                    format!(
                        "`{snippet}…` in `{text}` would mean `(-{op})^…`: unary minus binds \
                         tighter than `^` in this syntax; write `-({op}^…)` or `0 - {op}^…`",
                        op = operand.trim()
                    ),
                ));
            }
            i += 1;
            after_operand = false;
        } else {
            i += 1;
            after_operand = false;
        }
    }
    Ok(())
}

impl Expr {
    /// Parse `text` (the value of key `field`) with the variables of `scope`.
    fn parse(field: &str, text: &str, scope: Scope) -> Result<Expr> {
        if text.trim().is_empty() {
            return Err(field_err(field, "empty expression"));
        }
        lint(field, text)?;
        let flat = Flat::parse(text)
            .map_err(|e| field_err(field, format!("cannot parse `{text}`: {}", e.msg())))?;
        Self::from_flat(field, text, flat, scope)
    }

    fn from_flat(field: &str, text: &str, flat: Flat, scope: Scope) -> Result<Expr> {
        let mut vars = Vec::new();
        for name in flat.var_names() {
            let src = scope.lookup(name).ok_or_else(|| {
                field_err(
                    field,
                    format!(
                        "unknown variable `{name}` in `{text}`; allowed: {}",
                        scope.allowed()
                    ),
                )
            })?;
            if let Some(k) = vars.iter().position(|s| *s == src) {
                return Err(field_err(
                    field,
                    format!(
                        "`{}` and `{name}` are the same variable; use one of them in `{text}`",
                        flat.var_names()[k]
                    ),
                ));
            }
            vars.push(src);
        }
        Ok(Expr {
            field: field.to_string(),
            flat,
            vars,
        })
    }

    /// Value at point `x` with output jet `y` (empty where the scope has no jet).
    fn eval(&self, x: &[f64], y: &[f64]) -> f64 {
        let val = |s: &Src| match *s {
            Src::X(i) => x[i],
            Src::Y(j) => y[j],
        };
        // the variable count always matches, so exmex cannot fail here
        self.flat
            .eval_iter(self.vars.iter().map(val))
            .unwrap_or(f64::NAN)
    }

    /// `∂^k/∂s_1…∂s_k` of the expression, or `None` where it does not use one of the
    /// variables (the derivative is then zero).
    fn partial(&self, wrt: &[Src], scope: Scope) -> Result<Option<Expr>> {
        let mut idx = Vec::with_capacity(wrt.len());
        for s in wrt {
            match self.vars.iter().position(|v| v == s) {
                Some(i) => idx.push(i),
                None => return Ok(None),
            }
        }
        let text = self.flat.unparse().to_string();
        let d = self
            .flat
            .clone()
            .partial_iter(idx.into_iter())
            .map_err(|e| {
                field_err(
                    &self.field,
                    format!(
                        "cannot differentiate `{text}` symbolically: {}{}",
                        e.msg(),
                        if self.field == "solution" {
                            "; give `rhs` explicitly"
                        } else {
                            " (differentiable: + - * / ^ exp ln log log2 log10 sqrt and the \
                         trigonometric and hyperbolic functions)"
                        }
                    ),
                )
            })?;
        Self::from_flat(&self.field, &text, d, scope).map(Some)
    }
}

/// `Σ_k c_k e_k`: a given expression (one term) or a derived source term.
#[derive(Clone, Debug)]
struct Combo {
    terms: Vec<(f64, Expr)>,
    /// What it stands for, for messages (e.g. "`custom.rhs`").
    label: String,
}

/// A combination as the built-in residuals' scalar function of a point.
fn combo_fn(c: &Arc<Combo>) -> ScalarFn {
    let c = Arc::clone(c);
    Arc::new(move |x: &[f64]| c.eval(x))
}

impl Combo {
    fn single(e: Expr) -> Combo {
        Combo {
            label: format!("`custom.{}`", e.field),
            terms: vec![(1.0, e)],
        }
    }
    fn eval(&self, x: &[f64]) -> f64 {
        self.terms.iter().map(|(c, e)| c * e.eval(x, &[])).sum()
    }
    /// Error naming the first point of `pts` (row-major, `d` columns) where the value is
    /// not finite.
    fn check_finite(&self, pts: &[f64], d: usize) -> Result<()> {
        for p in pts.chunks(d) {
            let v = self.eval(p);
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
    pub fn new(spec: &CustomSpec) -> Result<Self> {
        let d = spec.dim;
        let pde = spec.pde;
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

        // domain
        let (lo, hi): (Vec<f64>, Vec<f64>) = match &spec.domain {
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
        };

        // which keys the equation uses
        match pde {
            PdeKind::Poisson if spec.time => {
                return Err(Error::invalid(
                    "custom.time",
                    true,
                    "false for pde = \"poisson\" (use \"heat\" or \"general\" for time-dependent problems)",
                ))
            }
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
        let boundary = match (spec.data_on, spec.time) {
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
        };

        // coefficient matrix C of the jet's operator
        let c: Vec<f64> = match &spec.coefficients {
            Some(rows) => {
                if rows.len() != d || rows.iter().any(|r| r.len() != d) {
                    return Err(Error::Shape(format!(
                        "`custom.coefficients` must be {d}x{d} (`custom.dim` = {d}); got rows of lengths {:?}",
                        rows.iter().map(Vec::len).collect::<Vec<_>>()
                    )));
                }
                for (i, row) in rows.iter().enumerate() {
                    for (j, &a) in row.iter().enumerate() {
                        let b = rows[j][i];
                        check::finite(&format!("custom.coefficients[{i}][{j}]"), a)?;
                        if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                            return Err(Error::invalid(
                                format!("custom.coefficients[{i}][{j}]"),
                                a,
                                format!(
                                    "equal to coefficients[{j}][{i}] = {b} (C must be symmetric)"
                                ),
                            ));
                        }
                    }
                }
                rows.concat()
            }
            None => identity_like(d, spec.time),
        };
        let op = Operator::from_matrix(d, &c)?;

        let x_scope = Scope {
            d,
            time: spec.time,
            jet: false,
        };
        let solution = spec
            .solution
            .as_deref()
            .map(|s| Expr::parse("solution", s, x_scope))
            .transpose()?;
        let given = |field: &str, text: &Option<String>| -> Result<Option<Arc<Combo>>> {
            text.as_deref()
                .map(|s| Expr::parse(field, s, x_scope).map(|e| Arc::new(Combo::single(e))))
                .transpose()
        };

        // data g: given, or the solution
        let data =
            match (given("boundary", &spec.boundary)?, &solution) {
                (Some(g), _) => g,
                (None, Some(u)) => Arc::new(Combo {
                    terms: vec![(1.0, u.clone())],
                    label: "`custom.solution` (as boundary data)".into(),
                }),
                (None, None) => return Err(field_err(
                    "boundary",
                    "missing: give `boundary` (the data g) or `solution` (g is then the solution)",
                )),
            };

        // source f: given, or derived from the solution
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
        let (interior, eq, rhs): (Arc<dyn Residual>, String, Option<Arc<Combo>>) = match pde {
            PdeKind::Poisson | PdeKind::Heat => {
                let f = match (given("rhs", &spec.rhs)?, &solution) {
                    (Some(f), _) => f,
                    (None, Some(u)) => Arc::new(derive_rhs(u, &c, d, kappa, x_scope)?),
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
                    None => (
                        None,
                        1.0,
                        format!("-∇·(C∇u) = f, C = {}", fmt_matrix(&c, d)),
                    ),
                };
                let res = LinearResidual {
                    time,
                    op_coef,
                    k: d,
                    f: combo_fn(&f),
                };
                (Arc::new(res), eq, Some(f))
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
                    format!("{text} = 0, lap = Σ C_ij ∂_ij u, C = {}", fmt_matrix(&c, d))
                };
                (Arc::new(GeneralRes { f, seeds }), eq, None)
            }
        };

        // setup
        let widths = spec.widths.clone().unwrap_or_else(|| vec![d, 64, 1]);
        if widths.len() < 2 || widths[0] != d || widths.last() != Some(&1) || widths.contains(&0) {
            return Err(Error::invalid(
                "custom.widths",
                format!("{widths:?}"),
                format!(
                    "a list of layer widths starting with `dim` = {d} and ending with 1, all > 0"
                ),
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
        let setup = Setup {
            widths,
            eval_points,
            points,
            resample: spec.resample.unwrap_or(0),
            budget_seconds: 1000.0,
        };

        let exact = solution.map(|u| {
            Arc::new(Combo {
                terms: vec![(1.0, u)],
                label: "`custom.solution`".into(),
            })
        });
        let exact_fn = exact.clone().map(|u| {
            Arc::new(move |x: &[f64]| u.eval(x)) as Arc<dyn Fn(&[f64]) -> f64 + Send + Sync>
        });
        let domain = lo
            .iter()
            .zip(&hi)
            .map(|(a, b)| format!("[{a}, {b}]"))
            .collect::<Vec<_>>()
            .join("×");
        let show = |key: &str, v: &Option<String>, fallback: &str| match v {
            Some(s) => format!("{key} = {s}"),
            None => format!("{key} {fallback}"),
        };
        let mut summary = format!("{eq} on {domain}");
        if rhs.is_some() {
            summary += &format!("; {}", show("f", &spec.rhs, "derived from the solution"));
        }
        summary += &format!("; {}", show("g", &spec.boundary, "= the solution"));
        if let Some(s) = &spec.solution {
            summary += &format!("; u = {s}");
        }
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
        let x = self.inner.sample(term, n, rng)?;
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

//! The expression machinery of custom problems: parsing with `exmex` (its float operators
//! plus `pi`, literals, variables `x0…`, `u`, `u_x0…`, `lap`, `op(name, u)`), the lint that
//! rejects ambiguous syntax (`-x0^2`), symbolic derivatives, and linear combinations of
//! expressions ([`Combo`]: derived sources and boundary data), each error naming its key.
//!
//! Checked by `tests/custom.rs` (derived sources against finite differences, every error
//! case names its key).

use super::super::problems::ScalarFn;
use crate::error::{Error, Result};
use exmex::{Differentiate, Express, FlatEx, FloatOpsFactory, MakeOperators, MatchLiteral};
use std::sync::Arc;

/// exmex's float operators plus the constant `pi`.
#[derive(Clone, Debug)]
pub(super) struct Ops;

impl MakeOperators<f64> for Ops {
    fn make<'a>() -> Vec<exmex::Operator<'a, f64>> {
        let mut ops = FloatOpsFactory::<f64>::make();
        ops.push(exmex::Operator::make_constant("pi", std::f64::consts::PI));
        ops
    }
}

/// Number literals: exmex's `\.?[0-9]+(\.[0-9]+)?` plus an optional exponent `e±k`.
#[derive(Clone, Debug)]
pub(super) struct Literal;

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

pub(super) type Flat = FlatEx<f64, Ops, Literal>;

/// Where a variable's value comes from: a coordinate of the point or an entry of the
/// output jet `[u, ∂_0 u, …, ∂_{D-1} u, lap]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    X(usize),
    Y(usize),
}

/// The variables an expression may use.
#[derive(Clone, Copy)]
pub(super) struct Scope {
    pub(super) d: usize,
    pub(super) time: bool,
    /// `u`, `u_x*`, `lap` allowed (the general residual).
    pub(super) jet: bool,
}

/// What the variables of an expression refer to: [`Scope`] for the scalar problems, the
/// system scope (fields by name) in `system.rs`.
pub(super) trait Vars {
    /// The source of variable `name`, or None if it is not a variable here.
    fn lookup(&self, name: &str) -> Option<Src>;
    /// The allowed variables, for messages.
    fn allowed(&self) -> String;
}

impl<T: Vars + ?Sized> Vars for &T {
    fn lookup(&self, name: &str) -> Option<Src> {
        (**self).lookup(name)
    }
    fn allowed(&self) -> String {
        (**self).allowed()
    }
}

impl Vars for Scope {
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
pub(super) struct Expr {
    /// The key it came from, for messages.
    pub(super) field: String,
    pub(super) flat: Flat,
    /// Per exmex variable (in `flat.var_names()` order), its source.
    pub(super) vars: Vec<Src>,
}

pub(super) fn field_err(field: &str, msg: impl Into<String>) -> Error {
    Error::Format {
        path: format!("`custom.{field}`"),
        msg: msg.into(),
    }
}

/// Names of exmex's functions (unary operators and the named binary ones).
pub(super) fn functions() -> Vec<&'static str> {
    Ops::make()
        .iter()
        .filter(|o| o.constant().is_none() && o.repr().chars().all(char::is_alphanumeric))
        .map(|o| o.repr())
        .collect()
}

/// Checks exmex's own error messages do not make clear: unknown functions, and unary
/// minus before `^` (exmex reads `-x^2` as `(-x)^2`). `extra`: names also accepted as
/// functions (a system's `lap(u)`, rewritten before exmex sees it).
pub(super) fn lint(field: &str, text: &str, extra: &[&str]) -> Result<()> {
    let mut funcs = functions();
    funcs.extend_from_slice(extra);
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
    pub(super) fn parse(field: &str, text: &str, scope: impl Vars) -> Result<Expr> {
        Self::parse_rewritten(field, text, text, &[], scope)
    }

    /// Parse `rewritten`, the exmex form of `text` as the user wrote it (linted with the
    /// extra functions `extra`, and quoted in messages).
    pub(super) fn parse_rewritten(
        field: &str,
        text: &str,
        rewritten: &str,
        extra: &[&str],
        scope: impl Vars,
    ) -> Result<Expr> {
        if text.trim().is_empty() {
            return Err(field_err(field, "empty expression"));
        }
        lint(field, text, extra)?;
        let flat = Flat::parse(rewritten)
            .map_err(|e| field_err(field, format!("cannot parse `{text}`: {}", e.msg())))?;
        Self::from_flat(field, text, flat, scope)
    }

    pub(super) fn from_flat(field: &str, text: &str, flat: Flat, scope: impl Vars) -> Result<Expr> {
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
    pub(super) fn eval(&self, x: &[f64], y: &[f64]) -> f64 {
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
    pub(super) fn partial(&self, wrt: &[Src], scope: impl Vars) -> Result<Option<Expr>> {
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
                        if self.field == "solution" || self.field.starts_with("solution.") {
                            "; give `rhs` explicitly (pde = \"system\": write the sources \
                             into `equations` or `sources`, and give the conditions' `value`s)"
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
pub(super) struct Combo {
    pub(super) terms: Vec<(f64, Expr)>,
    /// What it stands for, for messages (e.g. "`custom.rhs`").
    pub(super) label: String,
}

/// A combination as the built-in residuals' scalar function of a point.
pub(super) fn combo_fn(c: &Arc<Combo>) -> ScalarFn {
    let c = Arc::clone(c);
    Arc::new(move |x: &[f64]| c.eval(x))
}

impl Combo {
    pub(super) fn single(e: Expr) -> Combo {
        Combo {
            label: format!("`custom.{}`", e.field),
            terms: vec![(1.0, e)],
        }
    }
    pub(super) fn eval(&self, x: &[f64]) -> f64 {
        self.terms.iter().map(|(c, e)| c * e.eval(x, &[])).sum()
    }
    /// Error naming the first point of `pts` (row-major, `d` columns) where the value is
    /// not finite.
    pub(super) fn check_finite(&self, pts: &[f64], d: usize) -> Result<()> {
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

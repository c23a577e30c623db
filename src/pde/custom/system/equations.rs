//! The equations of a custom system: the variables of its expressions (fields by name,
//! `u_x0`, `lap(u)`, `op(name, u)`, named sources), name rules, the equations' residual
//! with symbolic Gauss–Newton seeds, and the jet of a manufactured solution (derived
//! sources).
//!
//! With named operators the interior jet is an [`crate::jet::OperatorSet`]: operator row 0
//! is `lap`, row `1 + i` the i-th name of `operators`; its directions are the D axes and
//! then `e_a + e_b` for the coupled pairs, whose derivatives no expression reads (zero
//! seeds) but the jet carries.
//!
//! Checked by `tests/custom_systems.rs` (custom equations reproduce the built-in systems'
//! residuals and seeds, elasticity written with `op(…)` among them; derived sources
//! reproduce hand-written ones; seeds against finite differences).

use super::{Builder, Check, Exprs};
use crate::error::Result;
use crate::pde::custom::expr::{field_err, functions, Combo, Expr, Flat, Ops, Src, Vars};
use crate::pde::system::JetIdx;
use crate::pde::Residual;
use exmex::{Express, MakeOperators};
use std::collections::BTreeMap;
use std::sync::Arc;

// ---------------------------------------------------------------------------------
// names and variables

/// The variables of a system's expressions: coordinates, and with `jet` the fields, their
/// derivatives, `lap(field)`, `op(name, field)` and the named sources (appended after the
/// jet's entries).
pub(super) struct SysScope<'a> {
    pub(super) d: usize,
    pub(super) time: bool,
    pub(super) fields: &'a [String],
    pub(super) sources: &'a [String],
    /// The names of `operators` (operator rows 1, 2, … of the interior jet).
    pub(super) ops: &'a [String],
    /// Directions of the interior jet (D, or more with mixed operators).
    pub(super) k: usize,
    pub(super) jet: bool,
}

impl SysScope<'_> {
    fn idx(&self) -> JetIdx {
        JetIdx {
            m: self.fields.len(),
            k: self.k,
        }
    }
    /// Entries of the interior jet: `lap` and the named operators as rows.
    pub(super) fn width(&self) -> usize {
        self.idx().len_ops(1 + self.ops.len())
    }
    fn coord(&self, s: &str) -> Option<usize> {
        // canonical decimal only, so `x01` is not a second name for `x1`
        let i: usize = s.parse().ok()?;
        (i < self.d && i.to_string() == s).then_some(i)
    }
    fn field(&self, s: &str) -> Option<usize> {
        self.fields.iter().position(|f| f == s)
    }
}

impl Vars for SysScope<'_> {
    fn lookup(&self, name: &str) -> Option<Src> {
        if let Some(i) = name.strip_prefix('x').and_then(|s| self.coord(s)) {
            return Some(Src::X(i));
        }
        if self.time && name == "t" {
            return Some(Src::X(0));
        }
        if !self.jet {
            return None;
        }
        let idx = self.idx();
        if let Some(f) = self.field(name) {
            return Some(Src::Y(idx.val(f)));
        }
        if let Some(k) = self.sources.iter().position(|s| s == name) {
            return Some(Src::Y(self.width() + k));
        }
        if let Some(arg) = name.strip_prefix("lap(").and_then(|s| s.strip_suffix(')')) {
            return self.field(arg.trim()).map(|f| Src::Y(idx.op(f)));
        }
        if let Some(args) = name.strip_prefix("op(").and_then(|s| s.strip_suffix(')')) {
            let (op, arg) = args.split_once(',')?;
            let j = self.ops.iter().position(|o| o == op.trim())?;
            return self.field(arg.trim()).map(|f| Src::Y(idx.op_j(1 + j, f)));
        }
        let (base, wrt) = name.split_once('_')?;
        let f = self.field(base)?;
        let dir = match wrt {
            "t" if self.time => 0,
            _ => wrt.strip_prefix('x').and_then(|s| self.coord(s))?,
        };
        Some(Src::Y(idx.d(dir, f)))
    }

    fn allowed(&self) -> String {
        let d = self.d;
        let mut s = match d {
            1 => "x0".to_string(),
            2 => "x0, x1".to_string(),
            _ => format!("x0, …, x{}", d - 1),
        };
        if self.time {
            s += ", t (= x0)";
        }
        if self.jet {
            let u = &self.fields[0];
            s += &format!(
                "; the fields {}; their derivatives {u}_x0 … {u}_x{}{}; lap({u}) …",
                self.fields.join(", "),
                d - 1,
                if self.time {
                    format!(" ({u}_t = {u}_x0)")
                } else {
                    String::new()
                }
            );
            if let Some(o) = self.ops.first() {
                s += &format!("; op({o}, {u}) … (operators: {})", self.ops.join(", "));
            }
            if !self.sources.is_empty() {
                s += &format!("; the sources {}", self.sources.join(", "));
            }
        }
        s
    }
}

/// A field or source name: ASCII letters and digits starting with a letter, no `_`, and
/// none of the names expressions already give a meaning.
pub(super) fn check_ident(key: &str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let plain =
        b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(u8::is_ascii_alphanumeric);
    if !plain {
        return Err(field_err(
            key,
            format!(
                "`{name}` is not a valid name: letters and digits, starting with a letter \
                 (no `_`: it starts a derivative such as `u_x0`)"
            ),
        ));
    }
    let coordinate = name
        .strip_prefix('x')
        .is_some_and(|s| s.bytes().all(|c| c.is_ascii_digit()) && !s.is_empty());
    let constants: Vec<&str> = Ops::make()
        .iter()
        .filter(|o| o.constant().is_some())
        .map(|o| o.repr())
        .collect();
    if coordinate
        || ["t", "lap", "op", "e"].contains(&name)
        || constants.contains(&name)
        || functions().contains(&name)
    {
        return Err(field_err(
            key,
            format!(
                "`{name}` is reserved (a coordinate, `t`, `lap`, `op`, a constant or a function)"
            ),
        ));
    }
    Ok(())
}

/// `lap(u)` → `{lap(u)}` and `op(name, u)` → `{op(name,u)}` (exmex variables, looked up by
/// [`SysScope`]); other arguments, and operator names not in `operators`, are errors.
fn rewrite_ops(key: &str, text: &str, scope: &SysScope) -> Result<String> {
    let c: Vec<char> = text.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let simple = |a: &str| !a.is_empty() && a.chars().all(ident);
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < c.len() {
        if c[i] == '{' {
            // a braced variable: copied as is
            while i < c.len() && c[i] != '}' {
                out.push(c[i]);
                i += 1;
            }
            continue;
        }
        if !(c[i].is_alphabetic() || c[i] == '_') {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let s = i;
        while i < c.len() && ident(c[i]) {
            i += 1;
        }
        let word: String = c[s..i].iter().collect();
        let mut j = i;
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        if !(word == "lap" || word == "op") || j >= c.len() || c[j] != '(' {
            out.push_str(&word);
            continue;
        }
        let close = (j..c.len()).find(|&k| c[k] == ')');
        let arg: String = match close {
            Some(k) => c[j + 1..k].iter().collect(),
            None => c[j + 1..].iter().collect(),
        };
        let arg = arg.trim();
        if word == "lap" {
            match close {
                Some(k) if simple(arg) => {
                    out.push_str(&format!("{{lap({arg})}}"));
                    i = k + 1;
                }
                _ => {
                    return Err(field_err(
                        key,
                        format!(
                            "`lap(…)` takes one field name, as in `2*lap(u)`; got `lap({arg}…` \
                             in `{text}`"
                        ),
                    ))
                }
            }
            continue;
        }
        let parts: Vec<&str> = arg.split(',').map(str::trim).collect();
        let (Some(k), [name, field]) = (close, parts.as_slice()) else {
            return Err(field_err(
                key,
                format!(
                    "`op(…)` takes an operator's name and a field, as in `op(dxy, u)`; got \
                     `op({arg}…` in `{text}`"
                ),
            ));
        };
        if !scope.ops.iter().any(|o| o == name) {
            let known = if scope.ops.is_empty() {
                "none declared: name them in `custom.operators`, e.g. operators = { dxy = \
                 [[0, 0.5], [0.5, 0]] }"
                    .to_string()
            } else {
                format!("`custom.operators` has {}", scope.ops.join(", "))
            };
            return Err(field_err(
                key,
                format!("unknown operator `{name}` in `op({arg})` of `{text}`; {known}"),
            ));
        }
        if !scope.fields.iter().any(|f| f == field) {
            return Err(field_err(
                key,
                format!(
                    "`{field}` in `op({arg})` of `{text}` is not a field; fields: {}",
                    scope.fields.join(", ")
                ),
            ));
        }
        out.push_str(&format!("{{op({name},{field})}}"));
        i = k + 1;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// residuals

/// The equations `F_k(x, y, s(x)) = 0` with named sources `s` appended to the jet, and,
/// for derived sources, `− F_k(x, y*(x), s(x))` with `y*` the solution's jet.
pub(super) struct Equations {
    eqs: Vec<Expr>,
    /// Per equation, (jet entry, ∂F_k/∂y_entry); entries F_k does not use have zero seeds.
    seeds: Vec<Vec<(usize, Expr)>>,
    sources: Vec<Combo>,
    manufactured: Option<Arc<SolutionJet>>,
    linear: bool,
}

impl Equations {
    /// The jet with the sources' values appended (where there are sources).
    fn extend(&self, x: &[f64], y: &[f64]) -> Vec<f64> {
        let mut e = Vec::with_capacity(y.len() + self.sources.len());
        e.extend_from_slice(y);
        e.extend(self.sources.iter().map(|s| s.eval(x)));
        e
    }
    /// `F_k(x, y*(x))`, the derived source of equation `k` (0 without one).
    fn derived(&self, x: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        if let Some(sj) = &self.manufactured {
            let ys = self.extend(x, &sj.jet(x));
            for (o, f) in out.iter_mut().zip(&self.eqs) {
                *o = f.eval(x, &ys);
            }
        }
    }
}

impl Residual for Equations {
    fn n_res(&self) -> usize {
        self.eqs.len()
    }
    fn is_linear(&self) -> bool {
        self.linear
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let ext;
        let yy = if self.sources.is_empty() {
            y
        } else {
            ext = self.extend(x, y);
            &ext
        };
        let mut star = vec![0.0; self.eqs.len()];
        self.derived(x, &mut star);
        for (k, f) in self.eqs.iter().enumerate() {
            r[k] = f.eval(x, yy) - star[k];
        }
        if let Some(j) = jac {
            j.fill(0.0);
            let w = y.len();
            for (k, seeds) in self.seeds.iter().enumerate() {
                for (c, e) in seeds {
                    j[k * w + c] = e.eval(x, yy);
                }
            }
        }
    }
}

/// The jet of a manufactured solution, entry by entry (only the entries the equations
/// use), from symbolic derivatives.
struct SolutionJet {
    width: usize,
    entries: Vec<(usize, Combo)>,
}

impl SolutionJet {
    fn jet(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.width];
        for (j, c) in &self.entries {
            y[*j] = c.eval(x);
        }
        y
    }
}

impl Builder<'_> {
    /// `solution`: one expression per field (a plain string for a single field).
    pub(super) fn solution(&self) -> Result<Option<Vec<Expr>>> {
        let per: BTreeMap<String, String> = match &self.spec.solution {
            None => return Ok(None),
            Some(Exprs::One(s)) if self.fields.len() == 1 => {
                [(self.fields[0].clone(), s.clone())].into()
            }
            Some(Exprs::One(_)) => {
                return Err(field_err(
                    "solution",
                    format!(
                        "one expression per field, as a table {{ {} }}",
                        self.fields
                            .iter()
                            .map(|f| format!("{f} = \"…\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
            Some(Exprs::PerField(m)) => m.clone(),
        };
        if let Some(k) = per.keys().find(|k| !self.fields.contains(k)) {
            return Err(field_err(
                &format!("solution.{k}"),
                format!("`{k}` is not a field; fields: {}", self.fields.join(", ")),
            ));
        }
        let mut out = Vec::new();
        for f in &self.fields {
            let text = per.get(f).ok_or_else(|| {
                field_err(
                    "solution",
                    format!("missing field `{f}`: give a solution for every field"),
                )
            })?;
            out.push(Expr::parse(&self.solution_key(f), text, self.x_scope())?);
        }
        Ok(Some(out))
    }

    /// The key of field `f`'s solution: `solution.f`, or `solution` where one expression
    /// is given (a single field).
    pub(super) fn solution_key(&self, f: &str) -> String {
        match &self.spec.solution {
            Some(Exprs::One(_)) => "solution".into(),
            _ => format!("solution.{f}"),
        }
    }

    /// Entry `j` of the solution's interior jet as a combination of symbolic derivatives
    /// (rows: the value, the K directions, the operators `lap`, then `operators`).
    pub(super) fn solution_entry(&self, u: &[Expr], j: usize, label: &str) -> Result<Combo> {
        let (m, d, xs) = (self.fields.len(), self.d, self.x_scope());
        let (row, f) = (j / m, j % m);
        let k = self.jet_scope().k;
        let mut terms = Vec::new();
        let mut add = |coef: f64, wrt: &[Src]| -> Result<()> {
            if coef != 0.0 {
                if let Some(e) = u[f].partial(wrt, &xs)? {
                    terms.push((coef, e));
                }
            }
            Ok(())
        };
        if row == 0 {
            terms.push((1.0, u[f].clone()));
        } else if row <= d {
            add(1.0, &[Src::X(row - 1)])?;
        } else if row <= k {
            // the direction e_a + e_b of a coupled pair
            let (a, b) = self.pairs[row - 1 - d];
            add(1.0, &[Src::X(a)])?;
            add(1.0, &[Src::X(b)])?;
        } else {
            let c = &self.mats[row - 1 - k];
            for a in 0..d {
                add(c[a * d + a], &[Src::X(a), Src::X(a)])?;
                for b in a + 1..d {
                    add(2.0 * c[a * d + b], &[Src::X(a), Src::X(b)])?;
                }
            }
        }
        Ok(Combo {
            terms,
            label: label.into(),
        })
    }

    /// The equations (and the checks of their sources on interior points).
    pub(super) fn equations(&self) -> Result<(Arc<Equations>, Vec<Check>, Vec<String>)> {
        let spec = self.spec;
        let texts = spec.equations.as_ref().ok_or_else(|| {
            field_err(
                "equations",
                "missing: pde = \"system\" needs one expression F_k per equation F_k = 0",
            )
        })?;
        if texts.is_empty() {
            return Err(field_err("equations", "empty: give at least one equation"));
        }
        let scope = self.jet_scope();
        let width = scope.width();
        let (mut eqs, mut seeds, mut used) = (Vec::new(), Vec::new(), vec![false; width]);
        let mut linear = true;
        for (k, text) in texts.iter().enumerate() {
            let key = format!("equations[{k}]");
            let exmex_form = rewrite_ops(&key, text, &scope)?;
            let f = Expr::parse_rewritten(&key, text, &exmex_form, &["lap", "op"], &scope)?;
            let mut row = Vec::new();
            for (j, u) in used.iter_mut().enumerate() {
                if let Some(e) = f.partial(&[Src::Y(j)], &scope)? {
                    *u = true;
                    linear &= !uses_jet(&e, &scope, width);
                    row.push((j, e));
                }
            }
            eqs.push(f);
            seeds.push(row);
        }
        let mut checks = Vec::new();
        let sources: Vec<Combo> = match &spec.sources {
            None => vec![],
            Some(map) => {
                let mut v = Vec::new();
                for (name, text) in map {
                    let e = Expr::parse(&format!("sources.{name}"), text, self.x_scope())?;
                    let c = Arc::new(Combo::single(e));
                    checks.push(Check::of(&c));
                    v.push((*c).clone());
                }
                v
            }
        };
        let manufactured = match (spec.derive_sources, &self.solution) {
            (Some(true), Some(u)) => {
                let mut entries = Vec::new();
                for (j, _) in used.iter().enumerate().filter(|(_, u)| **u) {
                    let label =
                        format!("`custom.{}`", self.solution_key(&self.fields[j % u.len()]));
                    entries.push((j, self.solution_entry(u, j, &label)?));
                }
                Some(Arc::new(SolutionJet { width, entries }))
            }
            (Some(true), None) => {
                return Err(field_err(
                    "derive-sources",
                    "needs `solution` (the sources are the equations at the solution)",
                ))
            }
            _ => None,
        };
        let eq = Arc::new(Equations {
            eqs,
            seeds,
            sources,
            manufactured,
            linear,
        });
        let mut eq_texts: Vec<String> = texts.iter().map(|t| format!("{t} = 0")).collect();
        if eq.manufactured.is_some() {
            let n = eq.eqs.len();
            for (k, t) in eq_texts.iter_mut().enumerate() {
                let e = Arc::clone(&eq);
                checks.push(Check {
                    label: format!(
                        "the source of `custom.equations[{k}]` derived from `solution` (the \
                         equation at the solution's jet)"
                    ),
                    f: Arc::new(move |x: &[f64]| {
                        let mut o = vec![0.0; n];
                        e.derived(x, &mut o);
                        o[k]
                    }),
                });
                *t = format!("{} = (the same at the solution)", texts[k]);
            }
        }
        Ok((eq, checks, eq_texts))
    }
}

/// True if the expression (a seed) depends on an entry of the jet below `width`; an
/// expression exmex cannot read back counts as dependent (the safe answer).
fn uses_jet(e: &Expr, scope: &SysScope, width: usize) -> bool {
    match Flat::parse(e.flat.unparse()) {
        Ok(f) => f
            .var_names()
            .iter()
            .any(|n| matches!(scope.lookup(n), Some(Src::Y(j)) if j < width)),
        Err(_) => true,
    }
}

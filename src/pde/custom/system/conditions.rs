//! The conditions of a custom system: places (faces written `x{i}=min`/`x{i}=max`,
//! `faces`, `initial`, `point`), each `[[custom.conditions]]` entry as a term with its jet
//! (values for Dirichlet data, a gradient jet for Neumann, Robin and the initial rate),
//! data from `value` or derived from the solution, and the check that every face has a
//! condition.
//!
//! Checked by `tests/custom_systems.rs` (each kind against finite differences, the
//! built-in systems' conditions reproduced, every error names its key).

use super::{Builder, Check, ConditionKind, ConditionSpec, Exprs, Places};
use crate::error::{check, Error, Result};
use crate::jet::JetKind;
use crate::pde::custom::expr::{field_err, Combo, Expr, Src};
use crate::pde::custom::CustomSpec;
use crate::pde::problems::ScalarFn;
use crate::pde::system::{gradient_jet, Face, FieldData, FirstOrder, Region, SystemTerm, VecFn};
use crate::pde::Residual;
use std::sync::Arc;

fn face_name(f: Face) -> String {
    format!("x{}={}", f.coord, if f.upper { "max" } else { "min" })
}

/// Every face of the box a condition may hold on (the spatial ones with time).
fn box_faces(d: usize, time: bool) -> Vec<Face> {
    (usize::from(time)..d)
        .flat_map(|c| [Face::lower(c), Face::upper(c)])
        .collect()
}

/// One face written `x{i}=min` / `x{i}=max` (spaces allowed).
fn parse_face(key: &str, s: &str, d: usize, time: bool) -> Result<Face> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = |why: String| field_err(key, format!("`{s}`: {why}"));
    let syntax = || {
        bad(
            "not a place; write \"x{i}=min\", \"x{i}=max\", \"faces\", \"initial\" or \
             \"point\", or a list of faces"
                .into(),
        )
    };
    let (lhs, rhs) = compact.split_once('=').ok_or_else(syntax)?;
    let upper = match rhs {
        "min" => false,
        "max" => true,
        _ => return Err(syntax()),
    };
    let coord: usize = match lhs.strip_prefix('x').map(str::parse) {
        Some(Ok(i)) if lhs == format!("x{i}") => i,
        _ if lhs == "t" => 0,
        _ => return Err(syntax()),
    };
    if coord >= d {
        return Err(bad(format!(
            "the box has no coordinate x{coord} (`custom.dim` = {d}: x0 … x{})",
            d - 1
        )));
    }
    if time && coord == 0 {
        return Err(bad(
            "x0 is the time t: its lower end is on = \"initial\", its upper end takes no \
             condition"
                .into(),
        ));
    }
    Ok(Face { coord, upper })
}

/// Where a condition holds, resolved.
enum Place {
    Faces(Vec<Face>),
    Initial,
    Point(Vec<f64>),
}

/// A first-order condition on several faces: each point takes the condition of the face
/// it lies on (its outward normal and data).
struct PerFace {
    faces: Vec<(usize, f64, FirstOrder)>,
}

impl PerFace {
    fn at(&self, x: &[f64]) -> &FirstOrder {
        // the sampler puts the point's coordinate exactly on its face; the nearest face
        // otherwise
        let dist = |&(c, b, _): &(usize, f64, FirstOrder)| (x[c] - b).abs();
        let best = self.faces.iter().min_by(|a, b| dist(a).total_cmp(&dist(b)));
        match best {
            Some((_, _, f)) => f,
            None => &self.faces[0].2,
        }
    }
}

impl Residual for PerFace {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        self.at(x).eval(x, y, r, jac)
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], b: &mut [f64]) -> Option<f64> {
        self.at(x).quad_form(x, a, b)
    }
}

/// A condition as a term: its point count, the data to check at its points, and what of
/// the box's boundary it covers.
pub(super) struct Built {
    pub(super) term: SystemTerm,
    pub(super) points: usize,
    pub(super) checks: Vec<Check>,
    pub(super) faces: Vec<Face>,
    pub(super) initial: bool,
    pub(super) summary: String,
}

impl Builder<'_> {
    /// Where condition `i` holds.
    fn place(&self, i: usize, c: &ConditionSpec) -> Result<Place> {
        let (d, key) = (self.d, format!("conditions[{i}].on"));
        let place = match &c.on {
            Places::One(s) if s.trim() == "faces" => Place::Faces(box_faces(d, self.time)),
            Places::One(s) if s.trim() == "initial" => {
                if !self.time {
                    return Err(field_err(
                        &key,
                        "\"initial\" needs `time = true` (x0 is then the time t)",
                    ));
                }
                Place::Initial
            }
            Places::One(s) if s.trim() == "point" => {
                let at = c.at.clone().ok_or_else(|| {
                    field_err(
                        &format!("conditions[{i}].at"),
                        "missing: on = \"point\" needs the point, `at = [x0, …]`",
                    )
                })?;
                let inside = at.len() == d
                    && at
                        .iter()
                        .zip(self.lo.iter().zip(&self.hi))
                        .all(|(v, (a, b))| v >= a && v <= b);
                if !inside {
                    return Err(Error::invalid(
                        format!("custom.conditions[{i}].at"),
                        format!("{at:?}"),
                        format!("{d} coordinates inside the box"),
                    ));
                }
                Place::Point(at)
            }
            Places::One(s) => Place::Faces(vec![parse_face(&key, s, d, self.time)?]),
            Places::Many(list) => {
                if list.is_empty() {
                    return Err(field_err(&key, "empty list: name at least one face"));
                }
                let mut fs = Vec::new();
                for s in list {
                    let f = parse_face(&key, s, d, self.time)?;
                    if fs.contains(&f) {
                        return Err(field_err(&key, format!("`{s}` listed twice")));
                    }
                    fs.push(f);
                }
                Place::Faces(fs)
            }
        };
        if c.at.is_some() && !matches!(place, Place::Point(_)) {
            return Err(field_err(
                &format!("conditions[{i}].at"),
                "only for on = \"point\"",
            ));
        }
        Ok(place)
    }

    /// Condition `i` as a term.
    pub(super) fn condition(&self, i: usize, c: &ConditionSpec) -> Result<Built> {
        let key = |k: &str| format!("conditions[{i}].{k}");
        let (d, m, idx, xs) = (self.d, self.fields.len(), self.idx(), self.x_scope());
        let place = self.place(i, c)?;
        let kind = c.kind;
        let first_order = kind != ConditionKind::Dirichlet;
        match (&place, kind) {
            (Place::Initial | Place::Point(_), ConditionKind::Neumann | ConditionKind::Robin) => {
                return Err(field_err(
                    &key("kind"),
                    format!(
                        "`{}` needs faces (it uses their outward normal); on \"initial\" use \
                         dirichlet or initial-rate, on a point dirichlet",
                        kind.as_str()
                    ),
                ))
            }
            (Place::Faces(_) | Place::Point(_), ConditionKind::InitialRate) => {
                return Err(field_err(
                    &key("kind"),
                    "`initial-rate` holds on on = \"initial\" only (with `time = true`)",
                ))
            }
            _ => {}
        }
        let fields = match &c.fields {
            Some(names) => self.field_list(&key("fields"), names)?,
            None => (0..m).collect(),
        };
        if first_order && fields.len() != 1 {
            return Err(field_err(
                &key("fields"),
                format!(
                    "`{}` takes exactly one field, got {} ({}); write one condition per field{}",
                    kind.as_str(),
                    fields.len(),
                    fields
                        .iter()
                        .map(|&f| self.fields[f].as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if c.fields.is_none() {
                        format!(", e.g. fields = [\"{}\"]", self.fields[0])
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let (alpha, beta) = self.robin_coefficients(i, c)?;
        let points = c.points.unwrap_or(if matches!(place, Place::Point(_)) {
            8
        } else {
            200
        });
        check::at_least(&format!("custom.conditions[{i}].points"), points, 1)?;
        let weight = check::positive(
            &format!("custom.conditions[{i}].weight"),
            c.weight.unwrap_or(1.0),
        )?;
        let given = self.given_values(i, c, &fields)?;
        let missing = |f: usize| {
            field_err(
                &key("value"),
                format!(
                    "missing for field `{}`: give `value`, or `solution` (the data then come \
                     from it)",
                    self.fields[f]
                ),
            )
        };
        let from_solution = |f: usize| {
            format!(
                "the data of `custom.conditions[{i}]` (from `custom.{}`)",
                self.solution_key(&self.fields[f])
            )
        };
        let mut checks = Vec::new();
        let (jet, residual): (JetKind, Arc<dyn Residual>) = if !first_order {
            let mut data: Vec<(usize, Arc<Combo>)> = Vec::new();
            for (q, &f) in fields.iter().enumerate() {
                let combo = match (&given[q], &self.solution) {
                    (Some(e), _) => Combo::single(e.clone()),
                    (None, Some(u)) => self.solution_entry(u, idx.val(f), &from_solution(f))?,
                    (None, None) => return Err(missing(f)),
                };
                let combo = Arc::new(combo);
                checks.push(Check::of(&combo));
                data.push((f, combo));
            }
            let g: VecFn = Arc::new(move |x: &[f64], o: &mut [f64]| {
                o.fill(0.0);
                for (f, c) in &data {
                    o[*f] = c.eval(x);
                }
            });
            (
                JetKind::Value,
                Arc::new(FieldData {
                    fields: fields.clone(),
                    g,
                    m,
                }),
            )
        } else {
            let f = fields[0];
            // the data along direction `coord` with sign `sign` (the outward normal)
            let data = |coord: usize, sign: f64| -> Result<Arc<Combo>> {
                Ok(Arc::new(match (&given[0], &self.solution) {
                    (Some(e), _) => Combo::single(e.clone()),
                    (None, Some(u)) => {
                        let mut terms = Vec::new();
                        if alpha != 0.0 {
                            terms.push((alpha, u[f].clone()));
                        }
                        if let Some(e) = u[f].partial(&[Src::X(coord)], &xs)? {
                            terms.push((beta * sign, e));
                        }
                        Combo {
                            terms,
                            label: from_solution(f),
                        }
                    }
                    (None, None) => return Err(missing(f)),
                }))
            };
            let scalar = |c: &Arc<Combo>| -> ScalarFn {
                let c = Arc::clone(c);
                Arc::new(move |x: &[f64]| c.eval(x))
            };
            match &place {
                Place::Faces(fs) => {
                    let mut per = Vec::new();
                    for &face in fs {
                        let g = data(face.coord, face.normal_sign())?;
                        if given[0].is_none() || checks.is_empty() {
                            checks.push(Check::of(&g));
                        }
                        let bound = if face.upper {
                            self.hi[face.coord]
                        } else {
                            self.lo[face.coord]
                        };
                        let r = FirstOrder::robin(f, face, alpha, beta, scalar(&g), idx);
                        per.push((face.coord, bound, r));
                    }
                    let residual: Arc<dyn Residual> = if per.len() == 1 {
                        Arc::new(per.remove(0).2)
                    } else {
                        Arc::new(PerFace { faces: per })
                    };
                    (gradient_jet(d), residual)
                }
                _ => {
                    let g = data(0, 1.0)?;
                    checks.push(Check::of(&g));
                    let r = FirstOrder::initial_rate(f, scalar(&g), idx);
                    (gradient_jet(d), Arc::new(r))
                }
            }
        };
        let where_ = match (&place, &c.on) {
            (Place::Faces(_), Places::One(s)) if s.trim() == "faces" => "faces".to_string(),
            (Place::Faces(fs), _) => fs
                .iter()
                .map(|&f| face_name(f))
                .collect::<Vec<_>>()
                .join(","),
            (Place::Initial, _) => "initial".into(),
            (Place::Point(at), _) => format!("point {at:?}"),
        };
        let names: Vec<&str> = fields.iter().map(|&f| self.fields[f].as_str()).collect();
        let mut summary = format!("{} {} on {where_}", kind.as_str(), names.join(","));
        if kind == ConditionKind::Robin {
            summary += &format!(" (α = {alpha}, β = {beta})");
        }
        let (faces, initial) = match &place {
            Place::Faces(fs) => (fs.clone(), false),
            Place::Initial => (vec![], true),
            Place::Point(_) => (vec![], false),
        };
        let region = match place {
            Place::Faces(fs) => Region::Faces(fs),
            Place::Initial => Region::Initial,
            Place::Point(at) => Region::Point(at),
        };
        let term = SystemTerm {
            name: c
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", kind.as_str(), where_.replace(' ', ""))),
            region,
            kind: jet,
            residual,
            weight,
        };
        Ok(Built {
            term,
            points,
            checks,
            faces,
            initial,
            summary,
        })
    }

    /// `alpha`, `beta` (robin: given, finite, β ≠ 0; neumann and the initial rate: 0, 1).
    fn robin_coefficients(&self, i: usize, c: &ConditionSpec) -> Result<(f64, f64)> {
        let name = |k: &str| format!("custom.conditions[{i}].{k}");
        if c.kind == ConditionKind::Robin {
            let get = |k: &str, v: Option<f64>| -> Result<f64> {
                let v = v.ok_or_else(|| {
                    field_err(
                        &format!("conditions[{i}].{k}"),
                        "missing: robin is α u + β ∂u/∂n = g with `alpha` = α, `beta` = β",
                    )
                })?;
                check::finite(&name(k), v)
            };
            let (a, b) = (get("alpha", c.alpha)?, get("beta", c.beta)?);
            if b == 0.0 {
                return Err(Error::invalid(
                    name("beta"),
                    b,
                    "non-zero (with β = 0 the condition is Dirichlet: use kind = \"dirichlet\")",
                ));
            }
            return Ok((a, b));
        }
        for (k, v) in [("alpha", c.alpha), ("beta", c.beta)] {
            if v.is_some() {
                return Err(field_err(
                    &format!("conditions[{i}].{k}"),
                    format!("only for kind = \"robin\" (this is {})", c.kind.as_str()),
                ));
            }
        }
        Ok((0.0, 1.0))
    }

    /// The given `value` per listed field (None where it comes from the solution).
    fn given_values(
        &self,
        i: usize,
        c: &ConditionSpec,
        fields: &[usize],
    ) -> Result<Vec<Option<Expr>>> {
        let xs = self.x_scope();
        match &c.value {
            None => Ok(vec![None; fields.len()]),
            Some(Exprs::One(t)) => {
                let e = Expr::parse(&format!("conditions[{i}].value"), t, &xs)?;
                Ok(vec![Some(e); fields.len()])
            }
            Some(Exprs::PerField(map)) => {
                let listed: Vec<&str> = fields.iter().map(|&f| self.fields[f].as_str()).collect();
                if let Some(k) = map.keys().find(|k| !listed.contains(&k.as_str())) {
                    return Err(field_err(
                        &format!("conditions[{i}].value.{k}"),
                        format!(
                            "`{k}` is not one of this condition's fields ({})",
                            listed.join(", ")
                        ),
                    ));
                }
                listed
                    .iter()
                    .map(|n| {
                        map.get(*n)
                            .map(|t| Expr::parse(&format!("conditions[{i}].value.{n}"), t, &xs))
                            .transpose()
                    })
                    .collect()
            }
        }
    }
}

/// Every face (and, with time, the initial slice) has a condition or is listed in
/// `free-faces`, not both.
pub(super) fn check_coverage(spec: &CustomSpec, d: usize, built: &[Built]) -> Result<()> {
    let time = spec.time;
    let (mut free, mut free_initial) = (Vec::new(), false);
    for (k, s) in spec.free_faces.iter().flatten().enumerate() {
        let key = format!("free-faces[{k}]");
        match s.trim() {
            "initial" if time => free_initial = true,
            "initial" => {
                return Err(field_err(
                    &key,
                    "\"initial\" needs `time = true` (x0 is then the time t)",
                ))
            }
            "faces" => free.extend(box_faces(d, time)),
            _ => free.push(parse_face(&key, s, d, time)?),
        }
    }
    let covering = |f: Face| built.iter().position(|b| b.faces.contains(&f));
    for f in box_faces(d, time) {
        match (covering(f), free.contains(&f)) {
            (Some(j), true) => {
                return Err(field_err(
                    "free-faces",
                    format!(
                        "{} is listed as free but `conditions[{j}]` holds on it",
                        face_name(f)
                    ),
                ))
            }
            (None, false) => {
                return Err(field_err(
                    "conditions",
                    format!(
                        "no condition on the face {n}: add one (on = \"{n}\", or on = \"faces\" \
                         for every face), or list it in `free-faces` to leave it free on purpose",
                        n = face_name(f)
                    ),
                ))
            }
            _ => {}
        }
    }
    let initial = built.iter().position(|b| b.initial);
    match (time, initial, free_initial) {
        (true, None, false) => Err(field_err(
            "conditions",
            "no condition on the initial slice t = t_min: add one with on = \"initial\", or list \
             \"initial\" in `free-faces`",
        )),
        (true, Some(j), true) => Err(field_err(
            "free-faces",
            format!("\"initial\" is listed as free but `conditions[{j}]` holds on it"),
        )),
        _ => Ok(()),
    }
}

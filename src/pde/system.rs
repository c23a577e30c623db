//! Systems on a box: several named fields (the network's outputs), any number of
//! least-squares terms, each on its own region of the box (the interior, chosen faces,
//! the initial slice) with its own jet and residual, and boundary conditions per face
//! (Dirichlet, Neumann, Robin, initial value and initial rate; design §6).
//!
//! The output jet of a sample with `m` fields and `K` coordinate directions is
//! `[fields (m), ∂_1 fields (m), …, ∂_K fields (m), L_C fields (m)]` ([`JetIdx`] names
//! the entries). Conditions that use first derivatives (Neumann, Robin, the initial
//! rate) run on a [`gradient_jet`]: the coordinate directions with a zero second-order
//! weight, so the jet carries exactly the gradient.
//!
//! Checked by `tests/systems.rs`: every condition's residual and Gauss–Newton seeds
//! against finite differences of the residual in the jet, exact solutions through
//! every term (derivatives by finite differences of the solution), and the samplers
//! against their regions.

use super::hard::HardBc;
use super::observe::Observations;
use super::problems::ScalarFn;
use super::{Problem, ReferenceData, Residual, Setup, TermSpec};
use crate::error::{Error, Result};
use crate::geometry::qmc::unit_points;
use crate::geometry::{nearest_piece, sample_pieces, PointKind, ShapeRef};
use crate::jet::{JetKind, Operator};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// A vector function of a point (exact solutions of systems, vector data).
pub type VecFn = Arc<dyn Fn(&[f64], &mut [f64]) + Send + Sync>;

/// Index of the entries of one sample's output jet (`m` fields, `k` directions, then the
/// operator rows). The number of operator rows is not a field: the index of an entry does
/// not depend on it (the operator rows come last), and [`Self::len_ops`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JetIdx {
    pub m: usize,
    pub k: usize,
}

impl JetIdx {
    /// Value of field `f`.
    pub fn val(self, f: usize) -> usize {
        f
    }
    /// Derivative of field `f` along direction `d`.
    pub fn d(self, d: usize, f: usize) -> usize {
        (1 + d) * self.m + f
    }
    /// The operator term of field `f` (operator 0 of a set).
    pub fn op(self, f: usize) -> usize {
        self.op_j(0, f)
    }
    /// Operator `j`'s term of field `f` (a jet of an [`crate::jet::OperatorSet`]).
    pub fn op_j(self, j: usize, f: usize) -> usize {
        (1 + self.k + j) * self.m + f
    }
    /// Entries per sample (`S · m`) with one operator row or none.
    pub fn len(self, with_op: bool) -> usize {
        self.len_ops(usize::from(with_op))
    }
    /// Entries per sample (`S · m`) with `ops` operator rows.
    pub fn len_ops(self, ops: usize) -> usize {
        (1 + self.k + ops) * self.m
    }
}

/// The jet of a condition that needs first derivatives only: coordinate directions, no
/// second-order weight (the operator row is carried as zeros).
pub fn gradient_jet(dim: usize) -> JetKind {
    JetKind::Full(Operator::weighted(vec![0.0; dim]).expect("zeros are finite"))
}

/// A face of the box: coordinate `coord` at its lower or upper bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Face {
    pub coord: usize,
    pub upper: bool,
}

impl Face {
    pub fn lower(coord: usize) -> Face {
        Face {
            coord,
            upper: false,
        }
    }
    pub fn upper(coord: usize) -> Face {
        Face { coord, upper: true }
    }
    /// Sign of the outward normal `±e_coord`.
    pub fn normal_sign(self) -> f64 {
        if self.upper {
            1.0
        } else {
            -1.0
        }
    }
}

/// Where a term's points lie.
#[derive(Clone, Debug, PartialEq)]
pub enum Region {
    /// Uniform in the box.
    Interior,
    /// Uniform on the union of these faces (each face by its measure).
    Faces(Vec<Face>),
    /// Uniform on the slice `x_0 = lo_0` (time first).
    Initial,
    /// One fixed point (pinning, e.g. the pressure's constant).
    Point(Vec<f64>),
    /// The points of a set of observations (all of them, or a random subset).
    Observed(Arc<Observations>),
    /// Uniform on these boundary pieces of the system's shape (each by its measure;
    /// [`BoxSystem::on_shape`]).
    Pieces(Vec<usize>),
}

/// One term of a system: a residual on a region, with the jet it needs.
#[derive(Clone)]
pub struct SystemTerm {
    pub name: String,
    pub region: Region,
    pub kind: JetKind,
    pub residual: Arc<dyn Residual>,
    pub weight: f64,
}

/// A system of PDEs on a box with named fields and conditions per region.
pub struct BoxSystem {
    name: String,
    summary: String,
    lo: Vec<f64>,
    hi: Vec<f64>,
    fields: Vec<String>,
    terms: Vec<SystemTerm>,
    exact: Option<VecFn>,
    /// A named group of fields with its own error (e.g. the velocity).
    error_group: Option<(String, Vec<usize>)>,
    reference: Option<ReferenceData>,
    setup: Setup,
    /// The domain when it is not the box `[lo, hi]` (then the box is its bounding box).
    domain: Option<ShapeRef>,
    /// Exact conditions `u = g + φN` ([`BoxSystem::with_hard_bc`]).
    hard: Option<Arc<HardBc>>,
}

impl BoxSystem {
    /// A system on a shape (`lo`, `hi` its bounding box): terms on its interior
    /// ([`Region::Interior`]), its boundary pieces ([`Region::Pieces`]), points inside it
    /// and observations; box faces and the initial slice are refused (a time-dependent
    /// shape is a [`crate::geometry::TimeProduct`] with pieces `initial` and `final`).
    pub fn on_shape(
        name: impl Into<String>,
        summary: impl Into<String>,
        shape: ShapeRef,
        fields: &[&str],
        terms: Vec<SystemTerm>,
        exact: Option<VecFn>,
        setup: Setup,
    ) -> Result<Self> {
        let pieces = shape.pieces();
        for t in &terms {
            match &t.region {
                Region::Faces(_) | Region::Initial => {
                    return Err(Error::invalid(
                        format!("region of term `{}`", t.name),
                        format!("{:?}", t.region),
                        format!(
                            "the shape's interior or boundary pieces ({})",
                            pieces.join(", ")
                        ),
                    ))
                }
                Region::Pieces(ps) if ps.is_empty() || ps.iter().any(|&p| p >= pieces.len()) => {
                    return Err(Error::invalid(
                        format!("pieces of term `{}`", t.name),
                        format!("{ps:?}"),
                        format!("indices of the pieces {}", pieces.join(", ")),
                    ));
                }
                Region::Point(p) if p.len() == shape.dim() && !shape.contains(p) => {
                    return Err(Error::invalid(
                        format!("point of term `{}`", t.name),
                        format!("{p:?}"),
                        "a point of the shape",
                    ))
                }
                _ => {}
            }
        }
        let (lo, hi) = shape.bounds();
        let mut s = Self::build(name, summary, lo, hi, fields, terms, exact, setup, true)?;
        s.domain = Some(shape);
        Ok(s)
    }

    /// A system from its parts; every face must lie on the box and every term's point
    /// count is in `setup.points` (same order).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        summary: impl Into<String>,
        lo: Vec<f64>,
        hi: Vec<f64>,
        fields: &[&str],
        terms: Vec<SystemTerm>,
        exact: Option<VecFn>,
        setup: Setup,
    ) -> Result<Self> {
        Self::build(name, summary, lo, hi, fields, terms, exact, setup, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        name: impl Into<String>,
        summary: impl Into<String>,
        lo: Vec<f64>,
        hi: Vec<f64>,
        fields: &[&str],
        terms: Vec<SystemTerm>,
        exact: Option<VecFn>,
        setup: Setup,
        shape: bool,
    ) -> Result<Self> {
        let name = name.into();
        check_box(&lo, &hi)?;
        let d = lo.len();
        if fields.is_empty() {
            return Err(Error::invalid("fields", "[]", "at least one field"));
        }
        if setup.points.len() != terms.len() {
            return Err(Error::Shape(format!(
                "problem `{name}`: {} point counts for {} terms",
                setup.points.len(),
                terms.len()
            )));
        }
        for t in &terms {
            if let Some(od) = t.kind.dim() {
                if od != d {
                    return Err(Error::Shape(format!(
                        "term `{}`: operator dimension {od} but the box has {d}",
                        t.name,
                    )));
                }
            }
            match &t.region {
                Region::Faces(fs) => {
                    if fs.is_empty() {
                        return Err(Error::invalid(
                            format!("faces of term `{}`", t.name),
                            "[]",
                            "at least one face",
                        ));
                    }
                    if let Some(f) = fs.iter().find(|f| f.coord >= d) {
                        return Err(Error::invalid(
                            format!("face of term `{}`", t.name),
                            format!("coordinate {}", f.coord),
                            format!("a coordinate below {d} (the box has {d})"),
                        ));
                    }
                }
                Region::Point(p) => {
                    if p.len() != d
                        || p.iter()
                            .zip(lo.iter().zip(&hi))
                            .any(|(v, (a, b))| !(v >= a && v <= b))
                    {
                        return Err(Error::invalid(
                            format!("point of term `{}`", t.name),
                            format!("{p:?}"),
                            format!("{d} coordinates inside the box"),
                        ));
                    }
                }
                Region::Observed(o) => {
                    if o.dim() != d {
                        return Err(Error::Shape(format!(
                            "observations of term `{}` ({}) have {} coordinates, the box has {d}",
                            t.name,
                            o.source,
                            o.dim()
                        )));
                    }
                    if let Some(&f) = o.fields().iter().find(|&&f| f >= fields.len()) {
                        return Err(Error::Shape(format!(
                            "observations of term `{}` ({}) name field {f}, the system has {}",
                            t.name,
                            o.source,
                            fields.len()
                        )));
                    }
                }
                Region::Pieces(_) if !shape => {
                    return Err(Error::invalid(
                        format!("region of term `{}`", t.name),
                        "boundary pieces",
                        "faces of the box (pieces need a shape: BoxSystem::on_shape)",
                    ))
                }
                Region::Interior | Region::Initial | Region::Pieces(_) => {}
            }
        }
        Ok(BoxSystem {
            name,
            summary: summary.into(),
            lo,
            hi,
            fields: fields.iter().map(|s| s.to_string()).collect(),
            terms,
            exact,
            error_group: None,
            reference: None,
            setup,
            domain: None,
            hard: None,
        })
    }

    /// The same system with exact conditions `u_f = g + φ N_f` ([`super::hard`]): the
    /// terms named in `drop` (the conditions that became exact) are removed with their
    /// point counts, and every other term's residual is wrapped so that it sees `u`. A
    /// name that is not a term, or a field out of range, is an error naming it.
    pub fn with_hard_bc(mut self, hard: HardBc, drop: &[&str]) -> Result<Self> {
        let names: Vec<String> = self.terms.iter().map(|t| t.name.clone()).collect();
        if let Some(n) = drop.iter().find(|n| !names.iter().any(|m| m == *n)) {
            return Err(Error::invalid(
                "exact-condition term",
                n,
                format!("one of the terms {}", names.join(", ")),
            ));
        }
        if let Some(h) = hard.fields.iter().find(|h| h.field >= self.fields.len()) {
            return Err(Error::invalid(
                "exact-condition field",
                h.field,
                format!("an index below {} (the system's fields)", self.fields.len()),
            ));
        }
        if hard.m != self.fields.len() {
            return Err(Error::Shape(format!(
                "exact conditions for {} fields on a system with {}",
                hard.m,
                self.fields.len()
            )));
        }
        let hard = Arc::new(hard);
        let keep: Vec<bool> = names.iter().map(|n| !drop.contains(&n.as_str())).collect();
        let mut terms = vec![];
        let mut points = vec![];
        for (i, t) in std::mem::take(&mut self.terms).into_iter().enumerate() {
            if keep[i] {
                let residual = hard.wrap(&t.kind, t.residual.clone());
                terms.push(SystemTerm { residual, ..t });
                if let Some(&p) = self.setup.points.get(i) {
                    points.push(p);
                }
            }
        }
        self.terms = terms;
        self.setup.points = points;
        self.name = format!("{}-hard", self.name);
        self.summary = format!("{}; exact conditions: {}", self.summary, hard.note);
        self.hard = Some(hard);
        Ok(self)
    }

    /// Also report the error over these fields together, under `name`.
    pub fn with_error_group(mut self, name: &str, fields: Vec<usize>) -> Self {
        self.error_group = Some((name.into(), fields));
        self
    }

    /// Published values to compare with (when there is no exact solution).
    pub fn with_reference(mut self, r: ReferenceData) -> Self {
        self.reference = Some(r);
        self
    }

    /// The shape the system lives on, if it is not its box.
    pub fn domain(&self) -> Option<&ShapeRef> {
        self.domain.as_ref()
    }

    /// The terms with their regions.
    pub fn system_terms(&self) -> &[SystemTerm] {
        &self.terms
    }

    fn uniform(&self, rng: &mut ChaCha8Rng, out: &mut [f64]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = rng.random_range(self.lo[i]..self.hi[i]);
        }
    }

    /// Measure of a face (product of the other extents; 1 for a point).
    fn face_measure(&self, f: Face) -> f64 {
        (0..self.lo.len())
            .filter(|&i| i != f.coord)
            .map(|i| self.hi[i] - self.lo[i])
            .product()
    }

    fn on_faces(&self, faces: &[Face], rng: &mut ChaCha8Rng, out: &mut [f64]) {
        self.uniform(rng, out);
        let total: f64 = faces.iter().map(|&f| self.face_measure(f)).sum();
        let mut pick = rng.random_range(0.0..total);
        let mut face = faces[faces.len() - 1];
        for &f in faces {
            let w = self.face_measure(f);
            if pick < w {
                face = f;
                break;
            }
            pick -= w;
        }
        out[face.coord] = if face.upper {
            self.hi[face.coord]
        } else {
            self.lo[face.coord]
        };
    }
}

/// Points of a box region from unit-cube points `u` (`n × d`; quasi-random samplers):
/// the interior is `lo + u∘(hi − lo)`; on faces `u_0` picks the face (by `weights`) and
/// the other coordinates fill the face; on the initial slice `x_0 = lo_0`.
pub(crate) fn map_unit(
    u: &[f64],
    lo: &[f64],
    hi: &[f64],
    faces: Option<(&[Face], &[f64])>,
    initial: bool,
    out: &mut [f64],
) {
    let d = lo.len();
    for (p, q) in out.chunks_mut(d).zip(u.chunks(d)) {
        for i in 0..d {
            p[i] = lo[i] + q[i] * (hi[i] - lo[i]);
        }
        if let Some((fs, w)) = faces {
            let total: f64 = w.iter().sum();
            let mut pick = q[0] * total;
            let mut k = fs.len() - 1;
            for (j, wj) in w.iter().enumerate() {
                if pick < *wj {
                    k = j;
                    break;
                }
                pick -= wj;
            }
            let f = fs[k];
            // the face's free coordinates take u_1 … u_{d−1} in order
            let mut next = 1;
            for i in 0..d {
                if i != f.coord {
                    p[i] = lo[i] + q[next] * (hi[i] - lo[i]);
                    next += 1;
                }
            }
            p[f.coord] = if f.upper { hi[f.coord] } else { lo[f.coord] };
        }
        if initial {
            p[0] = lo[0];
        }
    }
}

pub(crate) fn check_box(lo: &[f64], hi: &[f64]) -> Result<()> {
    if lo.len() != hi.len() || lo.is_empty() {
        return Err(Error::Shape(format!(
            "box bounds have {} and {} entries",
            lo.len(),
            hi.len()
        )));
    }
    for (i, (a, b)) in lo.iter().zip(hi).enumerate() {
        if !(a.is_finite() && b.is_finite() && a < b) {
            return Err(Error::invalid(
                format!("domain[{i}]"),
                format!("[{a}, {b}]"),
                "a finite interval with lower < upper",
            ));
        }
    }
    Ok(())
}

impl Problem for BoxSystem {
    fn name(&self) -> &str {
        &self.name
    }
    fn summary(&self) -> String {
        self.summary.clone()
    }
    fn dim(&self) -> usize {
        self.lo.len()
    }
    fn out_dim(&self) -> usize {
        self.fields.len()
    }
    fn field_names(&self) -> Vec<String> {
        self.fields.clone()
    }
    fn error_group(&self) -> Option<(String, Vec<usize>)> {
        self.error_group.clone()
    }
    fn bounds(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        Some((self.lo.clone(), self.hi.clone()))
    }
    fn shape(&self) -> Option<ShapeRef> {
        match &self.domain {
            Some(s) => Some(s.clone()),
            None => {
                let b = crate::geometry::BoxShape::new(self.lo.clone(), self.hi.clone()).ok()?;
                Some(Arc::new(b))
            }
        }
    }
    fn interior_terms(&self) -> Vec<usize> {
        (0..self.terms.len())
            .filter(|&i| self.terms[i].region == Region::Interior)
            .collect()
    }
    fn reference_data(&self) -> Option<ReferenceData> {
        self.reference.clone()
    }
    fn terms(&self) -> Vec<TermSpec> {
        self.terms
            .iter()
            .map(|t| TermSpec {
                name: t.name.clone(),
                kind: t.kind.clone(),
                residual: t.residual.clone(),
                weight: t.weight,
            })
            .collect()
    }
    fn sample(&self, term: usize, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
        let d = self.dim();
        let t = self.terms.get(term).ok_or_else(|| {
            Error::invalid(
                "term",
                term,
                format!("a term index below {}", self.terms.len()),
            )
        })?;
        let mut x = vec![0.0; n * d];
        match (&t.region, &self.domain) {
            (Region::Observed(o), _) => {
                o.sample(n, rng, &mut x)?;
                return Ok(x);
            }
            (Region::Interior, Some(shape)) => {
                shape.sample_interior(rng, &mut x)?;
                return Ok(x);
            }
            (Region::Pieces(ps), Some(shape)) => {
                let mut normals = vec![0.0; n * d];
                sample_pieces(shape.as_ref(), ps, rng, &mut x, &mut normals)?;
                return Ok(x);
            }
            _ => {}
        }
        for p in x.chunks_mut(d) {
            match &t.region {
                Region::Interior => self.uniform(rng, p),
                Region::Faces(fs) => self.on_faces(fs, rng, p),
                Region::Initial => {
                    self.uniform(rng, p);
                    p[0] = self.lo[0];
                }
                Region::Point(q) => p.copy_from_slice(q),
                Region::Observed(_) | Region::Pieces(_) => {} // filled above
            }
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
        let t = self.terms.get(term);
        let fixed = matches!(
            t.map(|t| &t.region),
            Some(Region::Point(_) | Region::Observed(_)) | None
        );
        if kind == PointKind::Uniform || fixed {
            return self.sample(term, n, rng);
        }
        if self.domain.is_some() {
            return Err(Error::invalid(
                "points",
                kind.as_str(),
                format!(
                    "uniform for problem `{}` (quasi-random points are drawn on boxes only so far)",
                    self.name
                ),
            ));
        }
        let d = self.dim();
        let u = unit_points(kind, n, d, rng)?;
        let mut x = vec![0.0; n * d];
        match &self.terms[term].region {
            Region::Faces(fs) => {
                let w: Vec<f64> = fs.iter().map(|&f| self.face_measure(f)).collect();
                map_unit(&u, &self.lo, &self.hi, Some((fs, &w)), false, &mut x)
            }
            Region::Initial => map_unit(&u, &self.lo, &self.hi, None, true, &mut x),
            _ => map_unit(&u, &self.lo, &self.hi, None, false, &mut x),
        }
        Ok(x)
    }
    fn exact(&self, x: &[f64], out: &mut [f64]) -> bool {
        match &self.exact {
            Some(f) => {
                f(x, out);
                true
            }
            None => false,
        }
    }
    fn setup(&self) -> Setup {
        self.setup.clone()
    }
    fn hard_bc(&self) -> Option<Arc<HardBc>> {
        self.hard.clone()
    }
    fn observation_terms(&self) -> Vec<usize> {
        (0..self.terms.len())
            .filter(|&t| matches!(self.terms[t].region, Region::Observed(_)))
            .collect()
    }
}

// ---- conditions -------------------------------------------------------------------------

/// Data for chosen fields, `y_f − g_f(x)` for each `f` in `fields` (Dirichlet values,
/// initial values, pins): one residual component per field. Works on any jet (only the
/// values are read).
pub struct FieldData {
    pub fields: Vec<usize>,
    /// All `m` field values of the data at `x` (only `fields` are used).
    pub g: VecFn,
    pub m: usize,
}

impl Residual for FieldData {
    fn n_res(&self) -> usize {
        self.fields.len()
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let mut g = [0.0; MAX_FIELDS];
        (self.g)(x, &mut g[..self.m]);
        for (q, &f) in self.fields.iter().enumerate() {
            r[q] = y[f] - g[f];
        }
        if let Some(j) = jac {
            j.fill(0.0);
            let w = j.len() / self.fields.len();
            for (q, &f) in self.fields.iter().enumerate() {
                j[q * w + f] = 1.0;
            }
        }
    }
}

/// Most fields a system may have (work arrays on the stack: residuals run per sample).
pub const MAX_FIELDS: usize = 16;

/// A first-order condition on one field: `α u + β ∂u/∂ν − g(x)` with `∂/∂ν` the
/// derivative along `normal` (`±e_c` for a face's outward normal, `e_0` for an initial
/// rate). Neumann is `α = 0, β = 1`; Robin any `β ≠ 0`; the initial rate `u_t = g` is
/// `α = 0, β = 1` along `+e_0`. Needs a [`gradient_jet`] (coordinate directions).
pub struct FirstOrder {
    pub field: usize,
    /// Direction index (coordinate) and its sign.
    pub coord: usize,
    pub sign: f64,
    pub alpha: f64,
    pub beta: f64,
    pub g: ScalarFn,
    pub idx: JetIdx,
}

impl FirstOrder {
    /// `∂u/∂n = g` on `face` (outward normal).
    pub fn neumann(field: usize, face: Face, g: ScalarFn, idx: JetIdx) -> Self {
        Self::robin(field, face, 0.0, 1.0, g, idx)
    }
    /// `α u + β ∂u/∂n = g` on `face`.
    pub fn robin(
        field: usize,
        face: Face,
        alpha: f64,
        beta: f64,
        g: ScalarFn,
        idx: JetIdx,
    ) -> Self {
        FirstOrder {
            field,
            coord: face.coord,
            sign: face.normal_sign(),
            alpha,
            beta,
            g,
            idx,
        }
    }
    /// `∂u/∂t = g` at `t = t_0` (time the first coordinate).
    pub fn initial_rate(field: usize, g: ScalarFn, idx: JetIdx) -> Self {
        FirstOrder {
            field,
            coord: 0,
            sign: 1.0,
            alpha: 0.0,
            beta: 1.0,
            g,
            idx,
        }
    }
}

impl Residual for FirstOrder {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let (iv, id) = (self.idx.val(self.field), self.idx.d(self.coord, self.field));
        let bn = self.beta * self.sign;
        r[0] = self.alpha * y[iv] + bn * y[id] - (self.g)(x);
        if let Some(j) = jac {
            j.fill(0.0);
            j[iv] += self.alpha;
            j[id] += bn;
        }
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        a[self.idx.val(self.field)] += self.alpha;
        a[self.idx.d(self.coord, self.field)] += self.beta * self.sign;
        Some(-(self.g)(x))
    }
}

/// A first-order condition on boundary pieces of a shape: `α u + β ∂u/∂n − g(x)` with
/// `n` the outward unit normal of the piece the point lies on (the nearest of `pieces`).
/// Needs a [`gradient_jet`] (coordinate directions); for a time-dependent shape the
/// normal's time component is 0 on the spatial pieces.
pub struct NormalCondition {
    pub field: usize,
    pub alpha: f64,
    pub beta: f64,
    pub g: ScalarFn,
    pub idx: JetIdx,
    pub shape: ShapeRef,
    pub pieces: Vec<usize>,
}

impl NormalCondition {
    fn normal(&self, x: &[f64]) -> Vec<f64> {
        let mut n = vec![0.0; x.len()];
        let p = nearest_piece(self.shape.as_ref(), &self.pieces, x);
        self.shape.normal(p, x, &mut n);
        n
    }
}

impl Residual for NormalCondition {
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let n = self.normal(x);
        let iv = self.idx.val(self.field);
        let dn: f64 = (0..n.len())
            .map(|i| n[i] * y[self.idx.d(i, self.field)])
            .sum();
        r[0] = self.alpha * y[iv] + self.beta * dn - (self.g)(x);
        if let Some(j) = jac {
            j.fill(0.0);
            j[iv] += self.alpha;
            for (i, ni) in n.iter().enumerate() {
                j[self.idx.d(i, self.field)] += self.beta * ni;
            }
        }
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        let n = self.normal(x);
        a[self.idx.val(self.field)] += self.alpha;
        for (i, ni) in n.iter().enumerate() {
            a[self.idx.d(i, self.field)] += self.beta * ni;
        }
        Some(-(self.g)(x))
    }
}

/// Incompressible Navier–Stokes (or Stokes, without the convective term) in `d` space
/// dimensions, fields `u_1 … u_d, p`, optionally time-dependent (time the first input
/// coordinate and the first jet direction):
/// `[∂_t u_i] + [Σ_j u_j ∂_j u_i] + ∂_i p − ν L u_i − f_i(x) = 0` (i = 1…d) and
/// `Σ_j ∂_j u_j − f_div(x) = 0`, with `L` the jet's operator (the spatial Laplacian).
/// Needs coordinate directions (an identity operator).
pub struct NavierStokes {
    pub d: usize,
    pub time: bool,
    pub convective: bool,
    pub nu: f64,
    /// Momentum sources `f_1 … f_d` and the divergence source (d + 1 values), if any.
    pub source: Option<VecFn>,
}

impl NavierStokes {
    fn idx(&self) -> JetIdx {
        JetIdx {
            m: self.d + 1,
            k: self.d + usize::from(self.time),
        }
    }
}

impl Residual for NavierStokes {
    fn n_res(&self) -> usize {
        self.d + 1
    }
    fn is_linear(&self) -> bool {
        !self.convective
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let (d, ix) = (self.d, self.idx());
        let t0 = usize::from(self.time);
        let mut f = [0.0; MAX_FIELDS];
        if let Some(s) = &self.source {
            s(x, &mut f[..d + 1]);
        }
        // ∂_j of field i: direction t0 + j
        let dd = |j: usize, i: usize| ix.d(t0 + j, i);
        for i in 0..d {
            let mut v = y[dd(i, d)] - self.nu * y[ix.op(i)] - f[i];
            if self.time {
                v += y[ix.d(0, i)];
            }
            if self.convective {
                for j in 0..d {
                    v += y[ix.val(j)] * y[dd(j, i)];
                }
            }
            r[i] = v;
        }
        r[d] = (0..d).map(|j| y[dd(j, j)]).sum::<f64>() - f[d];
        if let Some(jac) = jac {
            let w = ix.len(true);
            jac.fill(0.0);
            for i in 0..d {
                let row = &mut jac[i * w..(i + 1) * w];
                row[dd(i, d)] = 1.0;
                row[ix.op(i)] = -self.nu;
                if self.time {
                    row[ix.d(0, i)] = 1.0;
                }
                if self.convective {
                    for j in 0..d {
                        row[ix.val(j)] += y[dd(j, i)];
                        row[dd(j, i)] += y[ix.val(j)];
                    }
                }
            }
            let row = &mut jac[d * w..(d + 1) * w];
            for j in 0..d {
                row[dd(j, j)] = 1.0;
            }
        }
    }
}

//! Pointwise observations of chosen fields, read from `.npy` or `.csv` files (points,
//! values, optional per-point weights), and their least-squares term
//! `√w_i (u_f(x_i) − v_{i,f})` for every observed field `f` (design §6).
//!
//! The term's sampler hands out the observation points themselves (all of them in file
//! order, or a random subset when the term has fewer points than the file has rows), and
//! the residual finds each point's row by exact lookup: the points it is given are the
//! bit-identical coordinates its own sampler produced, so no sample index needs to travel
//! with them through the loss. Rows at the same point are merged into one with the
//! weight-summed mean value, which leaves the gradient and the Gauss–Newton matrix of the
//! loss unchanged (`Σ_i w_i (u − v_i)² = W (u − v̄)² + const`).
//!
//! File layout. CSV: a header row naming the columns: `x0 … x{d−1}` (with a time
//! coordinate, `t` may name `x0`), one column per observed field (its name), an optional
//! `weight`; `#` starts a comment line. `.npy`: a 2-d float array whose columns are the
//! coordinates, then the observed fields in the order given, then optionally the weights.
//!
//! Checked by `tests/observations.rs`: both formats read the same data, the residual and
//! its seeds against finite differences, merged duplicates give the same loss gradient,
//! subsets and full sets, and every malformed file is an error naming the file, row and
//! column.

use super::system::{Region, SystemTerm};
use super::Residual;
use crate::error::{Error, Result};
use crate::io::npy;
use crate::jet::JetKind;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

/// Observed values of some fields at points, rows sorted by point (unique points).
#[derive(Clone, Debug, PartialEq)]
pub struct Observations {
    /// Where the data came from (the file), for messages.
    pub source: String,
    dim: usize,
    /// The observed fields (indices into the problem's fields).
    fields: Vec<usize>,
    /// Unique points, `len × dim`, sorted lexicographically.
    x: Vec<f64>,
    /// Values, `len × fields.len()`.
    v: Vec<f64>,
    /// `√w` per point.
    sqrt_w: Vec<f64>,
    /// Rows of the source file (before merging).
    rows_read: usize,
}

fn cmp_points(a: &[f64], b: &[f64]) -> Ordering {
    for (p, q) in a.iter().zip(b) {
        match p.total_cmp(q) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

fn bad(source: &str, msg: impl Into<String>) -> Error {
    Error::Format {
        path: source.to_string(),
        msg: msg.into(),
    }
}

impl Observations {
    /// From a table with one row per observation: `dim` coordinates, then the values of
    /// `fields` (in that order), then, if `weighted`, a weight. `lo`/`hi` is the box the
    /// points must lie in; `rows_named` numbers the rows in messages (e.g. the line of a
    /// CSV file; `None`: rows from 1).
    #[allow(clippy::too_many_arguments)]
    pub fn from_table(
        source: &str,
        data: &[f64],
        cols: usize,
        fields: Vec<usize>,
        weighted: bool,
        lo: &[f64],
        hi: &[f64],
        col_names: &[String],
        row_label: &dyn Fn(usize) -> String,
    ) -> Result<Self> {
        let d = lo.len();
        let nf = fields.len();
        let want = d + nf + usize::from(weighted);
        if cols != want || col_names.len() != cols {
            return Err(bad(
                source,
                format!(
                    "{cols} columns; expected {want}: {d} coordinates, {nf} observed field(s){}",
                    if weighted { ", a weight" } else { "" }
                ),
            ));
        }
        if data.is_empty() {
            return Err(bad(source, "no observations (the file has no data rows)"));
        }
        let n = data.len() / cols;
        for i in 0..n {
            let row = &data[i * cols..(i + 1) * cols];
            for (c, v) in row.iter().enumerate() {
                if !v.is_finite() {
                    return Err(bad(
                        source,
                        format!(
                            "{}, column `{}`: {v} (every entry must be a finite number)",
                            row_label(i),
                            col_names[c]
                        ),
                    ));
                }
            }
            for c in 0..d {
                if row[c] < lo[c] || row[c] > hi[c] {
                    return Err(bad(
                        source,
                        format!(
                            "{}, column `{}`: {} lies outside the domain [{}, {}]",
                            row_label(i),
                            col_names[c],
                            row[c],
                            lo[c],
                            hi[c]
                        ),
                    ));
                }
            }
            if weighted && row[cols - 1] < 0.0 {
                return Err(bad(
                    source,
                    format!(
                        "{}, column `{}`: {} (weights must be ≥ 0)",
                        row_label(i),
                        col_names[cols - 1],
                        row[cols - 1]
                    ),
                ));
            }
        }
        // sort the rows by point, then merge equal points (weight-summed mean)
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            cmp_points(&data[a * cols..a * cols + d], &data[b * cols..b * cols + d])
        });
        let (mut x, mut v, mut sqrt_w) = (Vec::new(), Vec::new(), Vec::new());
        let mut k = 0;
        while k < n {
            let first = order[k];
            let p = &data[first * cols..first * cols + d];
            let mut end = k + 1;
            while end < n && cmp_points(&data[order[end] * cols..order[end] * cols + d], p).is_eq()
            {
                end += 1;
            }
            let weight = |i: usize| {
                if weighted {
                    data[i * cols + cols - 1]
                } else {
                    1.0
                }
            };
            let total: f64 = order[k..end].iter().map(|&i| weight(i)).sum();
            x.extend_from_slice(p);
            for f in 0..nf {
                let mean = if total > 0.0 {
                    order[k..end]
                        .iter()
                        .map(|&i| weight(i) * data[i * cols + d + f])
                        .sum::<f64>()
                        / total
                } else {
                    order[k..end]
                        .iter()
                        .map(|&i| data[i * cols + d + f])
                        .sum::<f64>()
                        / (end - k) as f64
                };
                v.push(mean);
            }
            sqrt_w.push(total.sqrt());
            k = end;
        }
        if sqrt_w.iter().all(|&w| w == 0.0) {
            return Err(bad(
                source,
                "every weight is 0: the observations constrain nothing",
            ));
        }
        Ok(Observations {
            source: source.to_string(),
            dim: d,
            fields,
            x,
            v,
            sqrt_w,
            rows_read: n,
        })
    }

    /// Read a `.npy` or `.csv` file (by extension). `field_names` are the problem's
    /// fields, `observed` the observed ones by name (CSV: default every field with a
    /// column; `.npy`: required); `time` lets a CSV column `t` name `x0`.
    pub fn load(
        path: &Path,
        field_names: &[String],
        observed: Option<&[String]>,
        lo: &[f64],
        hi: &[f64],
        time: bool,
    ) -> Result<Self> {
        let source = path.display().to_string();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let d = lo.len();
        let field_index = |name: &str| field_names.iter().position(|f| f == name);
        let coord_names: Vec<String> = (0..d).map(|i| format!("x{i}")).collect();
        match ext.as_deref() {
            Some("npy") => {
                let names = observed.ok_or_else(|| {
                    bad(
                        &source,
                        "a .npy file has no column names: list the observed fields (`fields`)",
                    )
                })?;
                let fields = names
                    .iter()
                    .map(|n| {
                        field_index(n).ok_or_else(|| {
                            bad(
                                &source,
                                format!("`{n}` is not a field; fields: {}", field_names.join(", ")),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let a = npy::read(path)?;
                let plain = d + fields.len();
                if a.cols != plain && a.cols != plain + 1 {
                    return Err(bad(
                        &source,
                        format!(
                            "shape ({}, {}); expected {plain} columns ({d} coordinates, then \
                             {}) or {} (and a weight)",
                            a.rows,
                            a.cols,
                            names.join(", "),
                            plain + 1
                        ),
                    ));
                }
                let weighted = a.cols == plain + 1;
                let mut cols = coord_names;
                cols.extend(names.iter().cloned());
                if weighted {
                    cols.push("weight".into());
                }
                Self::from_table(
                    &source,
                    &a.data,
                    a.cols,
                    fields,
                    weighted,
                    lo,
                    hi,
                    &cols,
                    &|i| format!("row {i}"),
                )
            }
            Some("csv") => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                Self::parse_csv(&source, &text, field_names, observed, lo, hi, time)
            }
            _ => Err(bad(
                &source,
                "unknown file type; expected a .npy or .csv file",
            )),
        }
    }

    /// Parse CSV text (see the module documentation for the layout).
    pub fn parse_csv(
        source: &str,
        text: &str,
        field_names: &[String],
        observed: Option<&[String]>,
        lo: &[f64],
        hi: &[f64],
        time: bool,
    ) -> Result<Self> {
        let d = lo.len();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let (_, header) = lines
            .next()
            .ok_or_else(|| bad(source, "empty file: expected a header row"))?;
        let names: Vec<String> = header
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect();
        let find = |n: &str| names.iter().position(|c| c == n);
        let mut pick = Vec::new(); // column of each table column
        let mut col_names = Vec::new();
        for i in 0..d {
            let name = format!("x{i}");
            let c = find(&name)
                .or_else(|| (time && i == 0).then(|| find("t")).flatten())
                .ok_or_else(|| {
                    bad(
                        source,
                        format!("no column `{name}` in the header ({})", names.join(", ")),
                    )
                })?;
            pick.push(c);
            col_names.push(names[c].clone());
        }
        let observed: Vec<String> = match observed {
            Some(o) => o.to_vec(),
            None => field_names
                .iter()
                .filter(|f| find(f).is_some())
                .cloned()
                .collect(),
        };
        if observed.is_empty() {
            return Err(bad(
                source,
                format!(
                    "no column names a field; fields: {}; header: {}",
                    field_names.join(", "),
                    names.join(", ")
                ),
            ));
        }
        let mut fields = Vec::new();
        for n in &observed {
            let f = field_names.iter().position(|g| g == n).ok_or_else(|| {
                bad(
                    source,
                    format!("`{n}` is not a field; fields: {}", field_names.join(", ")),
                )
            })?;
            if fields.contains(&f) {
                return Err(bad(source, format!("field `{n}` listed twice")));
            }
            let c = find(n).ok_or_else(|| bad(source, format!("no column `{n}` in the header")))?;
            fields.push(f);
            pick.push(c);
            col_names.push(n.clone());
        }
        let weighted = find("weight").is_some();
        if let Some(c) = find("weight") {
            pick.push(c);
            col_names.push("weight".into());
        }
        // every header column must be used: a typo is an error, not an ignored column
        for (c, n) in names.iter().enumerate() {
            if !pick.contains(&c) {
                return Err(bad(
                    source,
                    format!(
                        "column `{n}` is neither a coordinate (x0 … x{}), an observed field \
                         ({}) nor `weight`",
                        d - 1,
                        observed.join(", ")
                    ),
                ));
            }
        }
        let mut data = Vec::new();
        let mut line_of = Vec::new();
        for (ln, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err(bad(
                    source,
                    format!(
                        "line {}: {} cells, the header has {}",
                        ln + 1,
                        cells.len(),
                        names.len()
                    ),
                ));
            }
            for &c in &pick {
                let v: f64 = cells[c].parse().map_err(|_| {
                    bad(
                        source,
                        format!(
                            "line {}, column `{}`: `{}` is not a number",
                            ln + 1,
                            names[c],
                            cells[c]
                        ),
                    )
                })?;
                data.push(v);
            }
            line_of.push(ln + 1);
        }
        Self::from_table(
            source,
            &data,
            pick.len(),
            fields,
            weighted,
            lo,
            hi,
            &col_names,
            &|i| format!("line {}", line_of[i]),
        )
    }

    /// Unique observation points.
    pub fn len(&self) -> usize {
        self.sqrt_w.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sqrt_w.is_empty()
    }
    /// Rows of the file (before equal points were merged).
    pub fn rows_read(&self) -> usize {
        self.rows_read
    }
    pub fn fields(&self) -> &[usize] {
        &self.fields
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The unique points, `len × dim`.
    pub fn points(&self) -> &[f64] {
        &self.x
    }
    /// The (merged) values, `len × fields().len()`.
    pub fn values(&self) -> &[f64] {
        &self.v
    }

    /// The row of point `p`, if it is an observation point.
    pub fn find(&self, p: &[f64]) -> Option<usize> {
        let d = self.dim;
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match cmp_points(&self.x[mid * d..(mid + 1) * d], p) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// `n` observation points: all of them in order when `n` is their number, otherwise a
    /// uniformly random subset (without repetition).
    pub fn sample(&self, n: usize, rng: &mut ChaCha8Rng, out: &mut [f64]) -> Result<()> {
        let (d, len) = (self.dim, self.len());
        if n > len {
            return Err(Error::invalid(
                format!("points of the observations from {}", self.source),
                n,
                format!("at most the {len} distinct observation points"),
            ));
        }
        if n == len {
            out.copy_from_slice(&self.x);
            return Ok(());
        }
        // partial Fisher–Yates
        let mut idx: Vec<usize> = (0..len).collect();
        for i in 0..n {
            let j = rng.random_range(i..len);
            idx.swap(i, j);
            let r = idx[i];
            out[i * d..(i + 1) * d].copy_from_slice(&self.x[r * d..(r + 1) * d]);
        }
        Ok(())
    }
}

/// The residual of an observation term (value jets: only the fields' values are read).
pub struct ObservationResidual {
    pub data: Arc<Observations>,
}

impl Residual for ObservationResidual {
    fn n_res(&self) -> usize {
        self.data.fields.len()
    }
    fn eval(&self, x: &[f64], y: &[f64], r: &mut [f64], jac: Option<&mut [f64]>) {
        let o = &self.data;
        let nf = o.fields.len();
        // Points come from the term's own sampler, so the lookup succeeds; a point that is
        // not an observation point contributes nothing rather than a wrong datum.
        let row = o.find(x);
        let (w, vals) = match row {
            Some(i) => (o.sqrt_w[i], &o.v[i * nf..(i + 1) * nf]),
            None => (0.0, &o.v[..nf]),
        };
        for (q, &f) in o.fields.iter().enumerate() {
            r[q] = w * (y[f] - vals[q]);
        }
        if let Some(j) = jac {
            j.fill(0.0);
            let width = j.len() / nf;
            for (q, &f) in o.fields.iter().enumerate() {
                j[q * width + f] = w;
            }
        }
    }
    fn quad_form(&self, x: &[f64], a: &mut [f64], _b: &mut [f64]) -> Option<f64> {
        let o = &self.data;
        if o.fields.len() != 1 {
            return None;
        }
        // as in `eval`: a point that is not an observation point contributes nothing
        Some(match o.find(x) {
            Some(i) => {
                a[o.fields[0]] = o.sqrt_w[i];
                -o.sqrt_w[i] * o.v[i]
            }
            None => 0.0,
        })
    }
}

/// A term fitting the network to observations (value jets; all points by default).
pub fn observation_term(name: &str, data: Arc<Observations>, weight: f64) -> SystemTerm {
    SystemTerm {
        name: name.to_string(),
        region: Region::Observed(data.clone()),
        kind: JetKind::Value,
        residual: Arc::new(ObservationResidual { data }),
        weight,
    }
}

//! `kfac-pinn export`: a trained model on a grid over its problem's domain, written for
//! ParaView: `.vti` (image data: every grid point, with an `inside` mask when the domain
//! is not its bounding box) or `.vtu` (unstructured: only the grid cells that lie inside
//! the shape). Fields per point: each output `u` (named after the problem's fields), its
//! gradient `grad_u` (D components), the residual of each interior term
//! (`residual_<term>`, one component per equation), and where an exact solution exists
//! `exact_u` and `error_u = u − u*`. Problems in more than three dimensions are cut by a
//! slice: `--axes` picks the 1–3 coordinates of the grid, `--at` the others.
//!
//! Checked by `tests/export.rs`: files read back with [`crate::io::vtk::parse`] against
//! the model evaluated directly, the exact solution and the residual computed by hand;
//! cells inside the shape; bad input refused.

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::geometry::ShapeRef;
use crate::io::vtk::{self, Field, Mesh, VtkFile};
use crate::jet::JetEngine;
use crate::model::io::ModelFile;
use crate::pde::Problem;
use anyhow::bail;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub source: super::source::ProblemArgs,
    /// vtu (cells inside the shape) or vti (the whole bounding box, with an `inside`
    /// mask); default: from the extension of --out.
    #[arg(long)]
    pub format: Option<String>,
    /// Output file (.vtu or .vti).
    #[arg(long)]
    pub out: PathBuf,
    /// Grid points per axis (default: 1025 in 1d, 129 in 2d, 41 in 3d).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// The coordinates on the grid's axes, 1 to 3 of them (default: all, for problems in
    /// up to 3 dimensions).
    #[arg(long)]
    pub axes: Option<String>,
    /// Values of the other coordinates (default: the middle of the domain), one per input
    /// dimension (the entries of the axes are ignored).
    #[arg(long)]
    pub at: Option<String>,
    #[arg(long)]
    pub force: bool,
}

/// Most grid points an export writes (ASCII VTK at ~20 bytes a value).
const MAX_POINTS: usize = 4_000_000;

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Vtu,
    Vti,
}

fn format_of(a: &ExportArgs) -> anyhow::Result<Format> {
    let ext = a
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let parse = |s: &str| match s {
        "vtu" => Some(Format::Vtu),
        "vti" => Some(Format::Vti),
        _ => None,
    };
    let from_ext = ext.as_deref().and_then(parse);
    match a.format.as_deref() {
        Some(f) => {
            let Some(fmt) = parse(f) else {
                bail!("`--format` must be vtu or vti. Got `{f}`.");
            };
            if from_ext.is_some_and(|e| e != fmt) {
                bail!(
                    "`--out` {} has the extension of the other format than `--format {f}`",
                    a.out.display()
                );
            }
            Ok(fmt)
        }
        None => from_ext.ok_or_else(|| {
            anyhow::anyhow!(
                "`--out` must end in .vtu or .vti (or give --format). Got `{}`.",
                a.out.display()
            )
        }),
    }
}

/// A regular grid over some coordinates of the domain, the others fixed.
#[derive(Clone, Debug)]
pub struct Grid {
    pub axes: Vec<usize>,
    pub n: usize,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
    /// The full point (all coordinates) the grid varies around.
    pub base: Vec<f64>,
}

impl Grid {
    pub fn num_points(&self) -> usize {
        self.n.pow(self.axes.len() as u32)
    }
    /// Grid index (first axis fastest) → all D coordinates.
    pub fn point(&self, mut idx: usize, out: &mut [f64]) {
        out.copy_from_slice(&self.base);
        for &ax in &self.axes {
            let i = idx % self.n;
            idx /= self.n;
            out[ax] = self.lo[ax] + (self.hi[ax] - self.lo[ax]) * i as f64 / (self.n - 1) as f64;
        }
    }
    pub fn spacing(&self, a: usize) -> f64 {
        let ax = self.axes[a];
        (self.hi[ax] - self.lo[ax]) / (self.n - 1) as f64
    }
}

/// The domain's bounding box: the shape's, or that of points from the interior sampler.
pub(super) fn domain_box(problem: &dyn Problem) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    if let Some(s) = problem.shape() {
        return Ok(s.bounds());
    }
    let d = problem.dim();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let sample = problem.sample(0, 4096, &mut rng)?;
    let mut lo = vec![f64::INFINITY; d];
    let mut hi = vec![f64::NEG_INFINITY; d];
    for p in sample.chunks(d) {
        for i in 0..d {
            lo[i] = lo[i].min(p[i]);
            hi[i] = hi[i].max(p[i]);
        }
    }
    Ok((lo, hi))
}

/// The fixed coordinates: `--at` (D values) or the middle of the box.
pub(super) fn base_point(at: Option<&str>, lo: &[f64], hi: &[f64]) -> anyhow::Result<Vec<f64>> {
    let d = lo.len();
    match at {
        Some(s) => {
            let v: Vec<f64> = super::parse_list("at", s)?;
            if v.len() != d {
                bail!(
                    "`--at` needs {d} values, one per input dimension. Got {}.",
                    v.len()
                );
            }
            Ok(v)
        }
        None => Ok((0..d).map(|i| 0.5 * (lo[i] + hi[i])).collect()),
    }
}

/// Build the grid from the flags.
fn grid(a: &ExportArgs, problem: &dyn Problem) -> anyhow::Result<Grid> {
    let d = problem.dim();
    let axes: Vec<usize> = match &a.axes {
        Some(s) => super::parse_list("axes", s)?,
        None if d <= 3 => (0..d).collect(),
        None => bail!(
            "problem `{}` has {d} input dimensions: give `--axes` (1 to 3 of 0..{d}) and optionally `--at`",
            problem.name()
        ),
    };
    let distinct = axes.iter().collect::<std::collections::BTreeSet<_>>().len() == axes.len();
    if axes.is_empty() || axes.len() > 3 || !distinct || axes.iter().any(|&i| i >= d) {
        bail!(
            "`--axes` must name 1 to 3 different coordinates below {d}. Got `{}`.",
            a.axes.as_deref().unwrap_or("")
        );
    }
    let n = a.resolution.unwrap_or([1025, 129, 41][axes.len() - 1]);
    let total = (n as f64).powi(axes.len() as i32);
    if n < 2 || total > MAX_POINTS as f64 {
        bail!(
            "`--resolution` must be at least 2 and give at most {MAX_POINTS} grid points ({}^{} here). Got {n}.",
            n,
            axes.len()
        );
    }
    let (lo, hi) = domain_box(problem)?;
    let base = base_point(a.at.as_deref(), &lo, &hi)?;
    Ok(Grid {
        axes,
        n,
        lo,
        hi,
        base,
    })
}

/// The fields at the points `x` (row-major, D columns): outputs, gradients, interior
/// residuals, exact solution and error.
pub fn fields(problem: &dyn Problem, model: &ModelFile, x: &[f64]) -> crate::Result<Vec<Field>> {
    let d = problem.dim();
    let m = problem.out_dim();
    let n = x.len() / d;
    let names = problem.field_names();
    let hard = problem.hard_bc();
    let jets = super::eval::evaluate(&Cpu, &model.mlp, &model.params, x, hard.as_ref())?;
    let s = d + 2;
    let mut out = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let at = |i: usize, r: usize| jets[(i * m + j) * s + r];
        out.push(Field::scalar(
            name.clone(),
            (0..n).map(|i| at(i, 0)).collect(),
        ));
        out.push(Field {
            name: format!("grad_{name}"),
            components: d,
            data: (0..n)
                .flat_map(|i| (1..=d).map(move |r| at(i, r)))
                .collect(),
        });
    }
    let terms = problem.terms();
    let coef: Vec<f64> = model.coefficients.iter().map(|c| c.1).collect();
    let params = Cpu.upload(&model.params)?;
    let xb = Cpu.upload(x)?;
    for t in problem.interior_terms() {
        let spec = &terms[t];
        let res = &spec.residual;
        if res.n_coef() > 0 && res.n_coef() != coef.len() {
            return Err(crate::Error::Shape(format!(
                "term `{}` reads {} coefficients; the model file has {}",
                spec.name,
                res.n_coef(),
                coef.len()
            )));
        }
        let mut eng = JetEngine::<Cpu, f64>::new(Cpu, model.mlp.clone(), spec.kind.clone(), None)?;
        let y = eng.forward(&params, &xb, n)?;
        let per = spec.kind.s() * m;
        let k = res.n_res();
        let mut r = vec![0.0; n * k];
        for i in 0..n {
            let (xi, yi, ri) = (
                &x[i * d..(i + 1) * d],
                &y[i * per..(i + 1) * per],
                &mut r[i * k..(i + 1) * k],
            );
            if res.n_coef() > 0 {
                res.eval_coef(xi, yi, &coef, ri, None, None);
            } else {
                res.eval(xi, yi, ri, None);
            }
        }
        out.push(Field {
            name: format!("residual_{}", spec.name),
            components: k,
            data: r,
        });
    }
    let mut exact = vec![0.0; n * m];
    let have = x
        .chunks(d)
        .zip(exact.chunks_mut(m))
        .all(|(p, e)| problem.exact(p, e));
    if have {
        for (j, name) in names.iter().enumerate() {
            let u: Vec<f64> = (0..n).map(|i| exact[i * m + j]).collect();
            let err: Vec<f64> = (0..n)
                .map(|i| jets[(i * m + j) * s] - exact[i * m + j])
                .collect();
            out.push(Field::scalar(format!("exact_{name}"), u));
            out.push(Field::scalar(format!("error_{name}"), err));
        }
    }
    // residuals of points outside a shape can be non-finite (a singular source):
    // VTK's ASCII reader takes no NaN, and those points are masked anyway
    for f in &mut out {
        for v in &mut f.data {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
    }
    Ok(out)
}

/// The export as a VTK file (no I/O).
pub fn build(
    problem: &dyn Problem,
    model: &ModelFile,
    g: &Grid,
    format: Format,
) -> anyhow::Result<VtkFile> {
    let d = problem.dim();
    let np = g.num_points();
    let mut x = vec![0.0; np * d];
    for (i, p) in x.chunks_mut(d).enumerate() {
        g.point(i, p);
    }
    let shape: Option<ShapeRef> = problem.shape();
    let inside: Vec<bool> = x
        .chunks(d)
        .map(|p| shape.as_ref().is_none_or(|s| s.contains(p)))
        .collect();
    let k = g.axes.len();
    let coords3 = |i: usize| -> [f64; 3] {
        let mut c = [0.0; 3];
        for a in 0..k {
            c[a] = x[i * d + g.axes[a]];
        }
        c
    };
    match format {
        Format::Vti => {
            let mut fields = fields(problem, model, &x)?;
            if inside.iter().any(|b| !b) {
                fields.push(Field::scalar(
                    "inside",
                    inside.iter().map(|&b| b as u8 as f64).collect(),
                ));
            }
            let mut origin = [0.0; 3];
            let mut spacing = [1.0; 3];
            let mut dims = [1; 3];
            for a in 0..k {
                origin[a] = g.lo[g.axes[a]];
                spacing[a] = g.spacing(a);
                dims[a] = g.n;
            }
            Ok(VtkFile {
                mesh: Mesh::Image {
                    origin,
                    spacing,
                    dims,
                },
                fields,
            })
        }
        Format::Vtu => {
            // cells: the grid cells whose corners all lie inside the shape
            let n = g.n;
            let corners: Vec<Vec<usize>> = match k {
                1 => vec![vec![0], vec![1]],
                2 => vec![vec![0, 0], vec![1, 0], vec![1, 1], vec![0, 1]],
                _ => vec![
                    vec![0, 0, 0],
                    vec![1, 0, 0],
                    vec![1, 1, 0],
                    vec![0, 1, 0],
                    vec![0, 0, 1],
                    vec![1, 0, 1],
                    vec![1, 1, 1],
                    vec![0, 1, 1],
                ],
            };
            let ctype = [vtk::VTK_LINE, vtk::VTK_QUAD, vtk::VTK_HEXAHEDRON][k - 1];
            let mut new_id = vec![usize::MAX; np];
            let mut keep = Vec::new();
            let mut cells = Vec::new();
            for c in 0..(n - 1).pow(k as u32) {
                let mut ci = Vec::with_capacity(k);
                let mut r = c;
                for _ in 0..k {
                    ci.push(r % (n - 1));
                    r /= n - 1;
                }
                let ids: Vec<usize> = corners
                    .iter()
                    .map(|off| (0..k).rev().fold(0, |acc, a| acc * n + ci[a] + off[a]))
                    .collect();
                if ids.iter().all(|&i| inside[i]) {
                    let mapped = ids
                        .iter()
                        .map(|&i| {
                            if new_id[i] == usize::MAX {
                                new_id[i] = keep.len();
                                keep.push(i);
                            }
                            new_id[i]
                        })
                        .collect();
                    cells.push((ctype, mapped));
                }
            }
            if cells.is_empty() {
                bail!(
                    "no grid cell lies inside the domain of `{}` at this slice/resolution (raise --resolution or move --at)",
                    problem.name()
                );
            }
            let xs: Vec<f64> = keep
                .iter()
                .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
                .collect();
            let fields = fields(problem, model, &xs)?;
            Ok(VtkFile {
                mesh: Mesh::Unstructured {
                    points: keep.iter().map(|&i| coords3(i)).collect(),
                    cells,
                },
                fields,
            })
        }
    }
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let format = format_of(&a)?;
    crate::io::check_output("--out", &a.out, a.force)?;
    let model = crate::model::io::load(&a.model)?;
    let problem = a.source.resolve(&model)?;
    super::source::output_transform(&model, problem.as_ref())?;
    super::source::check_fits(&model, problem.as_ref())?;
    let g = grid(&a, problem.as_ref())?;
    let file = build(problem.as_ref(), &model, &g, format)?;
    let xml = file.to_xml()?;
    crate::io::write_atomic(&a.out, xml.as_bytes())?;
    eprintln!(
        "wrote {} points, fields {} to {}",
        file.mesh.num_points(),
        file.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        a.out.display()
    );
    Ok(())
}

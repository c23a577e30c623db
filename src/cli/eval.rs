//! `kfac-pinn eval`: a model file and points (.npy, N × D) in; u, ∇u and Δu out (.npy).
//! For a scalar network the output is N × (D + 2) with columns u, ∂₁u … ∂_Du, Δu. For m
//! outputs it is N × m(D + 2): the same D + 2 columns for output 0, then output 1, ….
//! A model trained with exact boundary conditions gives `u = g + φN` (its problem's
//! transform applied to the jets), or `N` itself with `--network-output`.

use crate::backend::Backend;
use crate::io::npy;
use crate::jet::{JetEngine, JetKind, Operator};
use crate::model::io as model_io;
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Points, a NumPy array of shape (N, D) (float64 or float32).
    #[arg(long)]
    pub points: PathBuf,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// The problem whose exact boundary conditions turn the network's output `N` into
    /// `u = g + φN` (default: the model file's, when it was trained with them).
    #[command(flatten)]
    pub source: super::source::ProblemArgs,
    /// Write the network's own output `N` (no exact-condition transform).
    #[arg(long, conflicts_with_all = ["problem", "config"])]
    pub network_output: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Evaluate `[u, ∇u, Δu]` per sample and output (output-major columns, see module doc).
pub fn evaluate<B: Backend>(
    be: &B,
    mlp: &crate::model::Mlp,
    params: &[f64],
    x: &[f64],
    hard: Option<&std::sync::Arc<crate::pde::hard::HardBc>>,
) -> crate::Result<Vec<f64>> {
    let be = be.clone();
    let d = mlp.input_dim();
    let m = mlp.output_dim();
    let n = x.len() / d;
    let kind = JetKind::Full(Operator::laplacian(d));
    let mut eng = JetEngine::<B, f64>::new(be.clone(), mlp.clone(), kind.clone(), None)?;
    let p = be.upload(params)?;
    let xb = be.upload(x)?;
    let mut y = eng.forward(&p, &xb, n)?;
    if let Some(h) = hard {
        h.apply_jets(&kind, x, &mut y);
    }
    let s = d + 2;
    let mut out = vec![0.0; n * m * s];
    for i in 0..n {
        for j in 0..m {
            for r in 0..s {
                out[(i * m + j) * s + r] = y[(i * s + r) * m + j];
            }
        }
    }
    Ok(out)
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    crate::io::check_output("--out", &a.out, a.force)?;
    let model = model_io::load(&a.model)?;
    let pts = npy::read(&a.points)?;
    let d = model.mlp.input_dim();
    if pts.cols != d {
        bail!(
            "{}: points have {} columns but the model {} takes {d} inputs",
            a.points.display(),
            pts.cols,
            model.mlp
        );
    }
    if let Some(i) = pts.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: point {} has a non-finite coordinate ({})",
            a.points.display(),
            i / d,
            pts.data[i]
        );
    }
    let hard = if a.network_output || !(a.source.given() || super::source::trained_hard(&model)) {
        None
    } else {
        let problem = a.source.resolve(&model).context(
            "the model was trained with exact boundary conditions (u = g + φN): name its problem, or give --network-output for N",
        )?;
        super::source::check_fits(&model, problem.as_ref())?;
        super::source::output_transform(&model, problem.as_ref())?
    };
    let h = hard.as_ref();
    let out = match super::train::backend_for(a.device.parse()?)? {
        super::train::AnyBackend::Cpu(be) => evaluate(&be, &model.mlp, &model.params, &pts.data, h),
        super::train::AnyBackend::Cuda(be) => {
            evaluate(&be, &model.mlp, &model.params, &pts.data, h)
        }
    }
    .context("evaluating the model")?;
    let cols = model.mlp.output_dim() * (d + 2);
    crate::io::write_atomic(&a.out, &npy::encode(pts.rows, cols, &out))?;
    eprintln!(
        "wrote {} × {cols} values (u, ∇u, Δu) to {}",
        pts.rows,
        a.out.display()
    );
    Ok(())
}

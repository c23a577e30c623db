//! The problem a saved model is read against, shared by `eval`, `export` and
//! `plot-solution`: `--problem` or `--config` (a `[custom]` problem), defaulting to the
//! problem the model file names, and whether the network's output is the solution itself
//! or `N` in `u = g + φN` (a model trained with exact boundary conditions: the file's
//! [`HARD_BC_KEY`] says so, and the problem's [`crate::pde::Problem::hard_bc`] gives the
//! transform).
//!
//! Checked by `tests/export.rs` (a hard-BC model read back through `eval`, `export` and
//! `plot-solution` against `g + φN` computed by hand, and the errors below).

use crate::model::io::ModelFile;
use crate::pde::hard::HardBc;
use crate::pde::Problem;
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

/// Model-file metadata key: the network is `N` of `u = g + φN` ("true").
pub const HARD_BC_KEY: &str = "kfac_pinn.hard_bc";

/// Which problem to read a model against.
#[derive(Args, Debug, Default, Clone)]
pub struct ProblemArgs {
    /// The problem (domain, residuals, exact solution, exact boundary conditions); default:
    /// the one the model file names (see `kfac-pinn problems`).
    #[arg(long)]
    pub problem: Option<String>,
    /// A run config with a `[custom]` problem instead of --problem.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ProblemArgs {
    /// Whether either flag was given.
    pub fn given(&self) -> bool {
        self.problem.is_some() || self.config.is_some()
    }

    /// The problem from the flags, else the one the model file names.
    pub fn resolve(&self, model: &ModelFile) -> anyhow::Result<Arc<dyn Problem>> {
        Ok(match (&self.problem, &self.config) {
            (Some(_), Some(_)) => bail!("give either --problem or --config, not both"),
            (Some(p), None) => crate::pde::problem(p, &Default::default())?,
            (None, Some(c)) => {
                let text = std::fs::read_to_string(c)
                    .with_context(|| format!("reading {}", c.display()))?;
                crate::pde::custom::parse_spec(&text)?.build()?
            }
            (None, None) => match model.metadata.get("problem") {
                Some(p) => crate::pde::problem(p, &Default::default()).with_context(|| {
                    format!("the model's problem `{p}` (give --problem or --config)")
                })?,
                None => {
                    bail!("give --problem or --config (the model file does not name its problem)")
                }
            },
        })
    }
}

/// Refuses a model whose inputs or outputs do not match the problem's.
pub fn check_fits(model: &ModelFile, problem: &dyn Problem) -> anyhow::Result<()> {
    let (d, m) = (problem.dim(), problem.out_dim());
    if model.mlp.input_dim() != d || model.mlp.output_dim() != m {
        bail!(
            "the model {} ({} inputs, {} outputs) does not fit problem `{}` ({d} inputs, {m} outputs)",
            model.mlp,
            model.mlp.input_dim(),
            model.mlp.output_dim(),
            problem.name()
        );
    }
    Ok(())
}

/// Whether the model file says its network is `N` of `u = g + φN`.
pub fn trained_hard(model: &ModelFile) -> bool {
    model.metadata.get(HARD_BC_KEY).is_some_and(|v| v == "true")
}

/// The transform that turns the model's outputs into the solution on `problem`: the
/// problem's exact conditions, or none. A model trained with exact conditions read
/// against a problem without them is refused (its outputs are not the solution); a
/// problem with them and a file that does not say so (written before the key existed)
/// takes the problem's word.
pub fn output_transform(
    model: &ModelFile,
    problem: &dyn Problem,
) -> anyhow::Result<Option<Arc<HardBc>>> {
    let hard = problem.hard_bc();
    if trained_hard(model) && hard.is_none() {
        bail!(
            "the model was trained with exact boundary conditions (its network is N in u = g + φN), but problem `{}` has none: give the `-hard` problem it was trained on",
            problem.name()
        );
    }
    Ok(hard)
}

//! `kfac-pinn selfcheck`: the backend-versus-CPU comparisons of [`crate::selfcheck`] from
//! the installed binary alone (a GPU machine has no Rust toolchain). One line per case
//! as it completes, then a summary; `--json` prints one JSON object (cases and summary)
//! on stdout and the lines on stderr; `--out DIR` writes `DIR/selfcheck.json`. The exit
//! status is 1 when any case fails or the device cannot be opened.
//!
//! Devices: `cuda` (GPU 0), `emu` (the CUDA kernels through their CPU emulation, the
//! library calls on the CPU), `cpu` (the CPU backend against itself with another thread
//! count, so the sweeps split into other chunks: a sanity run). Checked by tests/cli.rs.

use crate::backend::cpu::Cpu;
use crate::selfcheck::{self, CaseResult, Reference, Report, SelfCheckDevice, Tolerances};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SelfcheckArgs {
    /// cuda (GPU 0), emu (the kernels' CPU emulation) or cpu (against itself).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Print one JSON object (cases and summary) on stdout; the per-case lines go to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also write DIR/selfcheck.json (DIR is created).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only these groups (comma-separated): gemm, svd, eig, forward, autodiff,
    /// gradient, steps, memory.
    #[arg(long)]
    pub only: Option<String>,
}

pub fn run(a: SelfcheckArgs) -> anyhow::Result<()> {
    let only: Vec<&str> = a
        .only
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(g) = only.iter().find(|g| !selfcheck::GROUPS.contains(g)) {
        bail!(
            "`--only` must list groups from {}. Got `{g}`.",
            selfcheck::GROUPS.join(", ")
        );
    }
    let json = a.json;
    let mut on_case = |c: &CaseResult| {
        let text = if c.passed() { c.line() } else { c.details() };
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    };
    let report = match a.device.to_ascii_lowercase().as_str() {
        "cuda" | "gpu" => {
            use crate::backend::device::{select, DeviceKind, Selected};
            let be = match select(DeviceKind::Cuda) {
                Ok(Selected::Cuda(c)) => c,
                Ok(Selected::Cpu { .. }) => bail!("selfcheck: `--device cuda` did not open a GPU"),
                Err(e) => bail!("selfcheck needs a usable GPU for `--device cuda`: {e}"),
            };
            eprintln!(
                "selfcheck on {} (compute capability {}.{}; kernels: {})",
                crate::backend::Backend::name(&be),
                be.compute_capability().0,
                be.compute_capability().1,
                be.kernels_from()
            );
            check(
                &be,
                Tolerances::CUDA,
                Reference::Ambient,
                &only,
                &mut on_case,
            )?
        }
        "emu" => {
            if !crate::backend::emu::available() {
                bail!("selfcheck `--device emu`: this binary was built without the CUDA CPU emulation (build.rs found no C++20 compiler)");
            }
            let be = crate::backend::emu::Emu::default();
            check(
                &be,
                Tolerances::EMU,
                Reference::Ambient,
                &only,
                &mut on_case,
            )?
        }
        "cpu" => {
            // the reference runs on another thread count than the backend under test
            let threads = rayon::current_num_threads();
            let ref_threads = if threads > 1 { 1 } else { 3 };
            let mut r = check(
                &Cpu,
                Tolerances::CPU,
                Reference::Threads(ref_threads),
                &only,
                &mut on_case,
            )?;
            r.summary.device = format!(
                "cpu ({threads} threads) against cpu ({ref_threads} thread{})",
                if ref_threads == 1 { "" } else { "s" }
            );
            r
        }
        d => bail!("`--device` must be one of cuda, emu, cpu. Got `{d}`."),
    };
    let s = &report.summary;
    let text = format!(
        "selfcheck on {}: {} passed, {} failed, {} not applicable, {:.1} s",
        s.device, s.passed, s.failed, s.not_applicable, s.seconds
    );
    if json {
        eprintln!("{text}");
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{text}");
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("selfcheck.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if s.failed > 0 {
        let names: Vec<String> = report
            .cases
            .iter()
            .filter(|c| c.status == selfcheck::Status::Fail)
            .map(|c| format!("{} {} {}", c.group, c.name, c.dtype))
            .collect();
        bail!(
            "selfcheck failed on {}: {} of {} cases ({})",
            s.device,
            s.failed,
            report.cases.len(),
            names.join("; ")
        );
    }
    Ok(())
}

fn check<B: SelfCheckDevice>(
    be: &B,
    tol: Tolerances,
    reference: Reference,
    only: &[&str],
    on_case: &mut dyn FnMut(&CaseResult),
) -> anyhow::Result<Report> {
    Ok(selfcheck::run(be, tol, reference, only, on_case)?)
}

//! The command-line interface (clap + anyhow live only here and in main.rs).
//!
//! `train`, `eval`, `plot`, `plot-solution`, `compare`, `devices`, `selfcheck`, `problems`,
//! `presets`, `laplacian`, `export`. Each subcommand validates its input and turns library errors
//! into messages that name the bad value.

mod compare;
pub mod eval;
pub mod export;
mod laplacian;
pub mod plot;
mod report;
mod selfcheck;
mod signals;
pub mod source;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kfac-pinn",
    version,
    allow_negative_numbers = true,
    about = "Train physics-informed neural networks with KFAC, KFAC*, ENGD, HIG and friends"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a network on a problem.
    #[command(allow_negative_numbers = true)]
    Train(Box<train::TrainArgs>),
    /// Evaluate a model file at points: u, ∇u and Δu (NumPy .npy in and out).
    Eval(eval::EvalArgs),
    /// Write a model's fields (u, ∇u, residuals, error) on a grid for ParaView (.vtu/.vti).
    Export(export::ExportArgs),
    /// Plot training curves (L2 error or loss versus time and steps) from run logs.
    Plot(plot::PlotArgs),
    /// Heat maps of a trained model, the exact solution and the error on a 2-d slice.
    PlotSolution(plot::SolutionArgs),
    /// Run several optimizers under the same budget and seeds; write a table and plots.
    Compare(compare::CompareArgs),
    /// Describe the compute devices: CPU threads, CUDA driver, GPUs (NVML), kernel loading.
    Devices,
    /// List the built-in problems with their dimensions and solutions.
    Problems,
    /// List the presets (the paper's tuned runs).
    Presets,
    /// Time the Laplacian of an MLP: forward Laplacian vs nested autodiff (and bare GEMMs).
    #[command(allow_negative_numbers = true)]
    Laplacian(laplacian::LaplacianArgs),
    /// Compare a device with the CPU on every engine case (GPU, kernel emulation, CPU).
    Selfcheck(selfcheck::SelfcheckArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Devices => {
            print!("{}", crate::backend::device::describe());
            Ok(())
        }
        Command::Problems => {
            list_problems();
            Ok(())
        }
        Command::Presets => {
            list_presets();
            Ok(())
        }
        Command::Laplacian(a) => laplacian::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Export(a) => export::run(a),
        Command::Plot(a) => plot::run(a),
        Command::PlotSolution(a) => plot::run_solution(a),
        Command::Compare(a) => compare::run(a),
        Command::Selfcheck(a) => selfcheck::run(a),
    }
}

fn list_problems() {
    use crate::pde::{problem, problem_names, ProblemOptions};
    println!(
        "{:<22} {:>4} {:>4}  {:<28} {:>12}  equation and solution",
        "problem", "dim", "out", "default net", "points"
    );
    for name in problem_names() {
        let Ok(p) = problem(name, &ProblemOptions::default()) else {
            continue;
        };
        let s = p.setup();
        let net = s
            .widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-");
        let pts = s
            .points
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("/");
        println!(
            "{:<22} {:>4} {:>4}  {:<28} {:>12}  {}",
            name,
            p.dim(),
            p.out_dim(),
            net,
            pts,
            p.summary()
        );
    }
}

fn list_presets() {
    println!(
        "{:<28} {:<20} {:<22} {:>9} {:>10} {:>8}  optimizers (paper's final L2)",
        "preset", "problem", "net", "params", "points", "seconds"
    );
    for p in crate::presets::all() {
        let net = p
            .widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-");
        let pts = p
            .points
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("/");
        let opts: Vec<String> = p
            .optimizers
            .iter()
            .map(|o| match o.paper_l2 {
                Some(l) => format!("{} ({l:.1e})", o.name),
                None => o.name.to_string(),
            })
            .collect();
        println!(
            "{:<28} {:<20} {:<22} {:>9} {:>10} {:>8}  {}",
            p.name,
            p.problem,
            net,
            p.params(),
            pts,
            p.seconds,
            opts.join(", ")
        );
    }
}

/// Parse "a,b,c" into numbers, naming the flag in errors; an empty item (`2,,64`) is
/// an error, not skipped.
pub(crate) fn parse_list<T: std::str::FromStr>(flag: &str, s: &str) -> anyhow::Result<Vec<T>> {
    split_list(flag, s)?
        .into_iter()
        .map(|p| {
            p.parse::<T>().map_err(|_| {
                anyhow::anyhow!(
                    "`--{flag}` must be a comma-separated list of numbers. Got `{s}` (`{p}` is not one)."
                )
            })
        })
        .collect()
}

/// Split "a,b,c" into trimmed items; empty items and an empty list are errors naming
/// the flag.
pub(crate) fn split_list<'a>(flag: &str, s: &'a str) -> anyhow::Result<Vec<&'a str>> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if let Some(i) = items.iter().position(|p| p.is_empty()) {
        anyhow::bail!(
            "`--{flag}` must be a comma-separated list without empty items. Got `{s}` (item {} is empty).",
            i + 1
        );
    }
    Ok(items)
}

/// An orderly stop that still must exit non-zero (a run stopped by a signal exits with
/// 128 + its number after writing its checkpoint). `main` prints the message and exits
/// with the code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

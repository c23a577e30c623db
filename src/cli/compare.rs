//! `kfac-pinn compare`: run several optimizers on the same problem under the same
//! wall-clock budget and seeds (each in its own process and run directory), then write a
//! table (Markdown and CSV) and plots of the L2 error versus time and versus steps, as the
//! paper's figures show them.

use super::plot::curve_charts;
use crate::plot;
use crate::train::read_log;
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Base run config (TOML); each optimizer overrides `optimizer` only.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A preset instead of (or on top of) a config: each optimizer gets its tuned settings.
    #[arg(long)]
    pub preset: Option<String>,
    /// A problem name when neither config nor preset names one.
    #[arg(long)]
    pub problem: Option<String>,
    /// Comma-separated optimizers, e.g. adam,kfac,kfac-star,engd.
    #[arg(long)]
    pub optimizers: String,
    /// Wall-clock budget per optimizer (seconds of training).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Step budget per optimizer.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Output directory (one run directory per optimizer, summary.md/.csv, plots).
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluate and log every K steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, serde::Deserialize)]
struct Summary {
    optimizer: String,
    steps: u64,
    seconds: f64,
    loss: Option<f64>,
    l2_abs: Option<f64>,
    l2_rel: Option<f64>,
    mean_step_ms: f64,
}

pub fn run(a: CompareArgs) -> anyhow::Result<()> {
    let opts: Vec<&str> = super::split_list("optimizers", &a.optimizers)?;
    for (i, o) in opts.iter().enumerate() {
        if opts[..i].contains(o) {
            bail!(
                "`--optimizers` names `{o}` twice (each optimizer gets one run directory). Got `{}`.",
                a.optimizers
            );
        }
        if !crate::optim::OPTIMIZER_NAMES.contains(o) {
            bail!(
                "unknown optimizer `{o}` in `--optimizers`; expected some of: {}",
                crate::optim::OPTIMIZER_NAMES.join(", ")
            );
        }
    }
    if a.seconds.is_none() && a.steps.is_none() {
        bail!("give a budget: --seconds and/or --steps");
    }
    crate::io::check_output_dir("--out", &a.out)?;
    if a.out.is_dir() && std::fs::read_dir(&a.out)?.next().is_some() && !a.force {
        bail!(
            "`--out` {} is not empty (pass --force to overwrite)",
            a.out.display()
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let exe = std::env::current_exe().context("locating the kfac-pinn executable")?;
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for o in &opts {
        let dir = a.out.join(o);
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "train",
            "--optimizer",
            o,
            "--json",
            "--quiet",
            "--force",
            "--out",
        ])
        .arg(&dir);
        if let Some(c) = &a.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(p) = &a.preset {
            cmd.args(["--preset", p]);
        }
        if let Some(p) = &a.problem {
            cmd.args(["--problem", p]);
        }
        if let Some(s) = a.seconds {
            cmd.args(["--seconds", &s.to_string()]);
        }
        if let Some(s) = a.steps {
            cmd.args(["--steps", &s.to_string()]);
        }
        if let Some(k) = a.log_every {
            cmd.args(["--log-every", &k.to_string()]);
        }
        if let Some(s) = a.seed {
            cmd.args(["--seed", &s.to_string()]);
        }
        eprintln!("compare: running {o} …");
        let out = cmd.output().with_context(|| format!("running {o}"))?;
        let stderr = failure_message(&String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let summary: Option<Summary> = serde_json::from_str(&line).ok();
        match (&summary, out.status.success()) {
            (Some(s), _) => {
                eprintln!(
                    "compare: {o}: {} steps, L2 {}",
                    s.steps,
                    s.l2_abs
                        .map(|v| format!("{v:.3e}"))
                        .unwrap_or_else(|| "n/a".into())
                );
            }
            (None, _) => eprintln!("compare: {o} failed: {stderr}"),
        }
        let log = dir.join("log.csv");
        let best = read_log(&log)
            .ok()
            .map(|r| r.iter().map(|x| x.l2_abs).fold(f64::INFINITY, f64::min));
        if let Ok(r) = read_log(&log) {
            runs.push((o.to_string(), r));
        }
        rows.push((
            o.to_string(),
            summary,
            best,
            if out.status.success() {
                None
            } else {
                Some(stderr.clone())
            },
        ));
    }
    // table
    let fmt = |v: Option<f64>| {
        v.filter(|x| x.is_finite())
            .map(|x| format!("{x:.3e}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let mut md = String::from("| optimizer | steps | seconds | ms/step | final loss | L2 (abs) | L2 (rel) | best L2 | note |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let mut csv =
        String::from("optimizer,steps,seconds,mean_step_ms,loss,l2_abs,l2_rel,best_l2,note\n");
    for (o, s, best, err) in &rows {
        let note = err
            .as_deref()
            .map(|e| e.lines().last().unwrap_or("").replace(['|', ','], ";"))
            .unwrap_or_default();
        match s {
            Some(s) => {
                md += &format!(
                    "| {} | {} | {:.1} | {:.2} | {} | {} | {} | {} | {note} |\n",
                    s.optimizer,
                    s.steps,
                    s.seconds,
                    s.mean_step_ms,
                    fmt(s.loss),
                    fmt(s.l2_abs),
                    fmt(s.l2_rel),
                    fmt(*best)
                );
                csv += &format!(
                    "{},{},{},{},{},{},{},{},{note}\n",
                    s.optimizer,
                    s.steps,
                    s.seconds,
                    s.mean_step_ms,
                    s.loss.unwrap_or(f64::NAN),
                    s.l2_abs.unwrap_or(f64::NAN),
                    s.l2_rel.unwrap_or(f64::NAN),
                    best.unwrap_or(f64::NAN)
                );
            }
            None => {
                md += &format!(
                    "| {o} | – | – | – | – | – | – | {} | {note} |\n",
                    fmt(*best)
                );
                csv += &format!("{o},,,,,,,{},{note}\n", best.unwrap_or(f64::NAN));
            }
        }
    }
    crate::io::write_atomic(&a.out.join("summary.md"), md.as_bytes())?;
    crate::io::write_atomic(&a.out.join("summary.csv"), csv.as_bytes())?;
    print!("{md}");
    if !runs.is_empty() {
        for (x, file) in [("seconds", "l2_vs_time.png"), ("steps", "l2_vs_steps.png")] {
            let charts = curve_charts(&runs, x, "l2", "")?;
            if let Err(e) = plot::line_charts(&a.out.join(file), &charts) {
                eprintln!("compare: no {file}: {e}");
            }
        }
    }
    Ok(())
}

/// What to report of a failed run's stderr: its `error:` lines (the child may also print
/// notes, e.g. the CPU fallback of `--device auto`), else its last non-empty line.
fn failure_message(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("error"))
        .collect();
    if errors.is_empty() {
        stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output")
            .to_string()
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::failure_message;

    #[test]
    fn failure_message_prefers_error_lines() {
        let e = "--device auto: no usable GPU; running on the CPU\nerror: `ema` must be unset\n";
        assert_eq!(failure_message(e), "error: `ema` must be unset");
        assert_eq!(failure_message("note\nlast words\n\n"), "last words");
        assert_eq!(failure_message(""), "no output");
    }
}

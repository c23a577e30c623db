//! `kfac-pinn plot` (training curves from run logs) and `kfac-pinn plot-solution` (heat
//! maps of the network, the exact solution and the error on a 2-d slice of the domain;
//! points outside a shape are blank and its boundary is drawn).

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::jet::{JetEngine, JetKind};
use crate::model::io as model_io;
use crate::plot::{self, Chart, HeatMap, Legend, Series};
use crate::train::{read_log, LogRow};
use anyhow::bail;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run logs (CSV written by `train --log` or `--out`).
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Output file (.png or .svg).
    #[arg(long)]
    pub out: PathBuf,
    /// Horizontal axis: seconds, steps or both (two panels).
    #[arg(long, default_value = "both")]
    pub x: String,
    /// Vertical axis: l2 (absolute), l2-rel or loss.
    #[arg(long, default_value = "l2")]
    pub y: String,
    /// Labels for the logs, comma-separated (default: the file or run-directory name).
    #[arg(long)]
    pub labels: Option<String>,
    #[arg(long)]
    pub force: bool,
}

/// A readable label for a log: `DIR/log.csv` → `DIR`, `name.csv` → `name`.
pub fn label_of(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "log" {
        if let Some(dir) = path.parent().and_then(|p| p.file_name()) {
            return dir.to_string_lossy().into_owned();
        }
    }
    stem
}

/// Training-curve charts for labelled logs.
pub fn curve_charts(
    runs: &[(String, Vec<LogRow>)],
    x: &str,
    y: &str,
    title: &str,
) -> anyhow::Result<Vec<Chart>> {
    let (y_label, pick): (&str, fn(&LogRow) -> f64) = match y {
        "l2" => ("L2 error", |r| r.l2_abs),
        "l2-rel" => ("relative L2 error", |r| r.l2_rel),
        "loss" => ("loss", |r| r.loss),
        _ => bail!("`--y` must be one of l2, l2-rel, loss. Got `{y}`."),
    };
    let xs: Vec<&str> = match x {
        "both" => vec!["seconds", "steps"],
        "seconds" | "steps" => vec![x],
        _ => bail!("`--x` must be one of seconds, steps, both. Got `{x}`."),
    };
    Ok(xs
        .iter()
        .map(|&xa| Chart {
            title: format!(
                "{title}{y_label} vs {}",
                if xa == "seconds" { "time" } else { "steps" }
            ),
            x_label: if xa == "seconds" {
                "training time [s]".into()
            } else {
                "step".into()
            },
            y_label: y_label.into(),
            log_x: true,
            log_y: true,
            series: runs
                .iter()
                .map(|(label, rows)| Series {
                    label: label.clone(),
                    points: rows
                        .iter()
                        .map(|r| {
                            (
                                if xa == "seconds" {
                                    r.seconds
                                } else {
                                    r.step as f64
                                },
                                pick(r),
                            )
                        })
                        .collect(),
                })
                .collect(),
            legend: Legend::LowerLeft,
        })
        .collect())
}

pub fn run(a: PlotArgs) -> anyhow::Result<()> {
    crate::plot::check_plot_path("--out", &a.out, a.force)?;
    let labels: Vec<String> = match &a.labels {
        Some(l) => l.split(',').map(|s| s.trim().to_string()).collect(),
        None => a.logs.iter().map(|p| label_of(p)).collect(),
    };
    if labels.len() != a.logs.len() {
        bail!(
            "`--labels` has {} entries for {} logs",
            labels.len(),
            a.logs.len()
        );
    }
    let mut runs = Vec::new();
    for (p, l) in a.logs.iter().zip(labels) {
        runs.push((l, read_log(p)?));
    }
    let charts = curve_charts(&runs, &a.x, &a.y, "")?;
    plot::line_charts(&a.out, &charts)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct SolutionArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub source: super::source::ProblemArgs,
    /// The two input coordinates on the axes, e.g. 0,1.
    #[arg(long, default_value = "0,1")]
    pub axes: String,
    /// Values of the other coordinates (default: the middle of the domain), comma-separated
    /// over all input dimensions (the entries of the axes are ignored).
    #[arg(long)]
    pub at: Option<String>,
    /// Grid points per axis.
    #[arg(long, default_value_t = 100)]
    pub resolution: usize,
    /// Output file (.png or .svg).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub force: bool,
}

pub fn run_solution(a: SolutionArgs) -> anyhow::Result<()> {
    crate::plot::check_plot_path("--out", &a.out, a.force)?;
    let model = model_io::load(&a.model)?;
    let problem = a.source.resolve(&model)?;
    let hard = super::source::output_transform(&model, problem.as_ref())?;
    let d = problem.dim();
    if model.mlp.input_dim() != d {
        bail!(
            "the model {} takes {} inputs but problem `{}` has {d}",
            model.mlp,
            model.mlp.input_dim(),
            problem.name()
        );
    }
    if model.mlp.output_dim() != 1 {
        bail!(
            "plot-solution draws scalar outputs; the model has {}",
            model.mlp.output_dim()
        );
    }
    let axes: Vec<usize> = super::parse_list("axes", &a.axes)?;
    if axes.len() != 2 || axes[0] == axes[1] || axes.iter().any(|&i| i >= d) {
        bail!(
            "`--axes` must name two different coordinates below {d}. Got `{}`.",
            a.axes
        );
    }
    if a.resolution < 2 || a.resolution > 2000 {
        bail!("`--resolution` must be in 2..=2000. Got {}.", a.resolution);
    }
    let (lo, hi) = super::export::domain_box(problem.as_ref())?;
    let base = super::export::base_point(a.at.as_deref(), &lo, &hi)?;
    let n = a.resolution;
    let (ax, ay) = (axes[0], axes[1]);
    let mut x = Vec::with_capacity(n * n * d);
    for j in 0..n {
        for i in 0..n {
            let mut p = base.clone();
            p[ax] = lo[ax] + (hi[ax] - lo[ax]) * (i as f64 + 0.5) / n as f64;
            p[ay] = lo[ay] + (hi[ay] - lo[ay]) * (j as f64 + 0.5) / n as f64;
            x.extend(p);
        }
    }
    // points outside the domain are blank, its boundary is drawn (a box's is the frame)
    let shape = problem.shape();
    let inside: Vec<bool> = x
        .chunks(d)
        .map(|p| shape.as_ref().is_none_or(|s| s.contains(p)))
        .collect();
    let outline = match &shape {
        Some(s) if inside.iter().any(|b| !b) => {
            let mut p = base.clone();
            crate::plot::zero_contour(2 * n, 2 * n, (lo[ax], hi[ax], lo[ay], hi[ay]), |u, v| {
                p[ax] = u;
                p[ay] = v;
                s.sdf(&p)
            })
        }
        _ => vec![],
    };
    let mask = |v: Vec<f64>| -> Vec<f64> {
        v.into_iter()
            .zip(&inside)
            .map(|(v, &k)| if k { v } else { f64::NAN })
            .collect()
    };
    let mut eng = JetEngine::<Cpu, f64>::new(Cpu, model.mlp.clone(), JetKind::Value, None)?;
    let mut u = eng.forward(&Cpu.upload(&model.params)?, &Cpu.upload(&x)?, n * n)?;
    if let Some(h) = &hard {
        h.apply(&x, &mut u);
    }
    let extent = (lo[ax], hi[ax], lo[ay], hi[ay]);
    let name = |i: usize| format!("x{i}");
    let map = |title: &str, values: Vec<f64>| HeatMap {
        title: title.into(),
        nx: n,
        ny: n,
        extent,
        values,
        x_label: name(ax),
        y_label: name(ay),
        outline: outline.clone(),
    };
    let u = mask(u);
    let mut maps = vec![map("network u", u.clone())];
    let mut exact = vec![0.0; n * n];
    let mut have = true;
    for (k, p) in x.chunks(d).enumerate() {
        let mut o = [0.0];
        have &= problem.exact(p, &mut o);
        exact[k] = o[0];
    }
    if have {
        let err: Vec<f64> = u.iter().zip(&exact).map(|(a, b)| (a - b).abs()).collect();
        maps.push(map("exact u*", mask(exact)));
        maps.push(map("|u - u*|", err));
    }
    plot::heat_maps(&a.out, &maps)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

//! `kfac-pinn train`: flags (or a preset) → problem, network, optimizer, budget; runs the
//! trainer with a progress bar and CSV log; prints a summary line (or JSON).

use super::parse_list;
use crate::backend::cpu::Cpu;
use crate::backend::device::DeviceKind;
use crate::model::Mlp;
use crate::optim::{self, OptimizerConfig};
use crate::pde::{problem, ProblemOptions};
use crate::presets;
use crate::scalar::{DType, Real};
use crate::train::{CsvLog, StopReason, Summary, TrainOptions, Trainer};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The optimizer used when neither `--optimizer` nor a preset names one.
pub const DEFAULT_OPTIMIZER: &str = "adam";
/// Default wall-clock budget of a bare `train` (seconds).
const DEFAULT_SECONDS: f64 = 60.0;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Problem name (see `kfac-pinn problems`). Default: poisson2d.
    #[arg(long)]
    pub problem: Option<String>,
    /// Start from a preset (see `kfac-pinn presets`): problem, net, points, resampling, and
    /// the tuned hyperparameters of the chosen optimizer.
    #[arg(long)]
    pub preset: Option<String>,
    /// Layer widths including input and output, e.g. 2,64,1.
    #[arg(long)]
    pub widths: Option<String>,
    /// Optimizer: sgd, adam, lbfgs, hessian-free, engd, engd-layer, engd-diag,
    /// engd-woodbury, kfac, kfac-star, gn, hig.
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub beta1: Option<f64>,
    #[arg(long)]
    pub beta2: Option<f64>,
    #[arg(long)]
    pub eps: Option<f64>,
    /// Damping λ.
    #[arg(long)]
    pub damping: Option<f64>,
    /// Exponential moving average factor of curvature estimates, in [0, 1).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Start curvature estimates at the identity (true) or zero (false).
    #[arg(long)]
    pub init_identity: Option<bool>,
    #[arg(long)]
    pub update_interval: Option<usize>,
    #[arg(long)]
    pub inverse_interval: Option<usize>,
    /// Maximum CG iterations (Hessian-free).
    #[arg(long)]
    pub cg_iters: Option<usize>,
    /// L-BFGS history size.
    #[arg(long)]
    pub history: Option<usize>,
    /// HIG/GN singular-value cut-off τ (relative to the largest), in (0, 1).
    #[arg(long)]
    pub tau: Option<f64>,
    /// HIG/GN exponent κ of Σ^{-κ}, in (0, 1].
    #[arg(long)]
    pub kappa: Option<f64>,
    /// Scale λ of the second output in `toy-regression`.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// Budget in optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Budget in wall-clock seconds of training (evaluation excluded).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Points per term, e.g. 900,120 (interior, boundary).
    #[arg(long)]
    pub points: Option<String>,
    /// Resample the training points every K steps (0: fixed).
    #[arg(long)]
    pub resample: Option<usize>,
    /// Number of held-out points for the L2 error.
    #[arg(long)]
    pub eval_points: Option<usize>,
    /// Write the training log (CSV: step, seconds, loss, l2_abs, l2_rel, lr) here.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Evaluate and log every K steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Seed of the network initialisation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seed of the training and evaluation points.
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// f64 (default) or f32.
    #[arg(long, default_value = "f64")]
    pub dtype: String,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Jet rows per chunk (memory/speed trade-off of the forward Laplacian).
    #[arg(long)]
    pub chunk_rows: Option<usize>,
    /// Write the trained model here (safetensors, architecture in the metadata).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from the parameters in this model file instead of a fresh initialisation.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Overwrite existing output files (log, model).
    #[arg(long)]
    pub force: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Everything a run needs, resolved from flags and preset.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub problem: String,
    pub problem_opts: ProblemOptions,
    pub widths: Vec<usize>,
    pub optimizer: String,
    pub opt_cfg: OptimizerConfig,
    pub opts: TrainOptions,
    pub seed: u64,
    pub dtype: DType,
    pub device: DeviceKind,
    pub log: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub force: bool,
}

fn overlay(base: &mut OptimizerConfig, a: &TrainArgs) {
    macro_rules! set {
        ($($f:ident),*) => { $( if a.$f.is_some() { base.$f = a.$f; } )* };
    }
    set!(
        lr,
        momentum,
        beta1,
        beta2,
        eps,
        damping,
        ema,
        init_identity,
        update_interval,
        inverse_interval,
        cg_iters,
        history,
        tau,
        kappa
    );
}

pub fn resolve(a: &TrainArgs) -> anyhow::Result<Resolved> {
    let preset = a.preset.as_deref().map(presets::get).transpose()?;
    let problem_name = match (&a.problem, &preset) {
        (Some(p), Some(pr)) if p != pr.problem => bail!(
            "`--problem {p}` conflicts with preset `{}` (problem {})",
            pr.name,
            pr.problem
        ),
        (Some(p), _) => p.clone(),
        (None, Some(pr)) => pr.problem.to_string(),
        (None, None) => "poisson2d".to_string(),
    };
    let problem_opts = ProblemOptions { lambda: a.lambda };
    let prob = problem(&problem_name, &problem_opts)?;
    let setup = prob.setup();
    let optimizer = a.optimizer.clone().unwrap_or_else(|| {
        preset
            .as_ref()
            .and_then(|p| p.optimizers.first())
            .map(|o| o.name.to_string())
            .unwrap_or_else(|| DEFAULT_OPTIMIZER.into())
    });
    let mut opt_cfg = OptimizerConfig::default();
    let mut resample = setup.resample;
    let mut points = setup.points.clone();
    let mut widths = setup.widths.clone();
    let mut eval_points = setup.eval_points;
    if let Some(p) = &preset {
        widths = p.widths.to_vec();
        points = p.points.to_vec();
        resample = p.resample;
        eval_points = p.eval_points;
        match p.optimizer(&optimizer) {
            Some(o) => {
                opt_cfg = o.config.clone();
                if let Some(r) = o.resample {
                    resample = r;
                }
            }
            None => eprintln!(
                "note: preset `{}` has no tuned settings for `{optimizer}` (it has: {}); using the optimizer's defaults",
                p.name,
                p.optimizers.iter().map(|o| o.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    overlay(&mut opt_cfg, a);
    if let Some(w) = &a.widths {
        widths = Mlp::parse(w)?.widths().to_vec();
    }
    if let Some(p) = &a.points {
        points = parse_list("points", p)?;
    }
    if let Some(r) = a.resample {
        resample = r;
    }
    if let Some(e) = a.eval_points {
        if e == 0 {
            bail!("`--eval-points` must be at least 1. Got 0.");
        }
        eval_points = e;
    }
    let seconds = match (a.seconds, a.steps, &preset) {
        (Some(s), _, _) => Some(s),
        (None, Some(_), _) => None,
        (None, None, Some(p)) => Some(p.seconds),
        (None, None, None) => Some(DEFAULT_SECONDS),
    };
    if let Some(s) = seconds {
        if !(s.is_finite() && s > 0.0) {
            bail!("`--seconds` must be a finite number > 0. Got {s}.");
        }
    }
    if a.steps == Some(0) {
        bail!("`--steps` must be at least 1. Got 0.");
    }
    if a.log_every == 0 {
        bail!("`--log-every` must be at least 1. Got 0.");
    }
    Ok(Resolved {
        problem: problem_name,
        problem_opts,
        widths,
        optimizer,
        opt_cfg,
        opts: TrainOptions {
            max_steps: a.steps,
            max_seconds: seconds,
            log_every: a.log_every,
            resample,
            points,
            eval_points,
            data_seed: a.data_seed,
            chunk_rows: a.chunk_rows,
            progress: !a.quiet && !a.json,
        },
        seed: a.seed,
        dtype: a.dtype.parse()?,
        device: a.device.parse()?,
        log: a.log.clone(),
        save: a.save.clone(),
        init: a.init.clone(),
        force: a.force,
    })
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let mut r = resolve(&a)?;
    // outputs are checked before any work is done
    for p in r.log.iter().chain(r.save.iter()) {
        crate::io::check_overwrite(p, r.force)?;
    }
    if let Some(path) = &r.init {
        let m = crate::model::io::load(path)?;
        if a.widths.is_some() && m.mlp.widths() != r.widths.as_slice() {
            bail!(
                "`--widths` {:?} conflicts with the model file {} ({})",
                r.widths,
                path.display(),
                m.mlp
            );
        }
        r.widths = m.mlp.widths().to_vec();
    }
    let summary = match r.dtype {
        DType::F64 => train_on::<f64>(&r)?,
        DType::F32 => train_on::<f32>(&r)?,
    };
    report(&summary, a.json)?;
    match summary.stop {
        StopReason::Diverged => bail!(
            "training diverged: {}{}",
            summary.message.as_deref().unwrap_or("non-finite loss"),
            r.log
                .as_ref()
                .map(|l| format!(" (log kept at {})", l.display()))
                .unwrap_or_default()
        ),
        _ => Ok(()),
    }
}

/// Pick the backend for `--device`.
pub(crate) fn backend_for(device: DeviceKind) -> anyhow::Result<Cpu> {
    match device {
        DeviceKind::Cpu => Ok(Cpu),
        DeviceKind::Auto => Ok(Cpu),
        DeviceKind::Cuda => bail!(
            "`--device cuda`: this build has no CUDA backend yet; use `--device cpu` or `auto`"
        ),
    }
}

fn train_on<T: Real>(r: &Resolved) -> anyhow::Result<Summary> {
    let be = backend_for(r.device)?;
    let prob = problem(&r.problem, &r.problem_opts)?;
    let mlp = Mlp::new(&r.widths)?;
    let params: Vec<f64> = match &r.init {
        Some(path) => crate::model::io::load(path)?.params,
        None => mlp.init(r.seed),
    };
    let opt = optim::build::<Cpu, T>(&r.optimizer, &r.opt_cfg, &be, mlp.num_params())
        .with_context(|| format!("optimizer `{}`", r.optimizer))?;
    let mut trainer = Trainer::new(be, Arc::clone(&prob), mlp, &params, opt, r.opts.clone())?;
    let mut log = match &r.log {
        Some(p) => Some(CsvLog::create(p)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second Ctrl-C while stopping falls through to the default handler.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to abort)");
        });
    }
    let summary = trainer.run(log.as_mut(), &stop)?;
    if let Some(path) = &r.save {
        let meta = [
            ("problem", r.problem.clone()),
            ("optimizer", r.optimizer.clone()),
            ("steps", summary.steps.to_string()),
            ("l2_abs", format!("{:e}", summary.l2_abs)),
        ];
        crate::model::io::save(
            path,
            trainer.obj.mlp(),
            &trainer.params_host()?,
            T::DTYPE == DType::F32,
            &meta,
            true,
        )?;
        eprintln!("saved the model to {}", path.display());
    }
    Ok(summary)
}

fn report(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        let net = s
            .widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("→");
        println!(
            "{} | {} | {} ({} params, {}) | {} steps in {:.1} s ({:.2} ms/step) | loss {:.3e} | L2 {:.3e} (rel {:.3e}) | stop: {:?}",
            s.problem, s.optimizer, net, s.params, s.dtype, s.steps, s.seconds, s.mean_step_ms, s.loss, s.l2_abs, s.l2_rel, s.stop
        );
    }
    Ok(())
}

//! `kfac-pinn train`: flags (or a preset) → problem, network, optimizer, budget; runs the
//! trainer with a progress bar and CSV log; prints a summary line (or JSON).

use super::parse_list;
use super::signals::Signals;
use crate::backend::cpu::Cpu;
use crate::backend::device::DeviceKind;
use crate::geometry::PointKind;
use crate::io::lock::DirLock;
use crate::jet::Estimator;
use crate::loss::Objective;
use crate::model::Mlp;
use crate::optim::{self, OptimizerConfig};
use crate::pde::{problem, ProblemOptions};
use crate::presets;
use crate::scalar::{DType, Real};
use crate::train::{CsvLog, StopReason, Summary, TrainOptions, Trainer};
use anyhow::{bail, Context};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The optimizer used when neither `--optimizer` nor a preset names one.
pub const DEFAULT_OPTIMIZER: &str = "adam";
/// A bare `train` (no problem, preset or config problem) runs this preset with this
/// optimizer for [`DEFAULT_SECONDS`].
pub const DEFAULT_PRESET: (&str, &str) = ("poisson2d-257", "kfac-star");
/// Default wall-clock budget of a bare `train` (seconds).
const DEFAULT_SECONDS: f64 = 60.0;
/// Default wall-clock time between checkpoints (seconds).
const DEFAULT_CHECKPOINT_SECONDS: f64 = 300.0;

/// Every setting of a run. The same struct is read from TOML (`--config`, keys spelled
/// like the flags) and from the command line; flags override the file.
#[derive(Args, Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainArgs {
    /// Read settings from this TOML file (flags override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (its config.toml,
    /// log and checkpoint). `--steps`/`--seconds` then mean "this many more"; without them
    /// the run continues to its recorded budget. Only budgets, logging and checkpoint
    /// cadence, `--lr`, `--device`, `--chunk-rows`, `--save` and `--neuron-stats` may
    /// change on resume; anything else is an error naming the setting.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Run directory: config.toml (the resolved settings), log.csv,
    /// checkpoint.safetensors and model.safetensors are written there.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
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
    /// Learning rate (sgd, adam, lbfgs); for kfac, engd*, hig and gn a fixed step size instead of the line search.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum (sgd; kfac's momentum on the preconditioned direction), in [0, 1).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Adam's first-moment decay, in [0, 1).
    #[arg(long)]
    pub beta1: Option<f64>,
    /// Adam's second-moment decay, in [0, 1).
    #[arg(long)]
    pub beta2: Option<f64>,
    /// Adam's denominator offset, > 0.
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
    /// KFAC/KFAC*: recompute the Kronecker factors every K steps.
    #[arg(long)]
    pub update_interval: Option<usize>,
    /// KFAC/KFAC*: re-invert the damped Kronecker sum every K steps.
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
    /// Exact (hard) Dirichlet conditions: train `u = g + φN` on the problem's `-hard`
    /// variant (its Dirichlet terms dropped; `--points` counts the remaining terms).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub hard_bc: Option<bool>,
    /// Budget in optimizer steps (with --resume: this many more steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Budget in wall-clock seconds of training, evaluation excluded (with --resume: this
    /// many more seconds).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Points per term, e.g. 900,120 (interior, boundary), and/or how they are drawn:
    /// uniform, sobol, halton or lhs (e.g. `sobol`, or `sobol:900,120`).
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
    /// Evaluate and log every K steps (default 10).
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Checkpoint every K steps (with --out; default 100). A killed run loses at most
    /// the steps since its last checkpoint.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Also checkpoint every S seconds of wall-clock time (with --out; default 300), so
    /// slow steps (ENGD on large nets) do not go hours without one.
    #[arg(long)]
    pub checkpoint_seconds: Option<f64>,
    /// Seed of the network initialisation (default 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seed of the training and evaluation points (default 0).
    #[arg(long)]
    pub data_seed: Option<u64>,
    /// f64 (default) or f32.
    #[arg(long)]
    pub dtype: Option<String>,
    /// cpu, cuda or auto (default).
    #[arg(long)]
    pub device: Option<String>,
    /// Jet rows per chunk (memory/speed trade-off of the forward Laplacian).
    #[arg(long)]
    pub chunk_rows: Option<usize>,
    /// The second-order operator: `exact` (default) or `random:K`, an unbiased estimate
    /// from K random ±1 directions drawn afresh every step (`random:K:gauss`: normal
    /// directions). Poisson- and heat-type problems only; K at most D.
    #[arg(long)]
    pub laplacian: Option<String>,
    /// Log mean and standard deviation of each hidden layer's activations (CSV) at every
    /// logged step (the HIG chapter's saturation diagnostic). With --out: neurons.csv.
    #[arg(long)]
    pub neuron_stats: Option<PathBuf>,
    /// Write the trained model here (safetensors, architecture in the metadata).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Start from the parameters in this model file instead of a fresh initialisation.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// A custom problem (config files only: a `[custom]` table, see `pde::custom`).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<crate::pde::custom::CustomSpec>,
    /// Overwrite existing output files (log, model, run directory).
    #[arg(long)]
    #[serde(skip)]
    pub force: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
}

impl TrainArgs {
    /// Settings given here win over `base`'s.
    pub fn over(self, base: TrainArgs) -> TrainArgs {
        macro_rules! pick {
            ($($f:ident),*) => { TrainArgs { $( $f: self.$f.or(base.$f), )* force: self.force, json: self.json, quiet: self.quiet } };
        }
        pick!(
            config,
            resume,
            out,
            problem,
            preset,
            widths,
            optimizer,
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
            kappa,
            lambda,
            hard_bc,
            steps,
            seconds,
            points,
            resample,
            eval_points,
            log,
            log_every,
            checkpoint_every,
            checkpoint_seconds,
            neuron_stats,
            seed,
            data_seed,
            dtype,
            device,
            chunk_rows,
            laplacian,
            save,
            init,
            custom
        )
    }

    /// Read a TOML config file; unknown keys are errors naming the key.
    pub fn from_toml(path: &std::path::Path) -> anyhow::Result<TrainArgs> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut args: TrainArgs = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))?;
        if let Some(c) = &mut args.custom {
            let dir = path.parent().unwrap_or(std::path::Path::new(""));
            let dir = if dir.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                dir
            };
            c.resolve_paths(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
        }
        Ok(args)
    }
}

/// `--points`: counts (`900,120`), a kind (`sobol`), or both (`sobol:900,120`).
fn parse_points(s: &str) -> anyhow::Result<(Option<PointKind>, Option<Vec<usize>>)> {
    let (kind, counts) = match s.split_once(':') {
        Some((k, c)) => (Some(k), Some(c)),
        None if s
            .trim()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic()) =>
        {
            (Some(s), None)
        }
        None => (None, Some(s)),
    };
    let kind = kind.map(PointKind::parse).transpose().map_err(|e| {
        anyhow::anyhow!("--points: {e} (give a kind, counts such as 900,120, or sobol:900,120)")
    })?;
    let counts = counts.map(|c| parse_list("points", c)).transpose()?;
    Ok((kind, counts))
}

/// Everything a run needs, resolved from flags, config file and preset.
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
    pub out: Option<PathBuf>,
    pub custom: Option<crate::pde::custom::CustomSpec>,
    /// The operator estimator (`--laplacian`).
    pub laplacian: Estimator,
}

impl Resolved {
    /// The run's problem (built-in, book example, or custom from the config).
    pub fn problem(&self) -> anyhow::Result<Arc<dyn crate::pde::Problem>> {
        Ok(match &self.custom {
            Some(spec) => spec.build()?,
            None => problem(&self.problem, &self.problem_opts)?,
        })
    }
}

impl Resolved {
    /// The fully resolved settings, as a config that repeats this run exactly.
    pub fn to_args(&self) -> TrainArgs {
        let list = |v: &[usize]| {
            v.iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let c = &self.opt_cfg;
        TrainArgs {
            problem: if self.custom.is_some() {
                None
            } else {
                Some(self.problem.clone())
            },
            widths: Some(list(&self.widths)),
            optimizer: Some(self.optimizer.clone()),
            lr: c.lr,
            momentum: c.momentum,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            damping: c.damping,
            ema: c.ema,
            init_identity: c.init_identity,
            update_interval: c.update_interval,
            inverse_interval: c.inverse_interval,
            cg_iters: c.cg_iters,
            history: c.history,
            tau: c.tau,
            kappa: c.kappa,
            lambda: self.problem_opts.lambda,
            steps: self.opts.max_steps,
            seconds: self.opts.max_seconds,
            points: Some(match self.opts.point_kind {
                PointKind::Uniform => list(&self.opts.points),
                k => format!("{}:{}", k.as_str(), list(&self.opts.points)),
            }),
            resample: Some(self.opts.resample),
            eval_points: Some(self.opts.eval_points),
            log_every: Some(self.opts.log_every),
            checkpoint_every: Some(self.opts.checkpoint_every),
            checkpoint_seconds: self.opts.checkpoint_seconds,
            seed: Some(self.seed),
            data_seed: Some(self.opts.data_seed),
            dtype: Some(self.dtype.name().into()),
            device: Some(format!("{:?}", self.device).to_lowercase()),
            chunk_rows: self.opts.chunk_rows,
            laplacian: (!self.laplacian.is_exact()).then(|| self.laplacian.to_string()),
            init: self.init.clone(),
            custom: self.custom.clone(),
            ..Default::default()
        }
    }
}

fn overlay(base: &mut OptimizerConfig, a: &TrainArgs) {
    macro_rules! set {
        ($($f:ident),*) => { $( if a.$f.is_some() { base.$f = a.$f; } )* };
    }
    crate::for_each_optimizer_field!(set);
}

/// `NAME-hard` for `--hard-bc` on problem `NAME` (a `-hard` name is kept), or an error
/// listing the problems that have exact conditions.
fn hard_variant(name: &str) -> anyhow::Result<String> {
    let hard = crate::pde::hard_names();
    if hard.contains(&name) {
        return Ok(name.to_string());
    }
    let h = format!("{name}-hard");
    if hard.contains(&h.as_str()) {
        return Ok(h);
    }
    let bases: Vec<&str> = hard.iter().map(|n| n.trim_end_matches("-hard")).collect();
    bail!(
        "`--hard-bc`: problem `{name}` has no exact-condition variant (problems with one: {})",
        bases.join(", ")
    )
}

pub fn resolve(a: &TrainArgs) -> anyhow::Result<Resolved> {
    let bare = a.preset.is_none() && a.problem.is_none() && a.custom.is_none();
    let preset = match (&a.preset, bare) {
        (Some(p), _) => Some(presets::get(p)?),
        (None, true) => Some(presets::get(DEFAULT_PRESET.0)?),
        (None, false) => None,
    };
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
    let hard = a.hard_bc == Some(true);
    let problem_name = if hard && a.custom.is_none() {
        hard_variant(&problem_name)?
    } else {
        problem_name
    };
    let (problem_name, prob) = match &a.custom {
        Some(spec) => {
            if a.problem.is_some() || preset.is_some() {
                bail!("a `[custom]` problem conflicts with `problem`/`preset`; give one of them");
            }
            if hard {
                bail!(
                    "`--hard-bc` applies to the built-in problems {} only, not to a `[custom]` problem",
                    crate::pde::hard_names().join(", ")
                );
            }
            let p = spec.build()?;
            (p.name().to_string(), p)
        }
        None => {
            let p = problem(&problem_name, &problem_opts)?;
            (problem_name, p)
        }
    };
    let setup = prob.setup();
    let optimizer = match (&a.optimizer, &preset) {
        (Some(o), _) => o.clone(),
        (None, _) if bare => DEFAULT_PRESET.1.to_string(),
        (None, Some(p)) => p
            .optimizers
            .first()
            .map(|o| o.name.to_string())
            .unwrap_or_else(|| DEFAULT_OPTIMIZER.into()),
        (None, None) => DEFAULT_OPTIMIZER.to_string(),
    };
    let mut opt_cfg = OptimizerConfig::default();
    let mut resample = setup.resample;
    let mut points = setup.points.clone();
    let mut widths = setup.widths.clone();
    let mut eval_points = setup.eval_points;
    if let Some(p) = &preset {
        widths = p.widths.to_vec();
        // a soft preset's counts include the Dirichlet terms that --hard-bc drops
        if p.problem == problem_name {
            points = p.points.to_vec();
        }
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
    let mut point_kind = PointKind::Uniform;
    if let Some(p) = &a.points {
        let (kind, counts) = parse_points(p)?;
        if let Some(k) = kind {
            point_kind = k;
        }
        if let Some(c) = counts {
            let terms = prob.terms();
            if prob.hard_bc().is_some() && c.len() != terms.len() {
                bail!(
                    "`--points` gives {} counts, but `{problem_name}` (exact Dirichlet conditions, whose terms are dropped) has {} terms: {}; give one count per remaining term",
                    c.len(),
                    terms.len(),
                    terms.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            points = c;
        }
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
        (None, None, Some(_)) if bare => Some(DEFAULT_SECONDS),
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
    let log_every = a.log_every.unwrap_or(10);
    if log_every == 0 {
        bail!("`--log-every` must be at least 1. Got 0.");
    }
    let checkpoint_every = a.checkpoint_every.unwrap_or(100);
    if a.checkpoint_every == Some(0) {
        bail!("`--checkpoint-every` must be at least 1. Got 0.");
    }
    let checkpoint_seconds = a.checkpoint_seconds.unwrap_or(DEFAULT_CHECKPOINT_SECONDS);
    if !(checkpoint_seconds.is_finite() && checkpoint_seconds > 0.0) {
        bail!("`--checkpoint-seconds` must be a finite number > 0. Got {checkpoint_seconds}.");
    }
    let laplacian = match (&a.laplacian, &preset) {
        (Some(l), _) => Estimator::parse(l)?,
        (None, Some(p)) => match p.laplacian {
            Some(l) => Estimator::parse(l)?,
            None => Estimator::Exact,
        },
        (None, None) => Estimator::Exact,
    };
    let out = a.out.clone();
    let in_out = |name: &str| out.as_ref().map(|d| d.join(name));
    Ok(Resolved {
        problem: problem_name,
        problem_opts,
        widths,
        optimizer,
        opt_cfg,
        opts: TrainOptions {
            max_steps: a.steps,
            max_seconds: seconds,
            log_every,
            resample,
            points,
            point_kind,
            eval_points,
            data_seed: a.data_seed.unwrap_or(0),
            chunk_rows: a.chunk_rows,
            progress: !a.quiet && !a.json,
            checkpoint: in_out("checkpoint.safetensors"),
            checkpoint_every,
            checkpoint_seconds: Some(checkpoint_seconds),
            neuron_log: a.neuron_stats.clone(),
        },
        seed: a.seed.unwrap_or(1),
        dtype: a.dtype.as_deref().unwrap_or("f64").parse()?,
        device: a.device.as_deref().unwrap_or("auto").parse()?,
        log: a.log.clone().or_else(|| in_out("log.csv")),
        save: a.save.clone().or_else(|| in_out("model.safetensors")),
        init: a.init.clone(),
        force: a.force,
        out,
        custom: a.custom.clone(),
        laplacian,
    })
}

/// The files a run writes into its run directory (what `--force` removes first).
const RUN_FILES: &[&str] = &[
    "config.toml",
    "log.csv",
    "checkpoint.safetensors",
    "model.safetensors",
    "neurons.csv",
];

/// Settings (config.toml keys) that may differ between a run and its resume: budgets,
/// logging and checkpoint cadence, the step size, where it runs. Everything else would
/// make the resumed run a different run than the one its checkpoint and log belong to.
const RESUMABLE: &[&str] = &[
    "steps",
    "seconds",
    "log-every",
    "checkpoint-every",
    "checkpoint-seconds",
    "lr",
    "device",
    "chunk-rows",
];

/// How a run starts: fresh (into an optional run directory) or from a checkpoint.
enum Start {
    Fresh,
    Resume(Box<crate::train::Checkpoint>),
}

/// A run whose settings, outputs and (for a resume) checkpoint have been checked, and
/// whose run directory, if any, is locked. Nothing has been written yet.
struct Prepared {
    r: Resolved,
    start: Start,
    _lock: Option<DirLock>,
}

pub fn run(flags: TrainArgs) -> anyhow::Result<()> {
    let json = flags.json;
    let p = match (&flags.resume, &flags.config) {
        (Some(_), Some(_)) => bail!("give either --resume or --config, not both"),
        (Some(dir), None) => prepare_resume(&flags, dir)?,
        (None, cfg) => prepare_fresh(&flags, cfg.as_deref())?,
    };
    let signals = Signals::install()?;
    let r = &p.r;
    let summary = match (backend_for(r.device)?, r.dtype) {
        (AnyBackend::Cpu(be), DType::F64) => train_on::<Cpu, f64>(be, &p, &signals)?,
        (AnyBackend::Cpu(be), DType::F32) => train_on::<Cpu, f32>(be, &p, &signals)?,
        (AnyBackend::Cuda(be), DType::F64) => {
            train_on::<crate::backend::cuda::Cuda, f64>(be, &p, &signals)?
        }
        (AnyBackend::Cuda(be), DType::F32) => {
            train_on::<crate::backend::cuda::Cuda, f32>(be, &p, &signals)?
        }
    };
    super::report::report(&summary, json)?;
    match summary.stop {
        StopReason::Diverged => bail!(
            "training diverged: {}{}",
            summary.message.as_deref().unwrap_or("non-finite loss"),
            r.log
                .as_ref()
                .map(|l| format!(" (log kept at {})", l.display()))
                .unwrap_or_default()
        ),
        StopReason::Interrupted => match signals.received() {
            Some((sig, name)) => {
                let how = match &r.out {
                    Some(dir) => format!(
                        "; checkpoint at step {} in {}; continue with `kfac-pinn train --resume {}`",
                        summary.steps,
                        dir.display(),
                        dir.display()
                    ),
                    None => String::new(),
                };
                Err(super::Exit {
                    code: 128 + sig,
                    message: format!("stopped by {name} at step {}{how}", summary.steps),
                }
                .into())
            }
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A fresh run: settings from flags over `--config`; every output checked before any work.
fn prepare_fresh(flags: &TrainArgs, config: Option<&Path>) -> anyhow::Result<Prepared> {
    let args = match config {
        Some(cfg) => flags.clone().over(TrainArgs::from_toml(cfg)?),
        None => flags.clone(),
    };
    let mut r = resolve(&args)?;
    if let Some(path) = &r.init {
        let m = crate::model::io::load(path).with_context(|| "`--init`".to_string())?;
        if args.widths.is_some() && m.mlp.widths() != r.widths.as_slice() {
            bail!(
                "`--widths` {:?} conflicts with the model file {} ({})",
                r.widths,
                path.display(),
                m.mlp
            );
        }
        r.widths = m.mlp.widths().to_vec();
    }
    // outputs, before any work: a run must not fail at its end for want of a place to
    // write, and nothing existing is replaced without --force (with or without --out)
    if let Some(dir) = &r.out {
        crate::io::check_output_dir("--out", dir)?;
        if !r.force && has_entries(dir) {
            bail!("run directory {} is not empty (pass --force to start over in it, or --resume to continue it)", dir.display());
        }
    }
    for (flag, path) in [
        ("--log", &args.log),
        ("--save", &args.save),
        ("--neuron-stats", &args.neuron_stats),
    ] {
        if let Some(p) = path {
            crate::io::check_output(flag, p, r.force)?;
        }
    }
    let lock = match &r.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(lock_run_dir(dir)?)
        }
        None => None,
    };
    if let (Some(p), true) = (&args.neuron_stats, r.force) {
        // appended to by the trainer: a forced fresh run starts it anew
        remove_if_exists(p)?;
    }
    Ok(Prepared {
        r,
        start: Start::Fresh,
        _lock: lock,
    })
}

/// A resume: the directory locked, its config and checkpoint read and checked, the
/// requested changes checked against the run's settings, the budget made relative.
fn prepare_resume(flags: &TrainArgs, dir: &Path) -> anyhow::Result<Prepared> {
    if !dir.is_dir() {
        bail!("`--resume` {}: no such run directory", dir.display());
    }
    if !dir.join("config.toml").exists() {
        bail!(
            "`--resume` {}: not a run directory (it has no config.toml)",
            dir.display()
        );
    }
    let lock = lock_run_dir(dir)?;
    let file = TrainArgs::from_toml(&dir.join("config.toml"))
        .with_context(|| format!("resuming {}", dir.display()))?;
    if flags.init.is_some() {
        bail!("`--init` cannot be given with --resume: the checkpoint holds the parameters");
    }
    if flags.out.as_ref().is_some_and(|o| o != dir) {
        bail!(
            "`--out` cannot be given with --resume: the run directory is {}",
            dir.display()
        );
    }
    let run_log = dir.join("log.csv");
    if let Some(l) = flags.log.as_ref().filter(|l| **l != run_log) {
        bail!(
            "`--log` cannot change on resume: the run's log is {}; got {}",
            run_log.display(),
            l.display()
        );
    }
    if let Some(p) = &flags.save {
        crate::io::check_output("--save", p, flags.force)?;
    }
    if let Some(p) = &flags.neuron_stats {
        crate::io::check_output("--neuron-stats", p, true)?;
    }
    let ck_path = dir.join("checkpoint.safetensors");
    if !ck_path.exists() {
        bail!(
            "cannot resume {}: it has no checkpoint.safetensors (the run never started); start it again with `--out {} --force`",
            dir.display(),
            dir.display()
        );
    }
    let ck = crate::train::Checkpoint::load(&ck_path)
        .with_context(|| format!("resuming {}", dir.display()))?;
    let old = resolve(&file).with_context(|| format!("{}", dir.join("config.toml").display()))?;
    let mut merged = flags.clone().over(file);
    merged.out = Some(dir.to_path_buf());
    merged.resume = None;
    merged.config = None;
    if flags.steps.is_some() || flags.seconds.is_some() {
        // on resume a budget is "this many more": the totals are what the trainer stops at
        if flags.steps == Some(0) {
            bail!("`--steps` must be at least 1. Got 0.");
        }
        if let Some(s) = flags.seconds.filter(|s| !(s.is_finite() && *s > 0.0)) {
            bail!("`--seconds` must be a finite number > 0. Got {s}.");
        }
        merged.steps = flags.steps.map(|s| ck.step.saturating_add(s));
        merged.seconds = flags.seconds.map(|s| ck.elapsed + s);
    }
    let r = resolve(&merged)?;
    check_unchanged(&old, &r)?;
    if ck.optimizer != r.optimizer {
        bail!(
            "the checkpoint in {} belongs to optimizer `{}`, the run's config says `{}`",
            dir.display(),
            ck.optimizer,
            r.optimizer
        );
    }
    let steps_done = r.opts.max_steps.is_some_and(|m| ck.step >= m);
    let seconds_done = r.opts.max_seconds.is_some_and(|m| ck.elapsed >= m);
    if steps_done || seconds_done {
        let budget = [
            r.opts.max_steps.map(|m| format!("{m} steps")),
            r.opts.max_seconds.map(|m| format!("{m} s")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ");
        bail!(
            "nothing to do: {} has trained {} steps in {:.1} s, its budget is {budget}; give --steps N or --seconds S to train it for that much more",
            dir.display(),
            ck.step,
            ck.elapsed
        );
    }
    Ok(Prepared {
        r,
        start: Start::Resume(Box::new(ck)),
        _lock: Some(lock),
    })
}

/// Refuse a resume that changes a setting other than [`RESUMABLE`] ones, naming the
/// setting and both values. Compared on the resolved settings, so `--preset` or a
/// differently written `--widths` that come to the same run are accepted.
fn check_unchanged(old: &Resolved, new: &Resolved) -> anyhow::Result<()> {
    let table =
        |r: &Resolved| -> anyhow::Result<toml::Table> { Ok(toml::Table::try_from(r.to_args())?) };
    let (a, b) = (table(old)?, table(new)?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if RESUMABLE.contains(&k.as_str()) || a.get(k) == b.get(k) {
            continue;
        }
        let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or("unset".into());
        bail!(
            "`{k}` cannot change on resume: the run has {}, the resume asks for {} (what may change: {})",
            show(a.get(k)),
            show(b.get(k)),
            RESUMABLE.join(", ")
        );
    }
    Ok(())
}

/// Whether a directory has entries other than its lock file.
fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name() != crate::io::lock::LOCK_FILE)
        })
        .unwrap_or(false)
}

fn lock_run_dir(dir: &Path) -> anyhow::Result<DirLock> {
    let lock = DirLock::acquire(dir)?;
    if let Some(pid) = lock.took_over {
        eprintln!(
            "note: {} was last held by process {pid}, which ended without releasing it (killed?); taking it over",
            dir.display()
        );
    }
    Ok(lock)
}

fn remove_if_exists(p: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::io(p, e).into()),
    }
}

/// The backend chosen by `--device`.
pub(crate) enum AnyBackend {
    Cpu(Cpu),
    Cuda(crate::backend::cuda::Cuda),
}

/// Pick the backend for `--device`: `auto` uses GPU 0 when it can be opened and
/// otherwise says why in one line on stderr and uses the CPU; `cuda` fails with the reason.
pub(crate) fn backend_for(device: DeviceKind) -> anyhow::Result<AnyBackend> {
    use crate::backend::device::{select, Selected};
    match select(device)? {
        Selected::Cpu { fallback } => {
            if let Some(why) = fallback {
                eprintln!("{why}");
            }
            Ok(AnyBackend::Cpu(Cpu))
        }
        Selected::Cuda(c) => Ok(AnyBackend::Cuda(c)),
    }
}

fn train_on<B: crate::backend::Backend, T: Real>(
    be: B,
    p: &Prepared,
    signals: &Signals,
) -> anyhow::Result<Summary> {
    let r = &p.r;
    let prob = r.problem()?;
    let mlp = Mlp::new(&r.widths)?;
    let params: Vec<f64> = match &r.init {
        Some(path) => {
            // a file of the same inverse problem starts from its recovered coefficients
            let m = crate::model::io::load(path)?;
            let mut p = m.params;
            if !m.coefficients.is_empty() && m.coefficients.len() == prob.coefficients().len() {
                p.extend(m.coefficients.iter().map(|c| c.1));
            }
            p
        }
        None => mlp.init(r.seed)[..mlp.num_net_params()].to_vec(),
    };
    // the optimizer is built for the trainer's objective; its settings are checked first
    optim::validate(&r.optimizer, &r.opt_cfg)
        .with_context(|| format!("optimizer `{}`", r.optimizer))?;
    let opt = |obj: &Objective<B, T>| optim::build(&r.optimizer, &r.opt_cfg, obj);
    let mut trainer = Trainer::with_estimator(
        be,
        Arc::clone(&prob),
        mlp,
        &params,
        opt,
        r.opts.clone(),
        r.laplacian,
    )?;
    if let Start::Resume(ck) = &p.start {
        trainer.restore(ck)?;
    }
    // everything is checked: only now is anything written
    if let Some(dir) = &r.out {
        if let Start::Fresh = p.start {
            for f in RUN_FILES {
                remove_if_exists(&dir.join(f))?;
            }
        }
        let text = toml::to_string(&r.to_args())?;
        crate::io::write_atomic(&dir.join("config.toml"), text.as_bytes())?;
    }
    let mut log = match (&r.log, &p.start) {
        (Some(path), Start::Resume(ck)) => {
            let fix = crate::train::truncate_log(path, ck.step, r.opts.log_every)?;
            if let Some((line, why)) = &fix.torn {
                eprintln!(
                    "note: dropped a torn last row of {} (line {line}: {why})",
                    path.display()
                );
            }
            eprintln!(
                "resuming {} at step {} ({:.1} s trained)",
                r.out.as_deref().unwrap_or(path).display(),
                ck.step,
                ck.elapsed
            );
            Some(CsvLog::append(path)?)
        }
        (None, Start::Resume(_)) => bail!("cannot resume without the run's log"),
        (Some(path), Start::Fresh) => {
            let names: Vec<String> = prob.coefficients().into_iter().map(|c| c.name).collect();
            Some(CsvLog::create_with(path, &names)?)
        }
        (None, Start::Fresh) => None,
    };
    let summary = trainer.run(log.as_mut(), &signals.stop)?;
    if let Some(path) = &r.save {
        let coef_names: Vec<String> = prob.coefficients().into_iter().map(|c| c.name).collect();
        let mut meta = vec![
            ("problem", r.problem.clone()),
            ("optimizer", r.optimizer.clone()),
            ("steps", summary.steps.to_string()),
            ("l2_abs", format!("{:e}", summary.l2_abs)),
        ];
        if !coef_names.is_empty() {
            meta.push((crate::model::io::COEF_NAMES_KEY, coef_names.join(",")));
        }
        if prob.hard_bc().is_some() {
            meta.push((super::source::HARD_BC_KEY, "true".into()));
        }
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

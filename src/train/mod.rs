//! The training loop: budgets in steps and/or wall-clock seconds, periodic resampling of
//! the training points, periodic evaluation of the L2 error, CSV logging flushed row by
//! row (so a stopped run keeps its log), a progress bar, and a clean stop on request
//! (Ctrl-C sets the stop flag). Training time excludes evaluation and logging.
//!
//! Inverse problems (design §7): the trainer appends the problem's coefficients to the
//! network's parameters (at their initial values unless given), warns when no
//! observation constrains them, logs their values at every logged step and reports them
//! with their recovery errors in the summary.
//!
//! Checked by `tests/train.rs` (Adam on Poisson 2d reaches L2 < 1e-2; budgets, stop flag,
//! divergence handling, log format) and `tests/inverse.rs` (coefficients).

mod checkpoint;
mod log;

pub use checkpoint::Checkpoint;

pub use log::{read as read_log, truncate_log, CsvLog, LogRepair, LogRow, HEADER as LOG_HEADER};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::geometry::PointKind;
use crate::jet::{Estimator, RandomOperator};
use crate::loss::{Evaluator, L2Error, Objective};
use crate::model::Mlp;
use crate::optim::Optimizer;
use crate::pde::Problem;
use crate::scalar::{convert, Real};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How long and how to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub max_steps: Option<u64>,
    pub max_seconds: Option<f64>,
    /// Evaluate and log every this many steps (also at the first and last step).
    pub log_every: u64,
    /// Resample the training points every this many steps (0 = fixed points).
    pub resample: usize,
    /// Points per term.
    pub points: Vec<usize>,
    /// How training points are drawn (uniform, Sobol, Halton, Latin hypercube).
    pub point_kind: PointKind,
    pub eval_points: usize,
    /// Seed of the data stream (model initialisation has its own seed).
    pub data_seed: u64,
    pub chunk_rows: Option<usize>,
    pub progress: bool,
    /// Write a checkpoint here at the start, every `checkpoint_every` steps, every
    /// `checkpoint_seconds` of wall-clock time, and when the run ends.
    pub checkpoint: Option<std::path::PathBuf>,
    pub checkpoint_every: u64,
    /// Wall-clock seconds (training and evaluation) between checkpoints; `None`: by steps only.
    pub checkpoint_seconds: Option<f64>,
    /// Log mean/std of every hidden layer's activations (on up to 2048 evaluation
    /// points) to this CSV at every logged step.
    pub neuron_log: Option<std::path::PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            max_steps: None,
            max_seconds: None,
            log_every: 10,
            resample: 0,
            points: vec![],
            point_kind: PointKind::Uniform,
            eval_points: 1000,
            data_seed: 0,
            chunk_rows: None,
            progress: false,
            checkpoint: None,
            checkpoint_every: 0,
            checkpoint_seconds: None,
            neuron_log: None,
        }
    }
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    Steps,
    Seconds,
    Interrupted,
    Diverged,
}

/// The final line of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub problem: String,
    pub optimizer: String,
    pub widths: Vec<usize>,
    pub params: usize,
    pub dtype: String,
    pub device: String,
    pub steps: u64,
    pub seconds: f64,
    pub loss: f64,
    pub l2_abs: f64,
    pub l2_rel: f64,
    pub mean_step_ms: f64,
    /// The operator estimator (`random:K`); absent for the exact operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub laplacian: Option<String>,
    pub stop: StopReason,
    /// Set when the run diverged: what was non-finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Signs that the run went wrong without diverging (a stalled loss, an output with
    /// nothing of the solution, saturated neurons); empty for a healthy run.
    pub warnings: Vec<String>,
    /// Systems: the error of every field (`u`, `v`, `p`, …) and of the problem's named
    /// group of fields (`velocity`); absent for one field.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub l2_fields: BTreeMap<String, L2Error>,
    /// Problems compared with published values: the largest deviation from them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceCheck>,
    /// Inverse problems: the recovered coefficients by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub coefficients: BTreeMap<String, CoefficientReport>,
}

/// A recovered coefficient: its value and, where the problem knows it, the true value
/// and the relative error `|value − true| / |true|`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CoefficientReport {
    pub value: f64,
    #[serde(rename = "true", skip_serializing_if = "Option::is_none")]
    pub truth: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error: Option<f64>,
}

/// Warnings about a problem's unknown coefficients that training cannot fix: none of its
/// terms is an observation of the solution (the coefficient is then not determined by
/// the data: any value fits the PDE with some solution), or no term reads a coefficient.
pub fn coefficient_warnings(problem: &dyn Problem) -> Vec<String> {
    let coefs = problem.coefficients();
    if coefs.is_empty() {
        return vec![];
    }
    let names = coefs
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let terms = problem.terms();
    let mut w = Vec::new();
    let observed = problem
        .observation_terms()
        .iter()
        .any(|&t| terms.get(t).is_some_and(|s| s.weight > 0.0));
    if !observed {
        w.push(format!(
            "problem `{}` has unknown coefficient(s) {names} but no observation term constrains them: their recovered values are not determined by the data",
            problem.name()
        ));
    }
    if terms.iter().all(|t| t.residual.n_coef() == 0) {
        w.push(format!(
            "no term of problem `{}` reads its coefficient(s) {names}: they will not change",
            problem.name()
        ));
    }
    w
}

/// The network against a problem's published reference values.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReferenceCheck {
    pub source: String,
    pub points: usize,
    /// Largest `|u_field(x) − value|` over the reference points.
    pub max_abs_error: f64,
}

/// A training run in progress: problem, objective, parameters, optimizer, clocks.
pub struct Trainer<B: Backend, T: Real> {
    pub problem: Arc<dyn Problem>,
    pub obj: Objective<B, T>,
    pub params: B::Buf<T>,
    pub opt: Box<dyn Optimizer<B, T>>,
    eval: Evaluator<B, T>,
    rng: ChaCha8Rng,
    opts: TrainOptions,
    /// Host copy of (up to 2048) evaluation points for neuron statistics.
    stats_x: Vec<f64>,
    neuron_file: Option<std::fs::File>,
    /// Steps done so far.
    pub step: u64,
    /// Training seconds so far (excluding evaluation and logging).
    pub elapsed: f64,
    last_loss: f64,
    /// Warnings found when the run was set up (unconstrained coefficients).
    setup_warnings: Vec<String>,
    /// The operator estimator, and the randomized terms' direction samplers (term index
    /// and sampler; empty for `exact`), drawn afresh before every step from `rng`.
    estimator: Estimator,
    random_ops: Vec<(usize, RandomOperator)>,
}

impl<B: Backend, T: Real> Trainer<B, T> {
    /// Set up a run: build the objective and the optimizer for it (`optimizer`, e.g.
    /// `|obj| optim::build(name, &cfg, obj)`), sample the points, build the evaluator.
    /// `params` are host values: the network's, to which the problem's coefficients are
    /// appended at their initial values, or network and coefficients.
    pub fn new(
        be: B,
        problem: Arc<dyn Problem>,
        mlp: Mlp,
        params: &[f64],
        optimizer: impl FnOnce(&Objective<B, T>) -> Result<Box<dyn Optimizer<B, T>>>,
        opts: TrainOptions,
    ) -> Result<Self> {
        Self::with_estimator(be, problem, mlp, params, optimizer, opts, Estimator::Exact)
    }

    /// [`Self::new`] with the second-order operators estimated by `estimator`: for
    /// `random:K` the problem's operator terms get K random directions, drawn afresh
    /// before every step from the run's data stream (so checkpoints carry them and a
    /// resumed run draws the same ones; design §9). Problems whose residuals need exact
    /// directions are refused with an error naming the term.
    pub fn with_estimator(
        be: B,
        problem: Arc<dyn Problem>,
        mlp: Mlp,
        params: &[f64],
        optimizer: impl FnOnce(&Objective<B, T>) -> Result<Box<dyn Optimizer<B, T>>>,
        opts: TrainOptions,
        estimator: Estimator,
    ) -> Result<Self> {
        if mlp.input_dim() != problem.dim() {
            return Err(Error::Shape(format!(
                "problem `{}` has {} input dimensions, the network {} takes {}",
                problem.name(),
                problem.dim(),
                mlp.describe(),
                mlp.input_dim()
            )));
        }
        if mlp.output_dim() != problem.out_dim() {
            return Err(Error::Shape(format!(
                "problem `{}` has {} outputs, the network {} gives {}",
                problem.name(),
                problem.out_dim(),
                mlp.describe(),
                mlp.output_dim()
            )));
        }
        let (terms, random_ops) = crate::pde::randomize_terms(problem.terms(), estimator)?;
        if opts.points.len() != terms.len() {
            return Err(Error::invalid(
                "points",
                format!("{:?}", opts.points),
                format!(
                    "{} counts, one per term ({})",
                    terms.len(),
                    terms
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(i) = opts.points.iter().position(|&n| n == 0) {
            return Err(Error::invalid(
                format!("points of term `{}`", terms[i].name),
                0,
                "at least 1",
            ));
        }
        if opts.log_every == 0 {
            return Err(Error::invalid("log-every", 0, "at least 1"));
        }
        if opts.max_steps.is_none() && opts.max_seconds.is_none() {
            return Err(Error::invalid("budget", "none", "--steps and/or --seconds"));
        }
        if let Some(s) = opts.max_seconds {
            crate::error::check::positive("seconds", s)?;
        }
        if let Some(s) = opts.checkpoint_seconds {
            crate::error::check::positive("checkpoint-seconds", s)?;
        }
        let coefs = problem.coefficients();
        for c in &coefs {
            crate::error::check::finite(
                &format!("initial value of coefficient `{}`", c.name),
                c.initial,
            )?;
        }
        let mlp = mlp.network().with_coefficients(coefs.len());
        let mut params = params.to_vec();
        if params.len() == mlp.num_net_params() {
            params.extend(coefs.iter().map(|c| c.initial));
        }
        mlp.check_params(params.len())?;
        let setup_warnings = coefficient_warnings(problem.as_ref());
        for w in &setup_warnings {
            eprintln!("warning: {w}");
        }
        let mut obj = Objective::new(be.clone(), mlp.clone(), terms, opts.chunk_rows)?;
        let opt = optimizer(&obj)?;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.data_seed);
        // evaluation points come from their own stream so they do not depend on the budget
        let mut eval_rng = ChaCha8Rng::seed_from_u64(opts.data_seed ^ 0x5eed_e7a1);
        let ex = problem.sample_eval(opts.eval_points, &mut eval_rng)?;
        let m = problem.out_dim();
        let d = problem.dim();
        let mut reference = vec![f64::NAN; opts.eval_points * m];
        for (x, r) in ex.chunks(d).zip(reference.chunks_mut(m)) {
            problem.exact(x, r);
        }
        let stats_x = ex[..ex.len().min(2048 * d)].to_vec();
        let neuron_file = match &opts.neuron_log {
            Some(p) => {
                let exists = p.exists();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io(p, e))?;
                if !exists {
                    use std::io::Write;
                    writeln!(f, "step,layer,width,mean,std,input_std,saturated")
                        .map_err(|e| Error::io(p, e))?;
                }
                Some(f)
            }
            None => None,
        };
        let mut eval = Evaluator::new(be.clone(), mlp, &ex, reference)?;
        if let Some(h) = problem.hard_bc() {
            // the network gives N; errors are those of u = g + φN
            let (g, phi) = h.tables(&ex, d);
            eval.set_output_transform(g, phi)?;
        }
        for (t, &n) in opts.points.iter().enumerate() {
            obj.set_points(t, problem.sample_kind(t, n, opts.point_kind, &mut rng)?)?;
        }
        let params = be.upload(&convert::<f64, T>(&params))?;
        let mut trainer = Trainer {
            problem,
            obj,
            params,
            opt,
            eval,
            rng,
            opts,
            stats_x,
            neuron_file,
            step: 0,
            elapsed: 0.0,
            last_loss: f64::NAN,
            setup_warnings,
            estimator,
            random_ops,
        };
        trainer.draw_operators()?;
        Ok(trainer)
    }

    /// The run's operator estimator.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }

    /// Fresh directions for every randomized term (nothing for `exact`), from the data
    /// stream.
    fn draw_operators(&mut self) -> Result<()> {
        for (t, ro) in &mut self.random_ops {
            let op = ro.draw(&mut self.rng);
            self.obj.set_operator(*t, op)?;
        }
        Ok(())
    }

    /// Everything needed to continue this run later.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let be = self.obj.backend();
        Ok(Checkpoint {
            step: self.step,
            elapsed: self.elapsed,
            last_loss: self.last_loss,
            optimizer: self.opt.name().to_string(),
            params: self.params_host()?,
            opt_state: self.opt.state(be)?,
            points: (0..self.obj.num_terms())
                .map(|t| self.obj.term_x(t).to_vec())
                .collect(),
            rng_seed: self.rng.get_seed(),
            rng_stream: self.rng.get_stream(),
            rng_word_pos: self.rng.get_word_pos(),
        })
    }

    /// Continue from a checkpoint of a run with the same setup.
    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        if ck.optimizer != self.opt.name() {
            return Err(Error::invalid(
                "checkpoint optimizer",
                &ck.optimizer,
                format!("`{}` (the run's optimizer)", self.opt.name()),
            ));
        }
        self.obj.mlp().check_params(ck.params.len())?;
        if ck.points.len() != self.obj.num_terms() {
            return Err(Error::Shape(format!(
                "checkpoint has points for {} terms, the problem has {}",
                ck.points.len(),
                self.obj.num_terms()
            )));
        }
        let be = self.obj.backend().clone();
        self.opt.load_state(&be, &ck.opt_state)?;
        for (t, p) in ck.points.iter().enumerate() {
            self.obj.set_points(t, p.clone())?;
        }
        self.params = be.upload(&convert::<f64, T>(&ck.params))?;
        let mut rng = ChaCha8Rng::from_seed(ck.rng_seed);
        rng.set_stream(ck.rng_stream);
        rng.set_word_pos(ck.rng_word_pos);
        self.rng = rng;
        self.step = ck.step;
        self.elapsed = ck.elapsed;
        self.last_loss = ck.last_loss;
        Ok(())
    }

    /// Write the checkpoint (after syncing the log, so that the log on disk holds every
    /// row up to the checkpoint's step).
    fn save_checkpoint(&self, log: &mut Option<&mut CsvLog>) -> Result<()> {
        if let Some(p) = &self.opts.checkpoint {
            if let Some(l) = log.as_deref_mut() {
                l.sync()?;
            }
            self.checkpoint()?.save(p)?;
        }
        Ok(())
    }

    /// L2 error of the current parameters on the evaluation points.
    pub fn l2(&mut self) -> Result<L2Error> {
        self.eval.l2(&self.params)
    }

    /// The unknown coefficients' current values (empty for a forward problem).
    pub fn coefficient_values(&self) -> Result<Vec<f64>> {
        self.obj.coef_part(&self.params)
    }

    /// The recovered coefficients by name, with their true values and errors where known.
    pub fn coefficient_report(&self) -> Result<BTreeMap<String, CoefficientReport>> {
        let vals = self.coefficient_values()?;
        Ok(self
            .problem
            .coefficients()
            .into_iter()
            .zip(vals)
            .map(|(c, value)| {
                let rel_error = c.truth.map(|t| (value - t).abs() / t.abs());
                let r = CoefficientReport {
                    value,
                    truth: c.truth,
                    rel_error,
                };
                (c.name, r)
            })
            .collect())
    }

    /// Current parameters on the host.
    pub fn params_host(&self) -> Result<Vec<f64>> {
        Ok(convert(&self.obj.backend().download(&self.params)?))
    }

    fn resample(&mut self) -> Result<()> {
        for (t, &n) in self.opts.points.clone().iter().enumerate() {
            let x = self
                .problem
                .sample_kind(t, n, self.opts.point_kind, &mut self.rng)?;
            self.obj.set_points(t, x)?;
        }
        self.opt.points_changed();
        Ok(())
    }

    fn log(&mut self, log: &mut Option<&mut CsvLog>, lr: Option<f64>) -> Result<L2Error> {
        let e = self.l2()?;
        if self.neuron_file.is_some() {
            let stats = crate::model::stats::neuron_stats(
                self.obj.mlp(),
                &self.params_host()?,
                &self.stats_x,
            )?;
            let path = self.opts.neuron_log.clone().unwrap_or_default();
            if let Some(f) = self.neuron_file.as_mut() {
                use std::io::Write;
                for st in stats {
                    writeln!(
                        f,
                        "{},{},{},{:e},{:e},{:e},{:e}",
                        self.step, st.layer, st.width, st.mean, st.std, st.input_std, st.saturated
                    )
                    .map_err(|e| Error::io(&path, e))?;
                }
                f.flush().map_err(|e| Error::io(&path, e))?;
            }
        }
        if let Some(l) = log.as_deref_mut() {
            l.write(&LogRow {
                step: self.step,
                seconds: self.elapsed,
                loss: self.last_loss,
                l2_abs: e.abs,
                l2_rel: e.rel,
                lr,
                coefs: self.coefficient_values()?,
            })?;
        }
        Ok(e)
    }

    /// Train until a budget is spent, the stop flag is raised or the loss diverges.
    pub fn run(&mut self, mut log: Option<&mut CsvLog>, stop: &AtomicBool) -> Result<Summary> {
        let bar = progress_bar(&self.opts);
        let start_step = self.step;
        if self.step == 0 {
            self.last_loss = self.obj.loss(&self.params).unwrap_or(f64::NAN);
            self.log(&mut log, None)?;
            // a run directory is resumable from its first moment
            self.save_checkpoint(&mut log)?;
        }
        let mut checkpointed = Instant::now();
        let mut health = Health::new(self.last_loss);
        let reason;
        let mut message = None;
        let mut last_lr = None;
        let mut logged_at = self.step;
        loop {
            if let Some(s) = self.opts.max_steps {
                if self.step >= s {
                    reason = StopReason::Steps;
                    break;
                }
            }
            if let Some(s) = self.opts.max_seconds {
                if self.elapsed >= s {
                    reason = StopReason::Seconds;
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                reason = StopReason::Interrupted;
                break;
            }
            let t0 = Instant::now();
            if self.opts.resample > 0
                && self.step > 0
                && self.step.is_multiple_of(self.opts.resample as u64)
            {
                self.resample()?;
            }
            self.draw_operators()?;
            let res = self.opt.step(&mut self.obj, &mut self.params);
            self.elapsed += t0.elapsed().as_secs_f64();
            match res {
                Ok(info) => {
                    self.step += 1;
                    self.last_loss = info.loss;
                    last_lr = info.lr;
                    health.loss(info.loss);
                    if !info.loss.is_finite() {
                        reason = StopReason::Diverged;
                        message = Some(format!(
                            "loss became {} at step {}{}",
                            info.loss,
                            self.step,
                            self.estimator_note()
                        ));
                        break;
                    }
                }
                Err(Error::NonFinite(m)) => {
                    reason = StopReason::Diverged;
                    message = Some(format!(
                        "{m} at step {}{}",
                        self.step + 1,
                        self.estimator_note()
                    ));
                    break;
                }
                Err(e) => return Err(e),
            }
            // log before checkpointing: a kill between the two leaves a row after the
            // checkpoint, which the resume drops and logs again (never a missing row)
            if self.step.is_multiple_of(self.opts.log_every) {
                let e = self.log(&mut log, last_lr)?;
                logged_at = self.step;
                if let Some(b) = &bar {
                    b.set_message(format!("loss {:.3e}  L2 {:.3e}", self.last_loss, e.abs));
                }
            }
            let by_steps = self.opts.checkpoint_every > 0
                && self.step.is_multiple_of(self.opts.checkpoint_every);
            let by_time = self
                .opts
                .checkpoint_seconds
                .is_some_and(|s| checkpointed.elapsed().as_secs_f64() >= s);
            if by_steps || by_time {
                self.save_checkpoint(&mut log)?;
                checkpointed = Instant::now();
            }
            if let Some(b) = &bar {
                match (self.opts.max_steps, self.opts.max_seconds) {
                    (Some(_), _) => b.set_position(self.step),
                    (None, Some(_)) => b.set_position((self.elapsed * 1000.0) as u64),
                    _ => {}
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        // final evaluation at the end parameters (loss on the current batch)
        if reason != StopReason::Diverged {
            self.last_loss = self.obj.loss(&self.params)?;
        }
        let e = if logged_at != self.step {
            self.log(&mut log, last_lr)?
        } else {
            self.l2()?
        };
        if reason != StopReason::Diverged {
            self.save_checkpoint(&mut log)?;
        }
        let steps_run = self.step - start_step;
        let warnings = if reason == StopReason::Diverged {
            vec![]
        } else {
            let saturated = self.saturated_layers()?;
            health.warnings(steps_run, e.rel, saturated)
        };
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        // set-up warnings were printed when the run was set up; the summary keeps them
        let warnings = [self.setup_warnings.clone(), warnings].concat();
        let l2_fields = self.field_errors()?;
        let reference = self.reference_check()?;
        Ok(Summary {
            problem: self.problem.name().to_string(),
            optimizer: self.opt.name().to_string(),
            widths: self.obj.mlp().widths().to_vec(),
            params: self.obj.mlp().num_params(),
            dtype: T::DTYPE.name().into(),
            device: self.obj.backend().name(),
            steps: self.step,
            seconds: self.elapsed,
            loss: self.last_loss,
            l2_abs: e.abs,
            l2_rel: e.rel,
            mean_step_ms: if steps_run > 0 {
                1000.0 * self.elapsed / self.step as f64
            } else {
                0.0
            },
            laplacian: (!self.estimator.is_exact()).then(|| self.estimator.to_string()),
            stop: reason,
            message,
            warnings,
            l2_fields,
            reference,
            coefficients: self.coefficient_report()?,
        })
    }

    /// For a message about a non-finite loss: which estimate it came from (empty for the
    /// exact operator).
    fn estimator_note(&self) -> String {
        if self.estimator.is_exact() {
            String::new()
        } else {
            format!(
                " (with the randomized Laplacian `{}`: an estimate of the operator term was \
                 not finite)",
                self.estimator
            )
        }
    }

    /// Per-field errors (and the problem's group's) for systems; empty for one field.
    pub fn field_errors(&mut self) -> Result<BTreeMap<String, L2Error>> {
        let names = self.problem.field_names();
        if names.len() < 2 {
            return Ok(BTreeMap::new());
        }
        let group = self.problem.error_group();
        let idx = group.as_ref().map(|g| g.1.clone()).unwrap_or_default();
        let e = self.eval.field_errors(&self.params, &idx)?;
        if e.fields.iter().all(|f| f.abs.is_nan()) {
            // no exact solution: nothing to compare with
            return Ok(BTreeMap::new());
        }
        let mut out: BTreeMap<String, L2Error> = names.into_iter().zip(e.fields).collect();
        if let (Some((name, _)), Some(g)) = (group, e.group) {
            out.insert(name, g);
        }
        Ok(out)
    }

    /// The network at the problem's reference points against the published values.
    pub fn reference_check(&self) -> Result<Option<ReferenceCheck>> {
        let Some(r) = self.problem.reference_data() else {
            return Ok(None);
        };
        let mlp = self.obj.mlp().clone();
        let m = mlp.output_dim();
        let zeros = vec![0.0; r.len() * m];
        let be = self.obj.backend().clone();
        let mut ev = Evaluator::new(be, mlp, &r.x, zeros)?;
        if let Some(h) = self.problem.hard_bc() {
            let (g, phi) = h.tables(&r.x, self.problem.dim());
            ev.set_output_transform(g, phi)?;
        }
        let y = ev.values(&self.params)?;
        Ok(Some(ReferenceCheck {
            source: r.source.clone(),
            points: r.len(),
            max_abs_error: r.max_abs_error(&y, m),
        }))
    }

    /// Whether every hidden layer is saturated (|tanh| > 0.99 for at least 99% of the
    /// activations on the statistics points), with the per-layer fractions.
    fn saturated_layers(&self) -> Result<Option<Vec<f64>>> {
        if self.stats_x.is_empty() || self.obj.mlp().widths().len() < 3 {
            return Ok(None);
        }
        let stats =
            crate::model::stats::neuron_stats(self.obj.mlp(), &self.params_host()?, &self.stats_x)?;
        let fr: Vec<f64> = stats.iter().map(|s| s.saturated).collect();
        Ok(fr.iter().all(|&f| f >= 0.99).then_some(fr))
    }
}

/// Steps after which a loss that has not moved counts as stalled.
const STALL_STEPS: u64 = 100;

/// What the end-of-run health check looks at: the loss when this run (or resume) began
/// and the lowest loss it reached.
struct Health {
    first: f64,
    best: f64,
}

impl Health {
    fn new(first: f64) -> Self {
        Health { first, best: first }
    }
    fn loss(&mut self, l: f64) {
        if l < self.best || self.best.is_nan() {
            self.best = l;
        }
    }
    /// Warnings for a run that did not diverge but went nowhere: the loss never fell
    /// below 99% of its starting value, the relative L2 error is about 1 (the output holds
    /// nothing of the solution: a saturated or collapsed net), or every hidden layer is
    /// saturated (gradients vanish, training cannot recover).
    fn warnings(&self, steps_run: u64, l2_rel: f64, saturated: Option<Vec<f64>>) -> Vec<String> {
        let mut w = Vec::new();
        if steps_run >= STALL_STEPS && self.first.is_finite() && self.best >= 0.99 * self.first {
            w.push(format!(
                "the loss never fell below 99% of its starting value {:.3e} in {steps_run} steps (lowest {:.3e}): training stalled; try a smaller learning rate or another optimizer",
                self.first, self.best
            ));
        }
        if steps_run >= STALL_STEPS && l2_rel.is_finite() && l2_rel >= 0.99 {
            w.push(format!(
                "the relative L2 error is {l2_rel:.3} after {steps_run} steps: the network's output holds almost nothing of the solution"
            ));
        }
        if let Some(fr) = saturated {
            let list = fr
                .iter()
                .map(|f| format!("{:.0}%", 100.0 * f))
                .collect::<Vec<_>>();
            w.push(format!(
                "every hidden layer is saturated (share of |tanh| > 0.99 per layer: {}): gradients vanish and training cannot recover; restart with a smaller learning rate",
                list.join(", ")
            ));
        }
        w
    }
}

fn progress_bar(o: &TrainOptions) -> Option<indicatif::ProgressBar> {
    if !o.progress {
        return None;
    }
    let (len, unit) = match (o.max_steps, o.max_seconds) {
        (Some(s), _) => (s, "steps"),
        (None, Some(s)) => ((s * 1000.0) as u64, "ms"),
        _ => return None,
    };
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    Some(b)
}

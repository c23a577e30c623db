//! `kfac-pinn laplacian`: time the Laplacian of an MLP `D → widths → 1` on a batch, by the
//! forward Laplacian (chunked jets), by the nested-autodiff baseline, and the bare matrix
//! products of the forward Laplacian (the floor it is compared with). Memory is the heap
//! allocator's high-water mark during the measurement (whole process: model, inputs and
//! every buffer of the method). With several measurements each one runs in its own child
//! process, so one method's allocations cannot inflate another's figure.

use super::parse_list;
use crate::autodiff::Autodiff;
use crate::backend::{Backend, Lay, Tr};
use crate::jet::{Estimator, JetEngine, JetKind, Operator, RandomOperator, DEFAULT_CHUNK_ROWS};
use crate::mem;
use crate::model::Mlp;
use crate::scalar::{convert, DType, Real};
use anyhow::{bail, Context};
use clap::Args;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct LaplacianArgs {
    /// Input dimension D (or use --dims for several).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Several input dimensions, e.g. 1,10,50,100.
    #[arg(long)]
    pub dims: Option<String>,
    /// Hidden widths; the network is D → widths → 1.
    #[arg(long, default_value = "768,768,512,512")]
    pub widths: String,
    /// Batch size N.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// forward, autodiff, gemm (bare products of the forward Laplacian), or all.
    #[arg(long, default_value = "all")]
    pub method: String,
    /// Timed calls after one warm-up call.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long, default_value = "f64")]
    pub dtype: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Jet rows per chunk of the forward Laplacian.
    #[arg(long)]
    pub chunk_rows: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object per measurement on stdout (JSON lines).
    #[arg(long)]
    pub json: bool,
    /// Also draw run time and peak memory versus D (.png or .svg).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Measure in this process even when there are several measurements.
    #[arg(long)]
    pub no_isolate: bool,
    /// Overwrite an existing --plot file.
    #[arg(long)]
    pub force: bool,
    /// The operator: `exact` (D directions) or `random:K` (K random ±1 directions, an
    /// unbiased estimate; `random:K:gauss` for normal ones). Applies to forward and gemm.
    #[arg(long, default_value = "exact")]
    pub laplacian: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    pub method: String,
    /// The operator estimator: `exact` or `random:K`.
    #[serde(default = "exact_name")]
    pub estimator: String,
    pub dim: usize,
    pub batch: usize,
    pub widths: Vec<usize>,
    pub dtype: String,
    pub device: String,
    /// Mean seconds per call over the timed calls.
    pub seconds: f64,
    pub min_seconds: f64,
    /// Heap high-water mark during warm-up and timed calls (bytes).
    pub peak_bytes: usize,
    /// Floating-point operations of the method's matrix products per call.
    pub gemm_flop: f64,
    pub gflops: f64,
}

const METHODS: &[&str] = &["forward", "autodiff", "gemm"];

fn exact_name() -> String {
    "exact".into()
}

pub fn run(a: LaplacianArgs) -> anyhow::Result<()> {
    let dims: Vec<usize> = match (&a.dim, &a.dims) {
        (Some(_), Some(_)) => bail!("give either --dim or --dims, not both"),
        (Some(d), None) => vec![*d],
        (None, Some(s)) => parse_list("dims", s)?,
        (None, None) => vec![100],
    };
    if let Some(d) = dims.iter().find(|&&d| d == 0) {
        bail!("`--dims` entries must be positive. Got {d}.");
    }
    let est = Estimator::parse(&a.laplacian)?;
    let methods: Vec<&str> = match a.method.as_str() {
        // the autodiff baseline computes the exact Hessian only
        "all" if !est.is_exact() => vec!["forward", "gemm"],
        "all" => METHODS.to_vec(),
        "autodiff" if !est.is_exact() => bail!(
            "`--method autodiff` computes the exact Laplacian only; `--laplacian {est}` \
             needs forward or gemm"
        ),
        m if METHODS.contains(&m) => vec![m],
        m => bail!("`--method` must be one of forward, autodiff, gemm, all. Got `{m}`."),
    };
    if let Estimator::Random { k, .. } = est {
        if let Some(d) = dims.iter().find(|&&d| d < k) {
            bail!(
                "`--laplacian {est}` draws K = {k} directions, more than D = {d} (the exact \
                 operator needs only {d}: use `exact`)"
            );
        }
    }
    let hidden: Vec<usize> = parse_list("widths", &a.widths)?;
    if let Some(p) = &a.plot {
        // before the benchmark, which can take minutes
        crate::plot::check_plot_path("--plot", p, a.force)?;
    }
    if a.batch == 0 {
        bail!("`--batch` must be at least 1. Got 0.");
    }
    if a.repeats == 0 {
        bail!("`--repeats` must be at least 1. Got 0.");
    }
    let dtype: DType = a.dtype.parse()?;
    let device: crate::backend::device::DeviceKind = a.device.parse()?;
    let many = dims.len() * methods.len() > 1;
    // measurements in this process share one backend; isolated ones open their own
    let backend = if many && !a.no_isolate {
        None
    } else {
        Some(super::train::backend_for(device)?)
    };
    let mut results = Vec::new();
    for &d in &dims {
        let mut widths = vec![d];
        widths.extend(&hidden);
        widths.push(1);
        Mlp::new(&widths)?;
        for &m in &methods {
            let r = if many && !a.no_isolate {
                measure_in_child(&a, d, m)?
            } else {
                use super::train::AnyBackend;
                let b = backend.as_ref().expect("opened above");
                let (n, rep, ch, sd) = (a.batch, a.repeats, a.chunk_rows, a.seed);
                match (b, dtype) {
                    (AnyBackend::Cpu(be), DType::F64) => {
                        measure::<_, f64>(be, m, est, &widths, n, rep, ch, sd)?
                    }
                    (AnyBackend::Cpu(be), DType::F32) => {
                        measure::<_, f32>(be, m, est, &widths, n, rep, ch, sd)?
                    }
                    (AnyBackend::Cuda(be), DType::F64) => {
                        measure::<_, f64>(be, m, est, &widths, n, rep, ch, sd)?
                    }
                    (AnyBackend::Cuda(be), DType::F32) => {
                        measure::<_, f32>(be, m, est, &widths, n, rep, ch, sd)?
                    }
                }
            };
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                if results.is_empty() {
                    println!(
                        "{:<9} {:<10} {:>5} {:>6} {:>11} {:>11} {:>12} {:>9}",
                        "method", "operator", "D", "N", "seconds", "min s", "peak MiB", "GFLOP/s"
                    );
                }
                println!(
                    "{:<9} {:<10} {:>5} {:>6} {:>11.4} {:>11.4} {:>12.1} {:>9.1}",
                    r.method,
                    r.estimator,
                    r.dim,
                    r.batch,
                    r.seconds,
                    r.min_seconds,
                    r.peak_bytes as f64 / (1 << 20) as f64,
                    r.gflops
                );
            }
            results.push(r);
        }
    }
    if let Some(path) = &a.plot {
        plot_results(path, &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn measure_in_child(a: &LaplacianArgs, dim: usize, method: &str) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe().context("locating the kfac-pinn executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "laplacian",
        "--no-isolate",
        "--json",
        "--dim",
        &dim.to_string(),
        "--method",
        method,
    ]);
    cmd.args([
        "--widths",
        &a.widths,
        "--batch",
        &a.batch.to_string(),
        "--repeats",
        &a.repeats.to_string(),
    ]);
    cmd.args([
        "--dtype",
        &a.dtype,
        "--device",
        &a.device,
        "--seed",
        &a.seed.to_string(),
        "--laplacian",
        &a.laplacian,
    ]);
    if let Some(c) = a.chunk_rows {
        cmd.args(["--chunk-rows", &c.to_string()]);
    }
    let out = cmd.output().context("running the measurement process")?;
    if !out.status.success() {
        bail!(
            "measurement {method} D={dim} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .last()
        .context("measurement process printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// Matrix-product FLOPs of the forward Laplacian with `k` directions for a batch (first
/// layer as values only).
fn forward_flop(widths: &[usize], k: usize, n: usize) -> f64 {
    let d = widths[0];
    let s = k + 2;
    let mut f = 2.0 * (n * d * widths[1]) as f64;
    for l in 1..widths.len() - 1 {
        f += 2.0 * (n * s * widths[l] * widths[l + 1]) as f64;
    }
    f
}

/// Matrix-product FLOPs of the autodiff baseline: forward over (1 + D)·N rows, and the
/// reverse sweep (cotangent and its tangents) over the same rows.
fn autodiff_flop(widths: &[usize], n: usize) -> f64 {
    let rows = (1 + widths[0]) * n;
    let per: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    2.0 * 2.0 * (rows * per) as f64
}

#[allow(clippy::too_many_arguments)]
pub fn measure<B: Backend, T: Real>(
    be: &B,
    method: &str,
    est: Estimator,
    widths: &[usize],
    n: usize,
    repeats: usize,
    chunk_rows: Option<usize>,
    seed: u64,
) -> anyhow::Result<Measurement> {
    let be = be.clone();
    let mlp = Mlp::new(widths)?;
    let d = mlp.input_dim();
    let params = be.upload(&convert::<f64, T>(&mlp.init::<f64>(seed)))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xda7a);
    let x: Vec<f64> = (0..n * d).map(|_| rng.random::<f64>()).collect();
    let x = be.upload(&convert::<f64, T>(&x))?;
    // the operator: exact, or one draw of K random directions (a pass costs the same for
    // every draw)
    let op = match est {
        Estimator::Exact => Operator::laplacian(d),
        Estimator::Random { k, dist } => {
            let mut ro = RandomOperator::new(&Operator::laplacian(d), 0, k, dist)?;
            ro.draw(&mut rng).clone()
        }
    };
    let k = op.k();
    mem::reset_peak();
    be.reset_peak_memory();
    let mut times = Vec::with_capacity(repeats);
    let flop = match method {
        "forward" => {
            let mut eng =
                JetEngine::<B, T>::new(be.clone(), mlp.clone(), JetKind::Full(op), chunk_rows)?;
            for i in 0..=repeats {
                let t = Instant::now();
                let y = eng.forward(&params, &x, n)?;
                std::hint::black_box(&y);
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            forward_flop(widths, k, n)
        }
        "autodiff" => {
            let mut ad = Autodiff::<B, T>::new(be.clone(), mlp.clone())?;
            for i in 0..=repeats {
                let t = Instant::now();
                let der = ad.derivatives(&params, &x, n)?;
                std::hint::black_box(der.laplacian());
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            autodiff_flop(widths, n)
        }
        "gemm" => {
            // exactly the products of the forward Laplacian, same chunking, no jet kernels
            let s = k + 2;
            let chunk = (chunk_rows.unwrap_or(DEFAULT_CHUNK_ROWS) / s).max(1);
            let hmax = *widths[1..].iter().max().unwrap();
            let mut b0 = be.alloc::<T>(chunk * s * hmax)?;
            let mut b1 = be.alloc::<T>(chunk * s * hmax)?;
            for i in 0..=repeats {
                let t = Instant::now();
                let mut first = 0;
                while first < n {
                    let c = chunk.min(n - first);
                    let l0 = mlp.layer(0);
                    be.gemm(
                        T::ONE,
                        &x,
                        Lay::at(first * d, c, d),
                        Tr::N,
                        &params,
                        Lay::at(l0.w_off, l0.fan_out, l0.fan_in),
                        Tr::T,
                        T::ZERO,
                        &mut b0,
                        Lay::dense(c, l0.fan_out),
                    )?;
                    for l in 1..mlp.num_layers() {
                        let lay = mlp.layer(l);
                        let (src, dst) = if l % 2 == 1 {
                            (&b0, &mut b1)
                        } else {
                            (&b1, &mut b0)
                        };
                        be.gemm(
                            T::ONE,
                            src,
                            Lay::dense(c * s, lay.fan_in),
                            Tr::N,
                            &params,
                            Lay::at(lay.w_off, lay.fan_out, lay.fan_in),
                            Tr::T,
                            T::ZERO,
                            dst,
                            Lay::dense(c * s, lay.fan_out),
                        )?;
                    }
                    first += c;
                }
                be.synchronize()?;
                if i > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            forward_flop(widths, k, n)
        }
        m => bail!("unknown method `{m}`"),
    };
    // device backends report their own account; on the CPU the process heap counts
    let peak = match be.memory_use() {
        Some((_, p)) => p,
        None if mem::is_installed() => mem::peak_bytes(),
        None => 0,
    };
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(Measurement {
        method: method.to_string(),
        estimator: est.to_string(),
        dim: d,
        batch: n,
        widths: widths.to_vec(),
        dtype: T::DTYPE.name().into(),
        device: be.name(),
        seconds: mean,
        min_seconds: min,
        peak_bytes: peak,
        gemm_flop: flop,
        gflops: flop / mean / 1e9,
    })
}

/// Run time and peak memory versus D, one line per method (the paper's Laplacian figure).
pub fn plot_results(path: &std::path::Path, results: &[Measurement]) -> anyhow::Result<()> {
    use crate::plot::{Chart, Legend, Series};
    let mut methods: Vec<&str> = results.iter().map(|r| r.method.as_str()).collect();
    methods.dedup();
    methods.sort();
    methods.dedup();
    let series = |f: &dyn Fn(&Measurement) -> f64| -> Vec<Series> {
        methods
            .iter()
            .map(|m| Series {
                label: m.to_string(),
                points: results
                    .iter()
                    .filter(|r| r.method == *m)
                    .map(|r| (r.dim as f64, f(r)))
                    .collect(),
            })
            .collect()
    };
    let first = results.first().context("nothing measured")?;
    let net = first.widths[1..]
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("-");
    let charts = [
        Chart {
            title: format!("Laplacian, D→{net}, N={}, {}", first.batch, first.dtype),
            x_label: "input dimension D".into(),
            y_label: "seconds per batch".into(),
            log_x: true,
            log_y: true,
            series: series(&|r| r.seconds),
            legend: Legend::UpperLeft,
        },
        Chart {
            title: "peak heap memory".into(),
            x_label: "input dimension D".into(),
            y_label: "MiB".into(),
            log_x: true,
            log_y: true,
            series: series(&|r| r.peak_bytes as f64 / (1u64 << 20) as f64),
            legend: Legend::UpperLeft,
        },
    ];
    crate::plot::line_charts(path, &charts)?;
    Ok(())
}

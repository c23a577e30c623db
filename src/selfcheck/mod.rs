//! The backend-versus-CPU comparisons that prove a device (`kfac-pinn selfcheck`,
//! tests/gpu.rs, tests/kernels.rs): the same inputs through the backend under test and
//! through the CPU backend (the reference), compared elementwise. The cases live here
//! once, generic over the [`Backend`], and return records instead of panicking, so the
//! installed binary alone can check a GPU machine that has no Rust toolchain.
//!
//! - [`engine`]: forward Laplacian (f64/f32, ragged chunks, a weighted operator), the
//!   autodiff baseline, loss gradients, one step of every second-order optimizer (f64 and
//!   f32) with its whole state (KFAC's Kronecker factors, inverses and momentum, ...).
//! - [`linalg`]: gemm in all transpose cases and syrk (f64 and f32), the thin SVD and the
//!   symmetric eigendecomposition against the CPU and against their defining identities.
//! - [`memory`]: memory accounting and recovery from an allocation that cannot succeed.
//!
//! A record holds the largest absolute and relative errors, the tolerance and, for a
//! failure, the first mismatches (index, got, want). An entry passes when
//! `|got − want| ≤ atol + rtol·|want|` (and neither is NaN); its relative error is
//! `|got − want| / max(|want|, atol/rtol)`, so a passing record has `max_rel_err ≤
//! rtol` up to the additive slack. Most comparisons set `atol = rtol · max|want|`: the
//! tolerance is relative to the reference's largest entry, because backends that sum in
//! a different order differ by a multiple of the largest term, not of each result.
//!
//! How it is checked: the unit tests below feed the comparison deliberately wrong data
//! (it must fail and name the mismatches), turn errors and panics of a group into failed
//! records, run the groups on the CPU against itself, and run the engine groups with a
//! negative tolerance, under which every comparison must fail (so none compares nothing).
//! tests/kernels.rs runs the groups on the CPU emulation of the CUDA kernels, tests/gpu.rs
//! on a GPU, tests/cli.rs through the binary.

pub mod engine;
pub mod linalg;
pub mod memory;

use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::error::Result;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Tolerances of one kind of comparison, per element type (relative, see the module
/// header).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Tol {
    pub f64: f64,
    pub f32: f64,
}

impl Tol {
    /// The tolerance for element type `dtype` ("f32" or "f64").
    pub fn of(&self, dtype: &str) -> f64 {
        if dtype == "f32" {
            self.f32
        } else {
            self.f64
        }
    }
}

/// The tolerances of a device's comparisons.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Tolerances {
    /// Forward Laplacian, autodiff baseline, loss and gradient.
    pub engine: Tol,
    /// One optimizer step: the parameters and the whole optimizer state.
    pub steps: Tol,
}

impl Tolerances {
    /// A GPU: cuBLAS accumulates in another order than faer, and an optimizer step
    /// solves with the products' differences (the bounds tests/gpu.rs has always used).
    pub const CUDA: Tolerances = Tolerances {
        engine: Tol {
            f64: 1e-10,
            f32: 2e-4,
        },
        steps: Tol {
            f64: 1e-7,
            f32: 1e-3,
        },
    };
    /// The CPU emulation of the kernels: only the elementwise kernels differ from the
    /// CPU (products and SVDs are the CPU's), so the bounds are tight.
    pub const EMU: Tolerances = Tolerances {
        engine: Tol {
            f64: 1e-11,
            f32: 1e-4,
        },
        steps: Tol {
            f64: 1e-9,
            f32: 1e-4,
        },
    };
    /// The CPU against itself with another thread count (the chunks are split over
    /// other workers, so sums are taken in another order): as tight as the emulation.
    pub const CPU: Tolerances = Tolerances::EMU;
}

/// Whether a case passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// The check does not apply to this device (e.g. a device-memory account on the CPU).
    Na,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Na => "n/a",
        }
    }
}

/// One entry out of tolerance.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Mismatch {
    pub index: usize,
    pub got: f64,
    pub want: f64,
}

/// How many mismatches a failed record keeps.
pub const KEEP_MISMATCHES: usize = 8;

/// The outcome of one comparison or check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    /// The group the case belongs to (see [`GROUPS`]).
    pub group: &'static str,
    pub name: String,
    /// "f64", "f32", or "-" for checks without an element type.
    pub dtype: &'static str,
    pub status: Status,
    /// Entries compared (0 for a check that is not a comparison).
    pub entries: usize,
    /// Entries out of tolerance.
    pub bad: usize,
    pub max_abs_err: Option<f64>,
    pub max_rel_err: Option<f64>,
    pub rtol: Option<f64>,
    pub atol: Option<f64>,
    /// The first entries out of tolerance (at most [`KEEP_MISMATCHES`]).
    pub mismatches: Vec<Mismatch>,
    /// Why a check failed or does not apply; what a non-comparison check verified.
    pub message: Option<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.status == Status::Pass
    }

    /// One line: status, group, name, dtype, errors and tolerance (and the message).
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<4}  {:<9} {:<44} {:<3}",
            self.status.label(),
            self.group,
            self.name,
            self.dtype
        );
        if let (Some(a), Some(r), Some(t)) = (self.max_abs_err, self.max_rel_err, self.rtol) {
            s += &format!("  abs {a:9.2e}  rel {r:9.2e}  tol {t:7.1e}");
            if self.bad > 0 {
                s += &format!("  {} of {} bad", self.bad, self.entries);
            }
        }
        if let Some(m) = &self.message {
            s += &format!("  {m}");
        }
        s
    }

    /// The line, then one indented line per kept mismatch.
    pub fn details(&self) -> String {
        let mut s = self.line();
        for m in &self.mismatches {
            s += &format!(
                "\n        [{}] got {:.17e} want {:.17e} |err| {:.3e}",
                m.index,
                m.got,
                m.want,
                (m.got - m.want).abs()
            );
        }
        s
    }
}

/// Counts and context of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub device: String,
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
    pub seconds: f64,
    /// Seconds per group, in run order.
    pub groups: Vec<(String, f64)>,
    pub tolerances: Tolerances,
}

/// Every case of a run and the summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub cases: Vec<CaseResult>,
    pub summary: Summary,
}

impl Report {
    pub fn all_passed(&self) -> bool {
        self.summary.failed == 0
    }
    /// The failed records with their mismatches (for test failure messages).
    pub fn failures(&self) -> String {
        self.cases
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(CaseResult::details)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The groups in run order: the library calls first (cheap, and the first thing that
/// breaks with a wrong library), the memory checks last (an exhausted device must not
/// disturb the other cases).
pub const GROUPS: &[&str] = &[
    "gemm", "svd", "eig", "forward", "autodiff", "gradient", "steps", "memory",
];

/// Where the reference (the CPU backend) runs.
pub enum Reference {
    /// On the calling thread's rayon pool.
    Ambient,
    /// On a pool of its own with this many threads (the CPU-against-itself run).
    Threads(usize),
}

/// The record collector handed to the cases: the tolerances, where the CPU reference
/// runs, and the records so far (reported to a callback as they are made).
pub struct Check<'a> {
    pub tol: Tolerances,
    group: &'static str,
    pool: Option<rayon::ThreadPool>,
    cases: Vec<CaseResult>,
    on_case: &'a mut dyn FnMut(&CaseResult),
}

impl<'a> Check<'a> {
    pub fn new(
        tol: Tolerances,
        reference: Reference,
        on_case: &'a mut dyn FnMut(&CaseResult),
    ) -> Result<Self> {
        let pool = match reference {
            Reference::Ambient => None,
            Reference::Threads(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| {
                        crate::Error::Device(format!("a reference pool of {n} threads: {e}"))
                    })?,
            ),
        };
        Ok(Check {
            tol,
            group: "",
            pool,
            cases: Vec::new(),
            on_case,
        })
    }

    /// Run `f` (a computation on the CPU backend) where the reference runs.
    pub fn reference<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    fn push(&mut self, c: CaseResult) {
        (self.on_case)(&c);
        self.cases.push(c);
    }

    fn record(&mut self, name: String, dtype: &'static str, status: Status, msg: Option<String>) {
        let c = CaseResult {
            group: self.group,
            name,
            dtype,
            status,
            entries: 0,
            bad: 0,
            max_abs_err: None,
            max_rel_err: None,
            rtol: None,
            atol: None,
            mismatches: Vec::new(),
            message: msg,
        };
        self.push(c);
    }

    /// Compare `got` with `want` entrywise: `|got − want| ≤ atol + rtol·|want|`.
    pub fn compare(
        &mut self,
        name: impl Into<String>,
        dtype: &'static str,
        got: &[f64],
        want: &[f64],
        rtol: f64,
        atol: f64,
    ) {
        let name = name.into();
        let c = compare_entries(self.group, name, dtype, got, want, rtol, atol);
        self.push(c);
    }

    /// Compare with the tolerance relative to the reference's largest entry
    /// (`atol = rtol · max|want|`).
    pub fn close(
        &mut self,
        name: impl Into<String>,
        dtype: &'static str,
        got: &[f64],
        want: &[f64],
        rtol: f64,
    ) {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        self.compare(name, dtype, got, want, rtol, rtol * scale);
    }

    /// A check that is not an entrywise comparison: passes when `ok`; `msg` says what
    /// was checked (and, on failure, what was seen).
    pub fn expect(&mut self, name: impl Into<String>, ok: bool, msg: impl Into<String>) {
        let status = if ok { Status::Pass } else { Status::Fail };
        self.record(name.into(), "-", status, Some(msg.into()));
    }

    /// A check that does not apply to this device, and why.
    pub fn not_applicable(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.record(name.into(), "-", Status::Na, Some(why.into()));
    }

    /// A failure without a comparison (an error returned, a panic).
    pub fn failed(&mut self, name: impl Into<String>, msg: impl Into<String>) {
        self.record(name.into(), "-", Status::Fail, Some(msg.into()));
    }

    /// Run one group: its error or panic becomes a failed record, so the remaining
    /// groups still run.
    pub fn group(&mut self, group: &'static str, f: impl FnOnce(&mut Check<'a>) -> Result<()>) {
        self.group = group;
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed(format!("{group}: error"), e.to_string()),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                self.failed(format!("{group}: panicked"), msg)
            }
        }
    }

    pub fn into_cases(self) -> Vec<CaseResult> {
        self.cases
    }
}

/// The comparison behind [`Check::compare`] (public for tests of the comparison itself).
pub fn compare_entries(
    group: &'static str,
    name: String,
    dtype: &'static str,
    got: &[f64],
    want: &[f64],
    rtol: f64,
    atol: f64,
) -> CaseResult {
    let mut c = CaseResult {
        group,
        name,
        dtype,
        status: Status::Pass,
        entries: want.len(),
        bad: 0,
        max_abs_err: Some(0.0),
        max_rel_err: Some(0.0),
        rtol: Some(rtol),
        atol: Some(atol),
        mismatches: Vec::new(),
        message: None,
    };
    if got.len() != want.len() {
        c.status = Status::Fail;
        c.max_abs_err = None;
        c.max_rel_err = None;
        c.message = Some(format!(
            "length {} where the reference has {}",
            got.len(),
            want.len()
        ));
        return c;
    }
    // entries are scaled by |want| but never by less than atol/rtol (or 1 without rtol)
    let floor = if rtol > 0.0 { atol / rtol } else { 1.0 };
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let rel = err / w.abs().max(floor).max(f64::MIN_POSITIVE);
        if err.is_nan() {
            max_abs = f64::NAN;
            max_rel = f64::NAN;
        } else if !max_abs.is_nan() {
            max_abs = max_abs.max(err);
            max_rel = max_rel.max(rel);
        }
        if err.is_nan() || err > atol + rtol * w.abs() {
            c.bad += 1;
            if c.mismatches.len() < KEEP_MISMATCHES {
                c.mismatches.push(Mismatch {
                    index: i,
                    got: g,
                    want: w,
                });
            }
        }
    }
    c.max_abs_err = Some(max_abs);
    c.max_rel_err = Some(max_rel);
    if c.bad > 0 {
        c.status = Status::Fail;
    }
    c
}

/// What a device needs beyond [`Backend`] for the self-check: its memory checks (the CUDA
/// backend has a device-memory account and a driver to exhaust; host backends have the
/// heap).
pub trait SelfCheckDevice: Backend {
    /// Memory accounting and recovery from an allocation that cannot succeed.
    fn memory_checks(&self, ck: &mut Check<'_>) -> Result<()>;
}

impl SelfCheckDevice for Cpu {
    fn memory_checks(&self, ck: &mut Check<'_>) -> Result<()> {
        memory::host(self, ck)
    }
}

impl SelfCheckDevice for crate::backend::emu::Emu {
    fn memory_checks(&self, ck: &mut Check<'_>) -> Result<()> {
        memory::host(self, ck)
    }
}

impl SelfCheckDevice for crate::backend::cuda::Cuda {
    fn memory_checks(&self, ck: &mut Check<'_>) -> Result<()> {
        memory::cuda(self, ck)
    }
}

/// Run the groups named in `only` (all of [`GROUPS`] when empty) on `be` against the CPU
/// backend, calling `on_case` with every record as it is made.
pub fn run<B: SelfCheckDevice>(
    be: &B,
    tol: Tolerances,
    reference: Reference,
    only: &[&str],
    on_case: &mut dyn FnMut(&CaseResult),
) -> Result<Report> {
    if let Some(bad) = only.iter().find(|g| !GROUPS.contains(g)) {
        return Err(crate::Error::unknown("self-check group", bad, GROUPS));
    }
    let t0 = Instant::now();
    let mut ck = Check::new(tol, reference, on_case)?;
    let mut groups = Vec::new();
    for &g in GROUPS {
        if !only.is_empty() && !only.contains(&g) {
            continue;
        }
        let t = Instant::now();
        match g {
            "gemm" => ck.group(g, |ck| linalg::gemm_syrk(be, ck)),
            "svd" => ck.group(g, |ck| linalg::thin_svd(be, ck)),
            "eig" => ck.group(g, |ck| linalg::sym_eig(be, ck)),
            "forward" => ck.group(g, |ck| engine::forward_laplacian(be, ck)),
            "autodiff" => ck.group(g, |ck| engine::autodiff_laplacian(be, ck)),
            "gradient" => ck.group(g, |ck| engine::gradient(be, ck)),
            "steps" => ck.group(g, |ck| engine::optimizer_steps(be, ck)),
            "memory" => ck.group(g, |ck| be.memory_checks(ck)),
            _ => unreachable!("GROUPS is matched in full"),
        }
        groups.push((g.to_string(), t.elapsed().as_secs_f64()));
    }
    let cases = ck.into_cases();
    let count = |s: Status| cases.iter().filter(|c| c.status == s).count();
    let summary = Summary {
        device: be.name(),
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        not_applicable: count(Status::Na),
        seconds: t0.elapsed().as_secs_f64(),
        groups,
        tolerances: tol,
    };
    Ok(Report { cases, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> impl FnMut(&CaseResult) {
        |_: &CaseResult| {}
    }

    #[test]
    fn comparison_names_the_mismatches() {
        let c = compare_entries(
            "t",
            "x".into(),
            "f64",
            &[1.0, 2.1, f64::NAN, 4.0 + 1e-13],
            &[1.0, 2.0, 3.0, 4.0],
            1e-12,
            0.0,
        );
        assert_eq!(c.status, Status::Fail);
        assert_eq!((c.entries, c.bad), (4, 2));
        let idx: Vec<usize> = c.mismatches.iter().map(|m| m.index).collect();
        assert_eq!(idx, [1, 2]);
        assert_eq!((c.mismatches[0].got, c.mismatches[0].want), (2.1, 2.0));
        assert!(c.max_abs_err.unwrap().is_nan());
        assert!(c.details().contains("[1] got 2.1"), "{}", c.details());
    }

    #[test]
    fn comparison_errors_are_relative_to_the_floor() {
        // atol/rtol = 10: entries below 10 are scaled by 10, larger ones by themselves
        let c = compare_entries(
            "t",
            "x".into(),
            "f64",
            &[1.5, 101.0],
            &[1.0, 100.0],
            0.1,
            1.0,
        );
        assert_eq!(c.status, Status::Pass);
        assert_eq!(c.max_abs_err, Some(1.0));
        assert!((c.max_rel_err.unwrap() - 0.05).abs() < 1e-15);
        let c = compare_entries("t", "x".into(), "f64", &[1.0], &[1.0, 2.0], 0.1, 1.0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.unwrap().contains("length 1"));
    }

    #[test]
    fn a_failing_group_is_recorded_and_the_next_still_runs() {
        let mut seen = Vec::new();
        let mut cb = |c: &CaseResult| seen.push(c.name.clone());
        let mut ck = Check::new(Tolerances::CPU, Reference::Ambient, &mut cb).unwrap();
        ck.group("a", |_| Err(crate::Error::Device("no device".into())));
        ck.group("b", |_| panic!("boom"));
        ck.group("c", |ck| {
            ck.close("fine", "f64", &[1.0], &[1.0], 0.0);
            Ok(())
        });
        let cases = ck.into_cases();
        let st: Vec<(&str, Status)> = cases.iter().map(|c| (c.group, c.status)).collect();
        assert_eq!(
            st,
            [
                ("a", Status::Fail),
                ("b", Status::Fail),
                ("c", Status::Pass)
            ]
        );
        assert!(cases[0].message.as_deref().unwrap().contains("no device"));
        assert!(cases[1].message.as_deref().unwrap().contains("boom"));
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn unknown_group_is_refused() {
        let e = run(
            &Cpu,
            Tolerances::CPU,
            Reference::Ambient,
            &["gemms"],
            &mut quiet(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("gemms"), "{e}");
    }

    /// The library calls, the forward Laplacian, autodiff, gradient and memory groups on
    /// the CPU against a one-thread CPU reference: everything passes, the host has no
    /// device-memory account (n/a), and an impossible allocation is a device error.
    #[test]
    fn cpu_against_itself_passes() {
        let groups = [
            "gemm", "svd", "eig", "forward", "autodiff", "gradient", "memory",
        ];
        let r = run(
            &Cpu,
            Tolerances::CPU,
            Reference::Threads(1),
            &groups,
            &mut quiet(),
        )
        .unwrap();
        assert!(r.all_passed(), "{}", r.failures());
        // gemm 2 × 19, svd 11, eig 9, forward 8 (4 nets, one with an operator set, × 2
        // dtypes), autodiff 1, gradient 6 (3 problems, one with three operators), memory 2
        assert_eq!(r.summary.passed, 38 + 11 + 9 + 8 + 1 + 6 + 2);
        assert_eq!(r.summary.not_applicable, 1);
        let names: Vec<&str> = r.summary.groups.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(names, groups);
    }

    /// With a negative tolerance every comparison of the engine groups fails: each one
    /// compares entries, none passes by comparing nothing.
    #[test]
    fn every_engine_comparison_has_entries() {
        let neg = Tol {
            f64: -1.0,
            f32: -1.0,
        };
        let tol = Tolerances {
            engine: neg,
            steps: neg,
        };
        let r = run(
            &Cpu,
            tol,
            Reference::Ambient,
            &["forward", "autodiff", "gradient"],
            &mut quiet(),
        )
        .unwrap();
        assert_eq!(r.summary.passed, 0, "{:?}", r.cases);
        // forward 8, autodiff 1, gradient 6
        assert_eq!(r.summary.failed, 15);
        assert!(r.cases.iter().all(|c| c.entries > 0 && c.bad > 0));
    }
}

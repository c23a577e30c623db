//! The CPU emulation's checks catch what a GPU would punish (kernels/emu/runtime.cpp,
//! src/backend/emu): planted bugs in the self-test kernels of kernels/emu/selftest.cu — a
//! shared-memory race without `__syncthreads`, blocks that depend on each other, writes
//! past the end and reads before the start of a buffer, a write to a read-only buffer —
//! must fail the launch with the kernel's name and where it went wrong; correct kernels,
//! including the project's reductions and float atomics, must pass every schedule; and a
//! fault outside kernel code must still kill the process (the handler does not swallow it).
//!
//! The expected values are worked out by hand from the kernels' few lines (written next to
//! each assertion), not taken from the emulation.

use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::backend::cuda::launch::{Geometry, KArg, Launcher};
use kfac_pinn::backend::emu::{self, Emu, Region, Schedules, SCHEDULES_ENV};
use kfac_pinn::backend::{Backend, EigFix};

fn emu(schedules: Schedules) -> Emu {
    assert!(
        emu::available(),
        "the CUDA CPU emulation was not built (build.rs needs a C++20 compiler, e.g. g++)"
    );
    Emu::default().with_schedules(schedules)
}

fn geom(blocks: u32, threads: u32) -> Geometry {
    Geometry {
        grid: [blocks, 1, 1],
        block: [threads, 1, 1],
    }
}

fn region_of<T>(v: &mut [T], writable: bool) -> Region {
    Region::new(v.as_mut_ptr() as u64, std::mem::size_of_val(v), writable)
}

/// Launch a self-test kernel whose only pointer arguments lie in `bufs`.
fn launch(
    e: &Emu,
    kernel: &str,
    g: Geometry,
    args: &[KArg],
    bufs: &[Region],
) -> kfac_pinn::Result<()> {
    // SAFETY: every test below passes regions that cover whole live Vecs it holds
    // exclusively for the call, and pointer arguments into them; accesses outside are
    // what the emulation catches (on copies), not UB on the Vecs.
    unsafe { e.launch_on(kernel, g, args, bufs) }
}

fn ptr<T>(v: &mut [T]) -> KArg {
    KArg::Ptr(v.as_mut_ptr() as u64)
}

// ---- races ------------------------------------------------------------------------------

#[test]
fn shared_memory_race_is_a_schedule_mismatch() {
    let threads = 256usize;
    // index order alone cannot see it: thread t reads slot t + 1 before thread t + 1 ran,
    // i.e. the poison the block's first thread put there (bytes 0xff: -1 as an i64);
    // only the last thread reads a written slot (slot 0, 0² = 0)
    let mut out = vec![7i64; threads];
    let r = [region_of(&mut out, true)];
    let p = ptr(&mut out);
    launch(
        &emu(Schedules::IndexOrder),
        "emu_race_shared",
        geom(1, 256),
        &[p],
        &r,
    )
    .unwrap();
    assert!(
        out[..threads - 1].iter().all(|&v| v == -1),
        "{:?}",
        &out[..4]
    );
    assert_eq!(out[threads - 1], 0);

    // reverse order runs t + 1 first, so thread 0 reads 1² = 1: a mismatch at element 0
    let mut out = vec![7i64; threads];
    let r = [region_of(&mut out, true)];
    let p = ptr(&mut out);
    let err = launch(
        &emu(Schedules::List(vec![0, 1])),
        "emu_race_shared",
        geom(1, 256),
        &[p],
        &r,
    )
    .unwrap_err()
    .to_string();
    for want in [
        "emu_race_shared",
        "depends on the thread schedule",
        "schedule 1 (reverse order) and schedule 0 (index order)",
        "argument 0 (256 × i64)",
        "element 0: got 1, want -1",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    assert_eq!(out, vec![7; threads], "a failed launch must not write back");

    // a random order is enough too (some t + 1 runs before its t)
    let err = launch(
        &emu(Schedules::List(vec![0, 9])),
        "emu_race_shared",
        geom(1, 256),
        &[p],
        &r,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("schedule 9 (random order)"), "{err}");
}

#[test]
fn the_same_kernel_with_its_barrier_passes_every_schedule() {
    // emu_shared_rotate is emu_race_shared with the __syncthreads: out[t] = ((t+1) mod n)²
    let threads = 256usize;
    let mut out = vec![0i64; threads];
    let r = [region_of(&mut out, true)];
    let p = ptr(&mut out);
    let e = emu(Schedules::List((0..8).collect()));
    launch(&e, "emu_shared_rotate", geom(1, 256), &[p], &r).unwrap();
    for (t, &got) in out.iter().enumerate() {
        let s = ((t + 1) % threads) as i64;
        assert_eq!(got, s * s, "t {t}");
    }
    // the block reduction of common.cuh, as every reduction kernel uses it: Σ 0..1000
    let mut x: Vec<f64> = (0..1000).map(|i| i as f64).collect();
    let mut sum = vec![0.0f64];
    let r = [region_of(&mut x, false), region_of(&mut sum, true)];
    let args = [ptr(&mut x), KArg::I64(1000), ptr(&mut sum)];
    launch(&e, "emu_block_sum_f64", geom(1, 256), &args, &r).unwrap();
    assert_eq!(sum[0], 499_500.0);
}

#[test]
fn blocks_that_depend_on_each_other_are_a_schedule_mismatch() {
    // block b > 0 sets x[b] = x[b − 1] + 1: index order chains (x[b] = b), reverse order
    // reads the untouched zeros (x[b] = 1), so they first differ at element 2
    let mut x = vec![0i64; 8];
    let r = [region_of(&mut x, true)];
    let p = ptr(&mut x);
    let mut chained = x.clone();
    let rc = [region_of(&mut chained, true)];
    let pc = ptr(&mut chained);
    launch(
        &emu(Schedules::IndexOrder),
        "emu_race_blocks",
        geom(8, 32),
        &[pc],
        &rc,
    )
    .unwrap();
    assert_eq!(chained, (0..8).collect::<Vec<i64>>());
    let err = launch(
        &emu(Schedules::List(vec![0, 1])),
        "emu_race_blocks",
        geom(8, 32),
        &[p],
        &r,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("emu_race_blocks"), "{err}");
    assert!(err.contains("element 2: got 1, want 2"), "{err}");
}

// ---- out-of-bounds accesses ------------------------------------------------------------

#[test]
fn write_past_the_end_fails_with_the_kernel_name() {
    // 100 elements; thread 100 of the only block writes x[100]
    let n = 100usize;
    for schedules in [Schedules::IndexOrder, Schedules::List(vec![0, 1])] {
        let mut x = vec![5i64; n];
        let r = [region_of(&mut x, true)];
        let args = [ptr(&mut x), KArg::I64(n as i64)];
        let err = launch(&emu(schedules), "emu_oob_write", geom(1, 256), &args, &r)
            .unwrap_err()
            .to_string();
        for want in [
            "emu_oob_write",
            "by thread (100,0,0) of block (0,0,0)",
            "out of bounds of the buffer of argument 0 (100 × i64)",
            "byte 800 of 800 (past its end, element 100)",
            "under schedule 0 (index order)",
        ] {
            assert!(err.contains(want), "{want:?} not in: {err}");
        }
        if cfg!(target_arch = "x86_64") {
            assert!(err.contains("invalid write at 0x"), "{err}");
        }
        assert_eq!(x, vec![5; n], "a faulted launch must not write back");
    }
    // the thread survives the fault and keeps launching (the worker fibers restart)
    let mut out = vec![0i64; 64];
    let r = [region_of(&mut out, true)];
    let p = ptr(&mut out);
    launch(
        &emu(Schedules::Rotate),
        "emu_shared_rotate",
        geom(1, 64),
        &[p],
        &r,
    )
    .unwrap();
    assert_eq!(out[63], 0);
    assert_eq!(out[0], 1);
}

#[test]
fn read_before_the_start_fails_in_the_start_aligned_run() {
    // thread 0 reads x[-1]; the second run places the copy right after a guard page
    let n = 100usize;
    let mut x = vec![1i64; n];
    let mut y = vec![0i64; n];
    let r = [region_of(&mut x, false), region_of(&mut y, true)];
    let args = [ptr(&mut x), ptr(&mut y), KArg::I64(n as i64)];
    let err = launch(
        &emu(Schedules::List(vec![0, 1])),
        "emu_oob_read_before",
        geom(1, 256),
        &args,
        &r,
    )
    .unwrap_err()
    .to_string();
    for want in [
        "emu_oob_read_before",
        "by thread (0,0,0) of block (0,0,0)",
        "out of bounds of the buffer of argument 0 (100 × i64), byte -8 of 800 (before its start, element -1)",
        "under schedule 1 (reverse order)",
    ] {
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    if cfg!(target_arch = "x86_64") {
        assert!(err.contains("invalid read at 0x"), "{err}");
    }
}

#[test]
fn a_pointer_outside_the_named_buffers_is_refused() {
    let mut x = vec![0i64; 10];
    let mut other = vec![0i64; 10];
    let r = [region_of(&mut x, true)];
    let err = launch(
        &emu(Schedules::IndexOrder),
        "emu_oob_write",
        geom(1, 32),
        &[ptr(&mut other), KArg::I64(5)],
        &r,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("emu_oob_write: pointer argument 0") && err.contains("lies in none of the 1"),
        "{err}"
    );
}

#[test]
fn overlapping_buffers_are_refused() {
    // each run works on its own copy of each buffer, so shared bytes would diverge
    let mut x = vec![0i64; 10];
    let whole = region_of(&mut x, false);
    let tail = Region::new(whole.base + 8, 72, true);
    let args = [ptr(&mut x), KArg::Ptr(whole.base + 8), KArg::I64(9)];
    let err = launch(
        &emu(Schedules::IndexOrder),
        "emu_oob_read_before",
        geom(1, 32),
        &args,
        &[whole, tail],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("emu_oob_read_before: the buffer of argument 0 (10 × i64) and the buffer of argument 1 (9 × i64) overlap"),
        "{err}"
    );
}

#[test]
fn write_to_a_read_only_buffer_is_reported() {
    let mut x = vec![5i64; 10];
    let r = [region_of(&mut x, false)];
    let args = [ptr(&mut x), KArg::I64(10)];
    let err = launch(
        &emu(Schedules::IndexOrder),
        "emu_write_input",
        geom(1, 32),
        &args,
        &r,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("emu_write_input: wrote to the buffer of argument 0 (10 × i64), which the op passes read-only: element 0 changed from 5 to 6"),
        "{err}"
    );
    assert_eq!(x, vec![5; 10]);
}

// ---- float atomics ------------------------------------------------------------------------

#[test]
fn float_atomics_are_compared_with_a_tolerance() {
    // 4096 values of magnitudes 1e-3..1e3 summed by atomicAdd in f32: the rounding depends
    // on the order of the adds, so the schedules disagree bitwise
    let n = 4096usize;
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            let m = 10f32.powi((i % 7) as i32 - 3);
            let s = if i % 3 == 0 { -1.0 } else { 1.0 };
            s * m * (1.0 + (i as f32 * 0.618).fract())
        })
        .collect();
    let exact: f64 = x.iter().map(|&v| v as f64).sum();
    let g = Geometry::linear(n, Emu::default().limits()).unwrap();
    let mut alone = Vec::new();
    for s in 0..6u64 {
        let mut out = vec![0f32];
        let r = [region_of(&mut x, false), region_of(&mut out, true)];
        let args = [ptr(&mut x), KArg::I64(n as i64), ptr(&mut out)];
        launch(
            &emu(Schedules::List(vec![s])),
            "emu_atomic_sum_f32",
            g,
            &args,
            &r,
        )
        .unwrap();
        alone.push(out[0]);
    }
    assert!(
        alone.iter().any(|v| v.to_bits() != alone[0].to_bits()),
        "the schedules should round differently: {alone:?}"
    );
    // together they pass: compared within the float-atomics tolerance, not bitwise
    let mut out = vec![0f32];
    let r = [region_of(&mut x, false), region_of(&mut out, true)];
    let args = [ptr(&mut x), KArg::I64(n as i64), ptr(&mut out)];
    launch(
        &emu(Schedules::List((0..6).collect())),
        "emu_atomic_sum_f32",
        g,
        &args,
        &r,
    )
    .unwrap();
    assert_eq!(
        out[0].to_bits(),
        alone[0].to_bits(),
        "schedule 0's result is kept"
    );
    let rel = ((out[0] as f64 - exact) / exact).abs();
    assert!(rel < 1e-4, "sum {} vs exact {exact}", out[0]);
}

// ---- the project's kernels ------------------------------------------------------------------

#[test]
fn reduction_ops_pass_eight_schedules() {
    // the kernels with shared memory and barriers (dot/sq_dist partials and their sum,
    // column sums, the eigenvalue fix) under index, reverse and six random orders
    let e = emu(Schedules::List((0..8).collect()));
    let n = 5000;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
        .collect();
    let y: Vec<f64> = (0..n)
        .map(|i| ((i * 53 % 97) as f64 - 48.0) / 5.0)
        .collect();
    let want: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
    let got = e.dot(&x, &y).unwrap();
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{got} vs {want}"
    );

    let (rows, cols) = (700, 45);
    let m: Vec<f64> = (0..rows * cols).map(|i| (i % 13) as f64 - 6.0).collect();
    let mut a = vec![1.0; cols];
    let mut b = a.clone();
    e.col_sum(0.5, &m, 0, rows, cols, 2.0, &mut a, 0).unwrap();
    Cpu.col_sum(0.5, &m, 0, rows, cols, 2.0, &mut b, 0).unwrap();
    for j in 0..cols {
        assert!(
            (a[j] - b[j]).abs() <= 1e-12 * b[j].abs().max(1.0),
            "col {j}"
        );
    }

    for mode in [
        EigFix::InvSqrtFloor,
        EigFix::NonNegative,
        EigFix::PseudoInverse,
    ] {
        let mut v: Vec<f64> = (0..300).map(|i| (i as f64 - 100.0) / 3.0).collect();
        let mut w = v.clone();
        let fe = e.eig_fix(&mut v, 300, mode).unwrap();
        let fc = Cpu.eig_fix(&mut w, 300, mode).unwrap();
        assert_eq!(fe, fc, "{mode:?}");
        for (i, (a, b)) in v.iter().zip(&w).enumerate() {
            assert!((a - b).abs() <= 1e-15 * b.abs(), "{mode:?} {i}");
        }
    }
}

// ---- settings --------------------------------------------------------------------------------

#[test]
fn schedule_settings_parse_and_name_bad_values() {
    assert_eq!(Schedules::parse("rotate").unwrap(), Schedules::Rotate);
    assert_eq!(Schedules::parse("index").unwrap(), Schedules::IndexOrder);
    assert_eq!(
        Schedules::parse(" 4 ").unwrap(),
        Schedules::List(vec![0, 1, 2, 3])
    );
    for bad in ["0", "65", "fast", "-1"] {
        let msg = Schedules::parse(bad).unwrap_err().to_string();
        assert!(
            msg.contains(SCHEDULES_ENV) && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
    }
}

// ---- faults outside kernels ------------------------------------------------------------------

const CHILD_ENV: &str = "KFAC_EMU_CHECKS_CHILD";

/// The fault handler is installed by the first launch; a fault in ordinary code afterwards
/// must still end the process with SIGSEGV (handed to the previous handler), not be
/// swallowed or hang. Runs the fault in a child process: this test binary, re-run with a
/// filter and an environment variable.
#[test]
fn a_fault_outside_kernels_still_kills_the_process() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let mut out = vec![0i64; 32];
        let r = [region_of(&mut out, true)];
        let p = ptr(&mut out);
        launch(
            &emu(Schedules::IndexOrder),
            "emu_shared_rotate",
            geom(1, 32),
            &[p],
            &r,
        )
        .unwrap();
        eprintln!("child: faulting now");
        // SAFETY: none — this deliberately writes to an unmapped address to check that
        // the process dies of it (it runs only in the child process).
        unsafe { std::ptr::write_volatile(16usize as *mut u8, 1) };
        eprintln!("child: still alive");
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "a_fault_outside_kernels_still_kills_the_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("child: faulting now"), "{stderr}");
    assert!(!stderr.contains("still alive"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(11), "{:?}: {stderr}", out.status);
}

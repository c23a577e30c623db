//! A run is never lost: the release binary is started as a child process and killed at
//! random moments (SIGKILL), stopped with SIGTERM and SIGHUP, resumed twice at once, and
//! starved of disk space while it writes a checkpoint. After each, `train --resume` must
//! continue the run, and at the end:
//! - the log's steps are exactly the logging grid, each once (torn rows repaired, rows
//!   after the checkpoint replayed once);
//! - the final parameters and optimizer state equal an uninterrupted run's bit for bit
//!   (CPU backend, same seeds).
//!
//! `KFAC_PINN_CRASH_KILLS=N` sets the number of SIGKILLs (default 24; a long mode is
//! e.g. 500).

use kfac_pinn::train::{read_log, Checkpoint};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kfac-pinn");
const LOG_EVERY: u64 = 5;

/// A small KFAC* run: state with Kronecker factors, resampled points (the data RNG is
/// part of the checkpoint), checkpoints by steps and by wall-clock time (so they also
/// fall between logged steps).
fn run_args(steps: u64) -> Vec<String> {
    [
        "train",
        "--problem",
        "poisson2d",
        "--widths",
        "2,12,1",
        "--points",
        "60,30",
        "--eval-points",
        "50",
        "--optimizer",
        "kfac-star",
        "--resample",
        "20",
        "--log-every",
        "5",
        "--checkpoint-every",
        "7",
        "--checkpoint-seconds",
        "0.02",
        "--device",
        "cpu",
        "--quiet",
        "--steps",
        &steps.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kfac-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn resume_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "train".to_string(),
        "--resume".into(),
        dir.display().to_string(),
        "--quiet".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The uninterrupted reference run's final checkpoint and its wall time.
fn reference(steps: u64) -> (Checkpoint, Duration) {
    let dir = scratch(&format!("ref{steps}"));
    let mut a = run_args(steps);
    a.extend(["--out".into(), dir.join("run").display().to_string()]);
    let t0 = Instant::now();
    let o = output(&a);
    let took = t0.elapsed();
    assert!(o.status.success(), "reference run failed: {}", stderr(&o));
    let ck = Checkpoint::load(&dir.join("run/checkpoint.safetensors")).unwrap();
    check_log(&dir.join("run/log.csv"), steps);
    let _ = std::fs::remove_dir_all(&dir);
    (ck, took)
}

/// Every step of the logging grid 0, 5, …, `steps` exactly once, in order.
fn check_log(path: &Path, steps: u64) {
    let rows = read_log(path).unwrap_or_else(|e| panic!("log unreadable: {e}"));
    let got: Vec<u64> = rows.iter().map(|r| r.step).collect();
    let want: Vec<u64> = (0..=steps / LOG_EVERY).map(|k| k * LOG_EVERY).collect();
    assert_eq!(got, want, "log steps of {}", path.display());
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Same parameters, optimizer state, points and data stream, bit for bit.
fn assert_same_run(got: &Checkpoint, want: &Checkpoint) {
    assert_eq!(got.step, want.step, "steps");
    assert_eq!(bits(&got.params), bits(&want.params), "parameters differ");
    assert_eq!(got.opt_state.len(), want.opt_state.len());
    for ((kg, vg), (kw, vw)) in got.opt_state.iter().zip(&want.opt_state) {
        assert_eq!(kg, kw);
        assert_eq!(bits(vg), bits(vw), "optimizer state `{kg}` differs");
    }
    for (pg, pw) in got.points.iter().zip(&want.points) {
        assert_eq!(bits(pg), bits(pw), "training points differ");
    }
    assert_eq!(
        (got.rng_seed, got.rng_stream, got.rng_word_pos),
        (want.rng_seed, want.rng_stream, want.rng_word_pos),
        "data stream differs"
    );
}

/// The step of the run directory's checkpoint, if it has one.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    Checkpoint::load(&dir.join("checkpoint.safetensors"))
        .ok()
        .map(|c| c.step)
}

/// A run that reached its budget: its log is the logging grid, its state the reference's.
fn check_finished(dir: &Path, steps: u64, want: &Checkpoint) {
    check_log(&dir.join("log.csv"), steps);
    let got = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert_same_run(&got, want);
}

/// Start the run or resume it, as a user would after a crash: a directory killed before
/// its first checkpoint is started again with --force (the only refusal allowed).
fn start_or_resume(dir: &Path, steps: u64) -> Vec<String> {
    if dir.join("checkpoint.safetensors").exists() {
        resume_args(dir, &[])
    } else {
        let mut a = run_args(steps);
        a.extend(["--out".into(), dir.display().to_string(), "--force".into()]);
        a
    }
}

#[test]
fn sigkill_at_random_moments_then_resume() {
    let steps = 1500;
    let (want, took) = reference(steps);
    let kills: usize = std::env::var("KFAC_PINN_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let root = scratch("kill");
    let dir = root.join("run");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    // delays up to a fraction of the whole run, so that many kills land mid-run
    let max_delay = (took.as_secs_f64() / 6.0).max(0.02);
    let (mut killed, mut finished_early, mut torn) = (0, 0, 0);
    while killed < kills {
        if checkpoint_step(&dir) == Some(steps) {
            // the last kill came after the final checkpoint (while the model was being
            // written, or at exit): the run is complete, and a resume would refuse with
            // "nothing to do"; it must be the uninterrupted run
            check_finished(&dir, steps, &want);
            finished_early += 1;
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let args = start_or_resume(&dir, steps);
        let mut child = spawn(&args);
        std::thread::sleep(Duration::from_secs_f64(rng.random_range(0.0..max_delay)));
        match child.try_wait().unwrap() {
            Some(status) => {
                // it finished (or refused) before the kill: it must have succeeded
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(status.success(), "{args:?} failed: {err}");
                finished_early += 1;
                // a run that reached its end through the kills so far must be the
                // uninterrupted run; then start over for the remaining kills
                check_finished(&dir, steps, &want);
                let _ = std::fs::remove_dir_all(&dir);
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                if let Ok(text) = std::fs::read_to_string(dir.join("log.csv")) {
                    if !text.is_empty() && !text.ends_with('\n') {
                        torn += 1;
                    }
                }
                // every kill leaves a directory that is resumable, or one that never
                // got its first checkpoint (config only), which is refused clearly
                if dir.join("config.toml").exists() && !dir.join("checkpoint.safetensors").exists()
                {
                    let o = output(&resume_args(&dir, &[]));
                    assert!(!o.status.success());
                    assert!(stderr(&o).contains("no checkpoint"), "{}", stderr(&o));
                }
            }
        }
    }
    // now let it finish, resuming from wherever the last kill left it
    if checkpoint_step(&dir) != Some(steps) {
        let o = output(&start_or_resume(&dir, steps));
        assert!(o.status.success(), "final resume failed: {}", stderr(&o));
    }
    check_finished(&dir, steps, &want);
    // the run is done: a plain resume has nothing to do and says so
    let o = output(&resume_args(&dir, &[]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    eprintln!(
        "{killed} kills survived ({torn} left a torn log row), {finished_early} runs finished before their kill"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Send `sig` once the run has logged a few rows; it must checkpoint and exit 128 + sig.
fn stop_with_signal(dir: &Path, sig: &str, code: i32) {
    let mut a = run_args(1_000_000);
    a.extend(["--out".into(), dir.display().to_string()]);
    let child = spawn(&a);
    let t0 = Instant::now();
    loop {
        let rows = std::fs::read_to_string(dir.join("log.csv"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if rows > 4 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "run did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let k = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{sig}: {err}");
    assert!(err.contains(&format!("stopped by SIG{sig}")), "{err}");
    let ck = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    let last = read_log(&dir.join("log.csv")).unwrap().last().unwrap().step;
    assert_eq!(
        ck.step, last,
        "{sig}: the checkpoint is at the last step done"
    );
    assert!(ck.step > 0);
}

#[test]
fn sigterm_and_sighup_checkpoint_and_exit_with_128_plus_signal() {
    let root = scratch("term");
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let dir = root.join(sig);
        stop_with_signal(&dir, sig, code);
        // the stopped run continues for exactly the steps asked
        let before = Checkpoint::load(&dir.join("checkpoint.safetensors"))
            .unwrap()
            .step;
        let o = output(&resume_args(&dir, &["--steps", "10"]));
        assert!(o.status.success(), "{}", stderr(&o));
        let after = Checkpoint::load(&dir.join("checkpoint.safetensors"))
            .unwrap()
            .step;
        assert_eq!(after, before + 10);
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn two_concurrent_resumes_exactly_one_runs() {
    let steps = 40;
    let (want, _) = reference(steps + 2000);
    let root = scratch("concurrent");
    let dir = root.join("run");
    let mut a = run_args(steps);
    a.extend(["--out".into(), dir.display().to_string()]);
    assert!(output(&a).status.success());
    for round in 0..3 {
        let extra: &[&str] = &["--steps", "2000"];
        let children = [
            spawn(&resume_args(&dir, extra)),
            spawn(&resume_args(&dir, extra)),
        ];
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let ok: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(ok.len(), 1, "round {round}: exactly one resume runs");
        let refused = outs.iter().find(|o| !o.status.success()).unwrap();
        // "in use by process N", or "by another process" when the loser read the lock
        // file between the winner's lock and its writing of its pid
        assert!(
            stderr(refused).contains("is in use by"),
            "{}",
            stderr(refused)
        );
        if round == 0 {
            check_log(&dir.join("log.csv"), steps + 2000);
            let got = Checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
            assert_same_run(&got, &want);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn full_disk_during_a_checkpoint_keeps_the_previous_one() {
    // a bigger net, so the checkpoint is larger than the file-size limit below, while
    // the log (rows every 1000 steps) and the config stay under it
    let base = |steps: u64| -> Vec<String> {
        [
            "train",
            "--problem",
            "poisson2d",
            "--widths",
            "2,32,32,1",
            "--points",
            "60,30",
            "--eval-points",
            "50",
            "--optimizer",
            "adam",
            "--log-every",
            "1000",
            "--checkpoint-every",
            "10",
            "--device",
            "cpu",
            "--quiet",
            "--steps",
            &steps.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let root = scratch("disk");
    let (full, part) = (root.join("full"), root.join("part"));
    let mut a = base(60);
    a.extend(["--out".into(), full.display().to_string()]);
    assert!(output(&a).status.success());
    let want = Checkpoint::load(&full.join("checkpoint.safetensors")).unwrap();
    let mut a = base(25);
    a.extend(["--out".into(), part.display().to_string()]);
    assert!(output(&a).status.success());
    let ck = part.join("checkpoint.safetensors");
    let before = std::fs::read(&ck).unwrap();
    assert!(
        before.len() > 24 * 1024,
        "checkpoint too small for the test"
    );
    // files may not grow past 16 KiB; SIGXFSZ ignored, so writes fail with EFBIG
    let resume = resume_args(&part, &["--steps", "35"]);
    let o = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(&resume)
        .output()
        .unwrap();
    assert!(!o.status.success(), "the checkpoint write must fail");
    assert!(stderr(&o).contains("checkpoint"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "previous checkpoint intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // with space again, the resume reaches the uninterrupted run's end exactly
    let o = output(&resume);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = Checkpoint::load(&ck).unwrap();
    assert_same_run(&got, &want);
    let _ = std::fs::remove_dir_all(&root);
}

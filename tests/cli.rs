//! The binary: JSON output of `train` and `laplacian`, listings, and clear errors (exit
//! status 1, never a panic) for bad input.

mod common;

use common::kfac_pinn as run;

#[test]
fn train_json_has_the_summary_fields() {
    let (code, out, err) = run(&[
        "train",
        "--steps",
        "3",
        "--points",
        "40,10",
        "--eval-points",
        "50",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for k in ["l2_abs", "l2_rel", "loss", "steps", "seconds"] {
        assert!(v.get(k).is_some(), "missing {k} in {out}");
    }
    assert_eq!(v["steps"], 3);
    assert_eq!(v["problem"], "poisson2d");
}

#[test]
fn laplacian_json_one_object_per_measurement() {
    let (code, out, err) = run(&[
        "laplacian",
        "--dim",
        "3",
        "--widths",
        "8,8",
        "--batch",
        "16",
        "--repeats",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        for k in ["method", "dim", "batch", "seconds", "peak_bytes"] {
            assert!(r.get(k).is_some(), "missing {k}");
        }
        assert_eq!(r["dim"], 3);
        assert!(r["peak_bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn listings() {
    let (code, out, _) = run(&["problems"]);
    assert_eq!(code, 0);
    for p in ["poisson2d", "heat4d", "log-fokker-planck9d", "poisson100d"] {
        assert!(out.contains(p), "{p} missing from\n{out}");
    }
    let (code, out, _) = run(&["presets"]);
    assert_eq!(code, 0);
    assert!(out.contains("poisson2d-257") && out.contains("heat4d-10065"));
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["train", "--problem", "poisson3d"],
            &["poisson3d", "poisson2d"],
        ),
        (
            &["train", "--optimizer", "rmsprop", "--steps", "1"],
            &["rmsprop", "adam"],
        ),
        (
            &["train", "--widths", "2,0,1", "--steps", "1"],
            &["widths[1]", "Got 0"],
        ),
        (
            &["train", "--widths", "3,8,1", "--steps", "1"],
            &["2 input dimensions"],
        ),
        (&["train", "--lr", "nan", "--steps", "1"], &["lr", "NaN"]),
        (&["train", "--lr", "-1", "--steps", "1"], &["lr", "-1"]),
        (&["train", "--seconds", "0"], &["seconds", "Got 0"]),
        (
            &[
                "train",
                "--optimizer",
                "adam",
                "--tau",
                "nan",
                "--steps",
                "1",
            ],
            &["tau", "unset for optimizer `adam`", "NaN"],
        ),
        (
            &[
                "train",
                "--optimizer",
                "kfac",
                "--ema",
                "1.5",
                "--steps",
                "1",
            ],
            &["ema", "[0, 1)", "1.5"],
        ),
        (
            &[
                "train",
                "--optimizer",
                "kfac",
                "--damping",
                "-1",
                "--steps",
                "1",
            ],
            &["damping", "-1"],
        ),
        (&["train", "--points", "10,x"], &["points", "10,x"]),
        (
            &["train", "--points", "10", "--steps", "1"],
            &["points", "one per term"],
        ),
        (&["train", "--dtype", "f16"], &["dtype", "f16"]),
        (&["train", "--device", "tpu"], &["device", "tpu"]),
        (
            &["train", "--preset", "nope"],
            &["preset", "nope", "poisson2d-257"],
        ),
        (&["laplacian", "--dims", "0,10"], &["dims", "Got 0"]),
        (&["laplacian", "--method", "magic"], &["method", "magic"]),
    ];
    for (args, needles) in cases {
        let (code, _, err) = run(args);
        // 1: our errors; 2: clap's usage errors; 101 would be a panic
        assert!(code == 1 || code == 2, "{args:?} exited with {code}: {err}");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        for n in *needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in error: {err}");
        }
    }
}

#[test]
fn save_then_eval_matches_autodiff() {
    use kfac_pinn::autodiff::Autodiff;
    use kfac_pinn::backend::cpu::Cpu;
    use kfac_pinn::io::npy;
    let dir = std::env::temp_dir().join(format!("kfac-pinn-cli-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.safetensors");
    let (code, _, err) = run(&[
        "train",
        "--steps",
        "2",
        "--points",
        "30,10",
        "--eval-points",
        "20",
        "--quiet",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // saving again without --force is refused before training starts
    let (code, _, err) = run(&[
        "train",
        "--steps",
        "2",
        "--quiet",
        "--save",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let x: Vec<f64> = (0..14).map(|i| (i as f64 * 0.37).sin().abs()).collect();
    let pts = dir.join("x.npy");
    std::fs::write(&pts, npy::encode(7, 2, &x)).unwrap();
    let out = dir.join("y.npy");
    let (code, _, err) = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--points",
        pts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let y = npy::read(&out).unwrap();
    assert_eq!((y.rows, y.cols), (7, 4));
    let m = kfac_pinn::model::io::load(&model).unwrap();
    let der = Autodiff::<Cpu, f64>::new(Cpu, m.mlp.clone())
        .unwrap()
        .derivatives(&m.params, &x, 7)
        .unwrap();
    let lap = der.laplacian();
    for (i, &li) in lap.iter().enumerate() {
        let want = [der.u[i], der.grad[i * 2], der.grad[i * 2 + 1], li];
        for (c, &w) in want.iter().enumerate() {
            let g = y.data[i * 4 + c];
            assert!(
                (g - w).abs() <= 1e-10 * (1.0 + w.abs()),
                "row {i} col {c}: {g} vs {w}"
            );
        }
    }
    // dimension mismatch between model and points
    std::fs::write(&pts, npy::encode(2, 3, &[0.0; 6])).unwrap();
    let (code, _, err) = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--points",
        pts.to_str().unwrap(),
        "--out",
        dir.join("z.npy").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("3 columns") && err.contains("takes 2 inputs"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn custom_problem_from_a_config_file_trains() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/custom-poisson.toml");
    let (code, out, err) = run(&["train", "--config", cfg, "--json", "--eval-points", "1000"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["problem"], "poisson-aniso-2d");
    let l2 = v["l2_abs"].as_f64().unwrap();
    assert!(l2 < 1e-4, "L2 {l2:e}");
}

/// `selfcheck --device emu --json --out DIR`: every case passes on the CPU emulation of
/// the CUDA kernels, the JSON object on stdout has the cases and the summary, and the
/// same object is written to DIR/selfcheck.json.
#[test]
fn selfcheck_on_the_emulation_passes_with_json() {
    let dir = std::env::temp_dir().join(format!("kfac-selfcheck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = run(&[
        "selfcheck",
        "--device",
        "emu",
        "--json",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let s = &v["summary"];
    for k in ["passed", "failed", "not_applicable", "device", "seconds"] {
        assert!(s.get(k).is_some(), "summary lacks {k}: {s}");
    }
    assert_eq!(s["failed"], 0, "{err}");
    assert!(s["device"].as_str().unwrap().contains("emulation"), "{s}");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(s["passed"].as_u64().unwrap() as usize + 1, cases.len());
    // every group ran, and every comparison compared entries
    for g in kfac_pinn::selfcheck::GROUPS {
        assert!(cases.iter().any(|c| c["group"] == *g), "no case of {g}");
    }
    for c in cases {
        for k in [
            "name",
            "dtype",
            "status",
            "max_abs_err",
            "max_rel_err",
            "rtol",
        ] {
            assert!(c.get(k).is_some(), "case lacks {k}: {c}");
        }
        if c["rtol"].is_number() {
            assert!(c["entries"].as_u64().unwrap() > 0, "{c}");
        }
    }
    // the per-case lines went to stderr, the summary line last
    assert!(err.lines().count() >= cases.len(), "{err}");
    assert!(
        err.trim_end().lines().last().unwrap().contains("0 failed"),
        "{err}"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("selfcheck.json")).unwrap())
            .unwrap();
    assert_eq!(file["summary"]["passed"], s["passed"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `selfcheck --device cuda`: on a machine without a GPU a clear error and exit status 1
/// (no panic); with a GPU every case passes.
#[test]
fn selfcheck_on_cuda_passes_or_says_why_not() {
    let (code, out, err) = run(&["selfcheck", "--device", "cuda"]);
    assert!(!err.contains("panicked"), "{err}");
    match kfac_pinn::backend::cuda::Cuda::new(0) {
        Ok(_) => assert_eq!(code, 0, "{out}\n{err}"),
        Err(_) => {
            assert_eq!(code, 1, "{out}\n{err}");
            assert!(
                err.contains("selfcheck needs a usable GPU for `--device cuda`"),
                "{err}"
            );
            assert!(out.is_empty(), "{out}");
        }
    }
}

/// The CPU against itself (another thread count) on the library calls, in text form;
/// bad `--device` and `--only` values are errors that name them.
#[test]
fn selfcheck_text_output_and_bad_arguments() {
    let (code, out, err) = run(&["selfcheck", "--device", "cpu", "--only", "gemm,svd"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * (16 + 3) + 11 + 1, "{out}");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("PASS")),
        "{out}"
    );
    assert!(
        lines.last().unwrap().contains("49 passed, 0 failed"),
        "{out}"
    );
    let (code, _, err) = run(&["selfcheck", "--device", "tpu"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`--device` must be one of cuda, emu, cpu. Got `tpu`"),
        "{err}"
    );
    let (code, _, err) = run(&["selfcheck", "--device", "cpu", "--only", "gemm,fft"]);
    assert_eq!(code, 1);
    assert!(err.contains("Got `fft`"), "{err}");
}

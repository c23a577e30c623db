//! Observations from files (`kfac_pinn::pde::observe`, `[[custom.observations]]`): CSV
//! and `.npy` give the same data; the residual and its seeds against finite differences;
//! equal points merged without changing the loss gradient (against the raw rows);
//! subsets and full sets from the sampler; a Poisson problem whose boundary is known only
//! through observations trains to a small error; relative file paths resolve against the
//! config's directory; every malformed file is an error naming the file, line or row and
//! column.

mod common;

use common::{assert_close, rng, uniform};
use kfac_pinn::backend::cpu::Cpu;
use kfac_pinn::io::npy;
use kfac_pinn::loss::Objective;
use kfac_pinn::model::Mlp;
use kfac_pinn::optim::{self, OptimizerConfig};
use kfac_pinn::pde::custom::parse_spec;
use kfac_pinn::pde::observe::{ObservationResidual, Observations};
use kfac_pinn::pde::Residual;
use kfac_pinn::train::{TrainOptions, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const LO: [f64; 2] = [0.0, 0.0];
const HI: [f64; 2] = [1.0, 1.0];

fn fields() -> Vec<String> {
    vec!["u".into(), "v".into(), "p".into()]
}

/// A fresh directory under the target dir for this test's files.
fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("observations-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn csv_err(text: &str) -> String {
    Observations::parse_csv("obs.csv", text, &fields(), None, &LO, &HI, false)
        .unwrap_err()
        .to_string()
}

#[test]
fn csv_and_npy_read_the_same_data() {
    let d = dir("formats");
    // rows: x0, x1, v, p, weight (columns in another order in the CSV)
    let rows = [
        [0.5, 0.25, 1.0, -2.0, 2.0],
        [0.1, 0.9, 0.5, 0.25, 1.0],
        [1.0, 0.0, -3.0, 4.0, 0.5],
    ];
    let mut csv = String::from("# probes\np, x1, x0, weight, v\n");
    for r in &rows {
        csv += &format!("{}, {}, {}, {}, {}\n", r[3], r[1], r[0], r[4], r[2]);
    }
    std::fs::write(d.join("obs.csv"), csv).unwrap();
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    std::fs::write(d.join("obs.npy"), npy::encode(3, 5, &flat)).unwrap();
    let names = ["v".to_string(), "p".to_string()];
    let a =
        Observations::load(&d.join("obs.csv"), &fields(), Some(&names), &LO, &HI, false).unwrap();
    let b =
        Observations::load(&d.join("obs.npy"), &fields(), Some(&names), &LO, &HI, false).unwrap();
    assert_eq!(a.fields(), &[1, 2]);
    assert_eq!((a.points(), a.values()), (b.points(), b.values()));
    assert_eq!(a.len(), 3);
    // CSV without `fields`: every field with a column, in the problem's order
    let c = Observations::load(&d.join("obs.csv"), &fields(), None, &LO, &HI, false).unwrap();
    assert_eq!(c.fields(), &[1, 2]);
    // each point finds its own values
    for r in &rows {
        let i = a.find(&r[..2]).expect("an observation point");
        assert_eq!(&a.values()[i * 2..i * 2 + 2], &r[2..4]);
    }
    assert!(a.find(&[0.3, 0.3]).is_none());
}

/// `√w (u_f − v)` per observed field: residuals and seeds against finite differences in
/// the output values, and the quadratic form (one field) against `eval`.
#[test]
fn residual_and_seeds_match_finite_differences() {
    let text = "x0,x1,u,p,weight\n0.2,0.3,1.5,-0.5,4\n0.7,0.1,0.25,2,0.25\n";
    let o = Arc::new(
        Observations::parse_csv("obs.csv", text, &fields(), None, &LO, &HI, false).unwrap(),
    );
    let res = ObservationResidual { data: o.clone() };
    assert_eq!(res.n_res(), 2);
    let mut r = rng(3);
    for (i, p) in o.points().chunks(2).enumerate() {
        let y = uniform(&mut r, 3, -2.0, 2.0);
        let (mut out, mut jac) = (vec![0.0; 2], vec![0.0; 6]);
        res.eval(p, &y, &mut out, Some(&mut jac));
        let w: f64 = if p[0] == 0.2 { 4.0 } else { 0.25 };
        let v = &o.values()[i * 2..i * 2 + 2];
        assert_close(
            "residual",
            &out,
            &[w.sqrt() * (y[0] - v[0]), w.sqrt() * (y[2] - v[1])],
            1e-14,
            0.0,
        );
        let h = 1e-6;
        let mut fd = vec![0.0; 6];
        for c in 0..3 {
            let (mut yp, mut ym) = (y.clone(), y.clone());
            yp[c] += h;
            ym[c] -= h;
            let (mut rp, mut rm) = (vec![0.0; 2], vec![0.0; 2]);
            res.eval(p, &yp, &mut rp, None);
            res.eval(p, &ym, &mut rm, None);
            for q in 0..2 {
                fd[q * 3 + c] = (rp[q] - rm[q]) / (2.0 * h);
            }
        }
        assert_close("seeds", &jac, &fd, 1e-8, 1e-9);
    }
    // one field: a quadratic form that reproduces eval
    let one = Arc::new(
        Observations::parse_csv(
            "o.csv",
            "x0,x1,v\n0.4,0.6,3\n",
            &fields(),
            None,
            &LO,
            &HI,
            false,
        )
        .unwrap(),
    );
    let res = ObservationResidual { data: one };
    let (mut a, mut b) = (vec![0.0; 3], vec![0.0; 3]);
    let d0 = res.quad_form(&[0.4, 0.6], &mut a, &mut b).unwrap();
    let y = [0.3, -1.0, 2.0];
    let mut out = [0.0];
    res.eval(&[0.4, 0.6], &y, &mut out, None);
    let q: f64 = d0 + (0..3).map(|c| (a[c] + b[c] * y[c]) * y[c]).sum::<f64>();
    assert!((q - out[0]).abs() < 1e-14, "{q} vs {}", out[0]);
}

/// Rows at one point are merged into one with the weight-summed mean: the residual's
/// `r·∂r/∂y` (the loss gradient's seed) equals `Σ_i w_i (u − v_i)` over the raw rows.
#[test]
fn equal_points_merge_without_changing_the_gradient() {
    let raw = [
        (0.5, 0.5, 1.0, 2.0),
        (0.5, 0.5, 3.0, 0.5),
        (0.5, 0.5, -1.0, 1.5),
        (0.25, 0.75, 2.0, 1.0),
    ];
    let mut text = String::from("x0,x1,u,weight\n");
    for (a, b, v, w) in raw {
        text += &format!("{a},{b},{v},{w}\n");
    }
    let o = Arc::new(
        Observations::parse_csv("dup.csv", &text, &fields(), None, &LO, &HI, false).unwrap(),
    );
    assert_eq!((o.len(), o.rows_read()), (2, 4));
    let res = ObservationResidual { data: o.clone() };
    for u in [-0.7, 0.0, 1.3] {
        for p in o.points().chunks(2) {
            let y = [u, 0.0, 0.0];
            let (mut r, mut j) = ([0.0], [0.0; 3]);
            res.eval(p, &y, &mut r, Some(&mut j));
            let want: f64 = raw
                .iter()
                .filter(|q| q.0 == p[0] && q.1 == p[1])
                .map(|q| q.3 * (u - q.2))
                .sum();
            assert!(
                (r[0] * j[0] - want).abs() < 1e-13,
                "at {p:?}, u = {u}: {} vs {want}",
                r[0] * j[0]
            );
        }
    }
}

#[test]
fn sampler_gives_all_points_or_a_subset() {
    let mut text = String::from("x0,x1,u\n");
    for i in 0..20 {
        text += &format!("{},{},{}\n", i as f64 / 20.0, (i * 7 % 20) as f64 / 20.0, i);
    }
    let o = Observations::parse_csv("s.csv", &text, &fields(), None, &LO, &HI, false).unwrap();
    let mut r = rng(1);
    let mut all = vec![0.0; 40];
    o.sample(20, &mut r, &mut all).unwrap();
    assert_eq!(all, o.points());
    let mut some = vec![0.0; 14];
    o.sample(7, &mut r, &mut some).unwrap();
    let mut rows: Vec<usize> = some.chunks(2).map(|p| o.find(p).unwrap()).collect();
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 7, "a subset without repetition");
    let e = o
        .sample(21, &mut r, &mut vec![0.0; 42])
        .unwrap_err()
        .to_string();
    assert!(e.contains("21") && e.contains("20 distinct"), "{e}");
}

#[test]
fn malformed_files_name_the_file_line_and_column() {
    let cases: &[(&str, &[&str])] = &[
        ("", &["obs.csv", "empty file"]),
        ("x0,x1,u\n", &["obs.csv", "no data rows"]),
        ("x0,u\n0.5,1\n", &["no column `x1`"]),
        (
            "x0,x1,q\n0.5,0.5,1\n",
            &["no column names a field", "u, v, p"],
        ),
        (
            "x0,x1,u,extra\n0.5,0.5,1,2\n",
            &["column `extra`", "weight"],
        ),
        (
            "x0,x1,u\n0.5,0.5,1\n0.5,nan,2\n",
            &["obs.csv", "line 3", "`x1`", "NaN", "finite"],
        ),
        (
            "x0,x1,u\n0.5,0.5,abc\n",
            &["line 2", "`u`", "`abc` is not a number"],
        ),
        ("x0,x1,u\n0.5,0.5\n", &["line 2", "2 cells", "header has 3"]),
        (
            "x0,x1,u\n# c\n\n1.5,0.5,1\n",
            &["line 4", "`x0`", "1.5", "outside the domain"],
        ),
        (
            "x0,x1,u,weight\n0.5,0.5,1,-1\n",
            &["line 2", "`weight`", "-1", "≥ 0"],
        ),
        ("x0,x1,u,weight\n0.5,0.5,1,0\n", &["every weight is 0"]),
    ];
    for (text, want) in cases {
        let e = csv_err(text);
        for w in *want {
            assert!(e.contains(w), "{text:?}: `{w}` missing from: {e}");
        }
    }
    // named fields that are not fields, or listed twice
    let e = Observations::parse_csv(
        "o.csv",
        "x0,x1,w\n0.5,0.5,1\n",
        &fields(),
        Some(&["w".to_string()]),
        &LO,
        &HI,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`w` is not a field"), "{e}");
    // .npy: shape, missing field list, NaN with the row, unknown extension
    let d = dir("errors");
    std::fs::write(d.join("a.npy"), npy::encode(2, 5, &[0.5; 10])).unwrap();
    let load = |f: &str, names: Option<&[String]>| {
        Observations::load(&d.join(f), &fields(), names, &LO, &HI, false)
            .unwrap_err()
            .to_string()
    };
    let u = ["u".to_string()];
    let e = load("a.npy", Some(&u));
    assert!(
        e.contains("a.npy") && e.contains("shape (2, 5)") && e.contains("3 columns"),
        "{e}"
    );
    let e = load("a.npy", None);
    assert!(e.contains("list the observed fields"), "{e}");
    std::fs::write(
        d.join("b.npy"),
        npy::encode(2, 3, &[0.5, 0.5, 1.0, 0.1, 0.2, f64::NAN]),
    )
    .unwrap();
    let e = load("b.npy", Some(&u));
    assert!(
        e.contains("b.npy") && e.contains("row 1") && e.contains("`u`"),
        "{e}"
    );
    std::fs::write(d.join("c.txt"), "x0,x1,u\n").unwrap();
    assert!(load("c.txt", None).contains(".npy or .csv"));
    assert!(load("missing.csv", None).contains("missing.csv"));
}

// ---------------------------------------------------------------------------------
// through the config

const EXACT: &str = "sin(pi*x0)*sin(pi*x1) + x0^2 + x1";

fn exact(x: &[f64]) -> f64 {
    use std::f64::consts::PI;
    (PI * x[0]).sin() * (PI * x[1]).sin() + x[0] * x[0] + x[1]
}

/// Observations of the exact solution on the boundary (and a few inside) replace the
/// boundary conditions: `-Δu = f` with every face free trains to a small error.
fn poisson_from_observations(d: &Path) -> String {
    let mut r = rng(5);
    let mut csv = String::from("x0,x1,u\n");
    for i in 0..160 {
        let s = uniform(&mut r, 1, 0.0, 1.0)[0];
        let p = match i % 4 {
            0 => [0.0, s],
            1 => [1.0, s],
            2 => [s, 0.0],
            _ => [s, 1.0],
        };
        csv += &format!("{:e},{:e},{:e}\n", p[0], p[1], exact(&p));
    }
    std::fs::write(d.join("walls.csv"), csv).unwrap();
    format!(
        r#"
[custom]
dim = 2
pde = "system"
fields = ["u"]
equations = ["-lap(u)"]
derive-sources = true
solution = "{EXACT}"
free-faces = ["x0=min", "x0=max", "x1=min", "x1=max"]
[[custom.observations]]
name = "walls"
file = "walls.csv"
"#
    )
}

#[test]
fn boundary_known_only_through_observations_trains() {
    let d = dir("poisson");
    let text = poisson_from_observations(&d);
    let mut spec = parse_spec(&text).unwrap();
    spec.resolve_paths(&d);
    let p = spec.build().unwrap();
    assert_eq!(p.terms().len(), 2);
    assert_eq!(p.terms()[1].name, "walls");
    assert_eq!(p.observation_terms(), vec![1]);
    assert!(
        p.summary().contains("u observed at 160 points"),
        "{}",
        p.summary()
    );
    // the exact solution makes the observation residual vanish at its points
    let x = p.sample(1, 160, &mut rng(0)).unwrap();
    let res = &p.terms()[1].residual;
    for pt in x.chunks(2) {
        let mut r = [0.0];
        res.eval(pt, &[exact(pt)], &mut r, None);
        assert!(r[0].abs() < 1e-12, "{pt:?}: {}", r[0]);
    }
    let mlp = Mlp::new(&[2, 24, 1]).unwrap();
    let params: Vec<f64> = mlp.init(1);
    let cfg = OptimizerConfig {
        damping: Some(1e-3),
        ..Default::default()
    };
    let opt = |obj: &Objective<Cpu, f64>| optim::build("engd", &cfg, obj);
    let opts = TrainOptions {
        max_steps: Some(200),
        log_every: 200,
        points: vec![300, 160],
        eval_points: 2000,
        ..Default::default()
    };
    let mut t = Trainer::new(Cpu, p, mlp, &params, opt, opts).unwrap();
    let start = t.l2().unwrap().rel;
    let s = t.run(None, &AtomicBool::new(false)).unwrap();
    eprintln!(
        "rel L2 {start:e} -> {:e} in {} steps, {:.1} s",
        s.l2_rel, s.steps, s.seconds
    );
    assert!(
        start > 0.3,
        "the run must start far from the solution: {start:e}"
    );
    assert!(s.l2_rel < 1e-3, "rel L2 {:e} after 200 steps", s.l2_rel);
}

#[test]
fn config_errors_name_the_entry() {
    let d = dir("config");
    std::fs::write(d.join("o.csv"), "x0,x1,u\n0.5,0.5,1\n0.2,0.2,1\n").unwrap();
    let spec = |extra: &str| {
        let mut s = parse_spec(&format!(
            "{}{extra}",
            poisson_from_observations(&d).replace("file = \"walls.csv\"", "file = \"o.csv\"")
        ))
        .unwrap();
        s.resolve_paths(&d);
        s.build().map(|_| ()).unwrap_err().to_string()
    };
    let e = spec("points = 3\n");
    assert!(
        e.contains("observations[0].points") && e.contains("1 to 2"),
        "{e}"
    );
    let e = spec("weight = -1.0\n");
    assert!(e.contains("observations[0].weight"), "{e}");
    let e = spec("fields = [\"q\"]\n");
    assert!(
        e.contains("observations[0].fields") && e.contains("`q` is not a field"),
        "{e}"
    );
    std::fs::write(d.join("o.csv"), "x0,x1,u\n0.5,0.5,inf\n").unwrap();
    let e = spec("");
    assert!(
        e.contains("observations[0].file") && e.contains("o.csv") && e.contains("line 2"),
        "{e}"
    );
    // a scalar pde does not take observations
    let e = parse_spec("dim = 1\npde = \"poisson\"\n[[observations]]\nfile = \"o.csv\"\n")
        .unwrap()
        .build()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("observations") && e.contains("system"), "{e}");
}

/// A config file names its observation file relative to itself; the run's saved config
/// then holds the absolute path.
#[test]
fn relative_paths_resolve_against_the_config() {
    let d = dir("paths");
    let text = poisson_from_observations(&d);
    std::fs::write(d.join("run.toml"), format!("steps = 2\n{text}")).unwrap();
    let out = d.join("out.json");
    let (code, stdout, stderr) = common::kfac_pinn(&[
        "train",
        "--config",
        d.join("run.toml").to_str().unwrap(),
        "--json",
        "--save",
        out.with_extension("safetensors").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"l2_rel\""), "{stdout}");
}

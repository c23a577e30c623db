//! Plots: the files are written (PNG and SVG, non-trivial content), the CLI commands
//! produce them, and bad input is a clear error.

use kfac_pinn::plot::{heat_maps, line_charts, Chart, HeatMap, Legend, Series};
use std::process::Command;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kfac-pinn-plot-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn chart() -> Chart {
    Chart {
        title: "test".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series {
                label: "a".into(),
                points: (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect(),
            },
            Series {
                label: "b".into(),
                points: vec![(0.0, 1.0), (2.0, f64::NAN), (3.0, 0.5), (10.0, 0.01)],
            },
        ],
        legend: Legend::LowerLeft,
    }
}

#[test]
fn line_charts_write_png_and_svg() {
    let png = tmp("c.png");
    line_charts(&png, &[chart(), chart()]).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 5000);
    let svg = tmp("c.svg");
    line_charts(
        &svg,
        &[Chart {
            legend: Legend::UpperLeft,
            ..chart()
        }],
    )
    .unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("polyline"));
}

#[test]
fn heat_maps_and_errors() {
    let n = 20;
    let v: Vec<f64> = (0..n * n).map(|k| ((k % n) as f64 * 0.3).sin()).collect();
    let m = HeatMap {
        title: "u".into(),
        nx: n,
        ny: n,
        extent: (0.0, 1.0, 0.0, 1.0),
        values: v,
        x_label: "x0".into(),
        y_label: "x1".into(),
        outline: vec![],
    };
    heat_maps(&tmp("h.png"), &[m.clone(), m.clone()]).unwrap();
    let bad = HeatMap {
        values: vec![0.0; 3],
        ..m
    };
    assert!(heat_maps(&tmp("h2.png"), &[bad]).is_err());
    let e = line_charts(&tmp("c.pdf"), &[chart()])
        .unwrap_err()
        .to_string();
    assert!(e.contains(".png or .svg"), "{e}");
    let empty = Chart {
        series: vec![Series {
            label: "z".into(),
            points: vec![(0.0, -1.0)],
        }],
        ..chart()
    };
    assert!(line_charts(&tmp("c3.png"), &[empty]).is_err());
}

#[test]
fn cli_plot_and_plot_solution() {
    let exe = env!("CARGO_BIN_EXE_kfac-pinn");
    let dir = tmp("run");
    let out = Command::new(exe)
        .args([
            "train",
            "--steps",
            "20",
            "--points",
            "50,20",
            "--eval-points",
            "100",
            "--quiet",
            "--log-every",
            "5",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curves = tmp("curves.svg");
    let out = Command::new(exe)
        .arg("plot")
        .arg(dir.join("log.csv"))
        .arg("--out")
        .arg(&curves)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&curves).unwrap().contains("run"),
        "label from the run directory"
    );
    let sol = tmp("sol.png");
    let out = Command::new(exe)
        .args(["plot-solution", "--resolution", "30", "--model"])
        .arg(dir.join("model.safetensors"))
        .arg("--out")
        .arg(&sol)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&sol).unwrap().len() > 5000);
    // existing output is not overwritten without --force
    let out = Command::new(exe)
        .arg("plot")
        .arg(dir.join("log.csv"))
        .arg("--out")
        .arg(&curves)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

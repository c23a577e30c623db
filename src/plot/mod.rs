//! Plots (plotters; PNG or SVG by the file extension): line charts on log axes (training
//! curves, the Laplacian benchmark) and heat maps (solution, exact solution, error).
//! The font (DejaVu Sans, `assets/fonts`, its licence beside it) is embedded so that
//! plotting needs no system fonts. Checked by `tests/plot.rs` (files are written, valid,
//! and bad input is an error).

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is known to be valid; a failure here would surface as a
        // drawing error with a message below.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Where the legend goes: in the corner the curves leave empty.
    pub legend: Legend,
}

/// Legend corner of a [`Chart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Legend {
    /// For rising curves (run time against problem size).
    UpperLeft,
    /// For falling curves (error or loss against time or steps).
    LowerLeft,
}

/// A heat map on a regular grid (`nx × ny` values, row j = y index, x fastest).
#[derive(Clone, Debug)]
pub struct HeatMap {
    pub title: String,
    pub nx: usize,
    pub ny: usize,
    /// (x_min, x_max, y_min, y_max)
    pub extent: (f64, f64, f64, f64),
    pub values: Vec<f64>,
    pub x_label: String,
    pub y_label: String,
    /// Line segments drawn over the map (a domain's boundary, see [`zero_contour`]).
    pub outline: Vec<[(f64, f64); 2]>,
}

/// The zero level set of `f` on the rectangle `extent` as line segments (marching
/// squares on an `nx × ny` grid of vertices, crossings by linear interpolation; a saddle
/// cell is resolved by the value at its centre). Used to draw a shape's boundary from
/// its signed distance.
pub fn zero_contour(
    nx: usize,
    ny: usize,
    extent: (f64, f64, f64, f64),
    mut f: impl FnMut(f64, f64) -> f64,
) -> Vec<[(f64, f64); 2]> {
    let (x0, x1, y0, y1) = extent;
    if nx < 2 || ny < 2 {
        return vec![];
    }
    let xs = |i: usize| x0 + (x1 - x0) * i as f64 / (nx - 1) as f64;
    let ys = |j: usize| y0 + (y1 - y0) * j as f64 / (ny - 1) as f64;
    let mut v = Vec::with_capacity(nx * ny);
    for j in 0..ny {
        for i in 0..nx {
            v.push(f(xs(i), ys(j)));
        }
    }
    let mut segs = Vec::new();
    for j in 0..ny - 1 {
        for i in 0..nx - 1 {
            // corners counter-clockwise from (i, j)
            let c = [
                (xs(i), ys(j), v[j * nx + i]),
                (xs(i + 1), ys(j), v[j * nx + i + 1]),
                (xs(i + 1), ys(j + 1), v[(j + 1) * nx + i + 1]),
                (xs(i), ys(j + 1), v[(j + 1) * nx + i]),
            ];
            let mut cross = Vec::with_capacity(4);
            for e in 0..4 {
                let (a, b) = (c[e], c[(e + 1) % 4]);
                if (a.2 < 0.0) != (b.2 < 0.0) {
                    let t = a.2 / (a.2 - b.2);
                    cross.push((a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1)));
                }
            }
            match cross.len() {
                2 => segs.push([cross[0], cross[1]]),
                4 => {
                    let centre = f(0.5 * (c[0].0 + c[2].0), 0.5 * (c[0].1 + c[2].1));
                    // pair the crossings so the centre's side stays connected
                    if (centre < 0.0) == (c[0].2 < 0.0) {
                        segs.push([cross[0], cross[1]]);
                        segs.push([cross[2], cross[3]]);
                    } else {
                        segs.push([cross[0], cross[3]]);
                        segs.push([cross[1], cross[2]]);
                    }
                }
                _ => {}
            }
        }
    }
    segs
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg: format!("plotting failed: {e}"),
    }
}

enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => Err(Error::invalid(
            "plot file",
            path.display(),
            "a path ending in .png or .svg",
        )),
    }
}

/// Check a plot's output path before any work: a `.png` or `.svg` name in a writable
/// place, not an existing file unless `force` (see [`crate::io::check_output`]).
pub fn check_plot_path(flag: &str, path: &Path, force: bool) -> Result<()> {
    format_of(path)
        .map_err(|_| Error::invalid(flag, path.display(), "a path ending in .png or .svg"))?;
    crate::io::check_output(flag, path, force)
}

/// Draw `n` panels side by side into `path` with `draw(panel_index, area)`.
fn with_panels(
    path: &Path,
    n: usize,
    height: u32,
    draw: &dyn Fn(usize, &dyn PanelTarget) -> Result<()>,
) -> Result<()> {
    register_font();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let width = 640 * n.max(1) as u32;
    match format_of(path)? {
        Format::Png => {
            let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
            for (i, a) in root.split_evenly((1, n.max(1))).iter().enumerate() {
                draw(i, a)?;
            }
            root.present().map_err(|e| draw_err(path, e))?;
        }
        Format::Svg => {
            let root = SVGBackend::new(path, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
            for (i, a) in root.split_evenly((1, n.max(1))).iter().enumerate() {
                draw(i, a)?;
            }
            root.present().map_err(|e| draw_err(path, e))?;
        }
    }
    Ok(())
}

/// Something a panel can be drawn on (a bitmap or SVG drawing area).
trait PanelTarget {
    fn line_chart(&self, c: &Chart) -> std::result::Result<(), String>;
    fn heat_map(&self, h: &HeatMap) -> std::result::Result<(), String>;
}

impl<DB: DrawingBackend> PanelTarget for DrawingArea<DB, Shift> {
    fn line_chart(&self, c: &Chart) -> std::result::Result<(), String> {
        draw_line_chart(self, c)
    }
    fn heat_map(&self, h: &HeatMap) -> std::result::Result<(), String> {
        draw_heat_map(self, h)
    }
}

// ten distinct colours: `compare` of every optimizer draws ten curves
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn range(vals: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    Some(if log {
        if lo == hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo / 1.3, hi * 1.3)
        }
    } else if lo == hi {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = 0.03 * (hi - lo);
        (lo - pad, hi + pad)
    })
}

fn draw_line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &Chart,
) -> std::result::Result<(), String> {
    let keep = |p: &&(f64, f64)| {
        p.0.is_finite() && p.1.is_finite() && (!c.log_x || p.0 > 0.0) && (!c.log_y || p.1 > 0.0)
    };
    let xs = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter(keep).map(|p| p.0));
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter(keep).map(|p| p.1));
    let (Some(xr), Some(yr)) = (range(xs, c.log_x), range(ys, c.log_y)) else {
        return Err("no finite (and, on log axes, positive) points to plot".to_string());
    };
    let mut b = ChartBuilder::on(area);
    b.caption(&c.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_label.as_str())
                .y_desc(c.y_label.as_str())
                .label_style(("sans-serif", 13))
                .x_labels(8)
                .y_labels(8)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in c.series.iter().enumerate() {
                let col = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = s.points.iter().filter(keep).copied().collect();
                chart
                    .draw_series(LineSeries::new(pts, col.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2))
                    });
                // few points: mark the measurements themselves
                let pts: Vec<(f64, f64)> = s.points.iter().filter(keep).copied().collect();
                if pts.len() <= 40 {
                    chart
                        .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled())))
                        .map_err(|e| e.to_string())?;
                }
            }
            let corner = match c.legend {
                Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
                Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            };
            chart
                .configure_series_labels()
                .position(corner)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    match (c.log_x, c.log_y) {
        (true, true) => body!(b
            .build_cartesian_2d((xr.0..xr.1).log_scale(), (yr.0..yr.1).log_scale())
            .map_err(|e| e.to_string())?),
        (true, false) => body!(b
            .build_cartesian_2d((xr.0..xr.1).log_scale(), yr.0..yr.1)
            .map_err(|e| e.to_string())?),
        (false, true) => body!(b
            .build_cartesian_2d(xr.0..xr.1, (yr.0..yr.1).log_scale())
            .map_err(|e| e.to_string())?),
        (false, false) => body!(b
            .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
            .map_err(|e| e.to_string())?),
    }
    Ok(())
}

/// Compact tick labels: 3 significant digits, scientific outside [1e-2, 1e4).
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

/// Perceptually ordered colour map (a viridis-like ramp) for t in [0, 1].
fn colormap(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68., 1., 84.),
        (59., 82., 139.),
        (33., 145., 140.),
        (94., 201., 98.),
        (253., 231., 37.),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + f * (q - p)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn draw_heat_map<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    h: &HeatMap,
) -> std::result::Result<(), String> {
    let (lo, hi) = range(h.values.iter().copied(), false)
        .ok_or_else(|| "no finite values to plot".to_string())?;
    let (x0, x1, y0, y1) = h.extent;
    let title = format!("{}  [{lo:.2e}, {hi:.2e}]", h.title);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(h.x_label.as_str())
        .y_desc(h.y_label.as_str())
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(|e| e.to_string())?;
    let (dx, dy) = ((x1 - x0) / h.nx as f64, (y1 - y0) / h.ny as f64);
    let span = if hi > lo { hi - lo } else { 1.0 };
    // non-finite values (points outside the domain) are left blank
    chart
        .draw_series((0..h.ny).flat_map(|j| {
            (0..h.nx).filter_map(move |i| {
                let v = h.values[j * h.nx + i];
                let (xa, ya) = (x0 + i as f64 * dx, y0 + j as f64 * dy);
                v.is_finite().then(|| {
                    Rectangle::new(
                        [(xa, ya), (xa + dx, ya + dy)],
                        colormap((v - lo) / span).filled(),
                    )
                })
            })
        }))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            h.outline
                .iter()
                .map(|s| PathElement::new(vec![s[0], s[1]], BLACK.stroke_width(2))),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Line charts side by side in one file.
pub fn line_charts(path: &Path, charts: &[Chart]) -> Result<()> {
    if charts.is_empty() {
        return Err(Error::invalid("charts", 0, "at least one chart"));
    }
    with_panels(path, charts.len(), 480, &|i, a| {
        a.line_chart(&charts[i]).map_err(|e| draw_err(path, e))
    })
}

/// Heat maps side by side in one file.
pub fn heat_maps(path: &Path, maps: &[HeatMap]) -> Result<()> {
    if maps.is_empty() {
        return Err(Error::invalid("heat maps", 0, "at least one"));
    }
    for m in maps {
        if m.values.len() != m.nx * m.ny || m.nx == 0 || m.ny == 0 {
            return Err(Error::Shape(format!(
                "heat map `{}`: {} values for a {}×{} grid",
                m.title,
                m.values.len(),
                m.nx,
                m.ny
            )));
        }
    }
    with_panels(path, maps.len(), 560, &|i, a| {
        a.heat_map(&maps[i]).map_err(|e| draw_err(path, e))
    })
}

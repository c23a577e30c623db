//! CSV training logs: one header, one row per logged step, flushed after every row so a
//! run that is stopped or killed keeps everything it logged.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One logged step.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    pub step: u64,
    pub seconds: f64,
    pub loss: f64,
    pub l2_abs: f64,
    pub l2_rel: f64,
    pub lr: Option<f64>,
}

pub const HEADER: &str = "step,seconds,loss,l2_abs,l2_rel,lr";

pub struct CsvLog {
    path: PathBuf,
    file: std::fs::File,
}

impl CsvLog {
    /// Create (or truncate) a log file and write the header.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        writeln!(file, "{HEADER}").map_err(|e| Error::io(path, e))?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Open an existing log to append (resume).
    pub fn append(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(CsvLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, r: &LogRow) -> Result<()> {
        let lr = r.lr.map(|v| format!("{v:e}")).unwrap_or_default();
        writeln!(
            self.file,
            "{},{:.6},{:e},{:e},{:e},{lr}",
            r.step, r.seconds, r.loss, r.l2_abs, r.l2_rel
        )
        .and_then(|_| self.file.flush())
        .map_err(|e| Error::io(&self.path, e))
    }
}

fn format_row(r: &LogRow) -> String {
    let lr = r.lr.map(|v| format!("{v:e}")).unwrap_or_default();
    format!(
        "{},{:.6},{:e},{:e},{:e},{lr}",
        r.step, r.seconds, r.loss, r.l2_abs, r.l2_rel
    )
}

/// Read a log written by [`CsvLog`].
pub fn read(path: &Path) -> Result<Vec<LogRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim() == HEADER => {}
        other => {
            return Err(Error::Format {
                path: path.display().to_string(),
                msg: format!("expected header `{HEADER}`, found {other:?}"),
            });
        }
    }
    let bad = |i: usize, msg: &str| Error::Format {
        path: path.display().to_string(),
        msg: format!("line {}: {msg}", i + 2),
    };
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            return Err(bad(i, &format!("{} fields, expected 6", f.len())));
        }
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| bad(i, &format!("`{s}` is not a number")))
        };
        rows.push(LogRow {
            step: f[0]
                .parse()
                .map_err(|_| bad(i, &format!("`{}` is not a step number", f[0])))?,
            seconds: num(f[1])?,
            loss: num(f[2])?,
            l2_abs: num(f[3])?,
            l2_rel: num(f[4])?,
            lr: if f[5].is_empty() {
                None
            } else {
                Some(num(f[5])?)
            },
        });
    }
    Ok(rows)
}

/// Drop the rows of a log after `step`, and an end-of-run row at `step` off the
/// `log_every` grid: a run resumed from step `step` logs them again.
pub fn truncate_log(path: &Path, step: u64, log_every: u64) -> Result<()> {
    let rows = read(path)?;
    let mut text = String::from(HEADER);
    text.push('\n');
    for r in rows.iter().filter(|r| {
        r.step < step || (r.step == step && (step == 0 || step % log_every.max(1) == 0))
    }) {
        text.push_str(&format_row(r));
        text.push('\n');
    }
    crate::io::write_atomic(path, text.as_bytes())
}

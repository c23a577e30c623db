//! CSV training logs: one header, one row per logged step. Each row goes to the file in
//! one `write` call (a kill can leave at most a torn last row, never a row split around
//! another), and the file is synced before every checkpoint, so the log on disk always
//! holds every row up to the checkpoint's step. A resume repairs the log with
//! [`truncate_log`]: a torn last row is dropped, rows after the checkpoint are dropped
//! (the resumed run logs them again), so every logged step appears exactly once.
//! Inverse problems add one column per unknown coefficient after the fixed ones
//! (`coef:kappa`, design §7): its value at the logged step.
//! Checked by `tests/train.rs` (format), `tests/crash.rs` (kills and resumes) and
//! `tests/inverse.rs` (coefficient columns).

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
    /// The unknown coefficients' values (inverse problems; empty otherwise).
    pub coefs: Vec<f64>,
}

pub const HEADER: &str = "step,seconds,loss,l2_abs,l2_rel,lr";

/// Prefix of a coefficient's column name.
const COEF_PREFIX: &str = "coef:";

/// The header with a column per coefficient.
fn header_with(coefs: &[String]) -> String {
    let mut h = HEADER.to_string();
    for c in coefs {
        h.push(',');
        h.push_str(COEF_PREFIX);
        h.push_str(c);
    }
    h
}

pub struct CsvLog {
    path: PathBuf,
    file: std::fs::File,
}

impl CsvLog {
    /// Create (or truncate) a log file and write the header.
    pub fn create(path: &Path) -> Result<Self> {
        Self::create_with(path, &[])
    }

    /// [`Self::create`] with a column per unknown coefficient (`coef:<name>`).
    pub fn create_with(path: &Path, coefs: &[String]) -> Result<Self> {
        if let Some(c) = coefs
            .iter()
            .find(|c| c.is_empty() || c.contains([',', '\n']))
        {
            return Err(Error::invalid(
                "coefficient name",
                c,
                "a non-empty name without commas or line ends",
            ));
        }
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        writeln!(file, "{}", header_with(coefs)).map_err(|e| Error::io(path, e))?;
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

    /// Append one row with a single `write` call.
    pub fn write(&mut self, r: &LogRow) -> Result<()> {
        let mut line = format_row(r);
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Push the rows written so far to the disk (before a checkpoint refers to them).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

fn format_row(r: &LogRow) -> String {
    let lr = r.lr.map(|v| format!("{v:e}")).unwrap_or_default();
    let mut s = format!(
        "{},{:.6},{:e},{:e},{:e},{lr}",
        r.step, r.seconds, r.loss, r.l2_abs, r.l2_rel
    );
    for c in &r.coefs {
        s.push_str(&format!(",{c:e}"));
    }
    s
}

/// Read a log written by [`CsvLog`]; any malformed row is an error.
pub fn read(path: &Path) -> Result<Vec<LogRow>> {
    let (rows, torn, _) = read_repairable(path)?;
    match torn {
        None => Ok(rows),
        Some((line, msg)) => Err(Error::Format {
            path: path.display().to_string(),
            msg: format!("line {line}: {msg}"),
        }),
    }
}

/// Read a log whose last row may be torn (a run killed while writing it): returns the
/// complete rows and, for a bad last row, its line number and what is wrong with it. A
/// row is complete only with its newline, so a cut number that still parses (`0.1166`
/// cut to `0.11`) is not taken. A bad row before the last is an error.
/// Also returns the header line (with its coefficient columns).
fn read_repairable(path: &Path) -> Result<(Vec<LogRow>, Option<TornRow>, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    let header = lines.first().map(|h| h.trim().to_string());
    let extra = match header.as_deref() {
        Some(h) if h == HEADER => 0,
        Some(h)
            if h.strip_prefix(HEADER).is_some_and(|rest| {
                rest.split(',').skip(1).all(|c| c.starts_with(COEF_PREFIX)) && rest.starts_with(',')
            }) =>
        {
            h[HEADER.len()..].split(',').count() - 1
        }
        other => {
            return Err(Error::Format {
                path: path.display().to_string(),
                msg: format!("expected header `{HEADER}`, found {other:?}"),
            });
        }
    };
    lines.remove(0);
    let last = lines.len();
    let mut rows = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        let line_no = i + 2;
        let parsed = if raw.ends_with('\n') {
            parse_row(raw.trim_end(), extra)
        } else {
            Err("the row has no line end (cut off)".to_string())
        };
        match parsed {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {}
            Err(msg) if i + 1 == last => {
                return Ok((rows, Some((line_no, msg)), header.unwrap_or_default()))
            }
            Err(msg) => {
                return Err(Error::Format {
                    path: path.display().to_string(),
                    msg: format!("line {line_no}: {msg}"),
                })
            }
        }
    }
    Ok((rows, None, header.unwrap_or_default()))
}

/// One CSV row with `extra` coefficient columns; `None` for a blank line.
fn parse_row(line: &str, extra: usize) -> std::result::Result<Option<LogRow>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != 6 + extra {
        return Err(format!("{} fields, expected {}", f.len(), 6 + extra));
    }
    let num = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| format!("`{s}` is not a number"))
    };
    Ok(Some(LogRow {
        step: f[0]
            .parse()
            .map_err(|_| format!("`{}` is not a step number", f[0]))?,
        seconds: num(f[1])?,
        loss: num(f[2])?,
        l2_abs: num(f[3])?,
        l2_rel: num(f[4])?,
        lr: if f[5].is_empty() {
            None
        } else {
            Some(num(f[5])?)
        },
        coefs: f[6..]
            .iter()
            .map(|s| num(s))
            .collect::<std::result::Result<_, _>>()?,
    }))
}

/// A torn last row: its line number and what is wrong with it.
pub type TornRow = (usize, String);

/// What [`truncate_log`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRepair {
    /// Rows after the checkpoint's step, dropped (the resumed run logs them again).
    pub dropped: usize,
    /// A torn last row was dropped: its line number and what was wrong with it.
    pub torn: Option<TornRow>,
}

/// Prepare a log for a run resumed at `step`: drop a torn last row, the rows after
/// `step`, an end-of-run row at `step` off the `log_every` grid (a run resumed from
/// `step` logs it again at its own end), and the row of step 0 when resuming at step 0
/// (the trainer logs step 0 whenever it starts there). Rewritten atomically.
pub fn truncate_log(path: &Path, step: u64, log_every: u64) -> Result<LogRepair> {
    let (rows, torn, header) = read_repairable(path)?;
    let mut text = header;
    text.push('\n');
    let mut dropped = 0;
    for r in &rows {
        if r.step < step || (r.step == step && step > 0 && step.is_multiple_of(log_every.max(1))) {
            text.push_str(&format_row(r));
            text.push('\n');
        } else {
            dropped += 1;
        }
    }
    crate::io::write_atomic(path, text.as_bytes())?;
    Ok(LogRepair { dropped, torn })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64) -> LogRow {
        LogRow {
            step,
            seconds: 0.5 * step as f64,
            loss: 1.0 / (1 + step) as f64,
            l2_abs: 0.1,
            l2_rel: 0.2,
            lr: Some(0.1166),
            coefs: vec![],
        }
    }

    /// A kill while a row was written leaves a prefix of it without its line end; even a
    /// prefix that still has six fields and parses (`0.1166` cut to `0.11`) is dropped.
    #[test]
    fn torn_last_row_is_dropped_and_rows_after_the_checkpoint_replayed() {
        let dir = std::env::temp_dir().join(format!("kfac-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log.csv");
        let full: String = (0..5)
            .map(|k| format_row(&row(5 * k)) + "\n")
            .collect::<String>();
        for cut in [3, 12, format_row(&row(25)).len() - 2] {
            let torn = &format_row(&row(25))[..cut];
            std::fs::write(&p, format!("{HEADER}\n{full}{torn}")).unwrap();
            assert!(read(&p).is_err(), "a strict read refuses the torn row");
            let fix = truncate_log(&p, 15, 5).unwrap();
            assert!(fix.torn.is_some(), "cut at {cut}");
            assert_eq!(fix.dropped, 1, "row 20 is after the checkpoint");
            let steps: Vec<u64> = read(&p).unwrap().iter().map(|r| r.step).collect();
            assert_eq!(steps, [0, 5, 10, 15]);
        }
        // resumed at step 0 (killed right after the first checkpoint): the trainer logs
        // step 0 again, so its row goes
        std::fs::write(&p, format!("{HEADER}\n{full}")).unwrap();
        truncate_log(&p, 0, 5).unwrap();
        assert!(read(&p).unwrap().is_empty());
        // a bad row that is not the last is corruption, not a torn write
        std::fs::write(&p, format!("{HEADER}\n0,x,1,1,1,\n{full}")).unwrap();
        assert!(truncate_log(&p, 15, 5).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

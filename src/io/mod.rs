//! File formats and safe writing: NumPy `.npy` arrays, VTK XML files for ParaView, atomic writes that never leave a
//! half-written file under the final name, and the no-overwrite rule (`--force`).

pub mod lock;
pub mod npy;
pub mod vtk;

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Refuse to replace an existing file unless `force` is set.
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    check_output("output", path, force)
}

/// Check an output path before any work is done, so a long run cannot fail at its end:
/// an existing file is refused without `force`, a directory is refused always, and the
/// nearest existing ancestor directory must accept a new file (probed with a temporary
/// file, so permissions, read-only mounts and `/proc` are caught). `flag` names the
/// setting in the error (`--save`, `--log`, ...).
pub fn check_output(flag: &str, path: &Path, force: bool) -> Result<()> {
    let bad = |expected: String| Error::invalid(flag, path.display(), expected);
    if path.is_dir() {
        return Err(bad("a file path, not a directory".into()));
    }
    if path.exists() && !force {
        return Err(bad(
            "a path that does not exist yet (pass --force to overwrite)".into(),
        ));
    }
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut dir = parent;
    while !dir.exists() {
        match dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(up) => dir = up,
            None => {
                dir = Path::new(".");
                break;
            }
        }
    }
    if !dir.is_dir() {
        return Err(bad(format!(
            "a path whose parent is a directory ({} is not)",
            dir.display()
        )));
    }
    check_dir_writable(dir).map_err(|e| {
        bad(format!(
            "a place where files can be created (creating one in {} failed: {e})",
            dir.display()
        ))
    })
}

/// [`check_output`] for a directory that will be created if missing (a run directory):
/// it must not be a file, and a file must be creatable in it.
pub fn check_output_dir(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(
            flag,
            dir.display(),
            "a directory (this is a file)",
        ));
    }
    check_output(flag, &dir.join(".kfac-pinn-probe"), true).map_err(|e| match e {
        Error::Invalid { name, expected, .. } => Error::Invalid {
            name,
            got: dir.display().to_string(),
            expected,
        },
        e => e,
    })
}

/// Create and remove a probe file in `dir`.
fn check_dir_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".kfac-pinn-probe-{}", std::process::id()));
    std::fs::File::create(&probe)?;
    std::fs::remove_file(&probe)
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over the target. A crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

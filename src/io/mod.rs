//! File formats and safe writing: NumPy `.npy` arrays, atomic writes that never leave a
//! half-written file under the final name, and the no-overwrite rule (`--force`).

pub mod npy;

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Refuse to replace an existing file unless `force` is set.
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::invalid(
            "output",
            path.display(),
            "a path that does not exist yet (pass --force to overwrite)",
        ));
    }
    Ok(())
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

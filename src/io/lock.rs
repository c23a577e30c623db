//! An advisory lock on a run directory, so two processes never train into the same run
//! (two `train --resume R` at once would both append to one log and overwrite each
//! other's checkpoints).
//!
//! The lock is `flock` on `R/.lock` (through `std::fs::File::try_lock`): the kernel drops
//! it when its process dies, however it dies, so a lock is never stale in the sense of
//! blocking forever. The file also holds the owner's process id; an owner that ends
//! normally empties it, so a non-empty file under a free lock means the previous owner
//! was killed, which is reported as a take-over. The file is never deleted: deleting a
//! lock file while another process has it open lets two processes hold "the" lock.
//! Checked by `tests/crash.rs` (two concurrent resumes: exactly one runs).

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// A held lock; released (and the file emptied) on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    /// The process id found in a free lock file: its owner died without unlocking.
    pub took_over: Option<u32>,
}

impl DirLock {
    /// Lock `dir` (which must exist) for this process, or fail naming the owner.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut text = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut text);
                let owner = text
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!("process {p}"))
                    .unwrap_or_else(|_| "another process".into());
                return Err(Error::Busy(format!(
                    "run directory {} is in use by {owner} (a run is training into it); wait for it to end or stop it first",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.read_to_string(&mut text)
            .map_err(|e| Error::io(&path, e))?;
        let me = std::process::id();
        let took_over = text.trim().parse::<u32>().ok().filter(|&p| p != me);
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{me}"))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(&path, e))?;
        Ok(DirLock {
            file,
            path,
            took_over,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // an orderly end: empty the file, then unlock (closing the file would too)
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("kfac-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = DirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts like another process would
        let e = DirLock::acquire(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by process"), "{e}");
        drop(a);
        let b = DirLock::acquire(&dir).unwrap();
        assert_eq!(b.took_over, None, "an orderly release is not a take-over");
        // a lock file left with a dead owner's pid is taken over with a notice
        std::mem::forget(b.file.try_clone().unwrap());
        drop(b);
        std::fs::write(dir.join(LOCK_FILE), "4000000000\n").unwrap();
        let c = DirLock::acquire(&dir).unwrap();
        assert_eq!(c.took_over, Some(4_000_000_000));
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

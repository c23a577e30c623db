//! The on-disk cache of NVRTC results, so only the first process on a machine compiles
//! the kernel modules (NVRTC takes seconds for all of them; a cached load takes
//! milliseconds).
//!
//! - Where: `KFAC_PINN_CACHE_DIR`, else `$XDG_CACHE_HOME/kfac-pinn`, else
//!   `$HOME/.cache/kfac-pinn`; entries live in its `nvrtc/` subdirectory. Without any of
//!   these, or when the directory cannot be written, compiling still works (uncached).
//! - Key: a 128-bit FNV-1a digest of the module name, the kernel source, the NVRTC
//!   version, the target (PTX or cubin, and the architecture) and the compile options; it
//!   is part of the file name and repeated in the entry's header.
//! - Entry: a 56-byte header (magic, key digest, payload length, payload checksum, the
//!   compile time in seconds) and the payload. A read checks all of them; an entry that
//!   fails any check (truncated, corrupted, from another key) is ignored, recompiled and
//!   rewritten, never trusted.
//! - Concurrency: an entry is written to a unique temporary file in the same directory
//!   and renamed into place (atomic on POSIX), so a reader sees either no entry or a
//!   whole one; two processes compiling the same module both succeed and the last rename
//!   wins with identical bytes.
//!
//! Checked by the unit tests below (a fake compiler: hit, corrupted entry, concurrent
//! writers, unwritable directory) and by tests/kernels.rs with real NVRTC (CI).

use crate::error::Result;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Overrides the cache directory.
pub const CACHE_DIR_VAR: &str = "KFAC_PINN_CACHE_DIR";

const MAGIC: &[u8; 8] = b"KFNVRTC1";
const HEADER: usize = 8 + 16 + 8 + 16 + 8;

/// The cache directory for NVRTC results (see the module header), if one can be named.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = var(CACHE_DIR_VAR)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kfac-pinn")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kfac-pinn")))?;
    Some(base.join("nvrtc"))
}

/// 128-bit FNV-1a: a stable digest (unlike std's hasher, it does not change between
/// Rust releases), used for the key and as the payload checksum.
pub fn fnv128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for p in parts {
        // length-prefixed, so ("ab","c") and ("a","bc") differ
        for b in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            h ^= *b as u128;
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// What identifies one compiled image.
#[derive(Clone, Debug)]
pub struct Key<'a> {
    pub module: &'a str,
    pub source: &'a str,
    /// NVRTC (major, minor).
    pub nvrtc: (i32, i32),
    /// "ptx" or "cubin".
    pub kind: &'a str,
    /// e.g. "compute_75" or "sm_90".
    pub arch: &'a str,
    pub options: &'a [String],
}

impl Key<'_> {
    pub fn digest(&self) -> u128 {
        let v = format!("{}.{}", self.nvrtc.0, self.nvrtc.1);
        let mut parts: Vec<&[u8]> = vec![
            b"kfac-pinn nvrtc cache v1",
            self.module.as_bytes(),
            self.source.as_bytes(),
            v.as_bytes(),
            self.kind.as_bytes(),
            self.arch.as_bytes(),
        ];
        parts.extend(self.options.iter().map(|o| o.as_bytes()));
        fnv128(&parts)
    }

    /// The entry's file name (readable prefix, then the digest).
    pub fn file_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        };
        format!(
            "{}-{}-{}-{:032x}.bin",
            clean(self.module),
            clean(self.arch),
            clean(self.kind),
            self.digest()
        )
    }
}

/// How an image was obtained.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// Compiled now, taking `secs`; `stored` says whether the entry was written, or why
    /// not.
    Compiled {
        secs: f64,
        stored: std::result::Result<PathBuf, String>,
    },
    /// Read from `path` in `load_secs`; the compile that made it took `compile_secs`.
    Cached {
        path: PathBuf,
        load_secs: f64,
        compile_secs: f64,
    },
}

/// Why an entry was not used (for tests and diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    Absent,
    Corrupt(&'static str),
}

/// Read and validate the entry for `key` in `dir`: the payload and the recorded compile
/// time.
pub fn read(dir: &Path, key: &Key<'_>) -> std::result::Result<(Vec<u8>, f64), Miss> {
    let path = dir.join(key.file_name());
    let bytes = std::fs::read(&path).map_err(|_| Miss::Absent)?;
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(Miss::Corrupt("bad magic or short header"));
    }
    let u128_at = |o: usize| u128::from_le_bytes(bytes[o..o + 16].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    if u128_at(8) != key.digest() {
        return Err(Miss::Corrupt("key digest differs"));
    }
    let len = u64_at(24);
    if bytes.len() as u64 != HEADER as u64 + len {
        return Err(Miss::Corrupt("length differs"));
    }
    let payload = &bytes[HEADER..];
    if u128_at(32) != fnv128(&[payload]) {
        return Err(Miss::Corrupt("checksum differs"));
    }
    let secs = f64::from_le_bytes(bytes[48..56].try_into().unwrap());
    Ok((payload.to_vec(), secs))
}

/// Write the entry for `key` (temporary file, then rename).
pub fn write(
    dir: &Path,
    key: &Key<'_>,
    payload: &[u8],
    compile_secs: f64,
) -> std::io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let name = key.file_name();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&key.digest().to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    buf.extend_from_slice(&fnv128(&[payload]).to_le_bytes());
    buf.extend_from_slice(&compile_secs.to_le_bytes());
    buf.extend_from_slice(payload);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(&name))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|()| dir.join(name))
}

/// The cached image for `key` in `dir` when a valid entry exists, otherwise `compile()`'s
/// result, stored for the next process. `dir = None` compiles without caching. Cache
/// problems never fail the call; compile errors do.
pub fn get_or_compile(
    dir: Option<&Path>,
    key: &Key<'_>,
    compile: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<(Vec<u8>, Origin)> {
    if let Some(d) = dir {
        let t = Instant::now();
        if let Ok((payload, compile_secs)) = read(d, key) {
            return Ok((
                payload,
                Origin::Cached {
                    path: d.join(key.file_name()),
                    load_secs: t.elapsed().as_secs_f64(),
                    compile_secs,
                },
            ));
        }
    }
    let t = Instant::now();
    let payload = compile()?;
    let secs = t.elapsed().as_secs_f64();
    let stored = match dir {
        Some(d) => write(d, key, &payload, secs)
            .map_err(|e| format!("could not write the NVRTC cache in {}: {e}", d.display())),
        None => Err("no cache directory (set KFAC_PINN_CACHE_DIR or HOME)".into()),
    };
    Ok((payload, Origin::Compiled { secs, stored }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kfac-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn key<'a>(src: &'a str, opts: &'a [String]) -> Key<'a> {
        Key {
            module: "jet",
            source: src,
            nvrtc: (13, 0),
            kind: "cubin",
            arch: "sm_90",
            options: opts,
        }
    }

    /// Every component of the key changes the digest.
    #[test]
    fn every_key_part_matters() {
        let o = vec!["--std=c++14".to_string()];
        let o2 = vec!["--std=c++17".to_string()];
        let base = key("src", &o);
        let d = base.digest();
        assert_ne!(d, key("src2", &o).digest());
        assert_ne!(d, key("src", &o2).digest());
        assert_ne!(
            d,
            Key {
                nvrtc: (12, 9),
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            Key {
                arch: "sm_80",
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            Key {
                kind: "ptx",
                ..base.clone()
            }
            .digest()
        );
        assert_ne!(
            d,
            Key {
                module: "reduce",
                ..base.clone()
            }
            .digest()
        );
        assert_eq!(d, key("src", &o).digest());
        // fixed values pin the algorithm (a changed digest would silently orphan every
        // entry): the offset basis for no input, and "a" with its 8-byte length prefix,
        // computed independently in Python with the published FNV-1a-128 constants
        // (which give d228cb696f1a8caf78912b704e4a8964 for "a" unprefixed, the reference
        // test vector)
        assert_eq!(fnv128(&[]), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv128(&[b"a"]), 0x426d56754e03ad9adb79f299c730f21f);
    }

    /// The second call reads the first call's entry: same bytes, no compile.
    #[test]
    fn second_call_hits_the_cache() {
        let dir = tmpdir("hit");
        let o = vec![];
        let k = key("a kernel", &o);
        let calls = AtomicUsize::new(0);
        let compile = || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(b"\x7fELF image".to_vec())
        };
        let (a, oa) = get_or_compile(Some(&dir), &k, compile).unwrap();
        assert!(
            matches!(oa, Origin::Compiled { stored: Ok(_), .. }),
            "{oa:?}"
        );
        let (b, ob) = get_or_compile(Some(&dir), &k, compile).unwrap();
        assert!(matches!(ob, Origin::Cached { .. }), "{ob:?}");
        assert_eq!(a, b);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // no temporary file is left behind
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A damaged entry (flipped payload byte, truncation, wrong key in the header, junk)
    /// is not trusted: it is recompiled and rewritten.
    #[test]
    fn corrupted_entries_are_recompiled() {
        let dir = tmpdir("corrupt");
        let o = vec![];
        let k = key("a kernel", &o);
        let good = b"payload bytes".to_vec();
        let path = write(&dir, &k, &good, 1.5).unwrap();
        assert_eq!(read(&dir, &k), Ok((good.clone(), 1.5)));
        let clean = std::fs::read(&path).unwrap();
        let damage: Vec<(Vec<u8>, &str)> = vec![
            (
                {
                    let mut b = clean.clone();
                    *b.last_mut().unwrap() ^= 1;
                    b
                },
                "checksum differs",
            ),
            (clean[..clean.len() - 3].to_vec(), "length differs"),
            (
                {
                    let mut b = clean.clone();
                    b[8] ^= 1;
                    b
                },
                "key digest differs",
            ),
            (b"junk".to_vec(), "bad magic or short header"),
        ];
        for (bytes, why) in damage {
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(read(&dir, &k), Err(Miss::Corrupt(why)));
            let (got, origin) = get_or_compile(Some(&dir), &k, || Ok(good.clone())).unwrap();
            assert_eq!(got, good);
            assert!(
                matches!(origin, Origin::Compiled { stored: Ok(_), .. }),
                "{why}: {origin:?}"
            );
            assert_eq!(
                read(&dir, &k).map(|r| r.0),
                Ok(good.clone()),
                "{why}: entry not rewritten"
            );
        }
    }

    /// Threads writing the same entry at once all succeed, and the entry is whole.
    #[test]
    fn concurrent_writers_leave_a_valid_entry() {
        let dir = tmpdir("race");
        let o = vec![];
        let k = key("raced", &o);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| get_or_compile(Some(&dir), &k, || Ok(payload.clone()))))
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap().unwrap().0, payload);
            }
        });
        assert_eq!(read(&dir, &k).map(|r| r.0), Ok(payload));
    }

    /// An unwritable cache location still compiles, and says why nothing was stored.
    #[test]
    fn unwritable_directory_still_compiles() {
        let base = tmpdir("ro");
        std::fs::create_dir_all(&base).unwrap();
        let file = base.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let o = vec![];
        let k = key("k", &o);
        let (got, origin) = get_or_compile(Some(&file), &k, || Ok(b"img".to_vec())).unwrap();
        assert_eq!(got, b"img");
        match origin {
            Origin::Compiled { stored: Err(e), .. } => assert!(e.contains("not-a-dir"), "{e}"),
            o => panic!("{o:?}"),
        }
        // a compile error is passed through
        let e = get_or_compile(Some(&file), &k, || {
            Err(crate::error::Error::Device("boom".into()))
        });
        assert!(e.unwrap_err().to_string().contains("boom"));
    }
}

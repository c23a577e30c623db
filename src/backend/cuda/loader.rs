//! Finding the CUDA libraries (driver, NVRTC, cuBLAS, cuSOLVER, NVML) at run time and
//! saying which files were loaded.
//!
//! cudarc (feature `cuda-13000`) and nvml-wrapper open their libraries by bare name
//! (`libnvrtc.so`, …, `libnvrtc.so.13`, `libnvrtc.so.12`, …; `libnvidia-ml.so.1`), so the
//! dynamic linker decides where they come from (LD_LIBRARY_PATH, RUNPATH, ld.so.cache),
//! and neither crate accepts a directory. `KFAC_PINN_CUDA_LIB_DIR` (one or more
//! directories, `:`-separated) is searched first by *preloading*: before cudarc first
//! opens a library, the versioned file found in those directories is dlopen'ed by full
//! path with `RTLD_NOW | RTLD_GLOBAL` and never closed. glibc's dlopen of a bare name
//! returns an already loaded object whose SONAME equals that name, so cudarc's
//! `dlopen("libnvrtc.so.13")` gets the preloaded file. Why this and not the alternatives:
//! LD_LIBRARY_PATH is read once at process start (setting it later has no effect),
//! re-executing the process to set it would be surprising for a library, and replacing
//! cudarc's loader is not possible (its library handle is private). Companions are
//! preloaded first from the same directories because the pip wheels carry no RUNPATH
//! between packages and NVRTC opens its builtins library by bare name (NVRTC 13 from the
//! `nvidia-cuda-nvrtc` wheel fails to compile without this: checked by tests/kernels.rs
//! in CI with the wheel's own layout).
//!
//! One gap is detected, not hidden: cudarc tries the unversioned `libnvrtc.so` before
//! `libnvrtc.so.13`, so an unversioned library on the linker's path (a toolkit's dev
//! symlink) is taken instead of the preloaded one. [`ensure`] then compares the file that
//! backs cudarc's symbols with the preloaded one and fails, naming both.
//!
//! Checked without a GPU by tests/cuda_loader.rs (an empty directory: an error naming the
//! library, what was tried and how to point at it; the NVRTC 13 wheel's directory: NVRTC
//! loads from there and reports 13.x) and by the unit tests below.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Directories searched before the dynamic linker's path, `:`-separated.
pub const LIB_DIR_VAR: &str = "KFAC_PINN_CUDA_LIB_DIR";

/// A CUDA library the backend loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lib {
    Driver,
    Nvrtc,
    Cublas,
    Cusolver,
    Nvml,
}

impl Lib {
    pub const ALL: [Lib; 5] = [
        Lib::Driver,
        Lib::Nvrtc,
        Lib::Cublas,
        Lib::Cusolver,
        Lib::Nvml,
    ];

    /// The name `devices` prints.
    pub fn label(self) -> &'static str {
        match self {
            Lib::Driver => "CUDA driver",
            Lib::Nvrtc => "NVRTC",
            Lib::Cublas => "cuBLAS",
            Lib::Cusolver => "cuSOLVER",
            Lib::Nvml => "NVML",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// File names looked for in `KFAC_PINN_CUDA_LIB_DIR`, best first: the SONAMEs of CUDA
    /// 13 and 12 (cuSOLVER is `.so.12` in CUDA 13 and `.so.11` in CUDA 12), then the
    /// unversioned development name.
    pub fn dir_names(self) -> &'static [&'static str] {
        match self {
            Lib::Driver => &["libcuda.so.1", "libcuda.so"],
            Lib::Nvrtc => &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
            Lib::Cublas => &["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
            Lib::Cusolver => &["libcusolver.so.12", "libcusolver.so.11", "libcusolver.so"],
            Lib::Nvml => &["libnvidia-ml.so.1", "libnvidia-ml.so"],
        }
    }

    /// Prefixes of the libraries this one opens or links by bare name, preloaded first
    /// from the same directories when present (highest version of each).
    fn companions(self) -> &'static [&'static str] {
        match self {
            Lib::Driver | Lib::Nvml => &[],
            Lib::Nvrtc => &["libnvrtc-builtins.so."],
            Lib::Cublas => &["libcublasLt.so."],
            Lib::Cusolver => &[
                "libnvJitLink.so.",
                "libcublasLt.so.",
                "libcublas.so.",
                "libcusparse.so.",
            ],
        }
    }

    /// The names the crate that opens this library tries, in its order.
    pub fn linker_names(self) -> Vec<String> {
        match self {
            Lib::Driver => cudarc::get_lib_name_candidates("cuda"),
            Lib::Nvrtc => cudarc::get_lib_name_candidates("nvrtc"),
            Lib::Cublas => cudarc::get_lib_name_candidates("cublas"),
            Lib::Cusolver => cudarc::get_lib_name_candidates("cusolver"),
            // nvml-wrapper's default
            Lib::Nvml => vec!["libnvidia-ml.so.1".into()],
        }
        .into_iter()
        .filter(|n| n.starts_with("lib"))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        })
    }

    /// Where this library comes from, for the error message of a missing one.
    fn how_to_get(self) -> &'static str {
        match self {
            Lib::Driver => "libcuda.so.1 comes with the NVIDIA driver (not pip); install the driver, or in a container run with the NVIDIA container toolkit (--gpus)",
            Lib::Nvml => "libnvidia-ml.so.1 comes with the NVIDIA driver (not pip); install the driver, or in a container run with the NVIDIA container toolkit (--gpus)",
            Lib::Nvrtc => "CUDA 13: `pip install nvidia-cuda-nvrtc` (site-packages/nvidia/cu13/lib); CUDA 12: `pip install nvidia-cuda-nvrtc-cu12` (site-packages/nvidia/cuda_nvrtc/lib); or a CUDA toolkit's lib64",
            Lib::Cublas => "CUDA 13: `pip install nvidia-cublas` (site-packages/nvidia/cu13/lib); CUDA 12: `pip install nvidia-cublas-cu12` (site-packages/nvidia/cublas/lib); or a CUDA toolkit's lib64",
            Lib::Cusolver => "CUDA 13: `pip install nvidia-cusolver` (site-packages/nvidia/cu13/lib, with nvidia-cublas, nvidia-cusparse, nvidia-nvjitlink); CUDA 12: `pip install nvidia-cusolver-cu12` (site-packages/nvidia/cusolver/lib, and list cublas/lib, cusparse/lib, nvjitlink/lib too); or a CUDA toolkit's lib64",
        }
    }
}

/// What preloading from `KFAC_PINN_CUDA_LIB_DIR` did for one library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preload {
    /// The variable is unset or empty: only the dynamic linker's path is used.
    NotAsked,
    /// None of [`Lib::dir_names`] is in the directories; these paths were tried.
    NotFound(Vec<PathBuf>),
    /// This file is loaded (`RTLD_GLOBAL`, kept open).
    Loaded(PathBuf),
    /// The file exists but dlopen failed (dlerror's message).
    Failed(PathBuf, String),
}

/// The directories of `KFAC_PINN_CUDA_LIB_DIR` (empty entries skipped).
pub fn lib_dirs() -> Vec<PathBuf> {
    std::env::var_os(LIB_DIR_VAR)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The first of `names` present in `dirs` (directory order first, then name order), and
/// every path looked at.
pub fn find_in(dirs: &[PathBuf], names: &[&str]) -> (Option<PathBuf>, Vec<PathBuf>) {
    let mut tried = Vec::new();
    for d in dirs {
        for n in names {
            let p = d.join(n);
            if p.is_file() {
                return (Some(p), tried);
            }
            tried.push(p);
        }
    }
    (None, tried)
}

/// The highest-versioned file `PREFIX<digits>[.<digits>…]` in the first directory that
/// has one (`libnvrtc-builtins.so.13.0`, not `libnvrtc-builtins.alt.so.13.0`).
pub fn find_versioned(dirs: &[PathBuf], prefix: &str) -> Option<PathBuf> {
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut best: Option<(Vec<u32>, PathBuf)> = None;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let Ok(v) = rest
                .split('.')
                .map(str::parse::<u32>)
                .collect::<std::result::Result<Vec<u32>, _>>()
            else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, e.path()));
            }
        }
        if let Some((_, p)) = best {
            return Some(p);
        }
    }
    None
}

/// Handles of preloaded libraries, kept open for the life of the process (closing them
/// would let cudarc's later bare-name dlopen find something else).
#[cfg(unix)]
static KEPT: std::sync::Mutex<Vec<libloading::os::unix::Library>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(unix)]
fn dlopen_global(path: &Path) -> std::result::Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loads a CUDA library from a directory the user named, by full path; its
    // initialisers are NVIDIA's and are run the same way when cudarc opens the library.
    // The handle is kept (never dlclose'd), so no termination routine runs early.
    let lib = unsafe { Library::open(Some(path.as_os_str()), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| e.to_string())?;
    KEPT.lock()
        .map_err(|_| "loader lock poisoned".to_string())?
        .push(lib);
    Ok(())
}

#[cfg(not(unix))]
fn dlopen_global(path: &Path) -> std::result::Result<(), String> {
    Err(format!(
        "{}: {LIB_DIR_VAR} is only supported on Linux",
        path.display()
    ))
}

fn do_preload(lib: Lib) -> Preload {
    let dirs = lib_dirs();
    if dirs.is_empty() {
        return Preload::NotAsked;
    }
    let (found, tried) = find_in(&dirs, lib.dir_names());
    let Some(path) = found else {
        return Preload::NotFound(tried);
    };
    // companions first, best effort: a missing one shows up as the main library's
    // dlopen error (which names it)
    for prefix in lib.companions() {
        if let Some(c) = find_versioned(&dirs, prefix) {
            let _ = dlopen_global(&c);
        }
    }
    match dlopen_global(&path) {
        Ok(()) => Preload::Loaded(path),
        Err(e) => Preload::Failed(path, e),
    }
}

/// Preload `lib` from `KFAC_PINN_CUDA_LIB_DIR` (once per process and library); must run
/// before cudarc or nvml-wrapper first opens it. Returns what happened.
pub fn prepare(lib: Lib) -> &'static Preload {
    static DONE: [OnceLock<Preload>; 5] = [const { OnceLock::new() }; 5];
    DONE[lib.index()].get_or_init(|| do_preload(lib))
}

/// The error for a library that could not be loaded: what was tried, and how to point at
/// it.
pub fn missing(lib: Lib) -> Error {
    let mut msg = format!("{} library not found: ", lib.label());
    match prepare(lib) {
        Preload::NotAsked => {}
        Preload::NotFound(tried) => {
            let t: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            msg += &format!("{LIB_DIR_VAR} has none of {}; ", t.join(", "));
        }
        Preload::Failed(p, e) => {
            msg += &format!("{LIB_DIR_VAR}'s {} failed to load ({e}); ", p.display());
        }
        Preload::Loaded(p) => {
            msg += &format!("{LIB_DIR_VAR}'s {} loaded but was not used; ", p.display());
        }
    }
    msg += &format!(
        "the dynamic linker found none of {}. Set {LIB_DIR_VAR} (':'-separated directories, searched first) or LD_LIBRARY_PATH to the directory holding it. {}",
        lib.linker_names().join(", "),
        lib.how_to_get()
    );
    Error::Device(msg)
}

/// Whether cudarc can open `lib` (after preloading); never panics.
fn cudarc_present(lib: Lib) -> bool {
    // SAFETY (all arms): only tries to dlopen the candidate names; no symbol is used.
    match lib {
        Lib::Driver => unsafe { cudarc::driver::sys::is_culib_present() },
        Lib::Nvrtc => unsafe { cudarc::nvrtc::sys::is_culib_present() },
        Lib::Cublas => unsafe { cudarc::cublas::sys::is_culib_present() },
        Lib::Cusolver => unsafe { cudarc::cusolver::sys::is_culib_present() },
        Lib::Nvml => false,
    }
}

/// A symbol every version of `lib` exports (to find the file cudarc loaded).
fn probe_symbol(lib: Lib) -> &'static str {
    match lib {
        Lib::Driver => "cuDriverGetVersion",
        Lib::Nvrtc => "nvrtcVersion",
        Lib::Cublas => "cublasGetProperty",
        Lib::Cusolver => "cusolverGetProperty",
        Lib::Nvml => "nvmlInit_v2",
    }
}

/// The file backing the library cudarc opened for `lib` (None for NVML, or when the
/// symbol or the mapping cannot be found). Call only when [`cudarc_present`] is true:
/// cudarc's `culib()` panics otherwise.
fn cudarc_file(lib: Lib) -> Option<PathBuf> {
    let sym = probe_symbol(lib);
    // SAFETY (all arms): the library loads (caller checked); `culib` opens it once and
    // keeps it; the symbol is only read as an address, never called.
    let addr = unsafe {
        match lib {
            Lib::Driver => cudarc::driver::sys::culib()
                .get::<*const std::ffi::c_void>(sym)
                .ok()
                .map(|s| *s as usize),
            Lib::Nvrtc => cudarc::nvrtc::sys::culib()
                .get::<*const std::ffi::c_void>(sym)
                .ok()
                .map(|s| *s as usize),
            Lib::Cublas => cudarc::cublas::sys::culib()
                .get::<*const std::ffi::c_void>(sym)
                .ok()
                .map(|s| *s as usize),
            Lib::Cusolver => cudarc::cusolver::sys::culib()
                .get::<*const std::ffi::c_void>(sym)
                .ok()
                .map(|s| *s as usize),
            Lib::Nvml => None,
        }
    }?;
    mapped_file(addr)
}

/// The file mapped at `addr` in this process (from /proc/self/maps).
pub fn mapped_file(addr: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (lo, hi) = it.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        let path = it.nth(4)?;
        (lo <= addr && addr < hi && path.starts_with('/')).then(|| PathBuf::from(path))
    })
}

/// The first mapped file of this process whose name starts with `prefix` (for NVML,
/// which nvml-wrapper opens privately).
pub fn mapped_file_named(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let path = l.split_whitespace().nth(5)?;
        let p = Path::new(path);
        p.file_name()?
            .to_str()?
            .starts_with(prefix)
            .then(|| p.to_path_buf())
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Make `lib` usable by cudarc: preload from `KFAC_PINN_CUDA_LIB_DIR`, check that cudarc
/// can open it, and that it opened the preloaded file. The error says what was tried and
/// how to point at the library. Not for NVML (see [`super::nvml`]).
pub fn ensure(lib: Lib) -> Result<()> {
    static CHECKED: [OnceLock<std::result::Result<(), String>>; 5] = [const { OnceLock::new() }; 5];
    CHECKED[lib.index()]
        .get_or_init(|| {
            let pre = prepare(lib);
            if !cudarc_present(lib) {
                return Err(missing(lib).to_string());
            }
            if let Preload::Loaded(want) = pre {
                let got = super::device::no_panic(lib.label(), || Ok(cudarc_file(lib)))
                    .map_err(|e| e.to_string())?;
                if let Some(got) = got {
                    if !same_file(&got, want) {
                        return Err(format!(
                            "{} from {LIB_DIR_VAR} ({}) was preloaded, but cudarc opened {} first (an unversioned {} on the dynamic linker's path wins over the versioned name); remove that directory from LD_LIBRARY_PATH or point {LIB_DIR_VAR} at it",
                            lib.label(),
                            want.display(),
                            got.display(),
                            lib.dir_names().last().copied().unwrap_or("library"),
                        ));
                    }
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|e| Error::Device(e.trim_start_matches("device error: ").to_string()))
}

/// One library as `kfac-pinn devices` reports it.
#[derive(Clone, Debug)]
pub struct LibReport {
    pub lib: Lib,
    /// The loaded file and its version, or why it is not loaded.
    pub loaded: std::result::Result<(PathBuf, String), String>,
}

impl std::fmt::Display for LibReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.loaded {
            Ok((p, v)) => write!(
                f,
                "library {}: {} (version {v})",
                self.lib.label(),
                p.display()
            ),
            Err(e) => write!(f, "library {}: not loaded: {e}", self.lib.label()),
        }
    }
}

/// Load `lib` (as the backend would) and report the file and its version. Never panics.
pub fn report(lib: Lib) -> LibReport {
    let loaded = match lib {
        Lib::Nvml => super::nvml::library(),
        _ => ensure(lib).and_then(|()| {
            super::device::no_panic(lib.label(), || {
                let path = cudarc_file(lib).ok_or_else(|| {
                    Error::Device(format!(
                        "{}: loaded, but its file was not found in /proc/self/maps",
                        lib.label()
                    ))
                })?;
                Ok((path, version(lib)?))
            })
        }),
    };
    LibReport {
        lib,
        loaded: loaded.map_err(|e| e.to_string().trim_start_matches("device error: ").into()),
    }
}

/// The version of a loaded cudarc library, e.g. "13.0" or "13.0.2".
fn version(lib: Lib) -> Result<String> {
    use cudarc::cublas::sys as blas;
    use cudarc::cusolver::sys as sol;
    let err = |what: &str, e: String| Error::Device(format!("{what}: {e}"));
    match lib {
        Lib::Driver => {
            let mut v = 0;
            // SAFETY: the driver library is loaded (ensure); v is a valid out-pointer.
            unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
                .result()
                .map_err(|e| err("cuDriverGetVersion", e.to_string()))?;
            Ok(format!("CUDA {}.{}", v / 1000, (v % 1000) / 10))
        }
        Lib::Nvrtc => {
            let (a, b) = super::nvrtc::version()?;
            Ok(format!("{a}.{b}"))
        }
        Lib::Cublas => {
            let mut v = [0; 3];
            for (i, t) in [
                blas::libraryPropertyType::MAJOR_VERSION,
                blas::libraryPropertyType::MINOR_VERSION,
                blas::libraryPropertyType::PATCH_LEVEL,
            ]
            .into_iter()
            .enumerate()
            {
                // SAFETY: libcublas is loaded (ensure); v[i] is a valid out-pointer; the
                // call needs no handle or GPU.
                let s = unsafe { blas::cublasGetProperty(t, &mut v[i]) };
                if s != blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return Err(err("cublasGetProperty", format!("{s:?}")));
                }
            }
            Ok(format!("{}.{}.{}", v[0], v[1], v[2]))
        }
        Lib::Cusolver => {
            let mut v = [0; 3];
            for (i, t) in [
                sol::libraryPropertyType::MAJOR_VERSION,
                sol::libraryPropertyType::MINOR_VERSION,
                sol::libraryPropertyType::PATCH_LEVEL,
            ]
            .into_iter()
            .enumerate()
            {
                // SAFETY: libcusolver is loaded (ensure); v[i] is a valid out-pointer.
                let s = unsafe { sol::cusolverGetProperty(t, &mut v[i]) };
                if s != sol::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS {
                    return Err(err("cusolverGetProperty", format!("{s:?}")));
                }
            }
            Ok(format!("{}.{}.{}", v[0], v[1], v[2]))
        }
        Lib::Nvml => Err(Error::Device("NVML is reported by nvml::library".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kfac-loader-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Directory order wins over name order; every path looked at is listed.
    #[test]
    fn find_in_searches_directories_in_order() {
        let (a, b) = (tmpdir("a"), tmpdir("b"));
        std::fs::write(a.join("libnvrtc.so.12"), b"").unwrap();
        std::fs::write(b.join("libnvrtc.so.13"), b"").unwrap();
        let names = Lib::Nvrtc.dir_names();
        let (found, tried) = find_in(&[a.clone(), b.clone()], names);
        assert_eq!(found, Some(a.join("libnvrtc.so.12")));
        assert_eq!(tried, vec![a.join("libnvrtc.so.13")]);
        let (found, tried) = find_in(&[b.clone(), a.clone()], names);
        assert_eq!(found, Some(b.join("libnvrtc.so.13")));
        assert!(tried.is_empty());
        let empty = tmpdir("empty");
        let (found, tried) = find_in(std::slice::from_ref(&empty), names);
        assert_eq!(found, None);
        assert_eq!(tried.len(), names.len());
    }

    /// The highest numeric version is picked; `.alt.` and non-numeric suffixes are not.
    #[test]
    fn find_versioned_picks_the_highest_numeric_suffix() {
        let d = tmpdir("ver");
        for n in [
            "libnvrtc-builtins.so.12.9",
            "libnvrtc-builtins.so.13.0",
            "libnvrtc-builtins.alt.so.13.1",
            "libnvrtc-builtins.so.13.0.bak",
        ] {
            std::fs::write(d.join(n), b"").unwrap();
        }
        assert_eq!(
            find_versioned(std::slice::from_ref(&d), "libnvrtc-builtins.so."),
            Some(d.join("libnvrtc-builtins.so.13.0"))
        );
        assert_eq!(find_versioned(&[d], "libcublasLt.so."), None);
    }

    /// cudarc (cuda-13000) tries the CUDA 13 names before the CUDA 12 ones; the list this
    /// module prints in errors is cudarc's own.
    #[test]
    fn cudarc_tries_so13_then_so12() {
        let names = Lib::Cublas.linker_names();
        let p13 = names.iter().position(|n| n == "libcublas.so.13");
        let p12 = names.iter().position(|n| n == "libcublas.so.12");
        assert!(p13.is_some() && p12.is_some() && p13 < p12, "{names:?}");
        let sol = Lib::Cusolver.linker_names();
        assert!(sol.contains(&"libcusolver.so.11".to_string()), "{sol:?}");
    }

    /// The mapping lookup finds the file of code in this process (the test binary).
    #[test]
    fn mapped_file_finds_this_binary() {
        let addr = mapped_file_finds_this_binary as *const () as usize;
        let exe = std::env::current_exe().unwrap();
        let got = mapped_file(addr).expect("address not in /proc/self/maps");
        assert!(same_file(&got, &exe), "{got:?} vs {exe:?}");
        assert_eq!(mapped_file(0), None);
    }
}

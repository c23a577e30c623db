//! The CUDA loader and the NVRTC disk cache without a GPU, through the `kfac-pinn devices`
//! binary (a fresh process per case, because which library a process loads is fixed at
//! its first load) and the library's NVRTC functions.
//!
//! - Always: with `KFAC_PINN_CUDA_LIB_DIR` naming an empty directory and no
//!   LD_LIBRARY_PATH, `devices` succeeds and every library line says what was tried
//!   (that directory's versioned names, the linker names) and how to point at it.
//! - `--ignored` (CI, once per loader layout): NVRTC loads from the directory named by
//!   `KFAC_PINN_CUDA_LIB_DIR` (or the LD_LIBRARY_PATH directory holding it) and reports
//!   the version its file name promises; `devices` compiles on a fresh cache and loads
//!   from it in the next process; in-process, a second compile hits the cache with
//!   identical bytes, a corrupted entry is recompiled, and two threads compiling at once
//!   both succeed.

use kfac_pinn::backend::cuda::cache::{self, Origin};
use kfac_pinn::backend::cuda::kernels::MODULES;
use kfac_pinn::backend::cuda::nvrtc::{self, Target};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kfac-loader-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kfac-pinn devices` with the given loader environment; returns stdout (and checks it
/// exited 0 without a panic).
fn devices(lib_dir: Option<&Path>, ld_path: Option<&str>, cache: &Path) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kfac-pinn"));
    c.arg("devices").env("KFAC_PINN_CACHE_DIR", cache);
    match lib_dir {
        Some(d) => c.env("KFAC_PINN_CUDA_LIB_DIR", d),
        None => c.env_remove("KFAC_PINN_CUDA_LIB_DIR"),
    };
    match ld_path {
        Some(p) => c.env("LD_LIBRARY_PATH", p),
        None => c.env_remove("LD_LIBRARY_PATH"),
    };
    let out = c.output().expect("running kfac-pinn devices");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "devices failed:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stdout
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{out}"))
}

/// An empty `KFAC_PINN_CUDA_LIB_DIR`: each library is either found elsewhere (a system
/// install, outside that directory) or reported with the directory's candidate files,
/// the linker's names and how to point at it. Never a panic, and `devices` succeeds.
#[test]
fn devices_names_what_was_tried_for_missing_libraries() {
    let empty = tmpdir("empty");
    let out = devices(Some(&empty), None, &tmpdir("cache-empty"));
    assert!(
        line(&out, "library search:").contains(&empty.display().to_string()),
        "{out}"
    );
    for (label, versioned, pip) in [
        ("CUDA driver", "libcuda.so.1", "NVIDIA driver"),
        ("NVRTC", "libnvrtc.so.13", "pip install nvidia-cuda-nvrtc"),
        ("cuBLAS", "libcublas.so.13", "pip install nvidia-cublas"),
        (
            "cuSOLVER",
            "libcusolver.so.12",
            "pip install nvidia-cusolver",
        ),
        ("NVML", "libnvidia-ml.so.1", "NVIDIA driver"),
    ] {
        let l = line(&out, &format!("library {label}:"));
        if l.contains("not loaded") {
            for want in [
                empty.join(versioned).display().to_string(),
                "KFAC_PINN_CUDA_LIB_DIR".into(),
                "LD_LIBRARY_PATH".into(),
                pip.into(),
            ] {
                assert!(l.contains(&want), "{label}: {want:?} missing from {l}");
            }
        } else {
            // installed on this machine: found by the linker, not in the empty directory
            assert!(l.contains("(version "), "{l}");
            assert!(!l.contains(&empty.display().to_string()), "{l}");
        }
    }
    if line(&out, "library NVRTC:").contains("not loaded") {
        assert!(
            line(&out, "nvrtc:").contains("NVRTC library not found"),
            "{out}"
        );
    }
}

/// The directory the NVRTC under test comes from: `KFAC_PINN_CUDA_LIB_DIR`, else the
/// LD_LIBRARY_PATH entry holding a libnvrtc.so.N; and the file and major version there.
fn nvrtc_under_test() -> (PathBuf, PathBuf, u32) {
    let dirs: Vec<PathBuf> = match std::env::var_os("KFAC_PINN_CUDA_LIB_DIR") {
        Some(v) => std::env::split_paths(&v).collect(),
        None => std::env::split_paths(&std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default())
            .collect(),
    };
    for d in dirs {
        for major in [13u32, 12] {
            let f = d.join(format!("libnvrtc.so.{major}"));
            if f.is_file() {
                return (d, f, major);
            }
        }
    }
    panic!("neither KFAC_PINN_CUDA_LIB_DIR nor LD_LIBRARY_PATH names a directory with libnvrtc.so.13 or .so.12");
}

/// NVRTC is loaded from the directory under test and reports the version its file name
/// promises; the first `devices` on a fresh cache compiles every module, the next one
/// (a new process) loads them all from the cache.
#[test]
#[ignore = "needs libnvrtc in KFAC_PINN_CUDA_LIB_DIR or LD_LIBRARY_PATH; CI runs it with --ignored"]
fn nvrtc_loads_from_the_named_directory_and_caches_across_processes() {
    let (dir, file, major) = nvrtc_under_test();
    let lib_dir = std::env::var_os("KFAC_PINN_CUDA_LIB_DIR").map(PathBuf::from);
    let ld = std::env::var("LD_LIBRARY_PATH").ok();
    // through KFAC_PINN_CUDA_LIB_DIR, LD_LIBRARY_PATH is dropped so only the preload can
    // find the library
    let ld = if lib_dir.is_some() {
        None
    } else {
        ld.as_deref()
    };
    let cache_dir = tmpdir("cache-xproc");
    let first = devices(lib_dir.as_deref(), ld, &cache_dir);
    let l = line(&first, "library NVRTC:");
    let loaded = l
        .trim_start_matches("library NVRTC: ")
        .split(" (version ")
        .next()
        .unwrap();
    assert_eq!(
        Path::new(loaded).canonicalize().unwrap(),
        file.canonicalize().unwrap(),
        "{l} (expected a file in {})",
        dir.display()
    );
    assert!(l.contains(&format!("(version {major}.")), "{l}");
    let n = MODULES.len();
    let t1 = line(&first, "nvrtc:");
    assert!(t1.contains(&format!("{n} compiled in")), "{t1}");
    assert!(t1.contains(&cache_dir.display().to_string()), "{t1}");
    let second = devices(lib_dir.as_deref(), ld, &cache_dir);
    let t2 = line(&second, "nvrtc:");
    assert!(t2.contains(&format!("{n} already cached")), "{t2}");
    assert!(!t2.contains("compiled in"), "{t2}");
}

/// With real NVRTC: the second compile reads the entry the first wrote (identical bytes,
/// no compile); a corrupted entry is recompiled and rewritten.
#[test]
#[ignore = "needs libnvrtc (KFAC_PINN_CUDA_LIB_DIR or LD_LIBRARY_PATH); CI runs it with --ignored"]
fn nvrtc_cache_hits_and_recompiles_a_corrupted_entry() {
    let dir = tmpdir("cache-hit");
    let m = &MODULES[0];
    let t = Target::Ptx("compute_75");
    let (a, oa) = nvrtc::compile_cached_in(Some(&dir), m.source, m.name, t).unwrap();
    let Origin::Compiled {
        stored: Ok(path), ..
    } = oa
    else {
        panic!("first compile: {oa:?}")
    };
    let (b, ob) = nvrtc::compile_cached_in(Some(&dir), m.source, m.name, t).unwrap();
    assert!(matches!(ob, Origin::Cached { .. }), "{ob:?}");
    assert_eq!(a, b);
    // what the cache returns is what NVRTC makes (up to the per-compile ids NVRTC gives
    // internal-linkage symbols, so compared by entry points and size)
    let fresh = nvrtc::compile(m.source, m.name, t).unwrap();
    assert_eq!(entries(&a), entries(&fresh));
    assert_eq!(a.len(), fresh.len());
    let mut bad = std::fs::read(&path).unwrap();
    let mid = bad.len() - 10;
    bad[mid] ^= 0x20;
    std::fs::write(&path, &bad).unwrap();
    let (c, oc) = nvrtc::compile_cached_in(Some(&dir), m.source, m.name, t).unwrap();
    assert!(
        matches!(oc, Origin::Compiled { stored: Ok(_), .. }),
        "{oc:?}"
    );
    assert_eq!(entries(&c), entries(&a));
    // rewritten: the next call reads the new, valid entry
    let (d, od) = nvrtc::compile_cached_in(Some(&dir), m.source, m.name, t).unwrap();
    assert!(matches!(od, Origin::Cached { .. }), "{od:?}");
    assert_eq!(d, c);
    assert_ne!(std::fs::read(&path).unwrap(), bad);
}

/// The `.entry` lines of a PTX image.
fn entries(ptx: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ptx)
        .lines()
        .filter(|l| l.contains(".entry "))
        .map(str::to_string)
        .collect()
}

/// With real NVRTC: two threads compiling every module into an empty cache at once both
/// succeed with the same kernels, and the entry each module is left with is one of the
/// two images, whole.
#[test]
#[ignore = "needs libnvrtc (KFAC_PINN_CUDA_LIB_DIR or LD_LIBRARY_PATH); CI runs it with --ignored"]
fn nvrtc_two_threads_compiling_at_once_both_succeed() {
    let dir = tmpdir("cache-race");
    let t = Target::Ptx("compute_75");
    let run = || {
        MODULES
            .iter()
            .map(|m| nvrtc::compile_cached_in(Some(&dir), m.source, m.name, t).map(|r| r.0))
            .collect::<Result<Vec<_>, _>>()
    };
    let (x, y) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(entries(a), entries(b));
        assert!(!entries(a).is_empty());
    }
    let version = nvrtc::version().unwrap();
    for ((m, img_x), img_y) in MODULES.iter().zip(&x).zip(&y) {
        let opts = vec![
            "--gpu-architecture=compute_75".to_string(),
            "--std=c++14".into(),
        ];
        let key = cache::Key {
            module: m.name,
            source: m.source,
            nvrtc: version,
            kind: "ptx",
            arch: "compute_75",
            options: &opts,
        };
        let stored = cache::read(&dir, &key).map(|r| r.0).expect("a valid entry");
        assert!(stored == *img_x || stored == *img_y, "{}", m.name);
    }
}

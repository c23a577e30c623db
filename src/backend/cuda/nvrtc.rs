//! Run-time compilation of the embedded kernel sources with NVRTC (cudarc's dynamically
//! loaded libnvrtc): the CUDA backend's path when the build found no nvcc, or when the
//! driver rejects the embedded PTX (too new a PTX ISA for an old driver). NVRTC needs no
//! GPU, so tests/kernels.rs compiles every module with it when libnvrtc is present.
//!
//! Never panics on a missing library: [`version`] and [`compile`] check that libnvrtc
//! loads first (through [`super::loader`], which also honours `KFAC_PINN_CUDA_LIB_DIR`)
//! and return [`Error::Device`] otherwise. [`compile_cached`] keeps the results on disk
//! ([`super::cache`]), so only the first process on a machine pays for NVRTC.

use super::cache::{self, Origin};
use super::loader::{self, Lib};
use crate::error::{Error, Result};
use cudarc::nvrtc::{result, sys};
use std::ffi::{c_char, CString};
use std::path::Path;

/// What to compile to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// PTX for a virtual architecture, e.g. `"compute_75"`.
    Ptx(&'a str),
    /// A cubin for a real architecture, e.g. `"sm_80"` (no JIT at load time, so it also
    /// works on a driver older than this NVRTC's PTX ISA).
    Cubin(&'a str),
}

impl Target<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Target::Ptx(_) => "ptx",
            Target::Cubin(_) => "cubin",
        }
    }
    fn arch(&self) -> &str {
        match self {
            Target::Ptx(a) | Target::Cubin(a) => a,
        }
    }
}

/// Whether libnvrtc can be loaded.
pub fn available() -> bool {
    loader::ensure(Lib::Nvrtc).is_ok()
}

/// Run `f` (which calls into libnvrtc) after checking the library loads; a panic inside
/// cudarc (a missing symbol in an old library) becomes an error.
fn guarded<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    loader::ensure(Lib::Nvrtc)?;
    super::device::no_panic("NVRTC", f)
}

/// The NVRTC options of every compile (part of the cache key).
fn options(target: Target<'_>) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", target.arch()),
        "--std=c++14".into(),
    ]
}

/// [`compile`] through the disk cache in its default directory
/// ([`cache::default_dir`]): a valid entry for the same source, NVRTC version, target and
/// options is returned without compiling.
pub fn compile_cached(src: &str, name: &str, target: Target<'_>) -> Result<(Vec<u8>, Origin)> {
    compile_cached_in(cache::default_dir().as_deref(), src, name, target)
}

/// [`compile_cached`] with the cache in `dir` (`None`: no cache).
pub fn compile_cached_in(
    dir: Option<&Path>,
    src: &str,
    name: &str,
    target: Target<'_>,
) -> Result<(Vec<u8>, Origin)> {
    let opts = options(target);
    let key = cache::Key {
        module: name,
        source: src,
        nvrtc: version()?,
        kind: target.kind(),
        arch: target.arch(),
        options: &opts,
    };
    cache::get_or_compile(dir, &key, || compile(src, name, target))
}

/// NVRTC's version (major, minor).
pub fn version() -> Result<(i32, i32)> {
    guarded(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the library is loaded (checked by `guarded`); both pointers are valid.
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| Error::Device(format!("nvrtcVersion: {e:?}")))?;
        Ok((major, minor))
    })
}

/// Compile `src` (module `name`) for `target`; returns the PTX text (NUL-free) or the
/// cubin bytes. A compile error carries NVRTC's log.
pub fn compile(src: &str, name: &str, target: Target<'_>) -> Result<Vec<u8>> {
    guarded(|| {
        let csrc = CString::new(src)
            .map_err(|_| Error::Device(format!("kernel module {name}: NUL in source")))?;
        let cname = CString::new(format!("{name}.cu")).expect("module names have no NUL");
        let prog = result::create_program(&csrc, Some(&cname))
            .map_err(|e| Error::Device(format!("nvrtcCreateProgram({name}): {e:?}")))?;
        let arch = target.arch();
        let opts = options(target);
        // SAFETY: prog was created above and is destroyed exactly once below.
        let compiled = unsafe { result::compile_program(prog, &opts) };
        let out = match compiled {
            Ok(()) => match target {
                // SAFETY: prog is a successfully compiled program.
                Target::Ptx(_) => unsafe { result::get_ptx(prog) }
                    .map(|v| {
                        v.into_iter()
                            .map(|c| c as u8)
                            .take_while(|&b| b != 0)
                            .collect()
                    })
                    .map_err(|e| Error::Device(format!("nvrtcGetPTX({name}): {e:?}"))),
                // SAFETY: as above; the buffer has the size NVRTC reports.
                Target::Cubin(_) => unsafe { cubin(prog) }
                    .map_err(|e| Error::Device(format!("nvrtcGetCUBIN({name}): {e:?}"))),
            },
            Err(e) => {
                // SAFETY: prog is valid; the log is read before destruction.
                let log = unsafe { result::get_program_log(prog) }
                    .map(|l| {
                        let b: Vec<u8> = l
                            .into_iter()
                            .map(|c| c as u8)
                            .take_while(|&b| b != 0)
                            .collect();
                        String::from_utf8_lossy(&b).into_owned()
                    })
                    .unwrap_or_default();
                Err(Error::Device(format!(
                    "NVRTC failed to compile kernel module {name} for {arch} ({e:?}):\n{log}"
                )))
            }
        };
        // SAFETY: prog is valid and not used afterwards.
        let _ = unsafe { result::destroy_program(prog) };
        out
    })
}

/// The cubin of a program compiled for a real architecture.
///
/// # Safety
/// `prog` must be a successfully compiled program that has not been destroyed.
unsafe fn cubin(prog: sys::nvrtcProgram) -> std::result::Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: prog is valid (caller); size is a valid out-pointer.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }.result()?;
    let mut buf = vec![0u8; size];
    // SAFETY: buf holds the `size` bytes NVRTC writes.
    unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }.result()?;
    Ok(buf)
}

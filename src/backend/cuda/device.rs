//! Opening a GPU: checks that the driver library loads (cudarc panics on first use of a
//! missing library, so this comes first), creates the context and one stream, loads the
//! kernel modules (embedded PTX, or NVRTC when there is none or the driver rejects its
//! PTX version) and reads what the launch geometry needs.
//!
//! NVRTC results are cached on disk ([`super::cache`]). When the driver rejects the
//! embedded PTX (made by a newer nvcc than the driver supports) the kernels come from
//! NVRTC; without NVRTC the error names the driver the embedded PTX needs.
//!
//! Without a driver or GPU everything here returns [`Error::Device`]; checked on this
//! machine by the tests below and on a GPU by tests/gpu.rs.

use super::cache::Origin;
use super::kernels::{Module, MODULES, PTX_ARCH};
use super::launch::DeviceLimits;
use super::loader::{self, Lib};
use super::nvrtc::{self, Target};
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{result, CudaContext, CudaFunction, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn drv(what: &str, e: DriverError) -> Error {
    Error::Device(format!("{what}: {e}"))
}

/// Run `f`, turning a panic inside cudarc (e.g. a symbol missing from an old driver)
/// into an error.
pub(super) fn no_panic<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Device(format!("{what}: {msg}")))
    })
}

/// What a successful probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub devices: usize,
    /// Driver API version, e.g. 12090.
    pub driver_version: i32,
}

/// Whether a CUDA driver is installed and sees at least one GPU.
pub fn probe() -> Result<Probe> {
    loader::ensure(Lib::Driver)?;
    no_panic("CUDA driver", || {
        result::init().map_err(|e| drv("cuInit", e))?;
        let n = result::device::get_count().map_err(|e| drv("cuDeviceGetCount", e))?;
        let mut v = 0;
        // SAFETY: the driver is loaded and initialised; v is a valid out-pointer.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
            .result()
            .map_err(|e| drv("cuDriverGetVersion", e))?;
        if n <= 0 {
            return Err(Error::Device("the CUDA driver sees no GPU".into()));
        }
        Ok(Probe {
            devices: n as usize,
            driver_version: v,
        })
    })
}

/// The opened device: context, stream, kernels.
pub(super) struct Opened {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub funcs: HashMap<&'static str, CudaFunction>,
    pub limits: DeviceLimits,
    pub name: String,
    pub cc: (i32, i32),
    /// How the kernels were obtained (embedded PTX from nvcc, or NVRTC, and why).
    pub kernels_from: String,
}

pub(super) fn open(ordinal: usize) -> Result<Opened> {
    let probe = probe()?;
    if ordinal >= probe.devices {
        return Err(Error::Device(format!(
            "GPU {ordinal} requested, the driver sees {}",
            probe.devices
        )));
    }
    no_panic("opening the GPU", || {
        let ctx = CudaContext::new(ordinal).map_err(|e| drv("creating the CUDA context", e))?;
        // SAFETY: every buffer, copy, kernel and library call of this backend goes through
        // the one stream created below, so the per-buffer events that would order work
        // across streams are never needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| drv("creating a stream", e))?;
        let name = ctx.name().map_err(|e| drv("device name", e))?;
        let cc = ctx
            .compute_capability()
            .map_err(|e| drv("compute capability", e))?;
        let sm = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| drv("multiprocessor count", e))?;
        let mut funcs = HashMap::new();
        let mut how = Vec::new();
        for m in MODULES {
            let (module, from) = load_module(&ctx, m, cc)?;
            for &e in m.entries {
                let f = module
                    .load_function(e)
                    .map_err(|err| drv(&format!("kernel {e} of module {}", m.name), err))?;
                funcs.insert(e, f);
            }
            if !how.contains(&from) {
                how.push(from);
            }
        }
        Ok(Opened {
            ctx,
            stream,
            funcs,
            limits: DeviceLimits {
                sm_count: sm.max(1) as u32,
            },
            name,
            cc,
            kernels_from: how.join("; "),
        })
    })
}

/// The oldest Linux driver of each CUDA release (NVIDIA's CUDA toolkit release notes,
/// table "CUDA Toolkit and Corresponding Driver Versions"): PTX from a toolkit needs a
/// driver at least this new to be JIT-compiled.
const MIN_DRIVER: &[((i32, i32), &str)] = &[
    ((13, 0), "580.65.06"),
    ((12, 9), "575.51.03"),
    ((12, 8), "570.26"),
    ((12, 6), "560.28.03"),
    ((12, 5), "555.42.02"),
    ((12, 4), "550.54.14"),
    ((12, 3), "545.23.06"),
    ((12, 2), "535.54.03"),
    ((12, 1), "530.30.02"),
    ((12, 0), "525.60.13"),
];

/// The CUDA release in an `nvcc --version` line ("Cuda compilation tools, release 13.0,
/// V13.0.88" → (13, 0)).
pub fn nvcc_release(version_line: &str) -> Option<(i32, i32)> {
    let r = version_line.split("release ").nth(1)?;
    let r = r.split(|c: char| c == ',' || c.is_whitespace()).next()?;
    let (a, b) = r.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// "a driver for CUDA 13.0 or newer (Linux 580.65.06 or newer)".
pub fn driver_needed(cuda: (i32, i32)) -> String {
    let linux = MIN_DRIVER
        .iter()
        .find(|(v, _)| *v == cuda)
        .map(|(_, d)| format!(" (Linux {d} or newer)"))
        .unwrap_or_default();
    format!("a driver for CUDA {}.{} or newer{linux}", cuda.0, cuda.1)
}

/// Load one module: the embedded PTX if there is one and the driver takes it, otherwise
/// NVRTC (a cubin for the device, or PTX if this NVRTC does not know the device), through
/// the disk cache.
fn load_module(
    ctx: &Arc<CudaContext>,
    m: &Module,
    cc: (i32, i32),
) -> Result<(Arc<cudarc::driver::CudaModule>, String)> {
    let nvcc = super::kernels::NVCC_VERSION.unwrap_or("nvcc");
    let why = match m.ptx {
        Some(ptx) => match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => {
                return Ok((module, format!("embedded PTX ({PTX_ARCH}, {nvcc})")));
            }
            Err(e)
                if matches!(
                    e.0,
                    CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
                        | CUresult::CUDA_ERROR_INVALID_PTX
                        | CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND
                ) =>
            {
                let need = nvcc_release(nvcc)
                    .map(|v| format!("; it needs {}", driver_needed(v)))
                    .unwrap_or_default();
                format!("the driver rejected the embedded PTX from {nvcc}: {e}{need}")
            }
            Err(e) => return Err(drv(&format!("loading kernel module {}", m.name), e)),
        },
        None => "built without nvcc".to_string(),
    };
    let (maj, min) = nvrtc::version().map_err(|e| {
        Error::Device(format!(
            "kernel module {} needs NVRTC ({why}), which is unavailable: {e}",
            m.name
        ))
    })?;
    let sm = format!("sm_{}{}", cc.0, cc.1);
    let (image, origin, what) = match nvrtc::compile_cached(m.source, m.name, Target::Cubin(&sm)) {
        Ok((c, o)) => (c, o, format!("NVRTC {maj}.{min} cubin {sm} ({why})")),
        // an NVRTC older than the GPU: PTX for the oldest supported target, JIT-compiled
        Err(_) => {
            let (ptx, o) = nvrtc::compile_cached(m.source, m.name, Target::Ptx(PTX_ARCH))?;
            (ptx, o, format!("NVRTC {maj}.{min} PTX {PTX_ARCH} ({why})"))
        }
    };
    let ptx = if what.contains("cubin") {
        Ptx::from_binary(image)
    } else {
        Ptx::from_src(String::from_utf8_lossy(&image).into_owned())
    };
    let module = ctx.load_module(ptx).map_err(|e| {
        // a newer NVRTC's output on an older driver: say which driver, or which NVRTC
        Error::Device(format!(
            "loading kernel module {} ({what}): {e}; NVRTC {maj}.{min} output needs {} — update the driver, or point KFAC_PINN_CUDA_LIB_DIR at an NVRTC no newer than the driver's CUDA version (`kfac-pinn devices` shows both)",
            m.name,
            driver_needed((maj, min))
        ))
    })?;
    let cached = match origin {
        Origin::Cached { .. } => ", cached",
        Origin::Compiled { .. } => "",
    };
    Ok((module, format!("{what}{cached}")))
}

/// What [`nvrtc_timing`] measured.
#[derive(Clone, Debug)]
pub struct NvrtcTiming {
    /// e.g. "sm_90 cubin" or "compute_75 PTX".
    pub target: String,
    pub modules: usize,
    /// Modules compiled by this call and their total NVRTC time.
    pub compiled: usize,
    pub compile_secs: f64,
    /// Modules that were already cached, and the compile time recorded in their entries.
    pub were_cached: usize,
    pub earlier_compile_secs: f64,
    /// Total time to load every module from the cache afterwards.
    pub cached_load_secs: f64,
    /// The cache directory, or why nothing could be stored.
    pub cache: std::result::Result<std::path::PathBuf, String>,
}

impl std::fmt::Display for NvrtcTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nvrtc: {} modules for {}: ", self.modules, self.target)?;
        if self.compiled > 0 {
            write!(
                f,
                "{} compiled in {:.2} s, ",
                self.compiled, self.compile_secs
            )?;
        }
        if self.were_cached > 0 {
            write!(
                f,
                "{} already cached (compiled earlier in {:.2} s), ",
                self.were_cached, self.earlier_compile_secs
            )?;
        }
        write!(
            f,
            "loaded from the cache in {:.1} ms",
            self.cached_load_secs * 1e3
        )?;
        match &self.cache {
            Ok(d) => write!(f, " (cache {})", d.display()),
            Err(e) => write!(f, " (not cached: {e})"),
        }
    }
}

/// Compile every kernel module with NVRTC as the backend would for GPU 0 (a cubin for its
/// architecture; without a GPU, PTX for [`PTX_ARCH`]) through the disk cache, then load
/// them all from the cache, timing both. For `kfac-pinn devices`.
pub fn nvrtc_timing() -> Result<NvrtcTiming> {
    nvrtc::version()?;
    let cc = probe().ok().and_then(|_| {
        no_panic("compute capability", || {
            let dev = result::device::get(0).map_err(|e| drv("cuDeviceGet", e))?;
            let attr = |a| {
                // SAFETY: the driver is initialised (probe) and dev is a valid device.
                unsafe { result::device::get_attribute(dev, a) }.map_err(|e| drv("attribute", e))
            };
            Ok((
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ))
        })
        .ok()
    });
    let sm = cc.map(|(a, b)| format!("sm_{a}{b}"));
    let dir = super::cache::default_dir();
    let mut t = NvrtcTiming {
        target: String::new(),
        modules: MODULES.len(),
        compiled: 0,
        compile_secs: 0.0,
        were_cached: 0,
        earlier_compile_secs: 0.0,
        cached_load_secs: 0.0,
        cache: dir
            .clone()
            .ok_or_else(|| "no cache directory (set KFAC_PINN_CACHE_DIR or HOME)".into()),
    };
    let mut targets = Vec::new();
    for m in MODULES {
        let cubin = sm.as_deref().and_then(|sm| {
            nvrtc::compile_cached(m.source, m.name, Target::Cubin(sm))
                .ok()
                .map(|r| (r, Target::Cubin(sm)))
        });
        let ((_, origin), target) = match cubin {
            Some(r) => r,
            None => (
                nvrtc::compile_cached(m.source, m.name, Target::Ptx(PTX_ARCH))?,
                Target::Ptx(PTX_ARCH),
            ),
        };
        match origin {
            Origin::Compiled { secs, stored } => {
                t.compiled += 1;
                t.compile_secs += secs;
                if let Err(e) = stored {
                    t.cache = Err(e);
                }
            }
            Origin::Cached { compile_secs, .. } => {
                t.were_cached += 1;
                t.earlier_compile_secs += compile_secs;
            }
        }
        targets.push((m, target));
    }
    for (m, target) in &targets {
        if let (_, Origin::Cached { load_secs, .. }) =
            nvrtc::compile_cached(m.source, m.name, *target)?
        {
            t.cached_load_secs += load_secs;
        }
    }
    let mut names: Vec<String> = targets
        .iter()
        .map(|(_, tg)| match tg {
            Target::Cubin(a) => format!("{a} cubin"),
            Target::Ptx(a) => format!("{a} PTX"),
        })
        .collect();
    names.dedup();
    t.target = names.join(" + ");
    if cc.is_none() {
        t.target += " (no GPU)";
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver the probe is an error naming the missing library, not a panic;
    /// with one, it counts at least one device.
    #[test]
    fn cuda_probe_without_a_driver_is_an_error() {
        match probe() {
            Ok(p) => assert!(p.devices > 0),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("CUDA") || msg.contains("GPU"), "{msg}");
            }
        }
    }

    /// The release is read from nvcc's version line, and the driver named for it is the
    /// one in NVIDIA's table (13.0 → 580.65.06).
    #[test]
    fn driver_needed_for_embedded_ptx() {
        let line = "Cuda compilation tools, release 13.0, V13.0.88";
        assert_eq!(nvcc_release(line), Some((13, 0)));
        assert_eq!(
            nvcc_release("Cuda compilation tools, release 12.9, V12.9.86"),
            Some((12, 9))
        );
        assert_eq!(nvcc_release("nvcc (version unknown)"), None);
        let d = driver_needed((13, 0));
        assert!(d.contains("CUDA 13.0") && d.contains("580.65.06"), "{d}");
        assert_eq!(driver_needed((14, 2)), "a driver for CUDA 14.2 or newer");
    }
}

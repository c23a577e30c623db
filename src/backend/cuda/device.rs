//! Opening a GPU: checks that the driver library loads (cudarc panics on first use of a
//! missing library, so this comes first), creates the context and one stream, loads the
//! kernel modules (embedded PTX, or NVRTC when there is none or the driver rejects its
//! PTX version) and reads what the launch geometry needs.
//!
//! Without a driver or GPU everything here returns [`Error::Device`]; checked on this
//! machine by `cuda_probe_without_a_driver_is_an_error` below and on a GPU by tests/gpu.rs.

use super::kernels::{Module, MODULES, PTX_ARCH};
use super::launch::DeviceLimits;
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
    // SAFETY: only tries to dlopen the candidate library names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Device(
            "no CUDA driver: libcuda could not be loaded".into(),
        ));
    }
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

/// Load one module: the embedded PTX if there is one and the driver takes it, otherwise
/// NVRTC (a cubin for the device, or PTX if this NVRTC does not know the device).
fn load_module(
    ctx: &Arc<CudaContext>,
    m: &Module,
    cc: (i32, i32),
) -> Result<(Arc<cudarc::driver::CudaModule>, String)> {
    let why = match m.ptx {
        Some(ptx) => match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(module) => {
                let v = super::kernels::NVCC_VERSION.unwrap_or("nvcc");
                return Ok((module, format!("embedded PTX ({PTX_ARCH}, {v})")));
            }
            Err(e)
                if matches!(
                    e.0,
                    CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
                        | CUresult::CUDA_ERROR_INVALID_PTX
                        | CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND
                ) =>
            {
                format!("the driver rejected the embedded PTX: {e}")
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
    let (image, what) = match nvrtc::compile(m.source, m.name, Target::Cubin(&sm)) {
        Ok(c) => (c, format!("NVRTC {maj}.{min} cubin {sm} ({why})")),
        // an NVRTC older than the GPU: PTX for the oldest supported target, JIT-compiled
        Err(_) => {
            let ptx = nvrtc::compile(m.source, m.name, Target::Ptx(PTX_ARCH))?;
            (ptx, format!("NVRTC {maj}.{min} PTX {PTX_ARCH} ({why})"))
        }
    };
    let ptx = if what.contains("cubin") {
        Ptx::from_binary(image)
    } else {
        Ptx::from_src(String::from_utf8_lossy(&image).into_owned())
    };
    let module = ctx
        .load_module(ptx)
        .map_err(|e| drv(&format!("loading kernel module {} ({what})", m.name), e))?;
    Ok((module, what))
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
}

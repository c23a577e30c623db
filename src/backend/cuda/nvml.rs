//! GPU inventory through NVML (nvml-wrapper, which loads libnvidia-ml at run time): name,
//! driver version, memory in use. Without the driver library this is an error, never a
//! panic or a build failure. Used by `kfac-pinn devices` and the CUDA backend's name.
//!
//! `KFAC_PINN_CUDA_LIB_DIR` applies here too: libnvidia-ml.so.1 found there is preloaded
//! (see [`super::loader`]) before nvml-wrapper opens that name.
//!
//! Checked by tests/gpu.rs (on a GPU machine: the inventory lists the device the backend
//! opened) and by the unit test below (no driver: an error, not a panic).

use super::loader::{self, Lib};
use crate::error::{Error, Result};
use nvml_wrapper::Nvml;
use std::path::PathBuf;

/// One GPU as NVML sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    pub index: u32,
    pub name: String,
    /// Bytes of device memory in use (all processes).
    pub memory_used: u64,
    pub memory_total: u64,
}

/// The driver and its GPUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// e.g. "575.57.08"
    pub driver_version: String,
    /// CUDA version the driver supports, e.g. (12, 9).
    pub cuda_version: (i32, i32),
    pub gpus: Vec<GpuInfo>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "NVIDIA driver {} (CUDA {}.{}), {} GPU(s)",
            self.driver_version,
            self.cuda_version.0,
            self.cuda_version.1,
            self.gpus.len()
        )?;
        for g in &self.gpus {
            writeln!(
                f,
                "  [{}] {}: {:.2} of {:.2} GiB in use",
                g.index,
                g.name,
                g.memory_used as f64 / (1u64 << 30) as f64,
                g.memory_total as f64 / (1u64 << 30) as f64
            )?;
        }
        Ok(())
    }
}

fn nvml_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("NVML {what}: {e}"))
}

/// Query NVML. Errors (no driver library, no GPU, NVML failure) are [`Error::Device`].
pub fn device_info() -> Result<DeviceInfo> {
    std::panic::catch_unwind(query).unwrap_or_else(|_| {
        Err(Error::Device(
            "NVML panicked while querying the GPUs".into(),
        ))
    })
}

/// Open NVML (after preloading it from `KFAC_PINN_CUDA_LIB_DIR`); a missing library is
/// the loader's error (names tried, how to point at it).
fn init() -> Result<Nvml> {
    loader::prepare(Lib::Nvml);
    Nvml::init().map_err(|e| match e {
        nvml_wrapper::error::NvmlError::LibloadingError(_) => loader::missing(Lib::Nvml),
        e => nvml_err("init (is the NVIDIA driver installed?)", e),
    })
}

/// The NVML library file this process loaded and its version (for `kfac-pinn devices`).
pub fn library() -> Result<(PathBuf, String)> {
    std::panic::catch_unwind(|| {
        let nvml = init()?;
        let v = nvml
            .sys_nvml_version()
            .map_err(|e| nvml_err("version", e))?;
        // read while `nvml` holds the library open
        let path = loader::mapped_file_named("libnvidia-ml").ok_or_else(|| {
            Error::Device("NVML: loaded, but its file was not found in /proc/self/maps".into())
        })?;
        Ok((path, v))
    })
    .unwrap_or_else(|_| Err(Error::Device("NVML panicked while loading".into())))
}

fn query() -> Result<DeviceInfo> {
    let nvml = init()?;
    let driver_version = nvml
        .sys_driver_version()
        .map_err(|e| nvml_err("driver version", e))?;
    let v = nvml
        .sys_cuda_driver_version()
        .map_err(|e| nvml_err("CUDA version", e))?;
    let count = nvml
        .device_count()
        .map_err(|e| nvml_err("device count", e))?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let d = nvml
            .device_by_index(index)
            .map_err(|e| nvml_err("device", e))?;
        let name = d.name().map_err(|e| nvml_err("device name", e))?;
        let mem = d.memory_info().map_err(|e| nvml_err("memory info", e))?;
        gpus.push(GpuInfo {
            index,
            name,
            memory_used: mem.used,
            memory_total: mem.total,
        });
    }
    Ok(DeviceInfo {
        driver_version,
        cuda_version: (v / 1000, (v % 1000) / 10),
        gpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With or without a driver, the query returns instead of panicking; on a machine
    /// without libnvidia-ml the error says what is missing.
    #[test]
    fn device_info_never_panics() {
        match device_info() {
            Ok(info) => assert!(info.to_string().contains("NVIDIA driver")),
            Err(e) => assert!(e.to_string().contains("NVML"), "{e}"),
        }
        match library() {
            Ok((path, version)) => {
                assert!(path.to_string_lossy().contains("libnvidia-ml"), "{path:?}");
                assert!(!version.is_empty());
            }
            Err(e) => assert!(e.to_string().contains("NVML"), "{e}"),
        }
    }
}

//! Device selection (`--device cpu|cuda|auto`): `cuda` opens GPU 0 or fails with the
//! reason, `auto` falls back to the CPU with the reason (see [`select`]).

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
    #[default]
    Auto,
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda),
            "auto" => Ok(DeviceKind::Auto),
            _ => Err(Error::invalid("device", s, "one of cpu, cuda, auto")),
        }
    }
}

// ---- issue 5: CUDA device selection -----------------------------------------------------

use super::cuda::{self, Cuda};

/// Whether the CUDA backend can run here: the driver library loads and sees a GPU.
/// Never panics; the error names what is missing.
pub fn cuda_available() -> Result<cuda::device::Probe> {
    cuda::device::probe()
}

/// What a `--device` choice resolved to.
pub enum Selected {
    /// The CPU; `fallback` says why `auto` did not pick the GPU.
    Cpu {
        fallback: Option<String>,
    },
    Cuda(Cuda),
}

/// Resolve `--device`: `cpu` is the CPU; `cuda` opens GPU 0 or fails with the reason;
/// `auto` opens GPU 0 when it can and otherwise falls back to the CPU, returning the
/// reason in `fallback` for the caller to print (one line).
pub fn select(kind: DeviceKind) -> Result<Selected> {
    match kind {
        DeviceKind::Cpu => Ok(Selected::Cpu { fallback: None }),
        DeviceKind::Cuda => Cuda::new(0).map(Selected::Cuda).map_err(|e| {
            Error::Device(format!(
                "`--device cuda`: {}",
                e.to_string().trim_start_matches("device error: ")
            ))
        }),
        DeviceKind::Auto => match Cuda::new(0) {
            Ok(c) => Ok(Selected::Cuda(c)),
            Err(e) => Ok(Selected::Cpu {
                fallback: Some(format!(
                    "--device auto: no usable GPU ({}); running on the CPU",
                    e.to_string().trim_start_matches("device error: ")
                )),
            }),
        },
    }
}

/// A few lines describing the compute devices (for `kfac-pinn devices`): the CPU, the
/// CUDA driver and its GPUs (NVML), and how the kernels would be loaded.
pub fn describe() -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "cpu: {} threads (rayon)", rayon::current_num_threads());
    match cuda_available() {
        Ok(p) => {
            let _ = writeln!(
                s,
                "cuda: driver API {}.{}, {} device(s)",
                p.driver_version / 1000,
                (p.driver_version % 1000) / 10,
                p.devices
            );
        }
        Err(e) => {
            let _ = writeln!(s, "cuda: unavailable ({e})");
        }
    }
    match cuda::nvml::device_info() {
        Ok(info) => s.push_str(&info.to_string()),
        Err(e) => {
            let _ = writeln!(s, "nvml: unavailable ({e})");
        }
    }
    let kernels = match cuda::kernels::NVCC_VERSION {
        Some(v) => format!(
            "PTX for {} embedded by nvcc ({v}), NVRTC fallback",
            cuda::kernels::PTX_ARCH
        ),
        None => "sources embedded, compiled by NVRTC when the GPU is opened".to_string(),
    };
    let _ = writeln!(
        s,
        "kernels: {} modules, {kernels}",
        cuda::kernels::MODULES.len()
    );
    s
}

//! Device selection (`--device cpu|cuda|auto`): `cuda` opens GPU 0 or fails with the
//! reason, `auto` falls back to the CPU with the reason (see [`select`]).
//!
//! Checked by tests/cli.rs (a bad `--device` value is an error that names it) and
//! tests/run_safety.rs (training runs with `--device cpu`).

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

// ---- CUDA device selection ------------------------------------------------------------

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

/// An error for a line of `describe`, without repeating a library's not-found message
/// (its `library` line above has it in full).
fn short(e: &Error) -> String {
    let m = e.to_string();
    let m = m.trim_start_matches("device error: ");
    match m.find(" library not found") {
        Some(i) => format!("{} library not found, see above", &m[..i]),
        None => m.to_string(),
    }
}

/// A few lines describing the compute devices (for `kfac-pinn devices`): the CPU, each
/// CUDA library (the file loaded and its version, or what was tried and how to point at
/// it), the driver and its GPUs (NVML), how the kernels would be loaded, and NVRTC's
/// compile and cached-load times. Never panics; loads the libraries into this process.
pub fn describe() -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "cpu: {} threads (rayon)", rayon::current_num_threads());
    let dirs = cuda::loader::lib_dirs();
    let search = if dirs.is_empty() {
        format!(
            "{} unset: the dynamic linker's path only",
            cuda::loader::LIB_DIR_VAR
        )
    } else {
        let d: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "{}={} first, then the dynamic linker's path",
            cuda::loader::LIB_DIR_VAR,
            d.join(":")
        )
    };
    let _ = writeln!(s, "library search: {search}");
    for lib in cuda::loader::Lib::ALL {
        let _ = writeln!(s, "{}", cuda::loader::report(lib));
    }
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
            let _ = writeln!(s, "cuda: unavailable ({})", short(&e));
        }
    }
    match cuda::nvml::device_info() {
        Ok(info) => s.push_str(&info.to_string()),
        Err(e) => {
            let _ = writeln!(s, "nvml: unavailable ({})", short(&e));
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
    match cuda::device::nvrtc_timing() {
        Ok(t) => {
            let _ = writeln!(s, "{t}");
        }
        Err(e) => {
            let _ = writeln!(s, "nvrtc: no compile timing ({})", short(&e));
        }
    }
    s
}

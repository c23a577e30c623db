//! Device selection (`--device cpu|cuda|auto`). The CUDA backend is not built yet; `auto`
//! resolves to the CPU and `cuda` fails with a clear message.

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

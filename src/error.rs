//! Typed library errors. Every error that comes from user input names the offending value
//! and what was expected; the CLI wraps these with `anyhow` context.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// A user-supplied value is out of range or malformed.
    #[error("`{name}` must be {expected}. Got {got}.")]
    Invalid {
        name: String,
        got: String,
        expected: String,
    },
    /// Shapes that must agree do not.
    #[error("dimension mismatch: {0}")]
    Shape(String),
    /// A name that is not in a registry (problem, optimizer, preset, ...).
    #[error("unknown {kind} `{name}`; expected one of: {choices}")]
    Unknown {
        kind: String,
        name: String,
        choices: String,
    },
    /// Training produced a non-finite loss or parameter.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A numerical routine failed (eigendecomposition, SVD, ...).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// The requested device is not usable.
    #[error("device error: {0}")]
    Device(String),
    /// A resource (a run directory) is held by another process.
    #[error("{0}")]
    Busy(String),
    /// A file could not be read or written. The OS error is part of the message and not
    /// a `source`, so error chains print it once.
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    /// A file was read but its contents are not valid.
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
}

impl Error {
    pub fn invalid(
        name: impl Into<String>,
        got: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            name: name.into(),
            got: got.to_string(),
            expected: expected.into(),
        }
    }
    pub fn unknown(kind: &str, name: &str, choices: &[&str]) -> Self {
        Error::Unknown {
            kind: kind.into(),
            name: name.into(),
            choices: choices.join(", "),
        }
    }
    /// Prefix the message of a numerical, non-finite, shape or device error with what was
    /// being computed (other kinds name their subject already).
    pub fn context(self, what: &str) -> Self {
        match self {
            Error::NonFinite(m) => Error::NonFinite(format!("{what}: {m}")),
            Error::Numerical(m) => Error::Numerical(format!("{what}: {m}")),
            Error::Shape(m) => Error::Shape(format!("{what}: {m}")),
            Error::Device(m) => Error::Device(format!("{what}: {m}")),
            e => e,
        }
    }
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            err: source,
        }
    }
}

/// Validation helpers used by every constructor that takes hyperparameters.
pub mod check {
    use super::{Error, Result};

    pub fn finite(name: &str, x: f64) -> Result<f64> {
        if x.is_finite() {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, "a finite number"))
        }
    }
    pub fn positive(name: &str, x: f64) -> Result<f64> {
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, "a finite number > 0"))
        }
    }
    pub fn non_negative(name: &str, x: f64) -> Result<f64> {
        if x.is_finite() && x >= 0.0 {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, "a finite number >= 0"))
        }
    }
    /// `x` in the half-open interval [0, 1).
    pub fn unit_half_open(name: &str, x: f64) -> Result<f64> {
        if x.is_finite() && (0.0..1.0).contains(&x) {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, "in [0, 1)"))
        }
    }
    /// `x` in the open interval (0, 1).
    pub fn unit_open(name: &str, x: f64) -> Result<f64> {
        if x.is_finite() && x > 0.0 && x < 1.0 {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, "in (0, 1)"))
        }
    }
    pub fn at_least(name: &str, x: usize, min: usize) -> Result<usize> {
        if x >= min {
            Ok(x)
        } else {
            Err(Error::invalid(name, x, format!("at least {min}")))
        }
    }
}

//! The CUDA backend (issue 5).
pub mod kernels;
pub mod launch;
pub mod nvrtc;
pub mod ops;

//! kfac-pinn: a trainer for physics-informed neural networks with second-order
//! optimizers (KFAC, KFAC*, ENGD, Hessian-free, HIG), built on the forward Laplacian.
//!
//! Layout (one folder per concern): [`backend`] (the device seam: the CPU reference, the CUDA backend and the CPU emulation of its kernels),
//! [`model`] (the tanh MLP), [`jet`] (forward Laplacian and its reverse mode),
//! [`autodiff`] (the nested-differentiation baseline), [`pde`] (problems), [`loss`]
//! (least-squares objectives), [`optim`], [`train`], [`cli`].

pub mod autodiff;
pub mod backend;
pub mod cli;
pub mod curvature;
pub mod error;
pub mod geometry;
pub mod io;
pub mod jet;
pub mod loss;
pub mod mem;
pub mod model;
pub mod optim;
pub mod pde;
pub mod plot;
pub mod presets;
pub mod rng;
pub mod scalar;
pub mod selfcheck;
pub mod train;

pub use error::{Error, Result};

//! Curvature of least-squares objectives, kept apart from the optimizers that use it:
//! dense residual Jacobians (this file's [`jacobian`]), Gramians, KFAC factors and the
//! Kronecker-sum inverse.

mod jacobian;

pub use jacobian::{jacobian, Jacobian};

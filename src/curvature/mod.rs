//! Curvature of least-squares objectives, kept apart from the optimizers that use it:
//! dense residual Jacobians ([`jacobian`]), Gramians `JᵀJ` (full, per-layer blocks,
//! diagonal; [`Gramian`]), matrix-free Jacobian and Gramian products through the tangent
//! and reverse passes ([`jvp`], [`vjp`], [`gvp`], [`jvp_gram`]), KFAC factors
//! ([`DeviceFactors`] on the backend, accumulated by [`KfacPass`]; [`KfacFactors`] their
//! host copy) and the exact Kronecker-sum inverse ([`KfacInverse`]), Jacobian-vector
//! and Gramian-vector products from a stored KFAC pass ([`JacobianStore`], filled by
//! [`KfacPass`] or, without factors, [`GradStorePass`]); minimum-norm
//! symmetric solves on the backend ([`SymSolve`]);
//! small dense host linear algebra in [`linalg`].

mod gramian;
mod jacobian;
mod kfac;
pub mod linalg;
mod products;
mod solve;
mod store;

pub use gramian::{chunk_jacobian, Gramian, GramianKind};
pub use jacobian::{jacobian, jacobian_into, Jacobian};
pub use kfac::{factor_groups, DeviceFactors, GradStorePass, KfacFactors, KfacInverse, KfacPass};
pub use products::{combine_seeds, gvp, jvp, jvp_gram, vjp};
pub use solve::SymSolve;
pub use store::{JacobianStore, DEFAULT_STORE_BYTES};

//! Kronecker-factored curvature for PINN losses (design §3, docs/paper-setups.md §2.1):
//! per layer and per loss term, the input factor `A = 1/(N·S) Σ_{n,s} z̃ z̃ᵀ` (bias-augmented
//! layer inputs of all S jet rows) and the output factor `B = w/N Σ_{n,s} g gᵀ` (g the
//! un-scaled gradient of r_n with respect to the S layer-output rows), and the exact
//! inverse of the damped two-term Kronecker sum `(A_1+λI)⊗(B_1+λI) + (A_2+λI)⊗(B_2+λI)`.
//!
//! The factors come out of the SAME backward pass as the loss gradient ([`KfacPass`]): the
//! seeds are `∂r/∂y` (un-scaled), each layer's cotangent `g` first feeds `B` (syrk), then is
//! scaled row-wise by `r_n·w/N` and accumulated into the gradient. The reverse pass has
//! already propagated `g` to the layer below when the visitor sees it, so scaling in place
//! is safe. `A`'s bias row comes from column sums of the value rows (Z̃ is never formed);
//! its bias column and corner are filled on the host.
//!
//! The factors live on the backend in f64 ([`DeviceFactors`]; the pass casts its batch
//! factors there and fills A's bias border; the moving average is an axpby). The inverse
//! ([`KfacInverse`]) is computed there too, from f64 symmetric eigendecompositions
//! (`Backend::sym_eig`: faer, or cuSOLVER `syevd`) and small kernels, and applied to the
//! gradient with backend products: `X = K_B [(K_Bᵀ G̃ K_A) ⊘ (1 + s_B s_Aᵀ)] K_Aᵀ` for the
//! gradient matrix `G̃ = [∇W | ∇b]`. A step reads back only the clamped-eigenvalue counts.
//!
//! Files: [`factors`] (host and backend factors), [`pass`] (the gradient-and-factors
//! sweep, and the same sweep for the gradient and the Jacobian store alone:
//! [`GradStorePass`]), [`inverse`] (the Kronecker-sum inverse).
//!
//! Checked by `tests/curvature_kfac.rs`: for one sample of a value-only term the factors'
//! Kronecker product equals the exact Gramian block; the factors against a naive host
//! computation from the layer inputs and cotangents; the inverse against a dense solve
//! and against the host reference `linalg::kron_side`; tests/kernels.rs runs the same
//! inverse through the kernel emulation.

mod factors;
mod inverse;
mod pass;

pub use factors::{factor_groups, DeviceFactors, KfacFactors};
pub use inverse::KfacInverse;
pub use pass::{GradStorePass, KfacPass};

//! Floating-point element types the engine is generic over (f64 by default, f32 as an
//! option). One trait carries what the kernels need: arithmetic, the transcendental
//! functions of the tanh jet, conversions, and the faer bound for dense products.

use std::fmt::{Debug, Display};

/// Element type tag, used by backends that dispatch on precision (CUDA kernels, file formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "single" => Ok(DType::F32),
            "f64" | "float64" | "double" => Ok(DType::F64),
            _ => Err(crate::Error::invalid("dtype", s, "one of f32, f64")),
        }
    }
}

/// A real floating-point scalar (f32 or f64).
pub trait Real:
    faer::traits::RealField
    + Copy
    + Default
    + Debug
    + Display
    + PartialOrd
    + Send
    + Sync
    + std::ops::Neg<Output = Self>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::iter::Sum
    + 'static
{
    const DTYPE: DType;
    /// Machine epsilon.
    const EPS: Self;
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn from_usize(x: usize) -> Self {
        Self::from_f64(x as f64)
    }
    fn tanh(self) -> Self;
    fn exp(self) -> Self;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
    fn is_finite(self) -> bool;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Reinterpret a slice of `Self` as its little-endian bytes (for file output).
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8>;
}

macro_rules! impl_real {
    ($t:ty, $dt:expr) => {
        impl Real for $t {
            const DTYPE: DType = $dt;
            const EPS: Self = <$t>::EPSILON;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                <$t>::min(self, o)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                // A plain multiply-add: `f64::mul_add` is a libm call without FMA codegen.
                self * a + b
            }
            fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8> {
                xs.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        }
    };
}

impl_real!(f32, DType::F32);
impl_real!(f64, DType::F64);

/// Convert a slice between precisions.
pub fn convert<S: Real, T: Real>(xs: &[S]) -> Vec<T> {
    xs.iter().map(|&x| T::from_f64(x.to_f64())).collect()
}

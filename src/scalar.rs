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
                fast_tanh(self as f64) as $t
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

/// `tanh` accurate to a few ulp in f64, branch-free so that loops over slices vectorise.
///
/// libm's `tanh` costs ~30 ns per call on the development machine, which made the tanh of
/// the jet's value rows the dominant cost of small networks. Here `tanh|x| = −m/(2 + m)`
/// with `m = expm1(−2|x|)`: range reduction `−2|x| = n ln2 + r`, `|r| ≤ ln2/2`, a degree-14
/// Taylor polynomial for `expm1(r)` (relative truncation error < 2e-17), and
/// `expm1(−2|x|) = 2ⁿ·expm1(r) + (2ⁿ − 1)` (exact for n = 0, so tiny arguments keep full
/// relative precision). Beyond |x| = 19.1, tanh rounds to ±1. NaN propagates.
/// Checked against `f64::tanh` in the unit tests below.
#[inline(always)]
pub fn fast_tanh(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5·2^52: adding it rounds to an integer held in the low mantissa bits
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let a = x.abs();
    let a = if a > 19.1 { 19.1 } else { a };
    let y = -2.0 * a;
    let t = y * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    // expm1(r) = r + r²/2! + … + r¹⁴/14!
    let mut p = 1.0 / 87_178_291_200.0;
    p = p * r + 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    let em_r = r + r * r * p;
    // 2^n from the integer in t's low bits (n ∈ [−56, 0])
    let nb = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(nb.wrapping_add(1023) << 52);
    let m = scale * em_r + (scale - 1.0);
    let th = -m / (2.0 + m);
    th.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        ((a - b).abs() / (b.abs() * f64::EPSILON)).max(0.0)
    }

    #[test]
    fn fast_tanh_matches_libm_to_a_few_ulp() {
        let mut worst: f64 = 0.0;
        let mut at = 0.0;
        let mut check = |x: f64| {
            let (g, w) = (fast_tanh(x), x.tanh());
            let u = ulps(g, w);
            if u > worst {
                worst = u;
                at = x;
            }
        };
        for i in 0..200_000 {
            let x = (i as f64 / 200_000.0) * 40.0 - 20.0;
            check(x);
        }
        for k in -1070..10 {
            let x = 2f64.powi(k);
            check(x);
            check(-x * 1.37);
        }
        for x in [
            0.0,
            -0.0,
            0.17328679513998632,
            0.3465735902799726,
            0.5493061443340549,
            19.09,
            19.11,
            400.0,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            check(x);
            check(-x);
        }
        assert!(worst <= 4.0, "worst error {worst} ulp at x = {at:e}");
        assert!(fast_tanh(f64::NAN).is_nan());
        assert_eq!(fast_tanh(f64::INFINITY), 1.0);
        assert_eq!(fast_tanh(f64::NEG_INFINITY), -1.0);
        assert!(fast_tanh(-0.0).is_sign_negative());
    }
}

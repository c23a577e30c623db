// Helpers around the cuBLAS / cuSOLVER calls of the CUDA backend: mirroring one triangle
// of a syrk result (cuBLAS writes only one) and packing a strided view into a dense f64
// matrix for the SVD (with a check for non-finite entries); their references are the
// naive loops in tests/kernels.rs (the CPU backend does not need them). Then the small
// kernels of the KFAC inverse on the device (damping, the bias border of an input factor,
// precision casts, the eigenvalue floors and the Kronecker-sum scaling), whose CPU twins
// are `cpu::{add_diag_ref, bias_border_ref, eig_fix_ref, kron_recip_ref}` and `Cpu::cast`;
// and HIG's spectral scaling (`cpu::spectral_scale_ref`).
#include "common.cuh"

// Row-major n × n matrix with leading dimension ld: for every r < c, copy the lower
// triangle's (c, r) to (r, c) when `from_lower`, else (r, c) to (c, r).
template <class T>
__device__ __forceinline__ void symmetrize_k(T* __restrict__ m, i64 n, i64 ld, int from_lower) {
    GRID_STRIDE(e, n * n) {
        const i64 r = e / n, c = e % n;
        if (r < c) {
            if (from_lower)
                m[r * ld + c] = m[c * ld + r];
            else
                m[c * ld + r] = m[r * ld + c];
        }
    }
}
extern "C" __global__ void symmetrize_f32(float* m, i64 n, i64 ld, int from_lower) {
    symmetrize_k(m, n, ld, from_lower);
}
extern "C" __global__ void symmetrize_f64(double* m, i64 n, i64 ld, int from_lower) {
    symmetrize_k(m, n, ld, from_lower);
}

// dst = the rows × cols view of src (leading dimension ld) as dense f64, row-major
// (dst[r·cols + c]) or transposed (dst[c·rows + r]). The smallest row-major index r·cols + c
// of a non-finite entry is folded into *bad with atomicMin (initialise it to ~0).
template <class T>
__device__ __forceinline__ void pack_f64_k(const T* __restrict__ src, i64 rows, i64 cols, i64 ld,
                                           int transpose, double* __restrict__ dst,
                                           u64* __restrict__ bad) {
    GRID_STRIDE(e, rows * cols) {
        const i64 r = e / cols, c = e % cols;
        const double v = (double)src[r * ld + c];
        dst[transpose ? c * rows + r : e] = v;
        // v − v is NaN for ±inf and NaN, 0 otherwise (no fast-math here)
        if (!(v - v == 0.0)) atomicMin(bad, (u64)e);
    }
}
extern "C" __global__ void pack_f64_f32(const float* src, i64 rows, i64 cols, i64 ld,
                                        int transpose, double* dst, u64* bad) {
    pack_f64_k(src, rows, cols, ld, transpose, dst, bad);
}
extern "C" __global__ void pack_f64_f64(const double* src, i64 rows, i64 cols, i64 ld,
                                        int transpose, double* dst, u64* bad) {
    pack_f64_k(src, rows, cols, ld, transpose, dst, bad);
}

// ---- KFAC inverse --------------------------------------------------------------------------

// Damping of a factor: x[i·n + i] += v for i < n (row-major n × n).
template <class T>
__device__ __forceinline__ void add_diag_k(T* __restrict__ x, i64 n, T v) {
    GRID_STRIDE(i, n) x[i * n + i] += v;
}
extern "C" __global__ void add_diag_f32(float* x, i64 n, float v) { add_diag_k(x, n, v); }
extern "C" __global__ void add_diag_f64(double* x, i64 n, double v) { add_diag_k(x, n, v); }

// Bias border of an augmented input factor (row-major n × n): the last column from the
// last row (the column sums of the value rows), and the corner.
template <class T>
__device__ __forceinline__ void bias_border_k(T* __restrict__ a, i64 n, T corner) {
    GRID_STRIDE(i, n) {
        if (i + 1 < n)
            a[i * n + n - 1] = a[(n - 1) * n + i];
        else
            a[n * n - 1] = corner;
    }
}
extern "C" __global__ void bias_border_f32(float* a, i64 n, float c) { bias_border_k(a, n, c); }
extern "C" __global__ void bias_border_f64(double* a, i64 n, double c) { bias_border_k(a, n, c); }

// y[i] = x[i] converted (or copied) between precisions: cast_<from>_<to>.
template <class S, class D>
__device__ __forceinline__ void cast_k(const S* __restrict__ x, D* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] = (D)x[i];
}
extern "C" __global__ void cast_f32_f32(const float* x, float* y, i64 n) { cast_k(x, y, n); }
extern "C" __global__ void cast_f32_f64(const float* x, double* y, i64 n) { cast_k(x, y, n); }
extern "C" __global__ void cast_f64_f32(const double* x, float* y, i64 n) { cast_k(x, y, n); }
extern "C" __global__ void cast_f64_f64(const double* x, double* y, i64 n) { cast_k(x, y, n); }

// Eigenvalue fixes, launched with a single block over v[0..n):
// mode 0: with m = max v and floor = max(n·ε·m, DBL_MIN), v ← 1/sqrt(max(v, floor)),
//         counting the raised ones (the host reports m ≤ 0 as an error);
// mode 1: with m = max |v|, v ← max(v, 0), counting v < −n·10³·ε·m (rounding noise of a
//         semi-definite factor is not counted);
// mode 2: with m = max |v| and cut = n·ε·m, v ← 1/v where |v| > cut (and m > 0), else 0:
//         the pseudo-inverse of a spectrum (LAPACK gelsd's default cut), counting the
//         dropped ones.
// Modes 0 and 1 serve the simultaneous diagonalisation (`curvature::linalg::kron_side`),
// mode 2 the minimum-norm solves (`curvature::linalg::pinv_apply`). The maximum
// propagates NaN, so the host sees a non-finite input. info[0] = the count, info[1] = m.
#define KFAC_DBL_EPS 2.220446049250313e-16
#define KFAC_DBL_MIN 2.2250738585072014e-308
struct MaxNanOp {
    __device__ __forceinline__ double operator()(double a, double b) const {
        return a != a ? a : (b != b ? b : (a > b ? a : b));
    }
};
extern "C" __global__ void eig_fix_f64(double* v, i64 n, int mode, double* info) {
    const MaxNanOp op;
    double m = -1.0 / 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) m = op(m, mode == 0 ? v[i] : fabs(v[i]));
    m = block_reduce(m, op, -1.0 / 0.0);
    __shared__ double shared_m;
    if (threadIdx.x == 0) shared_m = m;
    __syncthreads();
    m = shared_m;
    double count = 0.0;
    if (mode == 0) {
        double floor = (double)n * KFAC_DBL_EPS * m;
        floor = floor > KFAC_DBL_MIN ? floor : KFAC_DBL_MIN;
        if (m > 0.0)
            for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
                double x = v[i];
                if (x < floor) {
                    x = floor;
                    count += 1.0;
                }
                v[i] = 1.0 / sqrt(x);
            }
    } else if (mode == 2) {
        const double cut = (double)n * KFAC_DBL_EPS * m;
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
            const double x = v[i];
            if (fabs(x) > cut && m > 0.0) {
                v[i] = 1.0 / x;
            } else {
                v[i] = 0.0;
                count += 1.0;
            }
        }
    } else {
        const double noise = -(double)n * 1e3 * KFAC_DBL_EPS * m;
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) {
            const double x = v[i];
            if (x < 0.0) {
                if (x < noise) count += 1.0;
                v[i] = 0.0;
            }
        }
    }
    count = block_sum(count);
    if (threadIdx.x == 0) {
        info[0] = count;
        info[1] = m;
    }
}

// The Kronecker-sum scaling d[o·na + i] = 1 / (1 + sb[o]·sa[i]) (o < nb, i < na), in the
// training precision.
template <class T>
__device__ __forceinline__ void kron_recip_k(const double* __restrict__ sa, i64 na,
                                             const double* __restrict__ sb, i64 nb,
                                             T* __restrict__ d) {
    GRID_STRIDE(e, na * nb) {
        const i64 o = e / na, i = e % na;
        d[e] = (T)(1.0 / (1.0 + sb[o] * sa[i]));
    }
}
extern "C" __global__ void kron_recip_f32(const double* sa, i64 na, const double* sb, i64 nb,
                                          float* d) {
    kron_recip_k(sa, na, sb, nb, d);
}
extern "C" __global__ void kron_recip_f64(const double* sa, i64 na, const double* sb, i64 nb,
                                          double* d) {
    kron_recip_k(sa, na, sb, nb, d);
}

// HIG's spectral step (`optim::hig`), one block over the k singular values s
// (non-increasing) and c = Uᵀr̃: c_i ← −s_i^{−κ}·c_i where s_i > τ·s_0 and s_i > 0, else 0.
// info[0] = how many were kept, info[1] = s_0.
extern "C" __global__ void spectral_scale_f64(const double* s, double* c, i64 k, double kappa,
                                              double tau, double* info) {
    const double smax = s[0];
    const double cut = tau * smax;
    double kept = 0.0;
    for (i64 i = threadIdx.x; i < k; i += blockDim.x) {
        if (s[i] > cut && s[i] > 0.0) {
            c[i] *= -pow(s[i], -kappa);
            kept += 1.0;
        } else {
            c[i] = 0.0;
        }
    }
    kept = block_sum(kept);
    if (threadIdx.x == 0) {
        info[0] = kept;
        info[1] = smax;
    }
}

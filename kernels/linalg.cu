// Helpers around the cuBLAS / cuSOLVER calls of the CUDA backend: mirroring one triangle
// of a syrk result (cuBLAS writes only one) and packing a strided view into a dense f64
// matrix for the SVD (with a check for non-finite entries). Their references are the
// naive loops in tests/kernels.rs (the CPU backend does not need them).
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

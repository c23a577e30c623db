// Kernels of the nested-differentiation baseline and of per-sample Jacobians:
// forward-over-reverse through tanh (`ad_tanh_rev`) and the per-sample parameter Jacobian
// rows of one layer (`jac_rows`). CPU twins: `Cpu::ad_tanh_rev`, `Cpu::jac_rows`
// (src/backend/cpu/mod.rs); compared in tests/kernels.rs through the CPU emulation.
#include "common.cuh"

// Block layout as in jet.cu (value rows, then k tangent rows, no Laplacian), in place on g:
// dḡz = s1 dḡa − 2 a ȧ ḡa (tangent rows, read the value-row cotangent first), ḡz = s1 ḡa.
template <class T>
__device__ __forceinline__ void ad_tanh_rev_k(const T* __restrict__ a, T* __restrict__ g, i64 n,
                                              i64 k, i64 h) {
    GRID_STRIDE(e, n * h) {
        const T av = a[e];
        const T gv = g[e];
        const T s1 = T(1) - av * av;
        for (i64 d = 0; d < k; ++d) {
            const i64 idx = (1 + d) * n * h + e;
            g[idx] = s1 * g[idx] - (av + av) * a[idx] * gv;
        }
        g[e] = gv * s1;
    }
}
extern "C" __global__ void ad_tanh_rev_f32(const float* a, float* g, i64 n, i64 k, i64 h) {
    ad_tanh_rev_k(a, g, n, k, h);
}
extern "C" __global__ void ad_tanh_rev_f64(const double* a, double* g, i64 n, i64 k, i64 h) {
    ad_tanh_rev_k(a, g, n, k, h);
}

// Per-sample Jacobian rows of one layer. For sample i (row `row0 + i·row_stride` of `out`,
// leading dimension `ld`): weight entry (o, c) at column w_off + o·fi + c is
// Σ_{r < s} (scale[i]·g[r·n + i, o])·a[r·n + i, c], and bias entry o at column b_off + o is
// scale[i]·g[i, o]. One thread per output entry: n·fo·(fi + 1) of them, the last column of
// each o being the bias. Terms with a zero cotangent are skipped, like the CPU twin.
template <class T>
__device__ __forceinline__ void jac_rows_k(const T* __restrict__ a, const T* __restrict__ g,
                                           const T* __restrict__ scale, T* __restrict__ out, i64 n,
                                           i64 s, i64 fi, i64 fo, i64 row0, i64 row_stride, i64 ld,
                                           i64 w_off, i64 b_off) {
    const i64 per = fo * (fi + 1);
    GRID_STRIDE(e, n * per) {
        const i64 i = e / per, rem = e % per;
        const i64 o = rem / (fi + 1), c = rem % (fi + 1);
        const T sc = scale[i];
        T* row = out + (row0 + i * row_stride) * ld;
        if (c == fi) {
            row[b_off + o] = sc * g[i * fo + o];
        } else {
            T acc = T(0);
            for (i64 r = 0; r < s; ++r) {
                const i64 rr = r * n + i;
                const T gv = g[rr * fo + o] * sc;
                if (gv != T(0)) acc += gv * a[rr * fi + c];
            }
            row[w_off + o * fi + c] = acc;
        }
    }
}
extern "C" __global__ void jac_rows_f32(const float* a, const float* g, const float* scale,
                                        float* out, i64 n, i64 s, i64 fi, i64 fo, i64 row0,
                                        i64 row_stride, i64 ld, i64 w_off, i64 b_off) {
    jac_rows_k(a, g, scale, out, n, s, fi, fo, row0, row_stride, ld, w_off, b_off);
}
extern "C" __global__ void jac_rows_f64(const double* a, const double* g, const double* scale,
                                        double* out, i64 n, i64 s, i64 fi, i64 fo, i64 row0,
                                        i64 row_stride, i64 ld, i64 w_off, i64 b_off) {
    jac_rows_k(a, g, scale, out, n, s, fi, fo, row0, row_stride, ld, w_off, b_off);
}

// Forward-Laplacian (jet) kernels, design §1. Block layout: a chunk of n samples with
// S = 1 + k + ops jet rows each (value, k directions, ops operator rows), h columns; row
// s·n + i holds component s of sample i. The operator weights `coef` are ops × k. Each thread owns one (sample i, unit j) column of a sample's jet and walks
// its S rows, so the fused kernels need no jet-sized temporaries and consecutive threads
// touch consecutive addresses.
//
// CPU twins (same formulas, same operation order): `Cpu::add_bias`, `Cpu::jet_input`,
// `Cpu::jet_broadcast_dirs`, `input_tanh_samples`, `tanh_fwd_samples`, `tanh_bwd_samples`,
// `tanh_tangent_samples`, `Cpu::scale_jet_rows`, `quad_residual_ref`, `quad_tangent_ref`,
// `quad_seeds_ref`
// (src/backend/cpu/jet.rs and cpu/residual.rs).
#include "common.cuh"

// element (row s, sample i, unit j) of a jet block
#define JET(p, s, i, j) (p)[((i64)(s) * n + (i)) * h + (j)]

// x[r, c] += bias[c] for r < rows
template <class T>
__device__ __forceinline__ void add_bias_k(T* __restrict__ x, i64 rows, i64 cols,
                                           const T* __restrict__ b) {
    GRID_STRIDE(e, rows * cols) x[e] += b[e % cols];
}
extern "C" __global__ void add_bias_f32(float* x, i64 rows, i64 cols, const float* b) {
    add_bias_k(x, rows, cols, b);
}
extern "C" __global__ void add_bias_f64(double* x, i64 rows, i64 cols, const double* b) {
    add_bias_k(x, rows, cols, b);
}

// Input jet: values = points, direction d = dirs[d, :], operator rows = 0.
template <class T>
__device__ __forceinline__ void jet_input_k(const T* __restrict__ x, const T* __restrict__ dirs,
                                            T* __restrict__ out, i64 n, i64 k, i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        JET(out, 0, i, j) = x[e];
        for (i64 d = 0; d < k; ++d) JET(out, 1 + d, i, j) = dirs[d * h + j];
        for (i64 o = 0; o < ops; ++o) JET(out, 1 + k + o, i, j) = T(0);
    }
}
extern "C" __global__ void jet_input_f32(const float* x, const float* dirs, float* out, i64 n,
                                         i64 k, i64 ops, i64 h) {
    jet_input_k(x, dirs, out, n, k, ops, h);
}
extern "C" __global__ void jet_input_f64(const double* x, const double* dirs, double* out, i64 n,
                                         i64 k, i64 ops, i64 h) {
    jet_input_k(x, dirs, out, n, k, ops, h);
}

// First linear layer: direction rows = wv[d, :] for every sample, operator rows = 0.
template <class T>
__device__ __forceinline__ void jet_broadcast_dirs_k(T* __restrict__ z, const T* __restrict__ wv,
                                                     i64 n, i64 k, i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        for (i64 d = 0; d < k; ++d) JET(z, 1 + d, i, j) = wv[d * h + j];
        for (i64 o = 0; o < ops; ++o) JET(z, 1 + k + o, i, j) = T(0);
    }
}
extern "C" __global__ void jet_broadcast_dirs_f32(float* z, const float* wv, i64 n, i64 k, i64 ops,
                                                  i64 h) {
    jet_broadcast_dirs_k(z, wv, n, k, ops, h);
}
extern "C" __global__ void jet_broadcast_dirs_f64(double* z, const double* wv, i64 n, i64 k,
                                                  i64 ops, i64 h) {
    jet_broadcast_dirs_k(z, wv, n, k, ops, h);
}

// Fused first layer + tanh, in place: value rows hold x Wᵀ + b on entry.
// a = tanh z, ∂_d a = s1·wv[d], L_o a = s2·Σ_d c_od wv[d]² (s2 = −2a·s1; coef is ops × k).
template <class T>
__device__ __forceinline__ void jet_input_tanh_k(T* __restrict__ z, const T* __restrict__ wv,
                                                 const T* __restrict__ coef, i64 n, i64 k,
                                                 i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        const T t = k_tanh(JET(z, 0, i, j));
        const T s1 = T(1) - t * t;
        JET(z, 0, i, j) = t;
        for (i64 d = 0; d < k; ++d) JET(z, 1 + d, i, j) = s1 * wv[d * h + j];
        for (i64 o = 0; o < ops; ++o) {
            T q = T(0);
            for (i64 d = 0; d < k; ++d) {
                const T w = wv[d * h + j];
                q += coef[o * k + d] * w * w;
            }
            JET(z, 1 + k + o, i, j) = -(t + t) * s1 * q;
        }
    }
}
extern "C" __global__ void jet_input_tanh_f32(float* z, const float* wv, const float* coef, i64 n,
                                              i64 k, i64 ops, i64 h) {
    jet_input_tanh_k(z, wv, coef, n, k, ops, h);
}
extern "C" __global__ void jet_input_tanh_f64(double* z, const double* wv, const double* coef,
                                              i64 n, i64 k, i64 ops, i64 h) {
    jet_input_tanh_k(z, wv, coef, n, k, ops, h);
}

// tanh jet: a = tanh z, ∂_d a = s1 ∂_d z, L_o a = s1 L_o z + s2 Σ_d c_od (∂_d z)² for each
// of the ops operator rows (coef is ops × k).
// `a` may equal `z` (in place): each element is read before it is written, by the same
// thread. Hence no __restrict__ on z and a. Rows o ≥ 1 are done first, while the direction
// rows still hold ∂_d z; row 0 is fused with the direction rows' update (the one-operator
// jets of the built-in problems take exactly the single-row path).
template <class T>
__device__ __forceinline__ void jet_tanh_k(const T* z, T* a, const T* __restrict__ coef, i64 n,
                                           i64 k, i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        const T t = k_tanh(JET(z, 0, i, j));
        const T s1 = T(1) - t * t;
        const T s2 = -(t + t) * s1;
        JET(a, 0, i, j) = t;
        for (i64 o = 1; o < ops; ++o) {
            T q = T(0);
            for (i64 d = 0; d < k; ++d) {
                const T dz = JET(z, 1 + d, i, j);
                q += coef[o * k + d] * dz * dz;
            }
            JET(a, 1 + k + o, i, j) = s1 * JET(z, 1 + k + o, i, j) + s2 * q;
        }
        T acc = T(0);
        for (i64 d = 0; d < k; ++d) {
            const T dz = JET(z, 1 + d, i, j);
            if (ops > 0) acc += coef[d] * dz * dz;
            JET(a, 1 + d, i, j) = s1 * dz;
        }
        if (ops > 0) JET(a, 1 + k, i, j) = s1 * JET(z, 1 + k, i, j) + s2 * acc;
    }
}
extern "C" __global__ void jet_tanh_f32(const float* z, float* a, const float* coef, i64 n, i64 k,
                                        i64 ops, i64 h) {
    jet_tanh_k(z, a, coef, n, k, ops, h);
}
extern "C" __global__ void jet_tanh_f64(const double* z, double* a, const double* coef, i64 n,
                                        i64 k, i64 ops, i64 h) {
    jet_tanh_k(z, a, coef, n, k, ops, h);
}

// Reverse mode through the tanh jet (design §1), in place on g; `act` holds at least the
// value rows tanh z of the forward pass (read, not recomputed). One operator row:
// ḡΔz = s1 ḡΔa; ḡ∂_d z = s1 ḡ∂_d a + 2 c_d s2 ∂_d z ḡΔa;
// ḡz = s1 ḡa + s2 Σ_d ∂_d z ḡ∂_d a + s2 Δz ḡΔa + s3 Σ_d c_d (∂_d z)² ḡΔa.
// Any other number of rows (CPU twin `tanh_bwd_general`): with w_d = Σ_o c_od ḡL_o a,
// ḡ∂_d z = s1 ḡ∂_d a + 2 s2 ∂_d z w_d, ḡz = s1 ḡa + Σ_d (s2 ∂_d z ḡ∂_d a + (∂_d z)² s3 w_d)
// + Σ_o s2 L_o z ḡL_o a, ḡL_o z = s1 ḡL_o a.
template <class T>
__device__ __forceinline__ void jet_tanh_backward_k(const T* __restrict__ z,
                                                    const T* __restrict__ act, T* __restrict__ g,
                                                    const T* __restrict__ coef, i64 n, i64 k,
                                                    i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        const T t = act[e];
        const T s1 = T(1) - t * t;
        const T s2 = -(t + t) * s1;
        T acc = s1 * JET(g, 0, i, j);
        if (ops == 1) {
            const T t2 = T(1) - s1;  // tanh², as the CPU twin computes it
            const T gl = JET(g, 1 + k, i, j);
            const T s3gl = s1 * (T(6) * t2 - T(2)) * gl;
            acc += s2 * JET(z, 1 + k, i, j) * gl;
            JET(g, 1 + k, i, j) = s1 * gl;
            for (i64 d = 0; d < k; ++d) {
                const T dz = JET(z, 1 + d, i, j);
                const T gg = JET(g, 1 + d, i, j);
                const T c = coef[d];
                acc += s2 * dz * gg + c * dz * dz * s3gl;
                JET(g, 1 + d, i, j) = s1 * gg + T(2) * c * s2 * dz * gl;
            }
        } else {
            const T s3 = s1 * (T(6) * (T(1) - s1) - T(2));
            for (i64 d = 0; d < k; ++d) {
                T w = T(0);
                for (i64 o = 0; o < ops; ++o) w += coef[o * k + d] * JET(g, 1 + k + o, i, j);
                const T dz = JET(z, 1 + d, i, j);
                const T gg = JET(g, 1 + d, i, j);
                acc += s2 * dz * gg + dz * dz * (s3 * w);
                JET(g, 1 + d, i, j) = s1 * gg + T(2) * s2 * dz * w;
            }
            for (i64 o = 0; o < ops; ++o) {
                const T gl = JET(g, 1 + k + o, i, j);
                acc += s2 * JET(z, 1 + k + o, i, j) * gl;
                JET(g, 1 + k + o, i, j) = s1 * gl;
            }
        }
        JET(g, 0, i, j) = acc;
    }
}
extern "C" __global__ void jet_tanh_backward_f32(const float* z, const float* a, float* g,
                                                 const float* coef, i64 n, i64 k, i64 ops,
                                                 i64 h) {
    jet_tanh_backward_k(z, a, g, coef, n, k, ops, h);
}
extern "C" __global__ void jet_tanh_backward_f64(const double* z, const double* a, double* g,
                                                 const double* coef, i64 n, i64 k, i64 ops,
                                                 i64 h) {
    jet_tanh_backward_k(z, a, g, coef, n, k, ops, h);
}

// Tangent through the tanh jet (the linearisation of jet_tanh), in place on t; `a` holds
// at least the value rows tanh z:
// ȧ = s1 ż; ∂_d ȧ = s1 ∂_d ż + s2 ż ∂_d z;
// L_o ȧ = s1 L_o ż + s2 ż L_o z + s3 ż Σ_d c_od (∂_d z)² + 2 s2 Σ_d c_od ∂_d z ∂_d ż.
// Rows o ≥ 1 first, while the direction rows of t still hold ∂_d ż.
template <class T>
__device__ __forceinline__ void jet_tanh_tangent_k(const T* __restrict__ z,
                                                   const T* __restrict__ act, T* __restrict__ t,
                                                   const T* __restrict__ coef, i64 n, i64 k,
                                                   i64 ops, i64 h) {
    GRID_STRIDE(e, n * h) {
        const i64 i = e / h, j = e % h;
        const T a = act[e];
        const T s1 = T(1) - a * a;
        const T s2 = -(a + a) * s1;
        const T s3 = s1 * (T(6) * a * a - T(2));
        const T zd = JET(t, 0, i, j);
        JET(t, 0, i, j) = s1 * zd;
        for (i64 o = 1; o < ops; ++o) {
            T q = T(0), x = T(0);
            for (i64 d = 0; d < k; ++d) {
                const T c = coef[o * k + d];
                const T dz = JET(z, 1 + d, i, j);
                const T dzd = JET(t, 1 + d, i, j);
                q += c * dz * dz;
                x += c * dz * dzd;
            }
            const T lz = JET(z, 1 + k + o, i, j);
            const T lzd = JET(t, 1 + k + o, i, j);
            JET(t, 1 + k + o, i, j) = s1 * lzd + s2 * zd * lz + s3 * zd * q + T(2) * s2 * x;
        }
        T q = T(0), x = T(0);
        for (i64 d = 0; d < k; ++d) {
            const T dz = JET(z, 1 + d, i, j);
            const T dzd = JET(t, 1 + d, i, j);
            if (ops > 0) {
                const T c = coef[d];
                q += c * dz * dz;
                x += c * dz * dzd;
            }
            JET(t, 1 + d, i, j) = s1 * dzd + s2 * zd * dz;
        }
        if (ops > 0) {
            const T lz = JET(z, 1 + k, i, j);
            const T lzd = JET(t, 1 + k, i, j);
            JET(t, 1 + k, i, j) = s1 * lzd + s2 * zd * lz + s3 * zd * q + T(2) * s2 * x;
        }
    }
}
extern "C" __global__ void jet_tanh_tangent_f32(const float* z, const float* a, float* t,
                                                const float* coef, i64 n, i64 k, i64 ops, i64 h) {
    jet_tanh_tangent_k(z, a, t, coef, n, k, ops, h);
}
extern "C" __global__ void jet_tanh_tangent_f64(const double* z, const double* a, double* t,
                                                const double* coef, i64 n, i64 k, i64 ops,
                                                i64 h) {
    jet_tanh_tangent_k(z, a, t, coef, n, k, ops, h);
}

// dst[r, :] = w[r mod n] · src[r, :] for the rows·h elements of a jet block; in place when
// dst == src (so no __restrict__ on them: each element is read before it is written).
template <class T>
__device__ __forceinline__ void scale_jet_rows_k(T* dst, const T* src, const T* __restrict__ w,
                                                 i64 n, i64 rows, i64 h) {
    GRID_STRIDE(e, rows * h) dst[e] = src[e] * w[(e / h) % n];
}
extern "C" __global__ void scale_jet_rows_f32(float* g, const float* w, i64 n, i64 rows, i64 h) {
    scale_jet_rows_k(g, g, w, n, rows, h);
}
extern "C" __global__ void scale_jet_rows_f64(double* g, const double* w, i64 n, i64 rows, i64 h) {
    scale_jet_rows_k(g, g, w, n, rows, h);
}
extern "C" __global__ void scale_jet_rows_to_f32(float* dst, const float* src, const float* w,
                                                 i64 n, i64 rows, i64 h) {
    scale_jet_rows_k(dst, src, w, n, rows, h);
}
extern "C" __global__ void scale_jet_rows_to_f64(double* dst, const double* src, const double* w,
                                                 i64 n, i64 rows, i64 h) {
    scale_jet_rows_k(dst, src, w, n, rows, h);
}

// Residuals of the built-in problems as quadratic forms of the output jet (one residual per
// sample, design §2): r_i = d[f+i] + Σ_c (a[(f+i)·C + c] + b[c]·y_ic)·y_ic over the C = S·m
// jet entries c = s·m + j of sample i, y_ic = y[(s·n + i)·m + j] (block layout, h = m), for
// the chunk of n samples that starts at sample f of the term. One thread per sample; the sum
// runs in the order of the CPU twin (`cpu::quad_residual_ref`).
template <class T>
__device__ __forceinline__ void quad_residual_k(const T* __restrict__ y, const T* __restrict__ a,
                                                const T* __restrict__ b, const T* __restrict__ d,
                                                T* __restrict__ r, i64 f, i64 n, i64 s, i64 m) {
    const i64 C = s * m;
    GRID_STRIDE(i, n) {
        T acc = d[f + i];
        for (i64 c = 0; c < C; ++c) {
            const T v = y[((c / m) * n + i) * m + c % m];
            acc += (a[(f + i) * C + c] + b[c] * v) * v;
        }
        r[i] = acc;
    }
}
extern "C" __global__ void quad_residual_f32(const float* y, const float* a, const float* b,
                                             const float* d, float* r, i64 f, i64 n, i64 s,
                                             i64 m) {
    quad_residual_k(y, a, b, d, r, f, n, s, m);
}
extern "C" __global__ void quad_residual_f64(const double* y, const double* a, const double* b,
                                             const double* d, double* r, i64 f, i64 n, i64 s,
                                             i64 m) {
    quad_residual_k(y, a, b, d, r, f, n, s, m);
}

// Directional derivative of those residuals along an output-jet tangent ẏ (same block
// layout as y): t_i = Σ_c (a_ic + 2 b_c y_ic)·ẏ_ic, the rows of J·v. One thread per sample,
// summed in the order of the CPU twin (`cpu::quad_tangent_ref`).
template <class T>
__device__ __forceinline__ void quad_tangent_k(const T* __restrict__ y, const T* __restrict__ a,
                                               const T* __restrict__ b,
                                               const T* __restrict__ yd, T* __restrict__ t,
                                               i64 f, i64 n, i64 s, i64 m) {
    const i64 C = s * m;
    GRID_STRIDE(i, n) {
        T acc = T(0);
        for (i64 c = 0; c < C; ++c) {
            const i64 e = ((c / m) * n + i) * m + c % m;
            acc += (a[(f + i) * C + c] + T(2) * b[c] * y[e]) * yd[e];
        }
        t[i] = acc;
    }
}
extern "C" __global__ void quad_tangent_f32(const float* y, const float* a, const float* b,
                                            const float* yd, float* t, i64 f, i64 n, i64 s,
                                            i64 m) {
    quad_tangent_k(y, a, b, yd, t, f, n, s, m);
}
extern "C" __global__ void quad_tangent_f64(const double* y, const double* a, const double* b,
                                            const double* yd, double* t, i64 f, i64 n, i64 s,
                                            i64 m) {
    quad_tangent_k(y, a, b, yd, t, f, n, s, m);
}

// Gauss–Newton seeds of those residuals, in the output jet's block layout:
// g_ic = (alpha·r_i + beta)·∂r_i/∂y_ic = (alpha·r_i + beta)·(a_ic + 2 b_c y_ic): the loss
// gradient's seeds with alpha = w/N, beta = 0; the un-scaled Jacobian with alpha = 0, beta = 1.
template <class T>
__device__ __forceinline__ void quad_seeds_k(const T* __restrict__ y, const T* __restrict__ a,
                                             const T* __restrict__ b, const T* __restrict__ r,
                                             T* __restrict__ g, T alpha, T beta, i64 f, i64 n,
                                             i64 s, i64 m) {
    GRID_STRIDE(e, n * s * m) {
        const i64 j = e % m, i = (e / m) % n, c = (e / (m * n)) * m + j;
        const T v = y[e];
        g[e] = (alpha * r[i] + beta) * (a[(f + i) * s * m + c] + T(2) * b[c] * v);
    }
}
extern "C" __global__ void quad_seeds_f32(const float* y, const float* a, const float* b,
                                          const float* r, float* g, float alpha, float beta,
                                          i64 f, i64 n, i64 s, i64 m) {
    quad_seeds_k(y, a, b, r, g, alpha, beta, f, n, s, m);
}
extern "C" __global__ void quad_seeds_f64(const double* y, const double* a, const double* b,
                                          const double* r, double* g, double alpha, double beta,
                                          i64 f, i64 n, i64 s, i64 m) {
    quad_seeds_k(y, a, b, r, g, alpha, beta, f, n, s, m);
}

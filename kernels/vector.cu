// Elementwise vector kernels: fill, scale, axpby, mul (elementwise product) and the Adam
// update. CPU twins: `Cpu::{fill, scale, axpby}`, `cpu::mul_ref`, `cpu::adam_ref`
// (src/backend/cpu/mod.rs and cpu/vector.rs); compared in tests/kernels.rs through the CPU emulation.
#include "common.cuh"

// x[i] = v
template <class T>
__device__ __forceinline__ void fill_k(T* __restrict__ x, i64 n, T v) {
    GRID_STRIDE(i, n) x[i] = v;
}
extern "C" __global__ void fill_f32(float* x, i64 n, float v) { fill_k(x, n, v); }
extern "C" __global__ void fill_f64(double* x, i64 n, double v) { fill_k(x, n, v); }

// x[i] = alpha x[i]
template <class T>
__device__ __forceinline__ void scale_k(T* __restrict__ x, i64 n, T alpha) {
    GRID_STRIDE(i, n) x[i] *= alpha;
}
extern "C" __global__ void scale_f32(float* x, i64 n, float alpha) { scale_k(x, n, alpha); }
extern "C" __global__ void scale_f64(double* x, i64 n, double alpha) { scale_k(x, n, alpha); }

// y[i] = alpha x[i] + beta y[i]  (beta = 1 gives y + alpha x exactly, as on the CPU)
template <class T>
__device__ __forceinline__ void axpby_k(const T* __restrict__ x, T* __restrict__ y, i64 n,
                                        T alpha, T beta) {
    GRID_STRIDE(i, n) y[i] = alpha * x[i] + beta * y[i];
}
extern "C" __global__ void axpby_f32(const float* x, float* y, i64 n, float alpha, float beta) {
    axpby_k(x, y, n, alpha, beta);
}
extern "C" __global__ void axpby_f64(const double* x, double* y, i64 n, double alpha,
                                     double beta) {
    axpby_k(x, y, n, alpha, beta);
}

// y[i] *= x[i]
template <class T>
__device__ __forceinline__ void mul_k(const T* __restrict__ x, T* __restrict__ y, i64 n) {
    GRID_STRIDE(i, n) y[i] *= x[i];
}
extern "C" __global__ void mul_f32(const float* x, float* y, i64 n) { mul_k(x, y, n); }
extern "C" __global__ void mul_f64(const double* x, double* y, i64 n) { mul_k(x, y, n); }

// One Adam step. `lr` is lr / (1 - β1^t) and `rbc2` is 1 / sqrt(1 - β2^t), both folded on
// the host exactly as `cpu::adam_ref` folds them.
template <class T>
__device__ __forceinline__ void adam_k(T* __restrict__ p, const T* __restrict__ g,
                                       T* __restrict__ m, T* __restrict__ v, i64 n, T b1, T b2,
                                       T lr, T rbc2, T eps) {
    GRID_STRIDE(i, n) {
        const T gi = g[i];
        const T mi = b1 * m[i] + (T(1) - b1) * gi;
        const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * mi / (k_sqrt(vi) * rbc2 + eps);
    }
}
extern "C" __global__ void adam_f32(float* p, const float* g, float* m, float* v, i64 n, float b1,
                                    float b2, float lr, float rbc2, float eps) {
    adam_k(p, g, m, v, n, b1, b2, lr, rbc2, eps);
}
extern "C" __global__ void adam_f64(double* p, const double* g, double* m, double* v, i64 n,
                                    double b1, double b2, double lr, double rbc2, double eps) {
    adam_k(p, g, m, v, n, b1, b2, lr, rbc2, eps);
}

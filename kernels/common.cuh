// Shared device helpers for the kfac-pinn kernels: index types, grid-stride loops,
// precision-overloaded math (libdevice tanh/sqrt), warp and block reductions.
//
// Every kernel file includes this header and nothing else, so the same sources compile
// with nvcc (build.rs, to PTX), with NVRTC (run-time fallback; build.rs inlines this
// header into the embedded source) and with a host C++ compiler against
// kernels/emu/cuda_emu.h (the CPU emulation that tests/kernels.rs runs).
// No standard headers: NVRTC has none.
#pragma once

typedef long long i64;
typedef unsigned long long u64;

// Threads per block of the 1-D kernels. The Rust launch geometry
// (src/backend/cuda/launch.rs, BLOCK) uses the same number; the block reductions below
// assume a multiple of 32 and at most 1024.
#define KFAC_WARP 32
#define KFAC_MAX_WARPS 32

// Global linear thread index and total thread count of a 1-D launch, in 64 bits so that
// jets of more than 2^31 elements index correctly.
__device__ __forceinline__ i64 global_tid() {
    return (i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x;
}
__device__ __forceinline__ i64 global_threads() {
    return (i64)gridDim.x * (i64)blockDim.x;
}

// Grid-stride loop over [0, n): correct for any grid size, so the host may cap the grid.
#define GRID_STRIDE(i, n) for (i64 i = global_tid(); i < (n); i += global_threads())

// Precision-overloaded math: tanhf/tanh and sqrtf/sqrt are libdevice's accurate versions
// on the GPU (not tanh.approx), <math.h>'s in the emulation.
__device__ __forceinline__ float k_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double k_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float k_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double k_sqrt(double x) { return sqrt(x); }

// Reduction operators for the warp and block reductions below.
struct SumOp {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    template <class T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

// Reduce over the 32 lanes of a warp; every lane gets the result. All 32 lanes must call it.
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
    for (int o = KFAC_WARP / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
    return warp_reduce(v, SumOp());
}

// Reduce over all threads of a 1-D block (blockDim.x a multiple of 32, at most 1024) with
// `op`, whose neutral element is `id`; the result is valid in thread 0. Every thread of the
// block must call it (it synchronises).
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T id) {
    __shared__ T partial[KFAC_MAX_WARPS];
    const int lane = threadIdx.x % KFAC_WARP;
    const int warp = threadIdx.x / KFAC_WARP;
    const int warps = blockDim.x / KFAC_WARP;
    v = warp_reduce(v, op);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T w = lane < warps ? partial[lane] : id;
        for (int o = KFAC_WARP / 2; o > 0; o /= 2) w = op(w, __shfl_down_sync(0xffffffffu, w, o));
        v = w;
    }
    // partial[] may be reused by a later call in the same kernel
    __syncthreads();
    return v;
}
template <class T>
__device__ __forceinline__ T block_sum(T v) {
    return block_reduce(v, SumOp(), T(0));
}

// CPU emulation of the small part of CUDA C++ that kernels/*.cu use, so that the
// UNCHANGED kernel sources compile with a host C++ compiler and run in `cargo test`
// (tests/kernels.rs compares every kernel with its CPU twin this way).
//
// Execution model (kernels/emu/runtime.cpp): the blocks of a launch run one after another
// on the calling thread; the threads of a block run as cooperative fibers (ucontext).
// A fiber runs until it reaches a synchronisation point (__syncthreads or a warp shuffle)
// and then yields; a barrier releases its fibers only once every thread of the block (or
// every lane named by the shuffle mask) has arrived, so the semantics are CUDA's, and a
// kernel that would hang on a GPU (a barrier some threads never reach, a shuffle with an
// exited lane in its mask) is reported as an error instead of passing by accident.
// __shared__ variables are function-scope statics (one block runs at a time per OS
// thread, so all threads of a block see the same object, as on the GPU).
//
// Checks beyond CUDA's semantics (runtime.cpp, driven by src/backend/emu/mod.rs): a launch
// can run under several schedules (the order in which ready fibers and blocks run:
// index order, reverse, seeded random permutations) on fresh copies of its buffers placed
// against PROT_NONE guard pages, and the results must agree — a missing __syncthreads or
// a race through shared or global memory shows up as a mismatch, an out-of-bounds access
// as a fault reported with the kernel's name. Float atomics make the result depend on the
// order of additions, so they are counted (note_float_atomic) and such launches are
// compared with a tolerance instead of bitwise.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <atomic>

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

namespace emu {
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
// Lane of the calling thread within its warp (linear thread index mod 32).
int lane_id();
// Block-wide barrier.
void sync_block();
// Warp-wide exchange: every lane in `mask` contributes `bits` and receives the bits of
// lane `src` (its own when `src` is outside the warp or not in the mask).
uint64_t warp_exchange(uint64_t bits, int src, unsigned mask);
// Count a floating-point atomic of the running launch (its result depends on the order).
void note_float_atomic();
// Called after every __shared__ declaration (build.rs appends the call to the emulation's
// copy of the sources): the first thread of a block to reach it fills the variable with a
// poison byte (0xff under schedule 0, other bytes under other schedules), so a read before
// any thread of the block wrote it yields garbage, and garbage that differs between
// schedules, instead of what an earlier block or launch left in the static.
void note_shared_bytes(void* p, size_t n);
template <class T>
inline void note_shared(T* p, size_t n) {
    note_shared_bytes((void*)p, n);
}

template <class T>
inline T shfl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    b = warp_exchange(b, src, mask);
    T r;
    memcpy(&r, &b, sizeof(T));
    return r;
}
}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
#define warpSize 32

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __launch_bounds__(...)

inline void __syncthreads() { ::emu::sync_block(); }

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::emu::lane_id();
    return ::emu::shfl(mask, v, lane / width * width + src % width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::emu::lane_id();
    int src = lane + (int)delta;
    if (src >= lane / width * width + width) src = lane;
    return ::emu::shfl(mask, v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::emu::lane_id();
    int src = lane - (int)delta;
    if (src < lane / width * width) src = lane;
    return ::emu::shfl(mask, v, src);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::emu::lane_id();
    int src = lane ^ lane_mask;
    if (src / width != lane / width) src = lane;
    return ::emu::shfl(mask, v, src);
}

// Atomics. Fibers never preempt each other, but blocks may one day run on several OS
// threads, so these are real atomic read-modify-writes.
inline float atomicAdd(float* p, float v) {
    ::emu::note_float_atomic();
    return std::atomic_ref<float>(*p).fetch_add(v);
}
inline double atomicAdd(double* p, double v) {
    ::emu::note_float_atomic();
    return std::atomic_ref<double>(*p).fetch_add(v);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    std::atomic_ref<unsigned long long> a(*p);
    unsigned long long old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    std::atomic_ref<unsigned long long> a(*p);
    unsigned long long old = a.load();
    while (v > old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}

// Device math that <math.h> lacks.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

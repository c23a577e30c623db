// Self-test kernels of the CPU emulation (compiled only into the emulation, never to PTX):
// they pin the emulated warp-shuffle, shared-memory and barrier semantics to CUDA's, and
// check that code which would hang a GPU is reported (driven by tests/kernels.rs); and they
// plant the bugs the emulation's checks must catch: races, out-of-bounds accesses, float
// atomics (driven by tests/emu_checks.rs).
#include "../common.cuh"

__device__ __forceinline__ i64 lane_value() {
    return 1000 * (threadIdx.x / 32) + 100 + threadIdx.x % 32;
}

extern "C" __global__ void emu_shfl_down(i64* out) {
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, lane_value(), 3);
}
extern "C" __global__ void emu_shfl_xor(i64* out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, lane_value(), 5);
}
extern "C" __global__ void emu_shfl_up_width8(i64* out) {
    out[threadIdx.x] = __shfl_up_sync(0xffffffffu, lane_value(), 2, 8);
}
extern "C" __global__ void emu_shfl_idx(i64* out) {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, lane_value(), 7);
}
extern "C" __global__ void emu_warp_sum(i64* out) { out[threadIdx.x] = warp_sum(lane_value()); }

extern "C" __global__ void emu_shared_rotate(i64* out) {
    __shared__ i64 s[1024];
    const i64 t = threadIdx.x;
    s[t] = t * t;
    __syncthreads();
    out[t] = s[(t + 1) % blockDim.x];
}

extern "C" __global__ void emu_block_sum(i64* out) {
    const i64 total = block_sum((i64)threadIdx.x);
    if (threadIdx.x == 0) out[0] = total;
}

// Half the block returns before a barrier the other half waits at.
extern "C" __global__ void emu_divergent_barrier(i64* out) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

// Lane 3 exits, the others shuffle with a full mask.
extern "C" __global__ void emu_shfl_with_exited_lane(i64* out) {
    if (threadIdx.x == 3) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (i64)threadIdx.x, 1);
}

// ---- planted bugs (tests/emu_checks.rs) -------------------------------------------------

// emu_shared_rotate without its __syncthreads: thread t reads the slot of thread t + 1,
// which only a schedule that ran t + 1 first has written (a GPU gives either).
extern "C" __global__ void emu_race_shared(i64* out) {
    __shared__ i64 s[1024];
    const i64 t = threadIdx.x;
    s[t] = t * t;
    out[t] = s[(t + 1) % blockDim.x];
}

// Block b > 0 adds one to what block b − 1 wrote: blocks are unordered on a GPU.
extern "C" __global__ void emu_race_blocks(i64* x) {
    if (threadIdx.x == 0 && blockIdx.x > 0) x[blockIdx.x] = x[blockIdx.x - 1] + 1;
}

// The sum of x[0..n) by one block into out[0], correctly synchronised, with the block
// reduction of common.cuh (its shared partials are poisoned per block).
extern "C" __global__ void emu_block_sum_f64(const double* x, i64 n, double* out) {
    double v = 0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
    v = block_sum(v);
    if (threadIdx.x == 0) out[0] = v;
}

// Writes x[0..n], one element past the end of a buffer of n.
extern "C" __global__ void emu_oob_write(i64* x, i64 n) {
    GRID_STRIDE(i, n + 1) x[i] = i;
}

// Reads x[i − 1] for i in [0, n): one element before the start.
extern "C" __global__ void emu_oob_read_before(const i64* x, i64* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = x[i - 1];
}

// Writes its input (declared const in spirit: the op passes it read-only).
extern "C" __global__ void emu_write_input(i64* x, i64 n) {
    GRID_STRIDE(i, n) x[i] += 1;
}

// out[0] += Σ x[i] with float atomics: the rounding depends on the order of the adds.
extern "C" __global__ void emu_atomic_sum_f32(const float* x, i64 n, float* out) {
    GRID_STRIDE(i, n) atomicAdd(out, x[i]);
}

// Self-test kernels of the CPU emulation (compiled only into the emulation, never to PTX):
// they pin the emulated warp-shuffle, shared-memory and barrier semantics to CUDA's, and
// check that code which would hang a GPU is reported. Driven by tests/kernels.rs.
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

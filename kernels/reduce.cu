// Reductions: dot and squared distance (two passes: per-block partial sums in f64, then
// one block sums the partials), column sums (row-partitioned partial sums, then a per-column finish) and
// row-wise dot products (one warp per row). CPU twins: `Cpu::dot`, `Cpu::col_sum`,
// `cpu::row_dot_ref`; compared in tests/kernels.rs through the CPU emulation.
#include "common.cuh"

// partial[blockIdx.x] = Σ over this block's grid-stride share of x[i]·y[i], in f64 like
// the CPU's `dot` (which converts each factor to f64 before multiplying).
template <class T>
__device__ __forceinline__ void dot_partial_k(const T* __restrict__ x, const T* __restrict__ y,
                                              i64 n, double* __restrict__ partial) {
    double acc = 0.0;
    GRID_STRIDE(i, n) acc += (double)x[i] * (double)y[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" __global__ void dot_partial_f32(const float* x, const float* y, i64 n,
                                           double* partial) {
    dot_partial_k(x, y, n, partial);
}
extern "C" __global__ void dot_partial_f64(const double* x, const double* y, i64 n,
                                           double* partial) {
    dot_partial_k(x, y, n, partial);
}

// partial[blockIdx.x] = Σ over this block's share of (x[i] − y[i])², each difference taken in
// f64 (the L2 error of an evaluation; CPU twin `Cpu::sq_dist`).
template <class T>
__device__ __forceinline__ void sq_dist_partial_k(const T* __restrict__ x,
                                                  const T* __restrict__ y, i64 n,
                                                  double* __restrict__ partial) {
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        const double d = (double)x[i] - (double)y[i];
        acc += d * d;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" __global__ void sq_dist_partial_f32(const float* x, const float* y, i64 n,
                                               double* partial) {
    sq_dist_partial_k(x, y, n, partial);
}
extern "C" __global__ void sq_dist_partial_f64(const double* x, const double* y, i64 n,
                                               double* partial) {
    sq_dist_partial_k(x, y, n, partial);
}

// out[0] = Σ_{b < n} partial[b]; launched with a single block.
extern "C" __global__ void sum_partials_f64(const double* partial, i64 n, double* out) {
    double acc = 0.0;
    for (i64 i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

// Column sums of a row-major rows × cols matrix, partitioned over rows: block (bx, by) with
// threads (32, ty) sums columns [32 bx, 32 bx + 32) over rows [by·chunk, (by+1)·chunk) and
// writes part[by·cols + c]. Threads with the same column are combined in shared memory.
#define COL_TILE 32
#define COL_ROWS 8
template <class T>
__device__ __forceinline__ void col_sum_part_k(const T* __restrict__ x, i64 rows, i64 cols,
                                               i64 chunk, T* __restrict__ part) {
    __shared__ T acc[COL_ROWS][COL_TILE];
    const i64 c = (i64)blockIdx.x * COL_TILE + threadIdx.x;
    const i64 r0 = (i64)blockIdx.y * chunk;
    i64 r1 = r0 + chunk;
    if (r1 > rows) r1 = rows;
    T s = T(0);
    if (c < cols)
        for (i64 r = r0 + threadIdx.y; r < r1; r += blockDim.y) s += x[r * cols + c];
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        T t = acc[0][threadIdx.x];
        for (int k = 1; k < (int)blockDim.y; ++k) t += acc[k][threadIdx.x];
        part[(i64)blockIdx.y * cols + c] = t;
    }
}
extern "C" __global__ void col_sum_part_f32(const float* x, i64 rows, i64 cols, i64 chunk,
                                            float* part) {
    col_sum_part_k(x, rows, cols, chunk, part);
}
extern "C" __global__ void col_sum_part_f64(const double* x, i64 rows, i64 cols, i64 chunk,
                                            double* part) {
    col_sum_part_k(x, rows, cols, chunk, part);
}

// out[j] = beta·out[j] + alpha·Σ_p part[p·cols + j]; beta = 0 ignores the old contents.
template <class T>
__device__ __forceinline__ void col_sum_finish_k(const T* __restrict__ part, i64 parts, i64 cols,
                                                 T* __restrict__ out, T alpha, T beta) {
    GRID_STRIDE(j, cols) {
        T s = T(0);
        for (i64 p = 0; p < parts; ++p) s += part[p * cols + j];
        out[j] = beta == T(0) ? alpha * s : beta * out[j] + alpha * s;
    }
}
extern "C" __global__ void col_sum_finish_f32(const float* part, i64 parts, i64 cols, float* out,
                                              float alpha, float beta) {
    col_sum_finish_k(part, parts, cols, out, alpha, beta);
}
extern "C" __global__ void col_sum_finish_f64(const double* part, i64 parts, i64 cols,
                                              double* out, double alpha, double beta) {
    col_sum_finish_k(part, parts, cols, out, alpha, beta);
}

// out[r] = beta·out[r] + Σ_c X[r, c]·Y[r, c] for strided row-major views; one warp per row
// (grid-stride over rows by warps), lanes stride the columns, a shuffle reduction combines
// them. The loop bound is the same for all lanes of a warp, so the shuffles never diverge.
template <class T>
__device__ __forceinline__ void row_dot_k(const T* __restrict__ x, i64 ldx,
                                          const T* __restrict__ y, i64 ldy, i64 rows, i64 cols,
                                          T* __restrict__ out, T beta) {
    const int lane = threadIdx.x % KFAC_WARP;
    const i64 warp = global_tid() / KFAC_WARP;
    const i64 nwarps = global_threads() / KFAC_WARP;
    for (i64 r = warp; r < rows; r += nwarps) {
        T s = T(0);
        for (i64 c = lane; c < cols; c += KFAC_WARP) s += x[r * ldx + c] * y[r * ldy + c];
        s = warp_sum(s);
        if (lane == 0) out[r] = beta == T(0) ? s : beta * out[r] + s;
    }
}
extern "C" __global__ void row_dot_f32(const float* x, i64 ldx, const float* y, i64 ldy, i64 rows,
                                       i64 cols, float* out, float beta) {
    row_dot_k(x, ldx, y, ldy, rows, cols, out, beta);
}
extern "C" __global__ void row_dot_f64(const double* x, i64 ldx, const double* y, i64 ldy,
                                       i64 rows, i64 cols, double* out, double beta) {
    row_dot_k(x, ldx, y, ldy, rows, cols, out, beta);
}

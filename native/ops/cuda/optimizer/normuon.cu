// NorMuon's row normalization on CUDA (math: ops/optimizer.h, normuon_normalize): for an
// orthogonalized update O (rows x cols, f32 or bf16) and the per-row second-moment EMA v (f32),
//   v_r = β2·v_r + (1−β2)·mean_c(O_rc²);  O_rc /= sqrt(v_r) + eps;  then O is rescaled so that
//   its Frobenius norm is what it was before the division.
// Three launches, deterministic (fixed reduction orders, no atomics):
//   1. one block per row: the row's sum of squares (f32 tree over f32 partials), v_r, and the
//      row's factor 1/(sqrt(v_r)+eps) into the workspace;
//   2. one block: ‖O‖² before = Σ_r ss_r, after = Σ_r ss_r·factor_r² (in double, fixed order),
//      rescale = sqrt(before) / (sqrt(after) + eps);
//   3. elementwise: O_rc *= factor_r · rescale (one rounding where the CPU path rounds twice).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../../optimizer.h"
#include "../common.cuh"

namespace kiln {
namespace {

constexpr int kThreads = 256;

template <bool kBf16>
__device__ __forceinline__ float load(const void* p, int64_t i) {
  if constexpr (kBf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  else return static_cast<const float*>(p)[i];
}

template <bool kBf16>
__device__ __forceinline__ void store(void* p, int64_t i, float v) {
  if constexpr (kBf16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}

// Block-wide sum in a fixed tree order; every thread gets the result.
__device__ float block_sum(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  __syncthreads();
  return total;
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads) row_kernel(const void* ortho, float* v, int64_t cols, float beta2, float eps,
                                                       float* row_ss, float* row_factor) {
  __shared__ float shared[kThreads / 32];
  const int64_t r = blockIdx.x;
  float sum = 0;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    const float x = load<kBf16>(ortho, r * cols + c);
    sum = fmaf(x, x, sum);
  }
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    const float second = beta2 * v[r] + (1.0f - beta2) * (sum / float(cols));
    v[r] = second;
    row_ss[r] = sum;
    row_factor[r] = 1.0f / (sqrtf(second) + eps);
  }
}

__global__ void __launch_bounds__(kThreads) rescale_kernel(const float* row_ss, const float* row_factor, int64_t rows, float eps,
                                                           float* rescale) {
  __shared__ double before_parts[kThreads], after_parts[kThreads];
  double before = 0, after = 0;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads) {
    const double f = row_factor[r];
    before += row_ss[r];
    after += double(row_ss[r]) * f * f;
  }
  before_parts[threadIdx.x] = before;
  after_parts[threadIdx.x] = after;
  __syncthreads();
  if (threadIdx.x == 0) {
    double b = 0, a = 0;
    for (int t = 0; t < kThreads; ++t) b += before_parts[t], a += after_parts[t];
    *rescale = float(sqrt(b) / (sqrt(a) + double(eps)));
  }
}

template <bool kBf16>
__global__ void __launch_bounds__(kThreads) apply_kernel(void* ortho, int64_t rows, int64_t cols, const float* row_factor,
                                                         const float* rescale) {
  const int64_t n = rows * cols;
  const float s = *rescale;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    store<kBf16>(ortho, i, load<kBf16>(ortho, i) * (row_factor[i / cols] * s));
  }
}

}  // namespace

size_t normuon_normalize_cuda_workspace_bytes(int64_t rows) {
  // row sums of squares, row factors, the rescale; 256-byte aligned pieces
  const size_t row_bytes = (size_t(rows) * sizeof(float) + 255) / 256 * 256;
  return 2 * row_bytes + 256;
}

void normuon_normalize_cuda(void* ortho, DType ortho_dtype, float* row_second_moment, int64_t rows, int64_t cols, float beta2,
                            float eps, void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  normuon_normalize_validate(ortho, ortho_dtype, row_second_moment, rows, cols, beta2, eps);
  if (rows == 0 || cols == 0) return;
  check(rows <= 2147483647LL, "ERR_SHAPE", "normuon_normalize_cuda: more than 2^31 - 1 rows");
  check(workspace != nullptr && workspace_bytes >= normuon_normalize_cuda_workspace_bytes(rows), "ERR_ARG",
        "normuon_normalize_cuda: workspace too small");
  const size_t row_bytes = (size_t(rows) * sizeof(float) + 255) / 256 * 256;
  char* ws = static_cast<char*>(workspace);
  float* row_ss = reinterpret_cast<float*>(ws);
  float* row_factor = reinterpret_cast<float*>(ws + row_bytes);
  float* rescale = reinterpret_cast<float*>(ws + 2 * row_bytes);
  cudaStream_t s = stream;
  KILN_BOOL_SWITCH(ortho_dtype == DType::bf16, kBf16, [&] {
    row_kernel<kBf16><<<unsigned(rows), kThreads, 0, s>>>(ortho, row_second_moment, cols, beta2, eps, row_ss, row_factor);
  });
  cuda_check_launch("normuon row_kernel");
  rescale_kernel<<<1, kThreads, 0, s>>>(row_ss, row_factor, rows, eps, rescale);
  cuda_check_launch("normuon rescale_kernel");
  const int64_t n = rows * cols;
  const unsigned blocks = unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535LL * 8));
  KILN_BOOL_SWITCH(ortho_dtype == DType::bf16, kBf16, [&] {
    apply_kernel<kBf16><<<blocks, kThreads, 0, s>>>(ortho, rows, cols, row_factor, rescale);
  });
  cuda_check_launch("normuon apply_kernel");
}

}  // namespace kiln

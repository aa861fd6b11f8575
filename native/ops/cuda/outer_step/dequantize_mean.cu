// DiLoCo on CUDA: the mean of the W ranks' packed pseudo-gradients (contract: ops/outer_step.h).
//   mean_i = (Σ_r (code_{r,i} − L)·scale_{r,block(i)}) · (1/W), ranks added in rank order.
// One thread per value (grid-stride); the same float operations in the same order as the CPU
// reference (explicit _rn intrinsics: no FMA contraction), so the result matches it bit for bit.
#include <cuda_runtime.h>

#include <cstdint>

#include "../../outer_step.h"
#include "../common.cuh"

namespace kiln {
namespace {

__global__ void dequantize_mean_kernel(DequantizeMeanParams p, int64_t stride, int64_t blocks) {
  const uint8_t* base = static_cast<const uint8_t*>(p.gathered);
  const float inverse_world = __fdiv_rn(1.0f, float(p.world_size));
  const int bits = p.bits;
  const int levels = bits ? (1 << (bits - 1)) - 1 : 0;
  const unsigned mask = bits ? (1u << bits) - 1u : 0u;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t r = 0; r < p.world_size; ++r) {
      const uint8_t* packed = base + r * stride;
      if (bits == 0) {
        sum = __fadd_rn(sum, reinterpret_cast<const float*>(packed)[i]);
      } else {
        const int64_t bit = i * bits;
        const float scale = reinterpret_cast<const float*>(packed)[i / kQuantBlock];
        const int code = int((packed[blocks * 4 + (bit >> 3)] >> (bit & 7)) & mask);
        sum = __fadd_rn(sum, __fmul_rn(float(code - levels), scale));
      }
    }
    p.mean[i] = __fmul_rn(sum, inverse_world);
  }
}

}  // namespace

void dequantize_mean_cuda(const DequantizeMeanParams& p, CUstream_st* stream) {
  if (p.n == 0) return;
  const int threads = 256;
  const int grid = int(std::min<int64_t>((p.n + threads - 1) / threads, 65535));
  const int64_t blocks = (p.n + kQuantBlock - 1) / kQuantBlock;
  dequantize_mean_kernel<<<grid, threads, 0, static_cast<cudaStream_t>(stream)>>>(p, packed_pseudo_gradient_bytes(p.n, p.bits), blocks);
  cuda_check_launch("dequantize_mean_kernel");
}

}  // namespace kiln

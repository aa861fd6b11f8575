// DiLoCo pseudo-gradient quantization on CUDA (contract and packed format: ops/outer_step.h).
//   Δ_i = (anchor_i − current_i) + residual_i; per 128-value block: scale = absmax / L,
//   q_i = rint(Δ_i / scale) in [−L, L], code bits packed little-endian; residual_i = Δ_i − q_i·scale.
// One CUDA block of 128 threads per quantization block, one value per thread: absmax by warp
// shuffles then 4 warp maxima in shared memory; the 8/bits threads sharing a code byte OR their
// bits together with shuffles (a byte never spans two warps: 32 lanes = 32·bits/8 whole bytes),
// the first of them writes the byte. Same float operations as the CPU reference (no FMA: the
// residual uses __fmul_rn/__fsub_rn), so codes and residuals match it bit for bit.
#include <cuda_runtime.h>

#include <cstdint>

#include "../../outer_step.h"
#include "../common.cuh"

namespace kiln {
namespace {

__global__ void pseudo_gradient_f32_kernel(float* __restrict__ out, const float* __restrict__ anchor, const float* __restrict__ current,
                                           const float* __restrict__ residual, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __fadd_rn(__fsub_rn(anchor[i], current[i]), residual ? residual[i] : 0.0f);
  }
}

template <int kBits>
__global__ void __launch_bounds__(kQuantBlock) pseudo_gradient_quantize_kernel(PseudoGradientQuantizeParams p, int64_t blocks, int64_t code_bytes, int64_t total) {
  constexpr float kLevels = float((1 << (kBits - 1)) - 1);
  constexpr int kPerByte = 8 / kBits;
  __shared__ float warp_max[kQuantBlock / 32];
  const int64_t b = blockIdx.x;
  const int64_t i = b * kQuantBlock + threadIdx.x;
  const bool valid = i < p.n;
  float d = 0.0f;
  if (valid) d = __fadd_rn(__fsub_rn(p.anchor[i], p.current[i]), p.residual ? p.residual[i] : 0.0f);
  float absmax = fabsf(d);
  for (int offset = 16; offset > 0; offset >>= 1) absmax = fmaxf(absmax, __shfl_xor_sync(0xffffffffu, absmax, offset));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = absmax;
  __syncthreads();
  absmax = fmaxf(fmaxf(warp_max[0], warp_max[1]), fmaxf(warp_max[2], warp_max[3]));
  const float scale = __fdiv_rn(absmax, kLevels);
  const float inverse = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
  if (threadIdx.x == 0) reinterpret_cast<float*>(p.packed)[b] = scale;
  const float q = fminf(kLevels, fmaxf(-kLevels, rintf(__fmul_rn(d, inverse))));
  unsigned byte = valid ? unsigned(int(q + kLevels)) << ((threadIdx.x % kPerByte) * kBits) : 0u;
  // OR the kPerByte lanes of one byte (aligned groups within the warp)
  for (int offset = 1; offset < kPerByte; offset <<= 1) byte |= __shfl_down_sync(0xffffffffu, byte, offset, kPerByte);
  uint8_t* codes = static_cast<uint8_t*>(p.packed) + blocks * 4;
  const int64_t at = i / kPerByte;  // i·bits/8
  if (threadIdx.x % kPerByte == 0 && at < code_bytes) codes[at] = uint8_t(byte);
  if (valid && p.residual) p.residual[i] = __fsub_rn(d, __fmul_rn(q, scale));
  // zero padding after the codes (at most 3 bytes), written by the last block
  if (b == blocks - 1 && threadIdx.x == 0) {
    for (int64_t k = blocks * 4 + code_bytes; k < total; ++k) static_cast<uint8_t*>(p.packed)[k] = 0;
  }
}

}  // namespace

void pseudo_gradient_quantize_cuda(const PseudoGradientQuantizeParams& p, CUstream_st* stream) {
  if (p.n == 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.bits == 0) {
    const int threads = 256;
    const int grid = int(std::min<int64_t>((p.n + threads - 1) / threads, 65535));
    pseudo_gradient_f32_kernel<<<grid, threads, 0, s>>>(static_cast<float*>(p.packed), p.anchor, p.current, p.residual, p.n);
    cuda_check_launch("pseudo_gradient_f32_kernel");
    return;
  }
  const int64_t blocks = (p.n + kQuantBlock - 1) / kQuantBlock;
  const int64_t code_bytes = (p.n * p.bits + 7) / 8;
  const int64_t total = packed_pseudo_gradient_bytes(p.n, p.bits);
  // blocks ≤ 2^31 − 1 (grid x limit): n up to 2.7e11 values
  switch (p.bits) {
    case 8: pseudo_gradient_quantize_kernel<8><<<unsigned(blocks), kQuantBlock, 0, s>>>(p, blocks, code_bytes, total); break;
    case 4: pseudo_gradient_quantize_kernel<4><<<unsigned(blocks), kQuantBlock, 0, s>>>(p, blocks, code_bytes, total); break;
    case 2: pseudo_gradient_quantize_kernel<2><<<unsigned(blocks), kQuantBlock, 0, s>>>(p, blocks, code_bytes, total); break;
    default: fail("ERR_ARG", "pseudo_gradient_quantize: bits must be 0, 2, 4 or 8");
  }
  cuda_check_launch("pseudo_gradient_quantize_kernel");
}

}  // namespace kiln

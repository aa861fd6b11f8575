// DiLoCo's outer Nesterov SGD and Streaming DiLoCo's merge on CUDA (contract: ops/outer_step.h).
//   m = μ·m + Δ̄;  anchor −= lr·(nesterov ? Δ̄ + μ·m : m);  weights = mix ? α·w + (1−α)·anchor : anchor
// Elementwise, grid-stride; _rn intrinsics keep the CPU reference's rounding (no FMA), so the
// result matches it bit for bit.
#include <cuda_runtime.h>

#include <cstdint>

#include "../../outer_step.h"
#include "../common.cuh"

namespace kiln {
namespace {

__global__ void outer_nesterov_kernel(OuterNesterovParams p) {
  const float mu = p.momentum_factor, lr = p.lr, alpha = p.alpha;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = p.mean_delta[i];
    const float m = __fadd_rn(__fmul_rn(mu, p.momentum[i]), g);
    p.momentum[i] = m;
    const float update = p.nesterov ? __fadd_rn(g, __fmul_rn(mu, m)) : m;
    const float anchor = __fsub_rn(p.anchor[i], __fmul_rn(lr, update));
    p.anchor[i] = anchor;
    p.weights[i] = p.mix ? __fadd_rn(__fmul_rn(alpha, p.weights[i]), __fmul_rn(__fsub_rn(1.0f, alpha), anchor)) : anchor;
  }
}

}  // namespace

void outer_nesterov_cuda(const OuterNesterovParams& p, CUstream_st* stream) {
  if (p.n == 0) return;
  const int threads = 256;
  const int grid = int(std::min<int64_t>((p.n + threads - 1) / threads, 65535));
  outer_nesterov_kernel<<<grid, threads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  cuda_check_launch("outer_nesterov_kernel");
}

}  // namespace kiln

// Fused classifier: cross-entropy loss and dlogits in one kernel on CUDA (contract: ops/layers.h).
//   sweep 1 (read):  online softmax statistics: each thread keeps (max, Σ exp(x − max)) over its
//                    elements; the block merges the pairs (fixed tree) -> lse = max + log(sum)
//   loss[i] = lse − logits[i, t]                                             (=, f32)
//   sweep 2 (read + write): dlogits[i, v] = (exp(logits[i, v] − lse) − [v = t])·dloss_scale (=)
// One block (512 threads) per row, grid-stride over rows; f32 math; the logits are read twice
// (the second read mostly from L2) and no f32 copy of them is ever stored.
// t = −1: loss 0, zero dlogits row. t outside [−1, V): loss NaN and a NaN dlogits row (the host
// cannot see targets without a sync; NaN makes the bad target loud instead of silently wrong).
// dlogits may equal logits: the target logit is read in sweep 1 and every element is read
// before the same thread overwrites it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../../layers.h"
#include "../common.cuh"
#include "storage.cuh"

namespace kiln {
namespace {
using namespace layers_cuda;

constexpr int kThreads = 512;

// Merge (max, sum) pairs: sum is relative to max. An empty side has max = −inf and sum = 0.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  if (mm == -INFINITY) return;  // both empty (or all −inf logits)
  s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
  m = mm;
}

template <class T, bool kVector>
__global__ void __launch_bounds__(kThreads) cross_entropy_kernel(float* __restrict__ loss, T* dlogits, const T* logits,
                                                                  const int32_t* __restrict__ targets, int64_t N, int64_t V,
                                                                  float dloss_scale) {
  __shared__ float shared_max[32], shared_sum[32];
  __shared__ float shared_target_logit;
  constexpr int n = kVector ? Vec16<T>::n : 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const int32_t target = targets[row];
    const T* x = logits + row * V;
    T* d = dlogits ? dlogits + row * V : nullptr;
    if (target == -1) {  // ignored: loss 0, zero gradient row
      if (threadIdx.x == 0) loss[row] = 0.0f;
      if (d)
        for (int64_t c = threadIdx.x; c < V; c += blockDim.x) d[c] = from_f32<T>(0.0f);
      continue;
    }
    const bool bad = target < -1 || target >= V;
    // sweep 1: (max, sum) per thread, online over its elements
    float m = -INFINITY, s = 0.0f;
    for (int64_t c = int64_t(threadIdx.x) * n; c < V; c += int64_t(blockDim.x) * n) {
      float vals[n];
      if (kVector) {
        const Vec16<T> v = load_vec(x + c);
#pragma unroll
        for (int k = 0; k < n; ++k) vals[k] = to_f32(v.v[k]);
      } else {
        vals[0] = to_f32(x[c]);
      }
      float local_max = vals[0];
#pragma unroll
      for (int k = 1; k < n; ++k) local_max = fmaxf(local_max, vals[k]);
      float local_sum = 0.0f;
#pragma unroll
      for (int k = 0; k < n; ++k) local_sum += __expf(vals[k] - local_max);
      merge(m, s, local_max, local_max == -INFINITY ? 0.0f : local_sum);
    }
    if (threadIdx.x == 0) shared_target_logit = bad ? nan : to_f32(x[target]);
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      merge(m, s, m2, s2);
    }
    if (lane == 0) {
      shared_max[warp] = m;
      shared_sum[warp] = s;
    }
    __syncthreads();  // also: every sweep-1 read of this row is done before sweep 2 writes
    m = lane < int(blockDim.x >> 5) ? shared_max[lane] : -INFINITY;
    s = lane < int(blockDim.x >> 5) ? shared_sum[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      merge(m, s, m2, s2);
    }
    const float lse = m + logf(s);
    const float target_logit = shared_target_logit;
    if (threadIdx.x == 0) loss[row] = lse - target_logit;  // NaN for a bad target
    __syncthreads();  // shared_* are rewritten by the next row
    if (!d) continue;
    const float scale = bad ? nan : dloss_scale;
    for (int64_t c = int64_t(threadIdx.x) * n; c < V; c += int64_t(blockDim.x) * n) {
      if (kVector) {
        const Vec16<T> v = load_vec(x + c);
        Vec16<T> out;
#pragma unroll
        for (int k = 0; k < n; ++k) {
          const float p = __expf(to_f32(v.v[k]) - lse) - (c + k == target ? 1.0f : 0.0f);
          out.v[k] = from_f32<T>(p * scale);
        }
        store_vec(d + c, out);
      } else {
        const float p = __expf(to_f32(x[c]) - lse) - (c == target ? 1.0f : 0.0f);
        d[c] = from_f32<T>(p * scale);
      }
    }
  }
}

}  // namespace

void cross_entropy_cuda(const CrossEntropyParams& p, cudaStream_t stream) {
  check(p.N >= 0 && p.V >= 0, "ERR_SHAPE", "cross_entropy: negative size");
  check(p.V > 0 || p.N == 0, "ERR_SHAPE", "cross_entropy: V must be > 0");
  if (p.N == 0) return;
  check(p.loss && p.logits && p.targets, "ERR_ARG", "cross_entropy: null pointer");
  dispatch_cuda_dtype(p.dtype, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.V % n == 0 && aligned16(p.logits) && (!p.dlogits || aligned16(p.dlogits));
    const int grid = int(p.N < 65536 * 4 ? p.N : 65536 * 4);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      cross_entropy_kernel<T, kVector><<<grid, kThreads, 0, stream>>>(static_cast<float*>(p.loss), static_cast<T*>(p.dlogits),
                                                                       static_cast<const T*>(p.logits), p.targets, p.N, p.V,
                                                                       float(p.dloss_scale));
    });
    cuda_check_launch("cross_entropy_kernel");
  });
}

}  // namespace kiln

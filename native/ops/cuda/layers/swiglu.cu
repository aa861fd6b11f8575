// SwiGLU on CUDA (contract and math: ops/layers.h).
//   forward : out = silu(gate)·up                                                      (=)
//   backward: dgate = dout·up·σ(g)·(1 + g·(1 − σ(g)));  dup = dout·g·σ(g)              (=)
// gate/up rows at i·ld_in ([gate | up] (N, 2F): up = gate + F, ld_in = 2F). Element-wise, f32
// math; each thread handles one 16-byte vector (F, ld_in, ld_dinput multiples of the vector
// width and 16-byte aligned pointers) or one element otherwise; grid-stride over N·F.
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

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + __expf(-g)); }

template <class T, int n>
__global__ void swiglu_forward_kernel(T* __restrict__ out, const T* __restrict__ gate, const T* __restrict__ up,
                                      int64_t N, int64_t F, int64_t ld_in) {
  const int64_t per_row = F / n, total = N * per_row;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / per_row, col = (idx - row * per_row) * n;
    if constexpr (n > 1) {
      const Vec16<T> gv = load_vec(gate + row * ld_in + col), uv = load_vec(up + row * ld_in + col);
      Vec16<T> o;
#pragma unroll
      for (int k = 0; k < n; ++k) {
        const float g = to_f32(gv.v[k]);
        o.v[k] = from_f32<T>(g * sigmoid(g) * to_f32(uv.v[k]));
      }
      store_vec(out + row * F + col, o);
    } else {
      const float g = to_f32(gate[row * ld_in + col]);
      out[row * F + col] = from_f32<T>(g * sigmoid(g) * to_f32(up[row * ld_in + col]));
    }
  }
}

// No __restrict__ on the inputs: dgate/dup may overwrite gate/up in place (read before write,
// same thread).
template <class T, int n>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* __restrict__ dout, const T* gate, const T* up, int64_t N,
                                       int64_t F, int64_t ld_in, int64_t ld_dinput) {
  const int64_t per_row = F / n, total = N * per_row;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / per_row, col = (idx - row * per_row) * n;
    if constexpr (n > 1) {
      const Vec16<T> gv = load_vec(gate + row * ld_in + col), uv = load_vec(up + row * ld_in + col);
      const Vec16<T> dv = load_vec(dout + row * F + col);
      Vec16<T> dg, du;
#pragma unroll
      for (int k = 0; k < n; ++k) {
        const float g = to_f32(gv.v[k]), u = to_f32(uv.v[k]), d = to_f32(dv.v[k]);
        const float s = sigmoid(g);
        dg.v[k] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
        du.v[k] = from_f32<T>(d * g * s);
      }
      store_vec(dgate + row * ld_dinput + col, dg);
      store_vec(dup + row * ld_dinput + col, du);
    } else {
      const float g = to_f32(gate[row * ld_in + col]), u = to_f32(up[row * ld_in + col]), d = to_f32(dout[row * F + col]);
      const float s = sigmoid(g);
      dgate[row * ld_dinput + col] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
      dup[row * ld_dinput + col] = from_f32<T>(d * g * s);
    }
  }
}

int grid_for(int64_t items, int threads) {
  int64_t blocks = (items + threads - 1) / threads;
  return int(blocks < 65536 * 8 ? (blocks < 1 ? 1 : blocks) : 65536 * 8);
}

}  // namespace

void swiglu_forward_cuda(const SwigluForwardParams& p, cudaStream_t stream) {
  check(p.N >= 0 && p.F >= 0, "ERR_SHAPE", "swiglu: negative size");
  check(p.N <= 1 || p.ld_in >= p.F, "ERR_SHAPE", "swiglu: ld_in must be >= F");
  if (p.N == 0 || p.F == 0) return;
  check(p.out && p.gate && p.up, "ERR_ARG", "swiglu: null pointer");
  dispatch_cuda_dtype(p.dtype, "swiglu", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.F % n == 0 && p.ld_in % n == 0 && aligned16(p.out) && aligned16(p.gate) && aligned16(p.up);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      constexpr int width = kVector ? n : 1;
      swiglu_forward_kernel<T, width><<<grid_for(p.N * (p.F / width), 256), 256, 0, stream>>>(
          static_cast<T*>(p.out), static_cast<const T*>(p.gate), static_cast<const T*>(p.up), p.N, p.F, p.ld_in);
    });
    cuda_check_launch("swiglu_forward_kernel");
  });
}

void swiglu_backward_cuda(const SwigluBackwardParams& p, cudaStream_t stream) {
  check(p.N >= 0 && p.F >= 0, "ERR_SHAPE", "swiglu backward: negative size");
  check(p.N <= 1 || (p.ld_in >= p.F && p.ld_dinput >= p.F), "ERR_SHAPE", "swiglu backward: leading dims must be >= F");
  if (p.N == 0 || p.F == 0) return;
  check(p.dgate && p.dup && p.dout && p.gate && p.up, "ERR_ARG", "swiglu backward: null pointer");
  dispatch_cuda_dtype(p.dtype, "swiglu backward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.F % n == 0 && p.ld_in % n == 0 && p.ld_dinput % n == 0 && aligned16(p.dgate) && aligned16(p.dup) &&
                        aligned16(p.dout) && aligned16(p.gate) && aligned16(p.up);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      constexpr int width = kVector ? n : 1;
      swiglu_backward_kernel<T, width><<<grid_for(p.N * (p.F / width), 256), 256, 0, stream>>>(
          static_cast<T*>(p.dgate), static_cast<T*>(p.dup), static_cast<const T*>(p.dout), static_cast<const T*>(p.gate),
          static_cast<const T*>(p.up), p.N, p.F, p.ld_in, p.ld_dinput);
    });
    cuda_check_launch("swiglu_backward_kernel");
  });
}

}  // namespace kiln

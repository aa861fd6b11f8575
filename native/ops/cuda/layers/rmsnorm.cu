// RMSNorm fused with the residual add on CUDA (contract and math: ops/layers.h).
//   forward : h = round_T(x + residual);  rstd = 1/sqrt(mean(h²) + eps);  y = h·rstd·w      (=)
//   backward: dh = rstd·(dy·w − ĥ·mean(dy·w·ĥ)) (+ dresidual_in);  dweight += Σ_rows dy·ĥ   (+=)
// One block per row (grid-stride), f32 math, block sums by a fixed shuffle tree. The forward
// makes two passes over the row (sum of squares, then the writes), recomputing h from x and
// residual in the second (L1/L2 hits) instead of holding it in shared memory.
// dweight is deterministic without atomics: a fixed grid of G = min(N, 256) blocks (independent
// of the device) each keeps its columns' partial sums in shared memory (D floats) over rows
// b, b+G, ..., writes them to workspace (G, D), and a second kernel adds the G partials per
// column in order. D <= 16384 (shared memory).
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

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// Fixed shuffle tree: deterministic. `scratch` holds 32 floats; reusable after the call returns.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  x = warp_sum(x);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(x);
}

constexpr int kBackwardBlocks = 256;    // fixed, so dweight's summation order never changes
constexpr int64_t kMaxD = 16384;        // D floats of shared memory per backward block

// h = x (+ residual), rounded to T like the stored residual stream.
template <class T>
__device__ __forceinline__ float residual_sum(const T* x, const T* residual, int64_t i) {
  if (residual == nullptr) return to_f32(x[i]);
  return to_f32(from_f32<T>(to_f32(x[i]) + to_f32(residual[i])));
}

template <class T, bool kVector>
__global__ void rmsnorm_forward_kernel(T* __restrict__ y, T* residual_out, float* __restrict__ rstd, const T* x,
                                       const T* residual, const T* __restrict__ weight, int64_t N, int64_t D, float eps) {
  // residual_out may alias x or residual: each element is read and written by the same thread
  __shared__ float scratch[32];
  constexpr int n = kVector ? Vec16<T>::n : 1;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* xr = x + row * D;
    const T* rr = residual ? residual + row * D : nullptr;
    float sum_squares = 0.0f;
    for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
      if (kVector) {
        const Vec16<T> xv = load_vec(xr + c);
        Vec16<T> hv = xv;
        if (rr) {
          const Vec16<T> rv = load_vec(rr + c);
#pragma unroll
          for (int k = 0; k < n; ++k) hv.v[k] = from_f32<T>(to_f32(xv.v[k]) + to_f32(rv.v[k]));
        }
#pragma unroll
        for (int k = 0; k < n; ++k) sum_squares += to_f32(hv.v[k]) * to_f32(hv.v[k]);
      } else {
        const float h = residual_sum(xr, rr, c);
        sum_squares += h * h;
      }
    }
    sum_squares = block_sum(sum_squares, scratch);
    const float r = rsqrtf(sum_squares / float(D) + eps);
    if (rstd && threadIdx.x == 0) rstd[row] = r;
    T* yr = y + row * D;
    T* ro = residual_out ? residual_out + row * D : nullptr;
    for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
      if (kVector) {
        const Vec16<T> xv = load_vec(xr + c);
        Vec16<T> hv = xv;
        if (rr) {
          const Vec16<T> rv = load_vec(rr + c);
#pragma unroll
          for (int k = 0; k < n; ++k) hv.v[k] = from_f32<T>(to_f32(xv.v[k]) + to_f32(rv.v[k]));
        }
        const Vec16<T> wv = load_vec(weight + c);
        Vec16<T> yv;
#pragma unroll
        for (int k = 0; k < n; ++k) yv.v[k] = from_f32<T>(to_f32(hv.v[k]) * r * to_f32(wv.v[k]));
        if (ro) store_vec(ro + c, hv);
        store_vec(yr + c, yv);
      } else {
        const float h = residual_sum(xr, rr, c);
        if (ro) ro[c] = from_f32<T>(h);
        yr[c] = from_f32<T>(h * r * to_f32(weight[c]));
      }
    }
  }
}

// Grid: exactly min(N, kBackwardBlocks) blocks. Dynamic shared memory: D floats.
template <class T, bool kVector>
__global__ void rmsnorm_backward_kernel(T* dx, float* __restrict__ dweight_partial, const T* __restrict__ dy,
                                        const T* __restrict__ h, const T* __restrict__ weight, const float* __restrict__ rstd,
                                        const T* dresidual_in, int64_t N, int64_t D) {
  // dx may alias dresidual_in: each element is read and then written by the same thread
  extern __shared__ float dweight_columns[];  // (D): this block's partial dweight; column c is
                                              // only ever touched by the thread that owns c
  __shared__ float scratch[32];
  constexpr int n = kVector ? Vec16<T>::n : 1;
  for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n)
    for (int k = 0; k < n; ++k) dweight_columns[c + k] = 0.0f;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* dyr = dy + row * D;
    const T* hr = h + row * D;
    const float r = rstd[row];
    float dot = 0.0f;  // Σ_d dy·w·ĥ
    for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
      if (kVector) {
        const Vec16<T> gv = load_vec(dyr + c), hv = load_vec(hr + c), wv = load_vec(weight + c);
#pragma unroll
        for (int k = 0; k < n; ++k) dot += to_f32(gv.v[k]) * to_f32(wv.v[k]) * (to_f32(hv.v[k]) * r);
      } else {
        dot += to_f32(dyr[c]) * to_f32(weight[c]) * (to_f32(hr[c]) * r);
      }
    }
    const float mean = block_sum(dot, scratch) / float(D);
    T* dxr = dx + row * D;
    const T* dres = dresidual_in ? dresidual_in + row * D : nullptr;
    for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
      if (kVector) {
        const Vec16<T> gv = load_vec(dyr + c), hv = load_vec(hr + c), wv = load_vec(weight + c);
        Vec16<T> rv;
        if (dres) rv = load_vec(dres + c);
        Vec16<T> out;
#pragma unroll
        for (int k = 0; k < n; ++k) {
          const float g = to_f32(gv.v[k]), hat = to_f32(hv.v[k]) * r;
          float d = r * (g * to_f32(wv.v[k]) - hat * mean);
          if (dres) d += to_f32(rv.v[k]);
          out.v[k] = from_f32<T>(d);
          dweight_columns[c + k] += g * hat;
        }
        store_vec(dxr + c, out);
      } else {
        const float g = to_f32(dyr[c]), hat = to_f32(hr[c]) * r;
        float d = r * (g * to_f32(weight[c]) - hat * mean);
        if (dres) d += to_f32(dres[c]);
        dxr[c] = from_f32<T>(d);
        dweight_columns[c] += g * hat;
      }
    }
  }
  float* out = dweight_partial + int64_t(blockIdx.x) * D;
  for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n)
    for (int k = 0; k < n; ++k) out[c + k] = dweight_columns[c + k];
}

// dweight[c] += Σ_{b < blocks} partial[b, c], b ascending.
__global__ void rmsnorm_dweight_kernel(float* __restrict__ dweight, const float* __restrict__ partial, int blocks, int64_t D) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < D; c += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int b = 0; b < blocks; ++b) sum += partial[int64_t(b) * D + c];
    dweight[c] += sum;
  }
}

int row_threads(int64_t items_per_row) {
  int64_t t = (items_per_row + 31) / 32 * 32;
  return int(t < 64 ? 64 : (t > 256 ? 256 : t));
}

}  // namespace

void rmsnorm_forward_cuda_validate(const RmsnormForwardParams& p) {
  check(p.N >= 0 && p.D >= 0, "ERR_SHAPE", "rmsnorm: negative size");
  check(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string("rmsnorm on CUDA takes f32, bf16 or f16, got ") + dtype_name(p.dtype));
  if (p.N == 0 || p.D == 0) return;
  check(p.y && p.x && p.weight, "ERR_ARG", "rmsnorm: null pointer");
  check(p.eps >= 0, "ERR_ARG", "rmsnorm: eps must be >= 0");
}

void rmsnorm_forward_cuda(const RmsnormForwardParams& p, cudaStream_t stream) {
  rmsnorm_forward_cuda_validate(p);
  if (p.N == 0 || p.D == 0) return;
  dispatch_cuda_dtype(p.dtype, "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.D % n == 0 && aligned16(p.y) && aligned16(p.x) && aligned16(p.weight) &&
                        (!p.residual || aligned16(p.residual)) && (!p.residual_out || aligned16(p.residual_out));
    const int threads = row_threads(vector ? p.D / n : p.D);
    const int grid = int(p.N < 65536 * 4 ? p.N : 65536 * 4);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      rmsnorm_forward_kernel<T, kVector><<<grid, threads, 0, stream>>>(
          static_cast<T*>(p.y), static_cast<T*>(p.residual_out), static_cast<float*>(p.rstd), static_cast<const T*>(p.x),
          static_cast<const T*>(p.residual), static_cast<const T*>(p.weight), p.N, p.D, float(p.eps));
    });
    cuda_check_launch("rmsnorm_forward_kernel");
  });
}

void rmsnorm_backward_cuda_validate(const RmsnormBackwardParams& p) {
  check(p.N >= 0 && p.D >= 0, "ERR_SHAPE", "rmsnorm backward: negative size");
  check(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string("rmsnorm backward on CUDA takes f32, bf16 or f16, got ") + dtype_name(p.dtype));
  check(p.D <= kMaxD, "ERR_SHAPE", "rmsnorm backward on CUDA supports D <= " + std::to_string(kMaxD));
  if (p.N == 0 || p.D == 0) return;
  check(p.dx && p.dweight && p.dy && p.h && p.weight && p.rstd, "ERR_ARG", "rmsnorm backward: null pointer");
  const size_t need = rmsnorm_backward_workspace_bytes(p.N, p.D);
  check(p.workspace && p.workspace_bytes >= need && aligned16(p.workspace), "ERR_ARG",
        "rmsnorm backward: needs " + std::to_string(need) + " bytes of 16-byte aligned workspace");
}

void rmsnorm_backward_cuda(const RmsnormBackwardParams& p, cudaStream_t stream) {
  rmsnorm_backward_cuda_validate(p);
  if (p.N == 0 || p.D == 0) return;
  const int blocks = int(p.N < kBackwardBlocks ? p.N : kBackwardBlocks);
  const size_t smem = size_t(p.D) * sizeof(float);
  dispatch_cuda_dtype(p.dtype, "rmsnorm backward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.D % n == 0 && aligned16(p.dx) && aligned16(p.dy) && aligned16(p.h) && aligned16(p.weight) &&
                        (!p.dresidual_in || aligned16(p.dresidual_in));
    const int threads = row_threads(vector ? p.D / n : p.D);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      auto kernel = rmsnorm_backward_kernel<T, kVector>;
      if (smem > 48 * 1024) KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      kernel<<<blocks, threads, smem, stream>>>(static_cast<T*>(p.dx), static_cast<float*>(p.workspace),
                                                static_cast<const T*>(p.dy), static_cast<const T*>(p.h),
                                                static_cast<const T*>(p.weight), static_cast<const float*>(p.rstd),
                                                static_cast<const T*>(p.dresidual_in), p.N, p.D);
    });
    cuda_check_launch("rmsnorm_backward_kernel");
  });
  rmsnorm_dweight_kernel<<<ceil_div(p.D, 256), 256, 0, stream>>>(static_cast<float*>(p.dweight),
                                                                 static_cast<const float*>(p.workspace), blocks, p.D);
  cuda_check_launch("rmsnorm_dweight_kernel");
}

}  // namespace kiln

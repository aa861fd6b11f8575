// Rotary position embedding on the GPU (contract: ops/attention.h), HF LLaMA rotate_half layout.
//
//   x, y: (B, T, H, D) f32/bf16/f16   positions: (B, T) i32
//   for j < D/2: theta_j = pos * inv_freq_j,  inv_freq_j = base^(-2j/D) or p.inv_freq[j] (scaled RoPE)
//     y[j] = x[j] cos - x[j + D/2] sin;   y[j + D/2] = x[j + D/2] cos + x[j] sin     (y written, =)
//   backward: rotation by -theta applied to dy. In place allowed: each thread reads its pair
//   (j, j + D/2) before writing it and no other thread touches that pair.
//
// One block per (b, t) row; thread j computes theta_j once in double (inv_freq via exp2/log2 in
// double, product reduced mod 2*pi in double, since pos * inv_freq reaches ~1e5 rad where a
// float angle would be off by ~1e-2) then sincosf on the reduced float angle, and rotates that
// pair in every head. Math in f32, one rounding to the dtype.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "attention_cuda.h"
#include "flash_common.cuh"

namespace kiln {
namespace {

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

template <typename T>
__global__ void rope_kernel(const T* x, T* y, const int32_t* __restrict__ positions, const float* __restrict__ inv_freqs,
                            int H, int D, double log2_base, float sign) {
  const int64_t row = blockIdx.x;  // b * T + t
  const int half = D / 2;
  const double pos = double(positions[row]);
  const double two_pi = 6.283185307179586476925286766559;
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const double inv_freq = inv_freqs ? double(inv_freqs[j]) : exp2(-2.0 * double(j) / double(D) * log2_base);
    double theta = pos * inv_freq;
    theta -= two_pi * floor(theta / two_pi);  // [0, 2 pi)
    float s, c;
    sincosf(float(theta), &s, &c);
    s *= sign;
    const int64_t base = row * H * D;
    for (int h = 0; h < H; ++h) {
      const int64_t i = base + int64_t(h) * D + j;
      const float x1 = to_f<T>(x[i]), x2 = to_f<T>(x[i + half]);
      y[i] = from_f<T>(x1 * c - x2 * s);
      y[i + half] = from_f<T>(x2 * c + x1 * s);
    }
  }
}

}  // namespace

void rope_cuda_validate(const RopeParams& p) {
  const char* op = "rope_cuda";
  check(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string(op) + ": dtype must be f32, bf16 or f16, got " + dtype_name(p.dtype));
  check(p.B >= 0 && p.T >= 0 && p.H >= 0 && p.D >= 0 && p.D % 2 == 0, "ERR_SHAPE",
        std::string(op) + ": need B, T, H >= 0 and an even D");
  check(p.B * p.T < (int64_t(1) << 31), "ERR_SHAPE", std::string(op) + ": B*T too large");
  check(p.base > 0.f, "ERR_ARG", std::string(op) + ": base must be positive");
  if (p.B * p.T * p.H * p.D == 0) return;
  check(p.x != nullptr && p.y != nullptr && p.positions != nullptr, "ERR_ARG", std::string(op) + ": null pointer");
}

void rope_cuda(const RopeParams& p, cudaStream_t stream) {
  rope_cuda_validate(p);
  if (p.B * p.T * p.H * p.D == 0) return;
  const int threads = int(std::min<int64_t>(128, ((p.D / 2 + 31) / 32) * 32));
  const unsigned blocks = unsigned(p.B * p.T);
  const double log2_base = std::log2(double(p.base));
  const float sign = p.backward ? -1.f : 1.f;
  switch (p.dtype) {
    case DType::f32:
      rope_kernel<float><<<blocks, threads, 0, stream>>>(static_cast<const float*>(p.x), static_cast<float*>(p.y),
                                                         p.positions, p.inv_freq, int(p.H), int(p.D), log2_base, sign);
      break;
    case DType::bf16:
      rope_kernel<__nv_bfloat16><<<blocks, threads, 0, stream>>>(static_cast<const __nv_bfloat16*>(p.x),
                                                                 static_cast<__nv_bfloat16*>(p.y), p.positions,
                                                                 p.inv_freq, int(p.H), int(p.D), log2_base, sign);
      break;
    default:
      rope_kernel<__half><<<blocks, threads, 0, stream>>>(static_cast<const __half*>(p.x), static_cast<__half*>(p.y),
                                                          p.positions, p.inv_freq, int(p.H), int(p.D), log2_base, sign);
      break;
  }
  cuda_check_launch("rope_kernel");
}

}  // namespace kiln

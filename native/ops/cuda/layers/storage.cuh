// Shared device helpers of the CUDA model layers (ops/layers.h): storage <-> f32 conversions,
// 16-byte vector loads/stores, alignment checks and the storage-type dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../../../runtime/dtype.h"
#include "../../../runtime/error.h"

namespace kiln::layers_cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// 16 bytes of T: 4 f32 or 8 bf16/f16, loaded and stored with one 128-bit access.
template <class T>
struct alignas(16) Vec16 {
  static constexpr int n = 16 / int(sizeof(T));
  T v[n];
};

template <class T>
__device__ __forceinline__ Vec16<T> load_vec(const T* p) { return *reinterpret_cast<const Vec16<T>*>(p); }
template <class T>
__device__ __forceinline__ void store_vec(T* p, const Vec16<T>& v) { *reinterpret_cast<Vec16<T>*>(p) = v; }

__host__ __device__ inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Calls body(T()) with T the CUDA storage type of dtype (f32, bf16, f16).
template <class Body>
inline void dispatch_cuda_dtype(DType dtype, const char* op, Body&& body) {
  switch (dtype) {
    case DType::f32: return body(float());
    case DType::bf16: return body(__nv_bfloat16());
    case DType::f16: return body(__half());
    default: fail("ERR_DTYPE", std::string(op) + " on CUDA takes f32, bf16 or f16, got " + dtype_name(dtype));
  }
}

}  // namespace kiln::layers_cuda

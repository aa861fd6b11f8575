// Internal pieces shared by the CUDA GEMM paths (simt, sm80, sm90) and the dispatcher:
// the flattened kernel arguments, the fused epilogue (alpha, beta, residual_add, swiglu, cast)
// and the per-path launcher declarations. Public API: matmul_cuda.h.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../../matmul.h"

namespace kiln {
namespace matmul_detail {

// Kernel-side view of MatmulParams. N is C's width (for swiglu the GEMM's inner N is 2N).
struct MatmulArgs {
  const void* a;
  const void* b;
  void* c;
  const void* residual;
  int64_t lda, ldb, ldc, ld_residual;
  int64_t stride_a, stride_b, stride_c, stride_residual;
  int M, N, K, batch;
  float alpha, beta;
  DType c_dtype;
  MatmulEpilogue epilogue;
};

inline MatmulArgs make_args(const MatmulParams& p) {
  MatmulArgs r;
  r.a = p.a;
  r.b = p.b;
  r.c = p.c;
  r.residual = p.residual;
  r.lda = p.lda;
  r.ldb = p.ldb;
  r.ldc = p.ldc;
  r.ld_residual = p.ld_residual;
  r.stride_a = p.stride_a;
  r.stride_b = p.stride_b;
  r.stride_c = p.stride_c;
  r.stride_residual = p.stride_residual;
  r.M = int(p.M);
  r.N = int(p.N);
  r.K = int(p.K);
  r.batch = int(p.batch);
  r.alpha = p.alpha;
  r.beta = p.beta;
  r.c_dtype = p.c_dtype;
  r.epilogue = p.epilogue;
  return r;
}

#if defined(__CUDACC__)

__device__ __forceinline__ float load_as_float(const void* base, DType t, int64_t i) {
  if (t == DType::f32) return static_cast<const float*>(base)[i];
  if (t == DType::bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return __half2float(static_cast<const __half*>(base)[i]);
}

// Loads elements i and i+1 (the second only when `two`), as a pair load when aligned.
__device__ __forceinline__ void load_pair(const void* base, DType t, int64_t i, bool two, float& x0, float& x1) {
  if (t == DType::f32) {
    const float* p = static_cast<const float*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 7) == 0) {
      float2 v = *reinterpret_cast<const float2*>(p);
      x0 = v.x, x1 = v.y;
      return;
    }
  } else if (t == DType::bf16) {
    const __nv_bfloat16* p = static_cast<const __nv_bfloat16*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 3) == 0) {
      float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
      x0 = v.x, x1 = v.y;
      return;
    }
  } else {
    const __half* p = static_cast<const __half*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 3) == 0) {
      float2 v = __half22float2(*reinterpret_cast<const __half2*>(p));
      x0 = v.x, x1 = v.y;
      return;
    }
  }
  x0 = load_as_float(base, t, i);
  x1 = two ? load_as_float(base, t, i + 1) : 0.f;
}

__device__ __forceinline__ void store_pair(void* base, DType t, int64_t i, bool two, float x0, float x1) {
  if (t == DType::f32) {
    float* p = static_cast<float*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 7) == 0) {
      *reinterpret_cast<float2*>(p) = make_float2(x0, x1);
    } else {
      p[0] = x0;
      if (two) p[1] = x1;
    }
  } else if (t == DType::bf16) {
    __nv_bfloat16* p = static_cast<__nv_bfloat16*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 3) == 0) {
      *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(x0, x1);
    } else {
      p[0] = __float2bfloat16_rn(x0);
      if (two) p[1] = __float2bfloat16_rn(x1);
    }
  } else {
    __half* p = static_cast<__half*>(base) + i;
    if (two && (reinterpret_cast<uintptr_t>(p) & 3) == 0) {
      *reinterpret_cast<__half2*>(p) = __floats2half2_rn(x0, x1);
    } else {
      p[0] = __float2half_rn(x0);
      if (two) p[1] = __float2half_rn(x1);
    }
  }
}

__device__ __forceinline__ float silu(float x) { return x / (1.f + __expf(-x)); }

// Writes C[z, m, n] (and C[z, m, n+1] when n+1 < N) from raw accumulator sums.
// Non-swiglu: v = alpha*acc (+ beta*C) (+ R).  Swiglu: v = silu(alpha*gate) * (alpha*up).
// Caller guarantees m < M and n < N.
__device__ __forceinline__ void epilogue_store_pair(const MatmulArgs& p, int z, int m, int n, float acc0, float acc1,
                                                    float up0, float up1) {
  const bool two = n + 1 < p.N;
  float v0, v1;
  if (p.epilogue == MatmulEpilogue::swiglu) {
    v0 = silu(p.alpha * acc0) * (p.alpha * up0);
    v1 = silu(p.alpha * acc1) * (p.alpha * up1);
  } else {
    v0 = p.alpha * acc0;
    v1 = p.alpha * acc1;
    if (p.beta != 0.f) {
      float c0, c1;
      load_pair(p.c, p.c_dtype, int64_t(z) * p.stride_c + int64_t(m) * p.ldc + n, two, c0, c1);
      v0 += p.beta * c0;
      v1 += p.beta * c1;
    }
    if (p.epilogue == MatmulEpilogue::residual_add) {
      float r0, r1;
      load_pair(p.residual, p.c_dtype, int64_t(z) * p.stride_residual + int64_t(m) * p.ld_residual + n, two, r0, r1);
      v0 += r0;
      v1 += r1;
    }
  }
  store_pair(p.c, p.c_dtype, int64_t(z) * p.stride_c + int64_t(m) * p.ldc + n, two, v0, v1);
}

#endif  // __CUDACC__

// ---- per-path launchers (each throws KilnException on a bad launch) ----

// SIMT tiled kernel: any supported dtype, layout and alignment. The f32 path and the fallback.
void matmul_simt_run(const MatmulParams& p, cudaStream_t stream);

// Ampere mma.sync path (runs on sm_80+). Requires bf16/f16 A and B with 16-byte aligned
// base pointers and lda, ldb, stride_a, stride_b multiples of 8 (and N % 8 == 0 for swiglu
// without trans_b); see matmul_sm80_supported.
int matmul_sm80_config_count();
const char* matmul_sm80_config_name(int config);
bool matmul_sm80_supported(const MatmulParams& p);
int matmul_sm80_pick_config(const MatmulParams& p, int sm_count);
void matmul_sm80_run(const MatmulParams& p, int config, cudaStream_t stream);

// Hopper wgmma + TMA path (sm_90a only).
int matmul_sm90_config_count();
const char* matmul_sm90_config_name(int config);
bool matmul_sm90_supported(const MatmulParams& p);
int matmul_sm90_pick_config(const MatmulParams& p, int sm_count);
void matmul_sm90_run(const MatmulParams& p, int config, cudaStream_t stream);

}  // namespace matmul_detail
}  // namespace kiln

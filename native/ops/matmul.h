// Matmul contract shared by the CPU GEMM (ops/cpu/matmul.cc) and the CUDA GEMMs (ops/cuda/matmul/).
//
//   for each batch index z in [0, batch):
//     acc[m, n]  = alpha * sum_k opA(A_z)[m, k] * opB(B_z)[k, n]        (f32 accumulation; f64 for f64)
//     C_z[m, n]  = epilogue(acc[m, n] + beta * C_z[m, n])                 (beta read only when beta != 0)
//
//   opA(A) is A (M x K, row-major, leading dim lda) or, with trans_a, A is stored K x M and used as Aᵀ.
//   opB(B) is B (K x N, row-major, leading dim ldb) or, with trans_b, B is stored N x K and used as Bᵀ.
//   Forward y = x·Wᵀ is trans_b; input gradient dx = dy·W is plain; weight gradient dW += dyᵀ·x is
//   trans_a with beta = 1 into an f32 C (gradient accumulation).
//
// Epilogues (applied after alpha/beta, before the store and the cast to C's dtype):
//   none          C = acc
//   residual_add  C = acc + R[m, n]                  (R has C's shape; leading dim ld_residual)
//   swiglu        the GEMM is computed with 2N output columns, gate = columns [0, N) and up =
//                 columns [N, 2N) of opB(B) (with trans_b: B is the row concatenation of HF's
//                 gate_proj.weight and up_proj.weight, 2N x K); C (M x N) = silu(gate) * up.
//                 beta must be 0. Here N is C's width, the GEMM's inner N is 2N.
//
// dtypes: A and B share one dtype. (f32, f32) -> f32 | (bf16|f16) -> bf16|f16|f32 | f64 -> f64 (CPU only).
// batch_invariant: each row of C is computed exactly as it would be in any other M (the serving
// engine batches sequences and needs a sequence's tokens not to depend on its neighbours). On the
// CPU every M takes the skinny path (per-element dot products in groups of 8 rows, no packing),
// whose arithmetic for a row does not depend on M. CUDA kernels do not read it (their batch invariance is unverified).
// The residual has C's dtype. Strides and leading dims are in elements. All pointers are to the
// first element of batch 0; batch z starts at ptr + z * stride_*.
#pragma once
#include <cstdint>

#include "../runtime/dtype.h"

namespace kiln {

enum class MatmulEpilogue : int32_t { none = 0, residual_add = 1, swiglu = 2 };

struct MatmulParams {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  const void* residual = nullptr;  // epilogue residual_add only
  DType ab_dtype = DType::f32;
  DType c_dtype = DType::f32;
  bool trans_a = false;
  bool trans_b = false;
  int64_t M = 0, N = 0, K = 0, batch = 1;
  int64_t lda = 0, ldb = 0, ldc = 0, ld_residual = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0, stride_residual = 0;
  float alpha = 1.0f;
  float beta = 0.0f;
  MatmulEpilogue epilogue = MatmulEpilogue::none;
  bool batch_invariant = false;
};

}  // namespace kiln

// CPU matmul (GEMM) with alpha/beta, batch strides and the none / residual_add / swiglu
// epilogues. The math, shapes and dtype rules are the contract in ops/matmul.h; this header only
// lists the entry points. All of them run synchronously on the calling thread (using
// kiln::parallel_for inside) and take no workspace (packing buffers are per-thread, kept and grown
// internally).
//
// dtypes (A and B share one dtype):
//   f32 x f32 -> f32                       f32 accumulation
//   bf16|f16 x bf16|f16 -> bf16|f16|f32    widened to f32 while packing, f32 accumulation, one
//                                          rounding at the store
//   f64 x f64 -> f64                       f64 accumulation
// The residual (residual_add) has C's dtype. The residual may alias C exactly (same pointer, leading
// dim and batch stride: an in-place "C += A·B"); A and B must not overlap C. No alignment is
// required of any pointer or leading dim.
//
// Accumulation rule: C is overwritten (=) when beta == 0 (C is then never read, so it may hold
// NaN garbage) and accumulated (C = acc + beta·C) otherwise — the weight-gradient call uses beta = 1.
#pragma once
#include "../matmul.h"

namespace kiln {

// Throws KilnException before anything is read or written:
//   ERR_DTYPE  ab/c dtype combination outside the table above (e.g. f64 mixed with another dtype,
//              i32, an f32 input with a half output)
//   ERR_SHAPE  negative M, N, K or batch
//   ERR_ARG    null pointer that would be touched; lda/ldb/ldc/ld_residual smaller than the stored
//              row width (or < 1); negative batch stride; batch > 1 with C batches that overlap;
//              an unknown epilogue; swiglu with beta != 0; residual_add without a residual.
// Sizes of zero are valid (nothing to do; K == 0 gives C = epilogue(beta·C)).
void matmul_validate(const MatmulParams& p);

// Fast path: cache-blocked GEMM (GotoBLAS/BLIS structure: B panels packed per (NC, KC) block,
// A panels per (MC, KC) block, register-blocked microkernel). Microkernels: AVX-512 14x32 f32 and
// 14x16 f64, AVX2+FMA 6x16 f32 and 6x8 f64, portable 4x8 f32 and 4x4 f64, picked at run time
// (KILN_CPU_ISA=avx2|generic lowers the choice). M <= 8 (decode) takes an unpacked GEMV-like path.
// Threads: C is cut into tiles over (batch, M, N), one or more per thread of kiln::parallel_for;
// results do not depend on the thread count (each element's K sum runs in the same order in every
// tiling). Each pool thread keeps its packing buffers (about 9 MB for f32) between calls.
// KILN_GEMM_MC / KILN_GEMM_KC / KILN_GEMM_NC override the blocking (tuning and tests only).
// Validates first.
void matmul_cpu(const MatmulParams& p);

// Oracle: plain triple loop, accumulating in double for every dtype, the epilogue in double,
// one rounding at the store. Validates first.
void matmul_reference_cpu(const MatmulParams& p);

// Name of the microkernel matmul_cpu uses on this machine: "avx512", "avx2" or "generic".
const char* matmul_cpu_isa();

}  // namespace kiln

// Newton–Schulz orthogonalization for Muon: the contract shared by the CPU paths
// (ops/cpu/newton_schulz.cc) and the CUDA path (ops/cuda/newton_schulz/).
//
// For each of `batch` matrices G_z (rows x cols, contiguous, matrix z at input + z·rows·cols):
//   X = G / (‖G‖_F · norm_scale + eps)          (classic: norm_scale 1, eps 1e-7;
//                                                Polar Express: norm_scale 1.02, eps 1e-6)
//   if rows > cols, X = Xᵀ so that X is m x n with m = min(rows, cols) <= n = max(rows, cols)
//   for s in [0, steps):   (a, b, c) = coefficients[3s .. 3s+2]
//     A = X·Xᵀ                 (m x m, symmetric)
//     B = b·A + c·A·A          (m x m, symmetric: A·A of a symmetric A is symmetric)
//     X = a·X + B·X            (m x n)
//   output_z = X (transposed back to rows x cols for tall G), cast to output_dtype.   (=)
//
// Compute dtype (where the rounding happens; accumulation is always at least f32):
//   f64   every value in double, no rounding (CPU only; the oracle)
//   f32   X, A, B kept in f32 (CPU only)
//   bf16  X, A and B are rounded to bf16 each time they are stored: X after the normalization
//         and after every step, A after X·Xᵀ, B after b·A + c·A·A (the products accumulate in
//         f32). This is what the bf16 PyTorch Muon reference does (every tensor is bf16) and what
//         the CUDA kernels do (bf16 operands in shared memory, f32 tensor-core accumulation).
//   The norm is accumulated in double on the CPU and in f32 (deterministic two-pass) on CUDA.
//
// FLOPs per matrix per step, a multiply-add counting 2: 2m²n (A = X·Xᵀ) + 2m³ (A·A) + 2m²n
// (B·X). The symmetric kernels compute only the upper triangle (diagonal included) of A and of
// A·A, i.e. a share (m+1)/(2m) of the first two terms (newton_schulz_flops(..., symmetric = true)).
//
// dtypes:
//   input   f32 | bf16 | f16 (CPU also f64)
//   output  f32 | bf16      (CPU also f64)
//   compute CPU: f64 | f32 | bf16;  CUDA: bf16 only
// Sizes: batch, rows, cols >= 0 (zero means nothing to do), steps in [0, 100]; rows·cols and
// batch·rows·cols fit in int64; CUDA additionally needs min(rows, cols) <= 16384, max(rows, cols) <= 2^20,
// batch <= 65535.
// Input and output must not overlap. No alignment is required of input or output.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../runtime/dtype.h"

struct CUstream_st;  // cudaStream_t, without pulling in the CUDA headers

namespace kiln {

// Classic quintic coefficients (Keller Jordan's Muon), the same triple every step.
constexpr double kNewtonSchulzClassic[3] = {3.4445, -4.7750, 2.0315};
// Polar Express per-step coefficients for 5 steps (use with norm_scale 1.02, eps 1e-6).
constexpr double kNewtonSchulzPolarExpress[15] = {
    8.156554524902461,  -22.48329292557795, 15.878769915207462,  //
    4.042929935166739,  -2.808917465908714, 0.5000178451051316,  //
    3.8916678022926607, -2.772484153217685, 0.5060648178503393,  //
    3.285753657755655,  -2.3681294933425376, 0.46449024233003106,  //
    2.3465413258596377, -1.7097828382687081, 0.42323551169305323};

// One call: `batch` matrices of one shape (the optimizer stacks same-shape parameters).
struct NewtonSchulzBatchParams {
  const void* input = nullptr;  // G: (batch, rows, cols) input_dtype
  void* output = nullptr;       // O: (batch, rows, cols) output_dtype
  DType input_dtype = DType::f32;
  DType output_dtype = DType::f32;
  DType compute_dtype = DType::bf16;
  int64_t batch = 1, rows = 0, cols = 0;
  int steps = 5;
  const double* coefficients = nullptr;  // host memory, 3·steps values: (a, b, c) per step
  double norm_scale = 1.0;
  double eps = 1e-7;
};

// Throws KilnException (ERR_ARG / ERR_SHAPE / ERR_DTYPE) for anything outside the contract above.
// `cuda` selects the stricter CUDA rules.
void newton_schulz_validate(const NewtonSchulzBatchParams& p, bool cuda);

// ---- CPU ------------------------------------------------------------------------------------
// Oracle: plain loops, everything in double (compute bf16 still rounds X, A, B to bf16 at the
// same points as the fast path). Single-threaded. Allocates its own scratch.
void newton_schulz_reference_cpu(const NewtonSchulzBatchParams& p);

// Fast path: f32 (or f32 + bf16 rounding) GEMMs on the blocked, multithreaded matmul_cpu; the
// symmetric products compute block rows of the upper triangle only and mirror. Big matrices run
// one after another with every thread inside each GEMM; a batch of small matrices runs one
// matrix per thread. compute f64 runs the reference. Workspace: host memory of at least
// newton_schulz_cpu_workspace_bytes(p) bytes, or nullptr to allocate internally.
size_t newton_schulz_cpu_workspace_bytes(const NewtonSchulzBatchParams& p);
void newton_schulz_cpu(const NewtonSchulzBatchParams& p, void* workspace = nullptr, size_t workspace_bytes = 0);

// ---- CUDA -----------------------------------------------------------------------------------
// Workspace: device memory, at least newton_schulz_cuda_workspace_bytes(p) bytes, 256-byte
// aligned (cudaMalloc memory is). Holds two padded X buffers, A and B (bf16) and the norm
// partial sums, for the whole batch. Asynchronous on `stream`; no host synchronization.
// There is one path, the sm80 mma.sync kernels (they also run on sm90); KILN_NS_FORCE_SM80=1 is
// accepted, and changes nothing, for symmetry with the other ops.
size_t newton_schulz_cuda_workspace_bytes(const NewtonSchulzBatchParams& p);
void newton_schulz_cuda(const NewtonSchulzBatchParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream);

// FLOPs of one matrix (rows x cols, `steps` steps), counting A = X·Xᵀ and A·A in full
// (symmetric = false) or as their upper triangles including the diagonal (symmetric = true).
double newton_schulz_flops(int64_t rows, int64_t cols, int steps, bool symmetric);
// The same times `batch` (the binding's newtonSchulzFlops).
double newton_schulz_flops(int64_t batch, int64_t rows, int64_t cols, int steps, bool symmetric);

}  // namespace kiln

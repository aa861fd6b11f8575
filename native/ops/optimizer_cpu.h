// Muon-family optimizer kernels on the CPU (issue 5's CPU path): Newton–Schulz
// orthogonalization and the fused elementwise updates. Math (REFERENCE.md):
//
// Newton–Schulz, for each of `batch` matrices G (rows x cols, contiguous):
//   X = G / (‖G‖_F · norm_scale + eps); if rows > cols work on Xᵀ (so X is m x n with m <= n)
//   for step s: A = X·Xᵀ (m x m); B = b_s·A + c_s·A·A; X = a_s·X + B·X
//   out = X (transposed back for tall G). With compute bf16, X, A and B are rounded to bf16 when
//   stored (what the bf16 PyTorch reference and the CUDA kernels do); f32 keeps f32.
//   These single-tensor entry points forward to the batched/multi-tensor code of
//   ops/newton_schulz.h and ops/optimizer.h (cpu/optimizer.cc), which the CUDA kernels share.
//   FLOPs per step: 2m²n (A) + 2m³ (A·A) + 2m²n (B·X); A and B are symmetric, so a symmetric
//   kernel needs about half of the first two (newton_schulz_flops).
//
// Momentum (Muon), elementwise over n: m = β·m + (1−β)·g; u = nesterov ? (1−β)·g + β·m : m.
// Apply: w = w·(1 − lr·wd) − lr·scale·o.
// AdamW (step t >= 1): m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//   w = w·(1 − lr·wd) − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps).
// NorMuon (after Newton–Schulz, o (rows x cols)): v_r = β2·v_r + (1−β2)·mean_c(o_rc²) per row;
//   o_rc /= sqrt(v_r) + eps; then o is rescaled to its Frobenius norm before the division.
// All state is f32; g and w f32.
#pragma once
#include <cstdint>

#include "../runtime/dtype.h"

namespace kiln {

struct NewtonSchulzParams {
  const float* g = nullptr;  // (batch, rows, cols)
  float* out = nullptr;      // (batch, rows, cols)
  int64_t batch = 1, rows = 0, cols = 0;
  int steps = 5;
  const double* coefficients = nullptr;  // steps x (a, b, c)
  double norm_scale = 1.0;
  double eps = 1e-7;
  DType compute = DType::f32;  // f32, bf16 (rounded X, A, B) or f64 (reference only)
};

// Fast: upper-triangle tiles of the symmetric products through matmul_cpu, mirrored.
void newton_schulz_cpu(const NewtonSchulzParams& p);
// Oracle: the same iteration in plain double loops (compute bf16 still rounds like the fast path).
void newton_schulz_reference_cpu(const NewtonSchulzParams& p);
// FLOPs of one call, counting the symmetric products in full or as upper triangles.
double newton_schulz_flops(int64_t batch, int64_t rows, int64_t cols, int steps, bool symmetric);

void muon_momentum_cpu(float* momentum, float* update, const float* grad, int64_t n, float beta, bool nesterov);
void normuon_normalize_cpu(float* ortho, float* row_second_moment, int64_t rows, int64_t cols, float beta2, float eps);
void muon_apply_cpu(float* weight, const float* ortho, int64_t n, float lr, float weight_decay, float scale);
void adamw_cpu(float* weight, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
               float eps, float weight_decay, int64_t step);

}  // namespace kiln

// Fused multi-tensor optimizer kernels: one call updates a whole list of parameter
// tensors. CPU: ops/cpu/optimizer.cc; CUDA: ops/cuda/optimizer/multi_tensor.cu. Newton–Schulz is
// in ops/newton_schulz.h.
//
// Math, elementwise over every element i of every tensor in the list, all in f32:
//
//   AdamW (step t >= 1; decoupled weight decay; bias correction):
//     m_i = β1·m_i + (1−β1)·g_i                                              (=, f32 state)
//     v_i = β2·v_i + (1−β2)·g_i²                                             (=, f32 state)
//     w_i = w_i·(1 − lr·wd) − lr · (m_i·c1) / (sqrt(v_i)·c2 + eps)           (=, f32 master)
//       with c1 = 1/(1−β1^t), c2 = 1/sqrt(1−β2^t) computed in double on the host, then f32.
//
//   Muon momentum (PyTorch torch.optim.Muon / KellerJordan Muon):
//     m_i = β·m_i + (1−β)·g_i                                                (=, f32 state)
//     u_i = nesterov ? (1−β)·g_i + β·m_i : m_i                               (=, f32 or bf16:
//       u is the Newton–Schulz input, so bf16 halves its traffic; rounded to nearest even)
//
//   Muon apply (O = NS(u), f32 or bf16; scale per tensor, e.g. sqrt(max(1, rows/cols)) or
//   0.2·sqrt(max(rows, cols))):
//     w_i = w_i·(1 − lr·wd) − lr·scale_tensor·o_i                            (=)
//
//   Sum of squares (gradient norm): total = Σ_tensors Σ_i x_i², per_tensor[j] = Σ_i x_i² of
//     tensor j. CPU accumulates in double. CUDA: each 64K-element chunk sums in f32 (fixed tree
//     order), the chunks of a tensor and the tensors are added in double in a fixed order, so
//     the result is deterministic (no atomics); written as f32.
//
//   Scale (clipping): x_i *= factor, factor = scale · clip, where clip = 1 without a norm and
//     clip = min(1, max_norm / (sqrt(sum_squares) + 1e-6)) when the CUDA call is given the
//     device sum of squares (no host sync), the same rule as ops/layers.h's grad_clip.
//
// Tensors: contiguous, `numel` elements each (numel 0 is skipped); pointers of one tensor must
// not overlap each other except where noted (w, m, v, g distinct; u may not alias m or g).
// No alignment is required (the CUDA kernels use coalesced scalar accesses, 4 independent
// elements in flight per thread; 16-byte vector loads are a possible later gain). The lists are
// host arrays; the CUDA launchers copy them into `workspace` (device memory, at least the
// *_workspace_bytes of the same list, 256-byte aligned) with one cudaMemcpyAsync from pageable
// memory (the host list may be freed on return; not capturable in a CUDA graph). Each CUDA call
// is ONE kernel launch over all tensors (plus one small finalize for the sum of squares):
// apex/PyTorch multi_tensor_apply's chunking, with every 64K-element chunk of every tensor one
// block and the block finding its tensor by binary search over the device descriptor array.
#pragma once
#include <cstddef>
#include <cstdint>

#include "../runtime/dtype.h"

struct CUstream_st;  // cudaStream_t

namespace kiln {

constexpr int64_t kMultiTensorChunk = 65536;  // elements per CUDA block

struct AdamWTensor {
  float* weight = nullptr;      // (numel) f32 master weights
  float* exp_avg = nullptr;     // m: (numel) f32
  float* exp_avg_sq = nullptr;  // v: (numel) f32
  const float* grad = nullptr;  // g: (numel) f32
  int64_t numel = 0;
};

struct AdamWParams {
  const AdamWTensor* tensors = nullptr;  // host array of `count`
  int64_t count = 0;
  float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
  int64_t step = 1;  // t, >= 1 (the step being taken, counted from 1)
};

struct MuonMomentumTensor {
  float* momentum = nullptr;    // m: (numel) f32
  const float* grad = nullptr;  // g: (numel) f32
  void* update = nullptr;       // u: (numel) update_dtype
  int64_t numel = 0;
};

struct MuonMomentumParams {
  const MuonMomentumTensor* tensors = nullptr;
  int64_t count = 0;
  float beta = 0.95f;
  bool nesterov = true;
  DType update_dtype = DType::bf16;  // f32 | bf16
};

struct MuonApplyTensor {
  float* weight = nullptr;       // w: (numel) f32
  const void* ortho = nullptr;   // o: (numel) ortho_dtype
  int64_t numel = 0;
  float scale = 1.0f;            // per-tensor update scale s
};

struct MuonApplyParams {
  const MuonApplyTensor* tensors = nullptr;
  int64_t count = 0;
  float lr = 0, weight_decay = 0;
  DType ortho_dtype = DType::f32;  // f32 | bf16
};

struct ListTensor {
  void* data = nullptr;  // (numel) dtype of the list; read-only for the sum of squares
  int64_t numel = 0;
};

struct TensorListParams {
  const ListTensor* tensors = nullptr;
  int64_t count = 0;
  DType dtype = DType::f32;  // f32 | bf16
};

// Each call throws KilnException (ERR_ARG null pointer / negative numel / bad hyper-parameter,
// ERR_DTYPE) before touching memory; the CPU and CUDA paths share these checks.
void adamw_multi_tensor_validate(const AdamWParams& p);
void muon_momentum_multi_tensor_validate(const MuonMomentumParams& p);
void muon_apply_multi_tensor_validate(const MuonApplyParams& p);
void tensor_list_validate(const TensorListParams& p, const char* op);

// NorMuon's row normalization of one orthogonalized update O (rows x cols, f32 or bf16) with its
// per-row second-moment EMA v (rows, f32), in place:
//   v_r = β2·v_r + (1−β2)·mean_c(O_rc²);  O_rc /= sqrt(v_r) + eps;  O *= ‖O_before‖ / (‖O_after‖ + eps).
// CPU: normuon_normalize_cpu (f32, below). CUDA: three launches, deterministic.
void normuon_normalize_validate(const void* ortho, DType ortho_dtype, const float* row_second_moment, int64_t rows,
                                int64_t cols, float beta2, float eps);
size_t normuon_normalize_cuda_workspace_bytes(int64_t rows);
void normuon_normalize_cuda(void* ortho, DType ortho_dtype, float* row_second_moment, int64_t rows, int64_t cols, float beta2,
                            float eps, void* workspace, size_t workspace_bytes, CUstream_st* stream);

// ---- CPU (kiln::parallel_for over 64K-element chunks of all tensors) ----
void adamw_multi_tensor_cpu(const AdamWParams& p);
void muon_momentum_multi_tensor_cpu(const MuonMomentumParams& p);
void muon_apply_multi_tensor_cpu(const MuonApplyParams& p);
// Returns the total; per_tensor (host, `count` doubles) is written when not null.
double sum_of_squares_multi_tensor_cpu(const TensorListParams& p, double* per_tensor = nullptr);
// x *= factor (rounded to nearest even for bf16).
void scale_multi_tensor_cpu(const TensorListParams& p, float factor);
// NorMuon's row normalization (above) of an f32 update; the norms accumulate in double.
void normuon_normalize_cpu(float* ortho, float* row_second_moment, int64_t rows, int64_t cols, float beta2, float eps);

// ---- CUDA ----
size_t adamw_multi_tensor_cuda_workspace_bytes(const AdamWParams& p);
void adamw_multi_tensor_cuda(const AdamWParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream);

size_t muon_momentum_multi_tensor_cuda_workspace_bytes(const MuonMomentumParams& p);
void muon_momentum_multi_tensor_cuda(const MuonMomentumParams& p, void* workspace, size_t workspace_bytes,
                                     CUstream_st* stream);

size_t muon_apply_multi_tensor_cuda_workspace_bytes(const MuonApplyParams& p);
void muon_apply_multi_tensor_cuda(const MuonApplyParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream);

// total: device pointer to one f32 (=). per_tensor: device pointer to `count` f32 (=), or null.
size_t sum_of_squares_multi_tensor_cuda_workspace_bytes(const TensorListParams& p);
void sum_of_squares_multi_tensor_cuda(float* total, float* per_tensor, const TensorListParams& p, void* workspace,
                                      size_t workspace_bytes, CUstream_st* stream);

// factor = scale · (sum_squares ? min(1, max_norm / (sqrt(*sum_squares) + 1e-6)) : 1);
// sum_squares is a device pointer to one f32 (e.g. sum_of_squares_multi_tensor_cuda's total).
size_t scale_multi_tensor_cuda_workspace_bytes(const TensorListParams& p);
void scale_multi_tensor_cuda(const TensorListParams& p, float scale, const float* sum_squares, float max_norm,
                             void* workspace, size_t workspace_bytes, CUstream_st* stream);

}  // namespace kiln

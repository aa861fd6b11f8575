// The LLaMA model's layer ops besides matmul and attention, CPU and CUDA: embedding, RMSNorm
// fused with the residual add, SwiGLU, the fused classifier (cross-entropy), gradient norm and
// clipping.
// Plain C++ contract: one params struct per op, destination pointers first; CUDA launchers take
// the stream last. All tensors are contiguous, row-major; sizes and leading dims in elements.
//
// Each op has three implementations with the same params:
//   *_reference_cpu  plain loops, double accumulation (the oracle for tests)
//   *_cpu            parallel_for over rows (or owned columns), vectorizable inner loops
//   *_cuda           vectorized (16-byte) loads when sizes and pointers allow, scalar otherwise
// dtypes (the `dtype` field is the storage type of the activation tensors):
//   CPU : f32, f64 (computed in f64), bf16, f16 (converted to f32, computed in f32)
//   CUDA: f32, bf16, f16 (f32 math); f64 is ERR_DTYPE
// "Gradient dtype" below = f64 when dtype is f64, else f32 (parameter gradients and saved
// statistics are never stored in a half type).
// Errors: ERR_DTYPE (unsupported dtype), ERR_SHAPE (negative sizes), ERR_ARG (bad ids/targets on
// the CPU, missing pointers, missing/too small workspace). The CUDA launchers cannot read ids
// or targets without a host sync, so they define the out-of-range behaviour instead (below).
// The CUDA launchers never synchronize; nothing is allocated (workspace comes from the caller).
#pragma once
#include <cstddef>
#include <cstdint>

#include "../runtime/dtype.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*: the header stays free of CUDA includes

namespace kiln {

// ---------------------------------------------------------------------------------------------
// 1) embedding
//   forward : out[i, :] = table[ids[i], :]                       out (N, D), table (V, D) dtype
//   backward: dtable[v, :] += Σ_{i : ids[i] = v} dout[i, :]     (+=; dtable gradient dtype)
//             summed in position order i ascending on every path, so results are deterministic.
//   CPU: every id must satisfy 0 <= id < V, else ERR_ARG (nothing written).
//   CUDA: forward writes a NaN row for an out-of-range id; backward skips it (its dout row is
//         dropped). Backward needs embedding_backward_workspace_bytes(N, V) bytes of workspace
//         (contents on entry ignored): a device-side stable counting sort of ids, then one block
//         per vocab row sums its positions in order (no float atomics).
struct EmbeddingForwardParams {
  void* out = nullptr;             // (N, D) dtype
  const void* table = nullptr;     // (V, D) dtype
  const int32_t* ids = nullptr;    // (N) i32
  int64_t N = 0, V = 0, D = 0;
  DType dtype = DType::f32;
};

struct EmbeddingBackwardParams {
  void* dtable = nullptr;          // (V, D) gradient dtype (f32; f64 when dtype is f64), +=
  const void* dout = nullptr;      // (N, D) dtype
  const int32_t* ids = nullptr;    // (N) i32
  int64_t N = 0, V = 0, D = 0;
  DType dtype = DType::f32;        // dtype of dout
  void* workspace = nullptr;       // CUDA only: embedding_backward_workspace_bytes(N, V)
  size_t workspace_bytes = 0;
};

size_t embedding_backward_workspace_bytes(int64_t N, int64_t V);

void embedding_forward_reference_cpu(const EmbeddingForwardParams& p);
void embedding_forward_cpu(const EmbeddingForwardParams& p);
void embedding_backward_reference_cpu(const EmbeddingBackwardParams& p);
void embedding_backward_cpu(const EmbeddingBackwardParams& p);
void embedding_forward_cuda(const EmbeddingForwardParams& p, CUstream_st* stream);
void embedding_backward_cuda(const EmbeddingBackwardParams& p, CUstream_st* stream);

// ---------------------------------------------------------------------------------------------
// 2) rmsnorm fused with the residual add
//   forward : h = x + residual            (residual optional: null means h = x)
//             h is rounded to dtype first (it is the residual stream the next layer reads) and
//             written to residual_out when given (residual_out may alias x or residual);
//             rstd[i] = 1 / sqrt(mean_d(h[i, d]²) + eps)             (saved, gradient dtype)
//             y[i, d] = h[i, d] · rstd[i] · weight[d]
//   backward: ĥ = h · rstd;  g = dy · weight
//             dh[i, d] = rstd[i] · (g[i, d] − ĥ[i, d] · mean_d(g[i, :] · ĥ[i, :]))
//                        (+ dresidual_in[i, d] when given: the residual stream's gradient)  (=)
//             dh is both dx and the gradient flowing to the residual; dx may alias dresidual_in.
//             dweight[d] += Σ_i dy[i, d] · ĥ[i, d]                   (+=, gradient dtype)
//   Accumulation: row sums in f32 on the CPU fast path for f32/bf16/f16 (8 partial sums), f64 for
//   f64 and in the reference; CUDA: f32, dweight via fixed per-block partials (workspace) then a
//   second column-reduction kernel in fixed order (deterministic, no atomics).
//   CUDA backward needs rmsnorm_backward_workspace_bytes(N, D) bytes. D <= 16384 on CUDA.
struct RmsnormForwardParams {
  void* y = nullptr;                // (N, D) dtype
  void* residual_out = nullptr;     // (N, D) dtype, optional: h = x + residual
  void* rstd = nullptr;             // (N) gradient dtype, optional (inference may skip it)
  const void* x = nullptr;          // (N, D) dtype
  const void* residual = nullptr;   // (N, D) dtype, optional
  const void* weight = nullptr;     // (D) dtype
  int64_t N = 0, D = 0;
  double eps = 1e-5;
  DType dtype = DType::f32;
};

struct RmsnormBackwardParams {
  void* dx = nullptr;                   // (N, D) dtype: dh (see above)
  void* dweight = nullptr;              // (D) gradient dtype, +=
  const void* dy = nullptr;             // (N, D) dtype
  const void* h = nullptr;              // (N, D) dtype: the normalized input (x + residual)
  const void* weight = nullptr;         // (D) dtype
  const void* rstd = nullptr;           // (N) gradient dtype, from the forward
  const void* dresidual_in = nullptr;   // (N, D) dtype, optional
  int64_t N = 0, D = 0;
  DType dtype = DType::f32;
  void* workspace = nullptr;            // CUDA only: rmsnorm_backward_workspace_bytes(N, D)
  size_t workspace_bytes = 0;
};

size_t rmsnorm_backward_workspace_bytes(int64_t N, int64_t D);

// The checks each implementation runs first, on their own (the binding calls them at the op's
// call, so argument errors never wait for the queue): CPU, and CUDA (dtype f32/bf16/f16,
// D <= 16384 for backward, workspace).
void rmsnorm_forward_validate(const RmsnormForwardParams& p);
void rmsnorm_backward_validate(const RmsnormBackwardParams& p);
void rmsnorm_forward_cuda_validate(const RmsnormForwardParams& p);
void rmsnorm_backward_cuda_validate(const RmsnormBackwardParams& p);
void rmsnorm_forward_reference_cpu(const RmsnormForwardParams& p);
void rmsnorm_forward_cpu(const RmsnormForwardParams& p);
void rmsnorm_backward_reference_cpu(const RmsnormBackwardParams& p);
void rmsnorm_backward_cpu(const RmsnormBackwardParams& p);
void rmsnorm_forward_cuda(const RmsnormForwardParams& p, CUstream_st* stream);
void rmsnorm_backward_cuda(const RmsnormBackwardParams& p, CUstream_st* stream);

// ---------------------------------------------------------------------------------------------
// 3) swiglu
//   forward : out[i, f] = silu(gate[i, f]) · up[i, f],  silu(g) = g · σ(g)          (=)
//   backward: s = σ(g);  dgate = dout · up · s · (1 + g · (1 − s));  dup = dout · g · s   (=)
//   gate and up are read at gate + i·ld_in + f and up + i·ld_in + f: the fused matmul's
//   (N, 2F) [gate | up] layout is gate = in, up = in + F (elements), ld_in = 2F; separate
//   (N, F) tensors use ld_in = F. Likewise dgate/dup with ld_dinput (2F for the fused layout).
//   out and dout are (N, F) with leading dim F. Element-wise, no accumulation.
struct SwigluForwardParams {
  void* out = nullptr;            // (N, F) dtype
  const void* gate = nullptr;     // (N, ld_in) dtype, columns [0, F)
  const void* up = nullptr;       // (N, ld_in) dtype, columns [0, F)
  int64_t N = 0, F = 0, ld_in = 0;
  DType dtype = DType::f32;
};

struct SwigluBackwardParams {
  void* dgate = nullptr;          // (N, ld_dinput) dtype
  void* dup = nullptr;            // (N, ld_dinput) dtype
  const void* dout = nullptr;     // (N, F) dtype
  const void* gate = nullptr;     // (N, ld_in) dtype (saved forward input)
  const void* up = nullptr;       // (N, ld_in) dtype
  int64_t N = 0, F = 0, ld_in = 0, ld_dinput = 0;
  DType dtype = DType::f32;
};

void swiglu_forward_reference_cpu(const SwigluForwardParams& p);
void swiglu_forward_cpu(const SwigluForwardParams& p);
void swiglu_backward_reference_cpu(const SwigluBackwardParams& p);
void swiglu_backward_cpu(const SwigluBackwardParams& p);
void swiglu_forward_cuda(const SwigluForwardParams& p, CUstream_st* stream);
void swiglu_backward_cuda(const SwigluBackwardParams& p, CUstream_st* stream);

// ---------------------------------------------------------------------------------------------
// 4) fused classifier: cross-entropy loss and its gradient in one pass over the logits
//   For each row i with target t = targets[i]:
//     m = max_v logits[i, v];  lse = m + log Σ_v exp(logits[i, v] − m)  (online: one sweep)
//     loss[i] = lse − logits[i, t]                                    (=, gradient dtype)
//     dlogits[i, v] = (exp(logits[i, v] − lse) − [v == t]) · dloss_scale   (=, dtype; 2nd sweep)
//   t = −1 means ignore: loss[i] = 0 and the dlogits row is 0.
//   dloss_scale is typically 1 / (number of non-ignored targets in the whole batch): the caller
//   chunks N to bound memory, so the count is a parameter, not computed here.
//   dlogits may equal logits (in place: each element is read before it is overwritten by the
//   same thread) or be null (loss only). Full f32 logits are never materialized.
//   CPU: targets outside [−1, V) are ERR_ARG. CUDA: such a row gets loss NaN and a NaN dlogits
//   row (loud, never silently wrong). Accumulation: f32 on CUDA and the CPU fast path for
//   f32/bf16/f16 (f64 for f64), double in the reference.
struct CrossEntropyParams {
  void* loss = nullptr;              // (N) gradient dtype (f32; f64 when dtype is f64)
  void* dlogits = nullptr;           // (N, V) dtype, optional, may == logits
  const void* logits = nullptr;      // (N, V) dtype
  const int32_t* targets = nullptr;  // (N) i32, −1 = ignore
  int64_t N = 0, V = 0;
  double dloss_scale = 1.0;
  DType dtype = DType::f32;
};

void cross_entropy_reference_cpu(const CrossEntropyParams& p);
void cross_entropy_cpu(const CrossEntropyParams& p);
void cross_entropy_cuda(const CrossEntropyParams& p, CUstream_st* stream);

// ---------------------------------------------------------------------------------------------
// 5) gradient norm and clipping over a list of tensors
//   norm  = sqrt(Σ_tensors Σ_j x_j²)
//   clip  : x_j *= scale,  scale = min(1, max_norm / (norm + 1e-6))    (in place, rounded to dtype)
//   Tensor dtypes: f32, bf16, f16 (CPU also f64); the list may mix dtypes.
//   CPU: f64 accumulation over fixed 64K-element chunks, chunk sums added in order
//        (deterministic for any thread count). grad_norm_cpu returns the norm.
//   CUDA: each tensor is cut into fixed 16K-element chunks; one block per chunk writes an f32
//        partial (workspace), then one block adds the partials in a fixed order (f64) and writes
//        the f32 norm to device memory. Deterministic. Needs grad_norm_workspace_bytes(...).
//        grad_clip_cuda reads the norm from device memory (no host sync); with scale == 1 it
//        writes nothing.
struct TensorSpan {
  void* data = nullptr;     // contiguous (numel) dtype; read-only for grad_norm
  int64_t numel = 0;
  DType dtype = DType::f32;
};

double grad_norm_reference_cpu(const TensorSpan* tensors, int64_t count);
double grad_norm_cpu(const TensorSpan* tensors, int64_t count);
void grad_clip_reference_cpu(const TensorSpan* tensors, int64_t count, double norm, double max_norm);
void grad_clip_cpu(const TensorSpan* tensors, int64_t count, double norm, double max_norm);

size_t grad_norm_workspace_bytes(const TensorSpan* tensors, int64_t count);
// norm: device pointer to one f32 (written). workspace: device memory of grad_norm_workspace_bytes.
void grad_norm_cuda(float* norm, const TensorSpan* tensors, int64_t count, void* workspace, size_t workspace_bytes,
                    CUstream_st* stream);
// norm: device pointer to the f32 norm (read on the device by every block).
void grad_clip_cuda(const TensorSpan* tensors, int64_t count, const float* norm, double max_norm, CUstream_st* stream);

}  // namespace kiln

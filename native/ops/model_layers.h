// The LLaMA model's remaining layers on the CPU (f32 and f64; issue 6): embedding, RMSNorm,
// SwiGLU and the fused cross-entropy classifier, forward and backward. Rows are contiguous.
//
// embedding:     out (N, D) = table[ids] (ids (N) i32, 0 <= id < V, checked: ERR_ARG)
//   backward:    dtable (V, D) += scatter of dout rows (deterministic: rows are owned by vocab id)
// rmsnorm:       y = x / sqrt(mean(x²) + eps) · w;  rstd (N) saved (f32, f64 for f64)
//   backward:    dx = rstd·(w·dy − x̂·mean(x̂·w·dy)) (+ dresidual when given);  dw (D) += Σ_rows dy·x̂
// swiglu:        in (N, 2F) = [gate | up] -> out (N, F) = silu(gate)·up
//   backward:    d[gate | up] (N, 2F) from dout and the saved input
// cross-entropy: logits (N, V), targets (N) i32 (−1 = ignore; otherwise 0 <= t < V, checked)
//                loss (N) = logsumexp(row) − row[t] (0 for ignored rows);
//                dlogits (N, V) = (softmax(row) − onehot(t))·grad_scale (0 rows when ignored),
//                written over the logits when dlogits == logits (one read of the row).
#pragma once
#include <cstdint>

#include "../runtime/dtype.h"

namespace kiln {

void embedding_forward_cpu(void* out, const void* table, const int32_t* ids, int64_t N, int64_t V, int64_t D, DType dtype);
void embedding_backward_cpu(void* dtable, const int32_t* ids, const void* dout, int64_t N, int64_t V, int64_t D, DType dtype);
void rmsnorm_forward_cpu(void* y, void* rstd, const void* x, const void* weight, int64_t N, int64_t D, double eps, DType dtype);
void rmsnorm_backward_cpu(void* dx, void* dweight, const void* dy, const void* x, const void* weight, const void* rstd,
                          const void* dresidual, int64_t N, int64_t D, DType dtype);
void swiglu_forward_cpu(void* out, const void* in, int64_t N, int64_t F, DType dtype);
void swiglu_backward_cpu(void* din, const void* in, const void* dout, int64_t N, int64_t F, DType dtype);
void cross_entropy_cpu(void* loss, void* dlogits, const void* logits, const int32_t* targets, int64_t N, int64_t V,
                       double grad_scale, DType dtype);

}  // namespace kiln

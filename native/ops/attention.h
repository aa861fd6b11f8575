// Attention contracts shared by the CPU ops (ops/cpu/attention.cc, rope.cc, kv_cache.cc) and the
// CUDA ops (ops/cuda/attention/). All tensors are contiguous, row-major, in the stated layout.
//
// Training / prefill attention (FlashAttention-2 semantics):
//   q: (B, Tq, Hq, D)   k, v: (B, Tk, Hkv, D)   out: (B, Tq, Hq, D)   lse: (B, Hq, Tq) f32
//   Query head h reads kv head h / (Hq / Hkv) (grouped-query attention; Hkv divides Hq).
//   S = scale * q·kᵀ; causal masks key j for query i when j > i + (Tk - Tq) (bottom-right
//   aligned, so Tq = 1 against a cache of Tk keys sees all keys). A query row that sees no key
//   (only possible when Tq > Tk with causal) gets out = 0 and lse = -inf.
//   lse[b, h, i] = log sum_j exp(S[i, j]) (natural log, scale applied); out = softmax(S)·v.
// Backward (recomputes P from lse):
//   dP = dout·vᵀ; Delta_i = sum_d dout[i, d] * out[i, d]; dS = P * (dP - Delta); 
//   dq = scale * dS·k;  dk = scale * dSᵀ·q (summed over the query heads of a group);  dv = Pᵀ·dout
//   (likewise summed). dq, dk, dv are written (=), not accumulated; they have q's dtype.
//
// dtypes: CPU f32 and f64 (bf16/f16 accepted, computed in f32); CUDA bf16 and f16 with f32
// accumulation. lse is always f32 (f64 when the inputs are f64 on the CPU).
//
// Rotary position embedding (HF LLaMA rotate_half convention):
//   x: (B, T, H, D), positions: (B, T) i32; for j < D/2, theta_j = pos * base^(-2j/D):
//   y[j] = x[j] cos - x[j + D/2] sin;  y[j + D/2] = x[j + D/2] cos + x[j] sin.
//   Backward is the same rotation by -theta applied to dy. May run in place (y == x).
//
// Paged KV cache:
//   k_cache, v_cache: (num_blocks, block_size, Hkv, D); block_table: (B, max_blocks) i32 holding
//   physical block ids; token t of sequence b lives in block block_table[b, t / block_size] at
//   slot t % block_size.
//   kv_append: writes k_new, v_new: (B, Tnew, Hkv, D) at token positions start[b] .. start[b]+Tnew-1.
//   attention_decode: q: (B, Hq, D) (one new token per sequence, already appended), seq_lens: (B)
//   i32 = number of valid tokens of each sequence (>= 1); out: (B, Hq, D) = softmax(scale q·Kᵀ)·V
//   over those tokens; lse: (B, Hq) f32 optional (nullptr to skip).
#pragma once
#include <cstdint>

#include "../runtime/dtype.h"

namespace kiln {

struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  void* lse = nullptr;  // f32 (f64 for f64 inputs)
  DType dtype = DType::f32;
  int64_t B = 0, Tq = 0, Tk = 0, Hq = 0, Hkv = 0, D = 0;
  float scale = 0.0f;  // applied in f32 (also for f64 inputs)
  bool causal = true;
};

struct AttentionBackwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const void* dout = nullptr;
  const void* lse = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  DType dtype = DType::f32;
  int64_t B = 0, Tq = 0, Tk = 0, Hq = 0, Hkv = 0, D = 0;
  float scale = 0.0f;  // applied in f32 (also for f64 inputs)
  bool causal = true;
  // CUDA only: f32 scratch the launcher may use (dq accumulation, Delta); size from
  // attention_backward_workspace_bytes(). nullptr on the CPU.
  void* workspace = nullptr;
};

struct RopeParams {
  const void* x = nullptr;
  void* y = nullptr;
  const int32_t* positions = nullptr;  // (B, T)
  DType dtype = DType::f32;
  int64_t B = 0, T = 0, H = 0, D = 0;
  float base = 10000.0f;
  bool backward = false;  // rotate by -theta
  // (D/2) f32 inverse frequency per dimension pair, on x's device (scaled RoPE: llama3, linear);
  // null: base^(-2j/D)
  const float* inv_freq = nullptr;
};

struct KvAppendParams {
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  const void* k_new = nullptr;
  const void* v_new = nullptr;
  const int32_t* block_table = nullptr;  // (B, max_blocks)
  const int32_t* start = nullptr;        // (B)
  DType dtype = DType::f32;
  int64_t B = 0, Tnew = 0, Hkv = 0, D = 0, block_size = 0, max_blocks = 0, num_blocks = 0;
};

struct AttentionDecodeParams {
  const void* q = nullptr;
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  const int32_t* block_table = nullptr;  // (B, max_blocks)
  const int32_t* seq_lens = nullptr;     // (B)
  void* out = nullptr;
  void* lse = nullptr;  // optional
  DType dtype = DType::f32;
  int64_t B = 0, Hq = 0, Hkv = 0, D = 0, block_size = 0, max_blocks = 0, num_blocks = 0;
  float scale = 0.0f;  // applied in f32 (also for f64 inputs)
  // CUDA only: f32 scratch for split-K partial results; size from attention_decode_workspace_bytes().
  void* workspace = nullptr;
  int64_t max_seq_len = 0;  // an upper bound of seq_lens, used to size splits (CUDA)
};

}  // namespace kiln

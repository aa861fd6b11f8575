// DiLoCo's outer step as three ops (lib/parallel/diloco.ts composes them, lib/ops/outer_step.ts
// validates). CPU: ops/cpu/{pseudo_gradient_quantize,dequantize_mean,outer_nesterov}.cc;
// CUDA: ops/cuda/outer_step/*.cu (same contracts, one launch each).
//
// Packed pseudo-gradient (bits 8, 4 or 2; QUANT_BLOCK = 128 values per block), a byte buffer of
// packed_pseudo_gradient_bytes(n, bits) bytes:
//   [blocks × f32 scale][codes: ceil(n·bits/8) bytes, value i at bit i·bits, little-endian
//   within its byte (bits divides 8, so a code never straddles a byte)][zero padding to 4 bytes]
//   L = 2^(bits−1) − 1;  scale_b = absmax_b / L (f32);  q_i = rint(Δ_i · (1/scale_b)) clamped to
//   [−L, L] (round half to even; 0 when scale_b is 0);  code_i = q_i + L;  value_i = q_i · scale_b.
// bits 0 means no quantization: the packed buffer is Δ itself, n f32 values.
//
// pseudo_gradient_quantize (=, one pass):
//   Δ_i = (anchor_i − current_i) + residual_i     (residual null: + 0)
//   packed ← quantize(Δ);  residual_i = Δ_i − value_i  (error feedback; bits 0: residual untouched)
// dequantize_mean (=):
//   mean_i = (Σ_{r<W} value_i(packed_r)) · (1/W)   packed_r at byte r·packed_bytes of `gathered`
// outer_nesterov (in place; the outer Nesterov SGD of DiLoCo plus Streaming DiLoCo's merge):
//   m_i = μ·m_i + Δ̄_i;  anchor_i −= lr·(nesterov ? Δ̄_i + μ·m_i : m_i)
//   weights_i = mix ? α·weights_i + (1−α)·anchor_i : anchor_i
//
// All tensors contiguous f32 (packed/gathered: bytes, 4-byte aligned), on one device, n >= 0.
#pragma once
#include <cstdint>

struct CUstream_st;  // cudaStream_t

namespace kiln {

constexpr int64_t kQuantBlock = 128;

// Bytes of the packed form of n values (n·4 when bits is 0).
inline int64_t packed_pseudo_gradient_bytes(int64_t n, int bits) {
  if (bits == 0) return n * 4;
  const int64_t blocks = (n + kQuantBlock - 1) / kQuantBlock;
  return (blocks * 4 + (n * bits + 7) / 8 + 3) / 4 * 4;
}

struct PseudoGradientQuantizeParams {
  void* packed = nullptr;           // packed_pseudo_gradient_bytes(n, bits) bytes
  float* residual = nullptr;        // (n) f32 in/out, or null (no error feedback)
  const float* anchor = nullptr;    // (n) f32
  const float* current = nullptr;   // (n) f32
  int64_t n = 0;
  int bits = 4;                     // 0, 2, 4 or 8
};

struct DequantizeMeanParams {
  float* mean = nullptr;            // (n) f32 out
  const void* gathered = nullptr;   // world_size × packed_pseudo_gradient_bytes(n, bits) bytes
  int64_t n = 0;
  int64_t world_size = 1;
  int bits = 4;                     // 0, 2, 4 or 8
};

struct OuterNesterovParams {
  float* anchor = nullptr;          // (n) f32 in/out: the outer (global) parameters
  float* momentum = nullptr;        // (n) f32 in/out
  float* weights = nullptr;         // (n) f32 in/out: the local parameters (flat)
  const float* mean_delta = nullptr;  // (n) f32: Δ̄
  int64_t n = 0;
  float lr = 0.7f, momentum_factor = 0.9f, alpha = 0.5f;
  bool nesterov = true;
  bool mix = false;                 // false: weights = anchor (plain DiLoCo)
};

void pseudo_gradient_quantize_cpu(const PseudoGradientQuantizeParams& p);
void dequantize_mean_cpu(const DequantizeMeanParams& p);
void outer_nesterov_cpu(const OuterNesterovParams& p);

#if KILN_WITH_CUDA
void pseudo_gradient_quantize_cuda(const PseudoGradientQuantizeParams& p, CUstream_st* stream);
void dequantize_mean_cuda(const DequantizeMeanParams& p, CUstream_st* stream);
void outer_nesterov_cuda(const OuterNesterovParams& p, CUstream_st* stream);
#endif

}  // namespace kiln

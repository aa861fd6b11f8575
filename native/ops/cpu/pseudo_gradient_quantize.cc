// DiLoCo pseudo-gradient Δ = anchor − current + residual, quantized blockwise (absmax, 8/4/2 bits)
// in one pass with its error-feedback residual. Contract and packed format: ops/outer_step.h.
// Each 128-value block is independent: blocks are split across the thread pool, and a block's
// code bytes belong to it alone (128·bits/8 whole bytes), so no two threads share a byte.
#include <cmath>
#include <cstring>

#include "../../runtime/parallel.h"
#include "../outer_step.h"

namespace kiln {

void pseudo_gradient_quantize_cpu(const PseudoGradientQuantizeParams& p) {
  const int64_t n = p.n;
  if (p.bits == 0) {
    // f32 exchange: the packed buffer is Δ itself (no rounding, nothing to feed back)
    float* out = static_cast<float*>(p.packed);
    parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) out[i] = (p.anchor[i] - p.current[i]) + (p.residual ? p.residual[i] : 0.0f);
    });
    return;
  }
  const int bits = p.bits;
  const float levels = float((1 << (bits - 1)) - 1);
  const int64_t blocks = (n + kQuantBlock - 1) / kQuantBlock;
  float* scales = static_cast<float*>(p.packed);
  uint8_t* codes = static_cast<uint8_t*>(p.packed) + blocks * 4;
  const int64_t total = packed_pseudo_gradient_bytes(n, bits);
  const int64_t code_bytes = (n * bits + 7) / 8;
  // padding after the codes: zero, so the bytes on the wire are a function of Δ alone
  std::memset(codes + code_bytes, 0, size_t(total - blocks * 4 - code_bytes));
  parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
    float delta[kQuantBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t lo = b * kQuantBlock, hi = std::min(n, lo + kQuantBlock);
      float absmax = 0.0f;
      for (int64_t i = lo; i < hi; ++i) {
        const float d = (p.anchor[i] - p.current[i]) + (p.residual ? p.residual[i] : 0.0f);
        delta[i - lo] = d;
        absmax = std::max(absmax, std::fabs(d));
      }
      const float scale = absmax / levels;
      const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
      scales[b] = scale;
      // this block's bytes: [lo·bits/8, ceil(hi·bits/8)) — whole bytes, since 128·bits/8 is an integer
      std::memset(codes + lo * bits / 8, 0, size_t((hi * bits + 7) / 8 - lo * bits / 8));
      for (int64_t i = lo; i < hi; ++i) {
        const float d = delta[i - lo];
        const float q = std::fmin(levels, std::fmax(-levels, std::nearbyint(d * inverse)));
        const int64_t bit = i * bits;
        codes[bit >> 3] |= uint8_t(int(q + levels) << (bit & 7));
        if (p.residual) p.residual[i] = d - q * scale;
      }
    }
  });
}

}  // namespace kiln

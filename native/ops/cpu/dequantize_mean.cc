// DiLoCo: the mean of the ranks' packed pseudo-gradients (as all-gathered), in f32.
// Contract: ops/outer_step.h. Ranks are added in rank order, so every rank gets the same bits.
#include "../../runtime/parallel.h"
#include "../outer_step.h"

namespace kiln {

void dequantize_mean_cpu(const DequantizeMeanParams& p) {
  const int64_t n = p.n, world = p.world_size;
  const int64_t stride = packed_pseudo_gradient_bytes(n, p.bits);
  const float inverse_world = 1.0f / float(world);
  const uint8_t* base = static_cast<const uint8_t*>(p.gathered);
  if (p.bits == 0) {
    parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float sum = 0.0f;
        for (int64_t r = 0; r < world; ++r) sum += reinterpret_cast<const float*>(base + r * stride)[i];
        p.mean[i] = sum * inverse_world;
      }
    });
    return;
  }
  const int bits = p.bits;
  const int levels = (1 << (bits - 1)) - 1;
  const unsigned mask = (1u << bits) - 1u;
  const int64_t blocks = (n + kQuantBlock - 1) / kQuantBlock;
  parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t bit = i * bits;
      float sum = 0.0f;
      for (int64_t r = 0; r < world; ++r) {
        const uint8_t* packed = base + r * stride;
        const float scale = reinterpret_cast<const float*>(packed)[i / kQuantBlock];
        const int code = int((packed[blocks * 4 + (bit >> 3)] >> (bit & 7)) & mask);
        sum += float(code - levels) * scale;
      }
      p.mean[i] = sum * inverse_world;
    }
  });
}

}  // namespace kiln

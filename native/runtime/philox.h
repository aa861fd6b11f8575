// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), identical on host and
// device: element i of a tensor filled with seed s is a pure function of (s, i), so CPU and
// CUDA produce the same values regardless of thread layout.
#pragma once
#include <cmath>
#include <cstdint>

#include "half.h"

namespace kiln {

struct Philox4 {
  uint32_t x[4];
};

KILN_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

KILN_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n1 = lo1;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    uint32_t n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 4 random words for element `index` of stream (seed, offset).
KILN_HD Philox4 philox_for(uint64_t seed, uint64_t offset, uint64_t index) {
  return philox4x32_10(uint32_t(index), uint32_t(index >> 32), uint32_t(offset), uint32_t(offset >> 32),
                       uint32_t(seed), uint32_t(seed >> 32));
}

// Uniform in [0, 1) with 24 random bits: exact in f32 on both host and device.
KILN_HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  Philox4 r = philox_for(seed, offset, index);
  return float(r.x[0] >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller, computed in f64 and rounded once to f32 so that host libm and
// CUDA's f64 math (both within an ulp or two of exact) agree after rounding.
KILN_HD float philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  Philox4 r = philox_for(seed, offset, index);
  uint64_t a = (uint64_t(r.x[0]) << 32 | r.x[1]) >> 11;
  uint64_t b = (uint64_t(r.x[2]) << 32 | r.x[3]) >> 11;
  double u1 = (double(a) + 1.0) * (1.0 / 9007199254740992.0);  // (0, 1]
  double u2 = double(b) * (1.0 / 9007199254740992.0);          // [0, 1)
  double radius = sqrt(-2.0 * log(u1));
  return float(radius * cos(6.283185307179586 * u2));
}

}  // namespace kiln

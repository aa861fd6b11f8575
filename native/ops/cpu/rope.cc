// Rotary position embedding on the CPU (contract: ops/attention.h), HF LLaMA rotate_half layout.
//
//   x, y: (B, T, H, D)  positions: (B, T) i32
//   for j < D/2: theta_j = pos * inv_freq_j      (computed in double, as are cos and sin)
//   inv_freq_j = base^(-2j/D), or p.inv_freq[j] when given (scaled RoPE)
//     y[j]       = x[j] cos(theta_j) - x[j + D/2] sin(theta_j)
//     y[j + D/2] = x[j + D/2] cos(theta_j) + x[j] sin(theta_j)
//   backward: the same with -theta (the inverse rotation), applied to dy. y is written (=) and may
//   be x (in place): each pair is read before it is written.
// The rotation itself is done in double and rounded once to the tensor's dtype.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "attention.h"

namespace kiln {
namespace {

// Element <-> double for one storage dtype, chosen once per call rather than per element.
template <DType DT>
struct Storage;
template <>
struct Storage<DType::f32> {
  static double load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  static void store(void* p, int64_t i, double v) { static_cast<float*>(p)[i] = float(v); }
};
template <>
struct Storage<DType::f64> {
  static double load(const void* p, int64_t i) { return static_cast<const double*>(p)[i]; }
  static void store(void* p, int64_t i, double v) { static_cast<double*>(p)[i] = v; }
};
template <>
struct Storage<DType::bf16> {
  static double load(const void* p, int64_t i) { return bf16_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, double v) { static_cast<uint16_t*>(p)[i] = float_to_bf16(float(v)); }
};
template <>
struct Storage<DType::f16> {
  static double load(const void* p, int64_t i) { return f16_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, double v) { static_cast<uint16_t*>(p)[i] = float_to_f16(float(v)); }
};

template <DType DT>
void rope_typed(const RopeParams& p) {
  const int64_t rows = p.B * p.T, H = p.H, D = p.D, half = D / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) {
    inv_freq[static_cast<size_t>(j)] = p.inv_freq ? double(p.inv_freq[j]) : std::pow(double(p.base), -2.0 * double(j) / double(D));
  }
  const double sign = p.backward ? -1.0 : 1.0;
  parallel_for(0, rows, 8, [&](int64_t lo, int64_t hi) {
    std::vector<double> cos_t(static_cast<size_t>(half)), sin_t(static_cast<size_t>(half));
    for (int64_t r = lo; r < hi; ++r) {
      const double pos = double(p.positions[r]);
      for (int64_t j = 0; j < half; ++j) {
        const double theta = pos * inv_freq[static_cast<size_t>(j)];
        cos_t[static_cast<size_t>(j)] = std::cos(theta);
        sin_t[static_cast<size_t>(j)] = sign * std::sin(theta);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = (r * H + h) * D;
        for (int64_t j = 0; j < half; ++j) {
          const double x1 = Storage<DT>::load(p.x, base + j), x2 = Storage<DT>::load(p.x, base + j + half);
          Storage<DT>::store(p.y, base + j, x1 * cos_t[static_cast<size_t>(j)] - x2 * sin_t[static_cast<size_t>(j)]);
          Storage<DT>::store(p.y, base + j + half, x2 * cos_t[static_cast<size_t>(j)] + x1 * sin_t[static_cast<size_t>(j)]);
        }
      }
    }
  });
}

}  // namespace

void rope_validate(const RopeParams& p) {
  const int32_t code = static_cast<int32_t>(p.dtype);
  check(dtype_valid(code) && dtype_is_float(p.dtype), "ERR_DTYPE", "rope: dtype must be f32, f64, bf16 or f16");
  check(p.B >= 0 && p.T >= 0 && p.H >= 0, "ERR_SHAPE",
        "rope: B, T, H must be >= 0, got B=" + std::to_string(p.B) + " T=" + std::to_string(p.T) + " H=" + std::to_string(p.H));
  check(p.D >= 2 && p.D % 2 == 0, "ERR_SHAPE", "rope: head dim D must be even and >= 2, got " + std::to_string(p.D));
  check(double(p.B) * double(p.T) * double(p.H) * double(p.D) < 1e17, "ERR_SHAPE", "rope: tensor too large");
  check(std::isfinite(p.base) && p.base > 0.0f, "ERR_ARG", "rope: base must be finite and > 0");
  const int64_t n = p.B * p.T * p.H * p.D;
  check(n == 0 || (p.x != nullptr && p.y != nullptr), "ERR_ARG", "rope: x or y is null");
  check(p.B * p.T == 0 || p.positions != nullptr, "ERR_ARG", "rope: positions is null");
}

void rope_cpu(const RopeParams& p) {
  rope_validate(p);
  if (p.B * p.T * p.H == 0) return;
  switch (p.dtype) {
    case DType::f32: return rope_typed<DType::f32>(p);
    case DType::f64: return rope_typed<DType::f64>(p);
    case DType::bf16: return rope_typed<DType::bf16>(p);
    case DType::f16: return rope_typed<DType::f16>(p);
    default: fail("ERR_DTYPE", "rope: unsupported dtype");
  }
}

}  // namespace kiln

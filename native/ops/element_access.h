// Typed load/store of one element, identical on host and device (CPU ops and the CUDA
// elementwise kernels share it): loads widen to double; stores round once (nearest even into
// bf16/f16/i32; i32 saturates and maps NaN to 0).
#pragma once
#include <cmath>
#include <cstdint>

#include "../runtime/dtype.h"
#include "../runtime/error.h"
#include "../runtime/half.h"
#include "../runtime/philox.h"
#include "elementwise.h"

namespace kiln {

KILN_HD double load_as_double(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f64: return static_cast<const double*>(p)[i];
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::i32: return static_cast<const int32_t*>(p)[i];
  }
  return 0.0;
}

KILN_HD int32_t saturate_i32(double v) {
#if defined(__CUDA_ARCH__)
  if (isnan(v)) return 0;
  v = rint(v);
#else
  if (std::isnan(v)) return 0;
  v = std::nearbyint(v);
#endif
  if (v >= 2147483647.0) return 2147483647;
  if (v <= -2147483648.0) return -2147483647 - 1;
  return int32_t(v);
}

KILN_HD void store_from_double(void* p, DType t, int64_t i, double v) {
  switch (t) {
    case DType::f32: static_cast<float*>(p)[i] = float(v); break;
    case DType::f64: static_cast<double*>(p)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16(float(v)); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16(float(v)); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = saturate_i32(v); break;
  }
}

// f32 a*b and a+b, each rounded to nearest on its own: never contracted into an FMA (nvcc fuses
// `a + b * c` by default, GCC does on targets with FMA), so host and device give the same bits.
KILN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  float product = a * b;
#if defined(__GNUC__)
  __asm__ volatile("" : "+m"(product));  // the rounded product goes through memory: no fusing
#endif
  return product;
#endif
}
KILN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// Element i of a random fill (elementwise.h): low + (high - low)·u or mean + std·z in f32, the
// product and the sum each rounded (mul_rn, add_rn), so CPU and CUDA agree bit for bit.
KILN_HD double random_value(const RandomParams& p, DType t, int64_t i) {
  float value;
  if (p.kind == RandomKind::uniform) {
    float u = philox_uniform(p.seed, p.offset, uint64_t(i));
    value = add_rn(float(p.a), mul_rn(float(p.b - p.a), u));
  } else {
    float z = philox_normal(p.seed, p.offset, uint64_t(i));
    value = add_rn(float(p.a), mul_rn(float(p.b), z));
  }
  return double(value);
}

// Calls body.template operator()<T>() with T the compute type of a float dtype (float for
// f32/bf16/f16, double for f64) — i32 is rejected here; ops that take i32 handle it first.
template <class F>
void dispatch_compute_type(DType t, F&& body) {
  if (t == DType::f64) {
    body(double(0));
  } else if (t == DType::i32) {
    fail("ERR_DTYPE", "this op does not take i32 tensors");
  } else {
    body(float(0));
  }
}

}  // namespace kiln

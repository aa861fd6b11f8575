// Typed storage for the CPU model layers (ops/layers.h): half types are 16-bit tags widened
// to f32 on load and rounded once on store; f64 computes in f64, everything else in f32.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "../../runtime/dtype.h"
#include "../../runtime/error.h"
#include "../../runtime/half.h"

namespace kiln::layers_storage {

struct Bf16 { uint16_t bits; };
struct F16 { uint16_t bits; };
inline float load(const float* p) { return *p; }
inline double load(const double* p) { return *p; }
inline float load(const Bf16* p) { return bf16_to_float(p->bits); }
inline float load(const F16* p) { return f16_to_float(p->bits); }
inline void store(float* p, float v) { *p = v; }
inline void store(double* p, double v) { *p = v; }
inline void store(Bf16* p, float v) { p->bits = float_to_bf16(v); }
inline void store(F16* p, float v) { p->bits = float_to_f16(v); }
template <class S>
using compute_t = typename std::conditional<std::is_same<S, double>::value, double, float>::type;

// Calls body(S()) with S the storage type of dtype.
template <class Body>
void dispatch_storage(DType dtype, const char* op, Body&& body) {
  switch (dtype) {
    case DType::f32: return body(float());
    case DType::f64: return body(double());
    case DType::bf16: return body(Bf16());
    case DType::f16: return body(F16());
    default: fail("ERR_DTYPE", std::string(op) + ": unsupported dtype " + dtype_name(dtype));
  }
}

// Parameter-gradient dtype (rstd, loss, dtable, dweight): f32, or f64 for f64 inputs.
inline DType gradient_dtype(DType dtype) { return dtype == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace kiln::layers_storage

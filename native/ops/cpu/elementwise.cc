// add, mul, scale on the CPU. f32 and f64 run on typed pointers (the compiler vectorizes the
// loops); bf16/f16 go through f32. i32 add/mul are exact integer ops.
#include "../elementwise.h"

#include "../../runtime/parallel.h"
#include "../element_access.h"

namespace kiln {
namespace {
constexpr int64_t kGrain = 1 << 15;

template <class T>
void binary_typed(BinaryOp op, T* out, const T* a, const T* b, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    if (op == BinaryOp::add) {
      for (int64_t i = lo; i < hi; ++i) out[i] = a[i] + b[i];
    } else {
      for (int64_t i = lo; i < hi; ++i) out[i] = a[i] * b[i];
    }
  });
}
}  // namespace

void binary_cpu(BinaryOp op, void* out, const void* a, const void* b, DType dtype, int64_t n) {
  switch (dtype) {
    case DType::f32: return binary_typed(op, static_cast<float*>(out), static_cast<const float*>(a), static_cast<const float*>(b), n);
    case DType::f64: return binary_typed(op, static_cast<double*>(out), static_cast<const double*>(a), static_cast<const double*>(b), n);
    case DType::i32:
      // wrap-around like the hardware (two's complement), computed unsigned to avoid UB
      parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
        auto* o = static_cast<int32_t*>(out);
        auto* x = static_cast<const int32_t*>(a);
        auto* y = static_cast<const int32_t*>(b);
        for (int64_t i = lo; i < hi; ++i)
          o[i] = int32_t(op == BinaryOp::add ? uint32_t(x[i]) + uint32_t(y[i]) : uint32_t(x[i]) * uint32_t(y[i]));
      });
      return;
    default:
      parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          float x = float(load_as_double(a, dtype, i)), y = float(load_as_double(b, dtype, i));
          store_from_double(out, dtype, i, op == BinaryOp::add ? x + y : x * y);
        }
      });
  }
}

void scale_cpu(void* out, const void* a, double alpha, DType dtype, int64_t n) {
  parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    switch (dtype) {
      case DType::f32: {
        float s = float(alpha);
        for (int64_t i = lo; i < hi; ++i) static_cast<float*>(out)[i] = s * static_cast<const float*>(a)[i];
        break;
      }
      case DType::f64:
        for (int64_t i = lo; i < hi; ++i) static_cast<double*>(out)[i] = alpha * static_cast<const double*>(a)[i];
        break;
      case DType::i32:
        for (int64_t i = lo; i < hi; ++i) store_from_double(out, dtype, i, alpha * load_as_double(a, dtype, i));
        break;
      default: {
        float s = float(alpha);
        for (int64_t i = lo; i < hi; ++i) store_from_double(out, dtype, i, s * float(load_as_double(a, dtype, i)));
      }
    }
  });
}

}  // namespace kiln

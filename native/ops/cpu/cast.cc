// cast between any two dtypes on the CPU, and fill. Conversions follow element_access.h:
// round to nearest even into bf16/f16/i32, i32 saturates and maps NaN to 0.
#include "../elementwise.h"

#include <cstring>

#include "../../runtime/parallel.h"
#include "../element_access.h"

namespace kiln {

void cast_cpu(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n) {
  if (out_dtype == in_dtype) {
    if (out != in) std::memcpy(out, in, size_t(n) * dtype_size(in_dtype));
    return;
  }
  parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    if (in_dtype != DType::f64 && out_dtype != DType::f64 && in_dtype != DType::i32 && out_dtype != DType::i32) {
      // float-family to float-family through f32 is exact for the widening side
      for (int64_t i = lo; i < hi; ++i) store_from_double(out, out_dtype, i, float(load_as_double(in, in_dtype, i)));
    } else {
      for (int64_t i = lo; i < hi; ++i) store_from_double(out, out_dtype, i, load_as_double(in, in_dtype, i));
    }
  });
}

void fill_cpu(void* out, DType dtype, double value, int64_t n) {
  parallel_for(0, n, 1 << 16, [&](int64_t lo, int64_t hi) {
    switch (dtype) {
      case DType::f32: {
        float v = float(value);
        for (int64_t i = lo; i < hi; ++i) static_cast<float*>(out)[i] = v;
        break;
      }
      case DType::f64:
        for (int64_t i = lo; i < hi; ++i) static_cast<double*>(out)[i] = value;
        break;
      default:
        for (int64_t i = lo; i < hi; ++i) store_from_double(out, dtype, i, value);
    }
  });
}

}  // namespace kiln

// Row sums and means on the CPU: in (rows, cols) -> out (rows), accumulated in f64 so the
// reference is exact enough to judge the f32 CUDA reduction.
#include "../elementwise.h"

#include "../../runtime/parallel.h"
#include "../element_access.h"

namespace kiln {

void reduce_rows_cpu(void* out, const void* in, DType dtype, int64_t rows, int64_t cols, bool mean) {
  check(dtype != DType::i32, "ERR_DTYPE", "sum and mean need a float dtype");
  int64_t grain = cols >= (1 << 14) ? 1 : (1 << 14) / (cols > 0 ? cols : 1);
  parallel_for(0, rows, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      double acc = 0.0;
      if (dtype == DType::f32) {
        const float* row = static_cast<const float*>(in) + r * cols;
        for (int64_t c = 0; c < cols; ++c) acc += row[c];
      } else {
        for (int64_t c = 0; c < cols; ++c) acc += load_as_double(in, dtype, r * cols + c);
      }
      if (mean) acc = cols > 0 ? acc / double(cols) : std::nan("");
      store_from_double(out, dtype, r, acc);
    }
  });
}

}  // namespace kiln

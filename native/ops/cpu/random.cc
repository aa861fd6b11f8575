// Seeded uniform and normal fills on the CPU from the counter-based generator in philox.h.
// Element i depends only on (seed, offset, i), so CUDA (ops/cuda/elementwise/elementwise.cu)
// produces the same tensor.
#include "../elementwise.h"

#include "../../runtime/parallel.h"
#include "../element_access.h"

namespace kiln {

void random_cpu(void* out, DType dtype, const RandomParams& p, int64_t n) {
  check(dtype != DType::i32, "ERR_DTYPE", "random fills need a float dtype");
  parallel_for(0, n, 1 << 12, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) store_from_double(out, dtype, i, random_value(p, dtype, i));
  });
}

}  // namespace kiln

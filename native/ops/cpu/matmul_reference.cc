// The CPU matmul's oracle, matmul_reference_cpu (contract: ops/matmul.h; declared in
// ops/cpu/matmul.h): a triple loop accumulating in double for every dtype, the epilogue in
// double, one rounding at the store. Tests and `reference: true` judge the fast paths by it.
#include <cmath>
#include <cstdint>

#include "../element_access.h"
#include "matmul.h"

namespace kiln {

void matmul_reference_cpu(const MatmulParams& p) {
  matmul_validate(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu;
  auto a_at = [&](int64_t z, int64_t m, int64_t k) {
    const int64_t i = z * p.stride_a + (p.trans_a ? k * p.lda + m : m * p.lda + k);
    return load_as_double(p.a, p.ab_dtype, i);
  };
  auto b_at = [&](int64_t z, int64_t k, int64_t n) {
    const int64_t i = z * p.stride_b + (p.trans_b ? n * p.ldb + k : k * p.ldb + n);
    return load_as_double(p.b, p.ab_dtype, i);
  };
  auto dot = [&](int64_t z, int64_t m, int64_t n) {
    double s = 0.0;
    for (int64_t k = 0; k < p.K; ++k) s += a_at(z, m, k) * b_at(z, k, n);
    return double(p.alpha) * s;
  };
  for (int64_t z = 0; z < p.batch; ++z) {
    for (int64_t m = 0; m < p.M; ++m) {
      for (int64_t n = 0; n < p.N; ++n) {
        const int64_t ci = z * p.stride_c + m * p.ldc + n;
        double v;
        if (swiglu) {
          const double gate = dot(z, m, n), up = dot(z, m, p.N + n);
          v = gate / (1.0 + std::exp(-gate)) * up;
        } else {
          v = dot(z, m, n);
          if (p.beta != 0.0f) v += double(p.beta) * load_as_double(p.c, p.c_dtype, ci);
          if (p.epilogue == MatmulEpilogue::residual_add)
            v += load_as_double(p.residual, p.c_dtype, z * p.stride_residual + m * p.ld_residual + n);
        }
        store_from_double(p.c, p.c_dtype, ci, v);
      }
    }
  }
}

}  // namespace kiln

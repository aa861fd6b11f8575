// Fused classifier (cross-entropy loss and its gradient) on the CPU (contract: ops/layers.h).
//   lse = max + log Σ exp(logits − max)       (one read sweep, online over 512-wide chunks)
//   loss[i] = lse − logits[i, t]                                                          (=)
//   dlogits[i, v] = (exp(logits[i, v] − lse) − [v = t]) · dloss_scale   (second sweep, =)
//   t = −1: loss 0 and a zero dlogits row. dlogits may be the logits buffer (in place) or null.
// Fast path: f32 math for f32/bf16/f16 logits, f64 for f64; reference: double throughout.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../element_access.h"
#include "../layers.h"
#include "layers_storage.h"

namespace kiln {
using namespace layers_storage;
namespace {

void check_params(const CrossEntropyParams& p) {
  check(p.N >= 0 && p.V >= 0, "ERR_SHAPE", "cross_entropy: negative size");
  check(p.V > 0 || p.N == 0, "ERR_SHAPE", "cross_entropy: V must be > 0");
  check(p.dtype != DType::i32, "ERR_DTYPE", "cross_entropy: logits must be a float dtype");
  check(p.N == 0 || (p.loss && p.logits && p.targets), "ERR_ARG", "cross_entropy: null pointer");
  for (int64_t i = 0; i < p.N; ++i) {
    if (p.targets[i] < -1 || p.targets[i] >= p.V)
      fail("ERR_ARG", "cross_entropy: target " + std::to_string(p.targets[i]) + " at row " + std::to_string(i) +
                          " is outside [-1, " + std::to_string(p.V) + ")");
  }
}

}  // namespace

void cross_entropy_reference_cpu(const CrossEntropyParams& p) {
  check_params(p);
  const DType t = p.dtype, gd = t == DType::f64 ? DType::f64 : DType::f32;
  for (int64_t i = 0; i < p.N; ++i) {
    const int32_t target = p.targets[i];
    double max = -INFINITY;
    for (int64_t v = 0; v < p.V; ++v) max = std::max(max, load_as_double(p.logits, t, i * p.V + v));
    double sum = 0;
    for (int64_t v = 0; v < p.V; ++v) sum += std::exp(load_as_double(p.logits, t, i * p.V + v) - max);
    const double lse = max + std::log(sum);
    const double target_logit = target >= 0 ? load_as_double(p.logits, t, i * p.V + target) : 0.0;
    store_from_double(p.loss, gd, i, target < 0 ? 0.0 : lse - target_logit);
    if (!p.dlogits) continue;
    for (int64_t v = 0; v < p.V; ++v) {
      double g = target < 0 ? 0.0
                            : (std::exp(load_as_double(p.logits, t, i * p.V + v) - lse) - (v == target ? 1.0 : 0.0)) * p.dloss_scale;
      store_from_double(p.dlogits, t, i * p.V + v, g);
    }
  }
}

void cross_entropy_cpu(const CrossEntropyParams& p) {
  check_params(p);
  dispatch_storage(p.dtype, "cross_entropy", [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    const int64_t V = p.V;
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / V);
    parallel_for(0, p.N, grain, [&](int64_t lo, int64_t hi) {
      constexpr int64_t kChunk = 512;  // stays in L1 between its max and its exp-sum
      C buffer[kChunk];
      for (int64_t i = lo; i < hi; ++i) {
        const S* row = static_cast<const S*>(p.logits) + i * V;
        const int32_t target = p.targets[i];
        C* loss = static_cast<C*>(p.loss) + i;
        S* drow = static_cast<S*>(p.dlogits) ? static_cast<S*>(p.dlogits) + i * V : nullptr;
        if (target < 0) {
          *loss = C(0);
          if (drow)
            for (int64_t v = 0; v < V; ++v) store(drow + v, C(0));
          continue;
        }
        const C target_logit = load(row + target);  // read before an in-place write clobbers it
        C max = -INFINITY, sum = 0;
        for (int64_t base = 0; base < V; base += kChunk) {
          const int64_t n = std::min(kChunk, V - base);
          C chunk_max = -INFINITY;
          for (int64_t k = 0; k < n; ++k) {
            buffer[k] = load(row + base + k);
            chunk_max = std::max(chunk_max, buffer[k]);
          }
          C chunk_sum = 0;
          for (int64_t k = 0; k < n; ++k) chunk_sum += std::exp(buffer[k] - chunk_max);
          if (chunk_max > max) {
            sum = sum * std::exp(max - chunk_max) + chunk_sum;
            max = chunk_max;
          } else if (chunk_max > -INFINITY) {
            sum += chunk_sum * std::exp(chunk_max - max);
          }
        }
        const C lse = max + std::log(sum);
        *loss = lse - target_logit;
        if (!drow) continue;
        const C scale = C(p.dloss_scale);
        for (int64_t v = 0; v < V; ++v) store(drow + v, std::exp(load(row + v) - lse) * scale);
        store(drow + target, (std::exp(target_logit - lse) - C(1)) * scale);
      }
    });
  });
}

}  // namespace kiln

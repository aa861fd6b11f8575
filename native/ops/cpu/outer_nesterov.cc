// DiLoCo's outer Nesterov SGD on the anchor, then the local weights: replaced by the new anchor
// (DiLoCo) or mixed with it (Streaming DiLoCo's merge after an overlapped exchange).
// Contract: ops/outer_step.h.
#include "../../runtime/parallel.h"
#include "../outer_step.h"

namespace kiln {

void outer_nesterov_cpu(const OuterNesterovParams& p) {
  parallel_for(0, p.n, 1 << 15, [&](int64_t lo, int64_t hi) {
    const float mu = p.momentum_factor, lr = p.lr, alpha = p.alpha;
    for (int64_t i = lo; i < hi; ++i) {
      const float g = p.mean_delta[i];
      const float m = mu * p.momentum[i] + g;
      p.momentum[i] = m;
      const float anchor = p.anchor[i] - lr * (p.nesterov ? g + mu * m : m);
      p.anchor[i] = anchor;
      p.weights[i] = p.mix ? alpha * p.weights[i] + (1.0f - alpha) * anchor : anchor;
    }
  });
}

}  // namespace kiln

// RMSNorm fused with the residual add, on the CPU (contract and math: ops/layers.h).
//   forward : h = round(x + residual);  rstd = 1/sqrt(mean(h²) + eps);  y = h·rstd·w      (=)
//   backward: dh = rstd·(dy·w − ĥ·mean(dy·w·ĥ)) (+ dresidual_in)                         (=)
//             dweight += Σ_rows dy·ĥ                                                      (+=)
// Fast path: rows split across the pool, row sums with 8 partial accumulators (f32 for
// f32/bf16/f16, f64 for f64); dweight columns are owned by threads and summed over rows in
// order in f64, so the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../element_access.h"
#include "../layers.h"
#include "layers_storage.h"

namespace kiln {
using namespace layers_storage;
namespace {


template <class S>
compute_t<S> round_to_storage(compute_t<S> v) {
  S s;
  store(&s, v);
  return load(&s);
}

int64_t row_grain(int64_t width) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(width, 1)); }

void check_forward(const RmsnormForwardParams& p) {
  check(p.N >= 0 && p.D >= 0, "ERR_SHAPE", "rmsnorm: negative size");
  check(p.dtype != DType::i32, "ERR_DTYPE", "rmsnorm: i32 is not supported");
  check(p.N == 0 || p.D == 0 || (p.y && p.x && p.weight), "ERR_ARG", "rmsnorm: null pointer");
  check(p.eps >= 0, "ERR_ARG", "rmsnorm: eps must be >= 0");
}

void check_backward(const RmsnormBackwardParams& p) {
  check(p.N >= 0 && p.D >= 0, "ERR_SHAPE", "rmsnorm backward: negative size");
  check(p.dtype != DType::i32, "ERR_DTYPE", "rmsnorm backward: i32 is not supported");
  check(p.N == 0 || p.D == 0 || (p.dx && p.dweight && p.dy && p.h && p.weight && p.rstd), "ERR_ARG",
        "rmsnorm backward: null pointer");
}

}  // namespace

void rmsnorm_forward_validate(const RmsnormForwardParams& p) { check_forward(p); }
void rmsnorm_backward_validate(const RmsnormBackwardParams& p) { check_backward(p); }

void rmsnorm_forward_reference_cpu(const RmsnormForwardParams& p) {
  check_forward(p);
  const DType t = p.dtype;
  std::vector<double> h(size_t(p.D));
  for (int64_t i = 0; i < p.N; ++i) {
    double sq = 0;
    for (int64_t d = 0; d < p.D; ++d) {
      double v = load_as_double(p.x, t, i * p.D + d) + (p.residual ? load_as_double(p.residual, t, i * p.D + d) : 0.0);
      double tmp = 0;  // round to the storage dtype: the residual stream is what later layers see
      store_from_double(&tmp, t, 0, v);
      v = load_as_double(&tmp, t, 0);
      h[size_t(d)] = v;
      sq += v * v;
    }
    double r = 1.0 / std::sqrt(sq / double(p.D) + p.eps);
    if (p.rstd) store_from_double(p.rstd, gradient_dtype(t), i, r);
    for (int64_t d = 0; d < p.D; ++d) {
      if (p.residual_out) store_from_double(p.residual_out, t, i * p.D + d, h[size_t(d)]);
      store_from_double(p.y, t, i * p.D + d, h[size_t(d)] * r * load_as_double(p.weight, t, d));
    }
  }
}

void rmsnorm_forward_cpu(const RmsnormForwardParams& p) {
  check_forward(p);
  if (p.N == 0) return;
  dispatch_storage(p.dtype, "rmsnorm", [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    const S* x = static_cast<const S*>(p.x);
    const S* residual = static_cast<const S*>(p.residual);
    const S* w = static_cast<const S*>(p.weight);
    S* y = static_cast<S*>(p.y);
    S* residual_out = static_cast<S*>(p.residual_out);
    const int64_t D = p.D;
    std::vector<C> weight(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) weight[size_t(d)] = load(w + d);
    parallel_for(0, p.N, row_grain(D), [&](int64_t lo, int64_t hi) {
      std::vector<C> h(static_cast<size_t>(D));
      for (int64_t i = lo; i < hi; ++i) {
        const S* xr = x + i * D;
        if (residual) {
          const S* rr = residual + i * D;
          for (int64_t d = 0; d < D; ++d) h[size_t(d)] = round_to_storage<S>(load(xr + d) + load(rr + d));
        } else {
          for (int64_t d = 0; d < D; ++d) h[size_t(d)] = load(xr + d);
        }
        C part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
          for (int k = 0; k < 8; ++k) part[k] += h[size_t(d + k)] * h[size_t(d + k)];
        for (; d < D; ++d) part[0] += h[size_t(d)] * h[size_t(d)];
        C sq = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        C r = C(1) / std::sqrt(sq / C(D) + C(p.eps));
        if (p.rstd) static_cast<C*>(p.rstd)[i] = r;
        if (residual_out) {
          S* ro = residual_out + i * D;
          for (int64_t e = 0; e < D; ++e) store(ro + e, h[size_t(e)]);
        }
        S* yr = y + i * D;
        for (int64_t e = 0; e < D; ++e) store(yr + e, h[size_t(e)] * r * weight[size_t(e)]);
      }
    });
  });
}

void rmsnorm_backward_reference_cpu(const RmsnormBackwardParams& p) {
  check_backward(p);
  const DType t = p.dtype, gd = gradient_dtype(t);
  std::vector<double> dw(size_t(p.D), 0.0);
  for (int64_t i = 0; i < p.N; ++i) {
    double r = load_as_double(p.rstd, gd, i);
    double dot = 0;
    for (int64_t d = 0; d < p.D; ++d)
      dot += load_as_double(p.dy, t, i * p.D + d) * load_as_double(p.weight, t, d) * load_as_double(p.h, t, i * p.D + d) * r;
    double mean = dot / double(p.D);
    for (int64_t d = 0; d < p.D; ++d) {
      double dy = load_as_double(p.dy, t, i * p.D + d);
      double hat = load_as_double(p.h, t, i * p.D + d) * r;
      double dh = r * (dy * load_as_double(p.weight, t, d) - hat * mean);
      if (p.dresidual_in) dh += load_as_double(p.dresidual_in, t, i * p.D + d);
      dw[size_t(d)] += dy * hat;
      store_from_double(p.dx, t, i * p.D + d, dh);
    }
  }
  for (int64_t d = 0; d < p.D; ++d) store_from_double(p.dweight, gd, d, load_as_double(p.dweight, gd, d) + dw[size_t(d)]);
}

void rmsnorm_backward_cpu(const RmsnormBackwardParams& p) {
  check_backward(p);
  if (p.N == 0 || p.D == 0) return;
  dispatch_storage(p.dtype, "rmsnorm backward", [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    const int64_t D = p.D;
    const S* dy = static_cast<const S*>(p.dy);
    const S* h = static_cast<const S*>(p.h);
    const S* dres = static_cast<const S*>(p.dresidual_in);
    const C* rstd = static_cast<const C*>(p.rstd);
    S* dx = static_cast<S*>(p.dx);
    std::vector<C> weight(static_cast<size_t>(D));
    for (int64_t d = 0; d < D; ++d) weight[size_t(d)] = load(static_cast<const S*>(p.weight) + d);
    // dweight first: dx may alias dresidual_in but never dy or h, so the order does not matter
    // for correctness; reading dy/h here while they are hot would not help either way.
    C* dweight = static_cast<C*>(p.dweight);
    parallel_for(0, D, 64, [&](int64_t lo, int64_t hi) {
      std::vector<double> acc(size_t(hi - lo), 0.0);
      for (int64_t i = 0; i < p.N; ++i) {
        const S* dyr = dy + i * D;
        const S* hr = h + i * D;
        const C r = rstd[i];
        for (int64_t d = lo; d < hi; ++d) acc[size_t(d - lo)] += double(load(dyr + d) * (load(hr + d) * r));
      }
      for (int64_t d = lo; d < hi; ++d) dweight[d] += C(acc[size_t(d - lo)]);
    });
    parallel_for(0, p.N, row_grain(D), [&](int64_t lo, int64_t hi) {
      std::vector<C> g(static_cast<size_t>(D)), hat(static_cast<size_t>(D));
      for (int64_t i = lo; i < hi; ++i) {
        const S* dyr = dy + i * D;
        const S* hr = h + i * D;
        const C r = rstd[i];
        for (int64_t d = 0; d < D; ++d) {
          g[size_t(d)] = load(dyr + d) * weight[size_t(d)];
          hat[size_t(d)] = load(hr + d) * r;
        }
        C part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t d = 0;
        for (; d + 8 <= D; d += 8)
          for (int k = 0; k < 8; ++k) part[k] += g[size_t(d + k)] * hat[size_t(d + k)];
        for (; d < D; ++d) part[0] += g[size_t(d)] * hat[size_t(d)];
        const C mean = (((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))) / C(D);
        S* out = dx + i * D;
        if (dres) {
          const S* dr = dres + i * D;
          for (int64_t e = 0; e < D; ++e) store(out + e, r * (g[size_t(e)] - hat[size_t(e)] * mean) + load(dr + e));
        } else {
          for (int64_t e = 0; e < D; ++e) store(out + e, r * (g[size_t(e)] - hat[size_t(e)] * mean));
        }
      }
    });
  });
}

size_t rmsnorm_backward_workspace_bytes(int64_t N, int64_t D) {
  // f32 dweight partials, one row per block of the CUDA backward (at most 256 blocks)
  int64_t blocks = std::min<int64_t>(std::max<int64_t>(N, 1), 256);
  return size_t(blocks) * size_t(std::max<int64_t>(D, 1)) * sizeof(float);
}

}  // namespace kiln

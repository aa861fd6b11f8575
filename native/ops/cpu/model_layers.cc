// CPU embedding, RMSNorm, SwiGLU and cross-entropy (contract: ops/model_layers.h). Each row is
// independent, so rows are split across the pool; the parameter gradients (dtable, dweight)
// are owned per vocab row / per column so the sums are deterministic without atomics.
#include "../model_layers.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/parallel.h"

namespace kiln {
namespace {

template <class F>
void dispatch(DType dtype, F&& f) {
  if (dtype == DType::f32) return f(float(0));
  if (dtype == DType::f64) return f(double(0));
  fail("ERR_DTYPE", std::string("model layers on the CPU take f32 or f64, got ") + dtype_name(dtype));
}

int64_t row_grain(int64_t width) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(width, 1)); }

}  // namespace

void embedding_forward_cpu(void* out, const void* table, const int32_t* ids, int64_t N, int64_t V, int64_t D, DType dtype) {
  for (int64_t i = 0; i < N; ++i) {
    if (ids[i] < 0 || ids[i] >= V) fail("ERR_ARG", "token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
  size_t row = size_t(D) * dtype_size(dtype);
  parallel_for(0, N, row_grain(D), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) std::memcpy(static_cast<char*>(out) + i * row, static_cast<const char*>(table) + ids[i] * row, row);
  });
}

void embedding_backward_cpu(void* dtable, const int32_t* ids, const void* dout, int64_t N, int64_t V, int64_t D, DType dtype) {
  for (int64_t i = 0; i < N; ++i) {
    if (ids[i] < 0 || ids[i] >= V) fail("ERR_ARG", "token id " + std::to_string(ids[i]) + " is outside the vocabulary");
  }
  // positions of each id, in order: each vocab row is summed by one thread, in position order
  std::vector<int64_t> start(size_t(V) + 1, 0);
  std::vector<int64_t> order(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) start[size_t(ids[i]) + 1]++;
  for (int64_t v = 0; v < V; ++v) start[size_t(v) + 1] += start[size_t(v)];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < N; ++i) order[size_t(fill[size_t(ids[i])]++)] = i;
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    T* dt = static_cast<T*>(dtable);
    const T* g = static_cast<const T*>(dout);
    parallel_for(0, V, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t v = lo; v < hi; ++v)
        for (int64_t k = start[size_t(v)]; k < start[size_t(v) + 1]; ++k) {
          const T* src = g + order[size_t(k)] * D;
          T* dst = dt + v * D;
          for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
        }
    });
  });
}

void rmsnorm_forward_cpu(void* y, void* rstd, const void* x, const void* weight, int64_t N, int64_t D, double eps, DType dtype) {
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    parallel_for(0, N, row_grain(D), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* xr = static_cast<const T*>(x) + i * D;
        double sq = 0;
        for (int64_t d = 0; d < D; ++d) sq += double(xr[d]) * xr[d];
        T r = T(1.0 / std::sqrt(sq / double(D) + eps));
        static_cast<T*>(rstd)[i] = r;
        T* yr = static_cast<T*>(y) + i * D;
        const T* w = static_cast<const T*>(weight);
        for (int64_t d = 0; d < D; ++d) yr[d] = xr[d] * r * w[d];
      }
    });
  });
}

void rmsnorm_backward_cpu(void* dx, void* dweight, const void* dy, const void* x, const void* weight, const void* rstd,
                          const void* dresidual, int64_t N, int64_t D, DType dtype) {
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* w = static_cast<const T*>(weight);
    parallel_for(0, N, row_grain(D), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* xr = static_cast<const T*>(x) + i * D;
        const T* gr = static_cast<const T*>(dy) + i * D;
        T r = static_cast<const T*>(rstd)[i];
        double dot = 0;  // mean over d of x̂·w·dy
        for (int64_t d = 0; d < D; ++d) dot += double(xr[d]) * r * w[d] * gr[d];
        T mean = T(dot / double(D));
        T* out = static_cast<T*>(dx) + i * D;
        const T* res = dresidual ? static_cast<const T*>(dresidual) + i * D : nullptr;
        for (int64_t d = 0; d < D; ++d) {
          T xhat = xr[d] * r;
          out[d] = r * (w[d] * gr[d] - xhat * mean) + (res ? res[d] : T(0));
        }
      }
    });
    // dweight[d] += Σ_i dy[i, d]·x̂[i, d]: columns owned by threads, rows summed in order
    T* dw = static_cast<T*>(dweight);
    parallel_for(0, D, 16, [&](int64_t lo, int64_t hi) {
      std::vector<double> acc(size_t(hi - lo), 0.0);
      for (int64_t i = 0; i < N; ++i) {
        const T* xr = static_cast<const T*>(x) + i * D;
        const T* gr = static_cast<const T*>(dy) + i * D;
        T r = static_cast<const T*>(rstd)[i];
        for (int64_t d = lo; d < hi; ++d) acc[size_t(d - lo)] += double(gr[d]) * xr[d] * r;
      }
      for (int64_t d = lo; d < hi; ++d) dw[d] += T(acc[size_t(d - lo)]);
    });
  });
}

void swiglu_forward_cpu(void* out, const void* in, int64_t N, int64_t F, DType dtype) {
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    parallel_for(0, N, row_grain(F), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* gate = static_cast<const T*>(in) + i * 2 * F;
        const T* up = gate + F;
        T* o = static_cast<T*>(out) + i * F;
        for (int64_t f = 0; f < F; ++f) o[f] = gate[f] / (T(1) + std::exp(-gate[f])) * up[f];
      }
    });
  });
}

void swiglu_backward_cpu(void* din, const void* in, const void* dout, int64_t N, int64_t F, DType dtype) {
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    parallel_for(0, N, row_grain(F), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* gate = static_cast<const T*>(in) + i * 2 * F;
        const T* up = gate + F;
        const T* g = static_cast<const T*>(dout) + i * F;
        T* dg = static_cast<T*>(din) + i * 2 * F;
        T* du = dg + F;
        for (int64_t f = 0; f < F; ++f) {
          T s = T(1) / (T(1) + std::exp(-gate[f]));
          T silu = gate[f] * s;
          du[f] = g[f] * silu;
          dg[f] = g[f] * up[f] * s * (T(1) + gate[f] * (T(1) - s));
        }
      }
    });
  });
}

void cross_entropy_cpu(void* loss, void* dlogits, const void* logits, const int32_t* targets, int64_t N, int64_t V,
                       double grad_scale, DType dtype) {
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < -1 || targets[i] >= V) fail("ERR_ARG", "target " + std::to_string(targets[i]) + " at row " + std::to_string(i) + " is outside [-1, " + std::to_string(V) + ")");
  }
  dispatch(dtype, [&](auto zero) {
    using T = decltype(zero);
    parallel_for(0, N, row_grain(V), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T* row = static_cast<const T*>(logits) + i * V;
        int32_t t = targets[i];
        double max = -INFINITY, sum = 0;
        for (int64_t v = 0; v < V; ++v) {  // online max and sum in one sweep
          double x = row[v];
          if (x > max) {
            sum = sum * std::exp(max - x) + 1.0;
            max = x;
          } else {
            sum += std::exp(x - max);
          }
        }
        double lse = max + std::log(sum);
        static_cast<T*>(loss)[i] = t < 0 ? T(0) : T(lse - double(row[t]));
        if (!dlogits) continue;
        T* d = static_cast<T*>(dlogits) + i * V;
        double scale = t < 0 ? 0.0 : grad_scale;
        for (int64_t v = 0; v < V; ++v) d[v] = T((std::exp(double(row[v]) - lse) - (v == t ? 1.0 : 0.0)) * scale);
      }
    });
  });
}

}  // namespace kiln

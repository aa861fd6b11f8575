// SwiGLU on the CPU (contract and math: ops/layers.h).
//   forward : out = silu(gate) · up,  silu(g) = g·σ(g)                                   (=)
//   backward: dgate = dout·up·σ(g)·(1 + g·(1 − σ(g)));  dup = dout·g·σ(g)                 (=)
// gate/up rows start at i·ld_in (the fused [gate | up] (N, 2F) layout: up = gate + F, ld 2F).
// Element-wise: f32 math for f32/bf16/f16, f64 for f64; the reference computes in double.
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

int64_t row_grain(int64_t width) { return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(width, 1)); }

void check_forward(const SwigluForwardParams& p) {
  check(p.N >= 0 && p.F >= 0, "ERR_SHAPE", "swiglu: negative size");
  check(p.N <= 1 || p.ld_in >= p.F, "ERR_SHAPE", "swiglu: ld_in must be >= F");
  check(p.dtype != DType::i32, "ERR_DTYPE", "swiglu: i32 is not supported");
  check(p.N == 0 || p.F == 0 || (p.out && p.gate && p.up), "ERR_ARG", "swiglu: null pointer");
}

void check_backward(const SwigluBackwardParams& p) {
  check(p.N >= 0 && p.F >= 0, "ERR_SHAPE", "swiglu backward: negative size");
  check(p.N <= 1 || (p.ld_in >= p.F && p.ld_dinput >= p.F), "ERR_SHAPE", "swiglu backward: leading dims must be >= F");
  check(p.dtype != DType::i32, "ERR_DTYPE", "swiglu backward: i32 is not supported");
  check(p.N == 0 || p.F == 0 || (p.dgate && p.dup && p.dout && p.gate && p.up), "ERR_ARG", "swiglu backward: null pointer");
}

}  // namespace

void swiglu_forward_reference_cpu(const SwigluForwardParams& p) {
  check_forward(p);
  for (int64_t i = 0; i < p.N; ++i)
    for (int64_t f = 0; f < p.F; ++f) {
      double g = load_as_double(p.gate, p.dtype, i * p.ld_in + f);
      double u = load_as_double(p.up, p.dtype, i * p.ld_in + f);
      store_from_double(p.out, p.dtype, i * p.F + f, g / (1.0 + std::exp(-g)) * u);
    }
}

void swiglu_forward_cpu(const SwigluForwardParams& p) {
  check_forward(p);
  dispatch_storage(p.dtype, "swiglu", [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    parallel_for(0, p.N, row_grain(p.F), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const S* gate = static_cast<const S*>(p.gate) + i * p.ld_in;
        const S* up = static_cast<const S*>(p.up) + i * p.ld_in;
        S* out = static_cast<S*>(p.out) + i * p.F;
        for (int64_t f = 0; f < p.F; ++f) {
          C g = load(gate + f);
          store(out + f, g / (C(1) + std::exp(-g)) * load(up + f));
        }
      }
    });
  });
}

void swiglu_backward_reference_cpu(const SwigluBackwardParams& p) {
  check_backward(p);
  for (int64_t i = 0; i < p.N; ++i)
    for (int64_t f = 0; f < p.F; ++f) {
      double g = load_as_double(p.gate, p.dtype, i * p.ld_in + f);
      double u = load_as_double(p.up, p.dtype, i * p.ld_in + f);
      double d = load_as_double(p.dout, p.dtype, i * p.F + f);
      double s = 1.0 / (1.0 + std::exp(-g));
      // written after all three reads: dgate/dup may alias gate/up (in-place backward)
      store_from_double(p.dgate, p.dtype, i * p.ld_dinput + f, d * u * s * (1.0 + g * (1.0 - s)));
      store_from_double(p.dup, p.dtype, i * p.ld_dinput + f, d * g * s);
    }
}

void swiglu_backward_cpu(const SwigluBackwardParams& p) {
  check_backward(p);
  dispatch_storage(p.dtype, "swiglu backward", [&](auto tag) {
    using S = decltype(tag);
    using C = compute_t<S>;
    parallel_for(0, p.N, row_grain(p.F), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const S* gate = static_cast<const S*>(p.gate) + i * p.ld_in;
        const S* up = static_cast<const S*>(p.up) + i * p.ld_in;
        const S* dout = static_cast<const S*>(p.dout) + i * p.F;
        S* dgate = static_cast<S*>(p.dgate) + i * p.ld_dinput;
        S* dup = static_cast<S*>(p.dup) + i * p.ld_dinput;
        for (int64_t f = 0; f < p.F; ++f) {
          C g = load(gate + f), u = load(up + f), d = load(dout + f);
          C s = C(1) / (C(1) + std::exp(-g));
          store(dgate + f, d * u * s * (C(1) + g * (C(1) - s)));
          store(dup + f, d * g * s);
        }
      }
    });
  });
}

}  // namespace kiln

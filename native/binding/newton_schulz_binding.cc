// Binding for Newton–Schulz orthogonalization (ops/newton_schulz.h): the batched op on both
// backends (CPU fast path or double-loop oracle; CUDA bf16 compute with a workspace from the
// caching allocator) and its FLOP count. CUDA paths compile here and are verified on a GPU by
// test/cuda/optimizer.test.ts.
#include <cmath>
#include <memory>
#include <vector>

#include "../ops/newton_schulz.h"
#include "binding.h"

namespace kiln::binding {
namespace {

CUstream_st* as_stream(void* stream) { return static_cast<CUstream_st*>(stream); }

std::shared_ptr<Storage> scratch(Device device, size_t bytes) {
  return device.is_cuda() && bytes ? Storage::allocate(device, bytes) : nullptr;
}

std::shared_ptr<std::vector<double>> coefficient_list(const Napi::Object& o, int64_t steps) {
  Napi::Value list = field_value(o, "coefficients", "newtonSchulz params");
  if (!list.IsArray()) fail("ERR_ARG", "newtonSchulz params.coefficients must be an array of numbers");
  auto array = list.As<Napi::Array>();
  if (int64_t(array.Length()) != 3 * steps) fail("ERR_ARG", "newtonSchulz needs 3 coefficients per step");
  auto coefficients = std::make_shared<std::vector<double>>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    require_plain_phase("newtonSchulz params.coefficients");
    Napi::Value v = array.Get(i);  // may run an element getter: before any tensor is resolved
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fail("ERR_ARG", "newtonSchulz coefficients must be finite numbers");
    coefficients->push_back(v.As<Napi::Number>().DoubleValue());
  }
  if (int64_t(coefficients->size()) != 3 * steps) fail("ERR_ARG", "newtonSchulz needs 3 coefficients per step");
  return coefficients;
}

// newtonSchulz(out, g, { batch, rows, cols, steps, coefficients, normScale, eps, compute, reference }).
// CPU: the fast path or the double-loop oracle; CUDA: bf16 compute, the whole batch per launch
// sequence, workspace from the caching allocator. Dtype and size rules: ops/newton_schulz.h.
Napi::Value newton_schulz(const Napi::CallbackInfo& info) {
  Napi::Object o = arg_object(info, 2, "params");
  NewtonSchulzBatchParams p;
  p.batch = field_int(o, "batch", "newtonSchulz params");
  p.rows = field_int(o, "rows", "newtonSchulz params");
  p.cols = field_int(o, "cols", "newtonSchulz params");
  p.steps = int(field_int(o, "steps", "newtonSchulz params"));
  p.norm_scale = field_number(o, "normScale", "newtonSchulz params");
  p.eps = field_number(o, "eps", "newtonSchulz params");
  p.compute_dtype = DType(int32_t(field_int(o, "compute", "newtonSchulz params")));
  bool reference = field_bool(o, "reference", "newtonSchulz params");
  if (p.steps > 100) fail("ERR_ARG", "newtonSchulz steps must be in [0, 100]");
  auto coefficients = coefficient_list(o, p.steps);
  // Tensor handles after every plain argument (binding.h: the order rule).
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef g = arg_tensor(info, 1, "g");
  require_same_device(out, g, "out", "g");
  Device device = out.device();
  if (reference && device.is_cuda()) fail("ERR_ARG", "the reference Newton–Schulz runs on the CPU only");
  int64_t numel = checked_product({p.batch, p.rows, p.cols});
  require_numel(g, numel, "g");
  require_numel(out, numel, "out");
  p.input = g.data();
  p.output = out.data();
  p.input_dtype = g.dtype();
  p.output_dtype = out.dtype();
  p.coefficients = coefficients->data();
  newton_schulz_validate(p, device.is_cuda());  // a typed error now, not inside the queue
  std::vector<std::shared_ptr<Storage>> keep{out.storage(), g.storage()};
  std::shared_ptr<Storage> ws;
  if (device.is_cuda()) {
#if KILN_WITH_CUDA
    ws = scratch(device, newton_schulz_cuda_workspace_bytes(p));
    if (ws) keep.push_back(ws);
#else
    fail("ERR_NO_CUDA", "this build has no CUDA kernels");
#endif
  }
  run_on(device, std::move(keep), [p, coefficients, reference, device, ws](void* stream) mutable {
    p.coefficients = coefficients->data();
#if KILN_WITH_CUDA
    if (device.is_cuda()) return newton_schulz_cuda(p, ws ? ws->data() : nullptr, ws ? ws->bytes() : 0, as_stream(stream));
#endif
    (void)stream;
    (void)device;
    reference ? newton_schulz_reference_cpu(p) : newton_schulz_cpu(p);
  });
  return info.Env().Undefined();
}

// newtonSchulzFlops(batch, rows, cols, steps, symmetric)
Napi::Value flops(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), newton_schulz_flops(arg_int(info, 0, "batch", 0), arg_int(info, 1, "rows", 0),
                                                           arg_int(info, 2, "cols", 0), int(arg_int(info, 3, "steps", 0, 100)),
                                                           arg_bool(info, 4, "symmetric")));
}

void register_newton_schulz(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "newtonSchulz", newton_schulz);
  set_function(env, exports, "newtonSchulzFlops", flops);
}

}  // namespace
KILN_REGISTER_BINDING(register_newton_schulz);
}  // namespace kiln::binding

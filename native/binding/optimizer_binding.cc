// Binding for the optimizer kernels (ops/optimizer_cpu.h). CPU only for now: the fused CUDA
// Newton–Schulz and multi-tensor kernels are issue 5's owed GPU work, so a CUDA tensor gets
// ERR_DEVICE rather than a silent fallback.
#include <vector>

#include "../ops/optimizer_cpu.h"
#include "binding.h"

namespace kiln::binding {
namespace {

void require_cpu_f32(const NativeTensor& t, const char* name) {
  if (t.device().is_cuda()) fail("ERR_DEVICE", std::string(name) + ": the optimizer kernels run on the CPU only in this build");
  require_dtype(t, DType::f32, name);
}

// newtonSchulz(out, g, { batch, rows, cols, steps, coefficients, normScale, eps, compute, reference })
Napi::Value newton_schulz(const Napi::CallbackInfo& info) {
  NativeTensor& out = arg_tensor(info, 0, "out");
  NativeTensor& g = arg_tensor(info, 1, "g");
  Napi::Object o = arg_object(info, 2, "params");
  require_cpu_f32(out, "out");
  require_cpu_f32(g, "g");
  NewtonSchulzParams p;
  p.batch = field_int(o, "batch", "newtonSchulz params");
  p.rows = field_int(o, "rows", "newtonSchulz params");
  p.cols = field_int(o, "cols", "newtonSchulz params");
  p.steps = int(field_int(o, "steps", "newtonSchulz params"));
  p.norm_scale = field_number(o, "normScale", "newtonSchulz params");
  p.eps = field_number(o, "eps", "newtonSchulz params");
  p.compute = DType(int32_t(field_int(o, "compute", "newtonSchulz params")));
  bool reference = field_bool(o, "reference", "newtonSchulz params");
  Napi::Value list = o.Get("coefficients");
  if (!list.IsArray()) fail("ERR_ARG", "newtonSchulz params.coefficients must be an array of numbers");
  auto array = list.As<Napi::Array>();
  if (int64_t(array.Length()) != 3 * int64_t(p.steps)) fail("ERR_ARG", "newtonSchulz needs 3 coefficients per step");
  auto coefficients = std::make_shared<std::vector<double>>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fail("ERR_ARG", "newtonSchulz coefficients must be finite numbers");
    coefficients->push_back(v.As<Napi::Number>().DoubleValue());
  }
  int64_t numel = checked_product({p.batch, p.rows, p.cols});
  require_numel(g, numel, "g");
  require_numel(out, numel, "out");
  p.g = static_cast<const float*>(g.data());
  p.out = static_cast<float*>(out.data());
  run_on(Device{}, {out.storage(), g.storage()}, [p, coefficients, reference](void*) mutable {
    p.coefficients = coefficients->data();
    reference ? newton_schulz_reference_cpu(p) : newton_schulz_cpu(p);
  });
  return info.Env().Undefined();
}

// muonMomentum(momentum, update, grad, beta, nesterov)
Napi::Value muon_momentum(const Napi::CallbackInfo& info) {
  NativeTensor& momentum = arg_tensor(info, 0, "momentum");
  NativeTensor& update = arg_tensor(info, 1, "update");
  NativeTensor& grad = arg_tensor(info, 2, "grad");
  float beta = float(arg_number(info, 3, "beta"));
  bool nesterov = arg_bool(info, 4, "nesterov");
  for (auto [t, name] : {std::pair{&momentum, "momentum"}, {&update, "update"}, {&grad, "grad"}}) {
    require_cpu_f32(*t, name);
    require_numel(*t, momentum.numel(), name);
  }
  float* m = static_cast<float*>(momentum.data());
  float* u = static_cast<float*>(update.data());
  const float* g = static_cast<const float*>(grad.data());
  int64_t n = momentum.numel();
  run_on(Device{}, {momentum.storage(), update.storage(), grad.storage()}, [=](void*) { muon_momentum_cpu(m, u, g, n, beta, nesterov); });
  return info.Env().Undefined();
}

// muonApply(weight, ortho, lr, weightDecay, scale)
Napi::Value muon_apply(const Napi::CallbackInfo& info) {
  NativeTensor& weight = arg_tensor(info, 0, "weight");
  NativeTensor& ortho = arg_tensor(info, 1, "ortho");
  float lr = float(arg_number(info, 2, "lr"));
  float wd = float(arg_number(info, 3, "weightDecay"));
  float scale = float(arg_number(info, 4, "scale"));
  require_cpu_f32(weight, "weight");
  require_cpu_f32(ortho, "ortho");
  require_numel(ortho, weight.numel(), "ortho");
  float* w = static_cast<float*>(weight.data());
  const float* o = static_cast<const float*>(ortho.data());
  int64_t n = weight.numel();
  run_on(Device{}, {weight.storage(), ortho.storage()}, [=](void*) { muon_apply_cpu(w, o, n, lr, wd, scale); });
  return info.Env().Undefined();
}

// normuonNormalize(ortho (rows, cols), rowSecondMoment (rows), beta2, eps)
Napi::Value normuon_normalize(const Napi::CallbackInfo& info) {
  NativeTensor& ortho = arg_tensor(info, 0, "ortho");
  NativeTensor& v = arg_tensor(info, 1, "rowSecondMoment");
  int64_t rows = arg_int(info, 2, "rows", 0), cols = arg_int(info, 3, "cols", 0);
  float beta2 = float(arg_number(info, 4, "beta2"));
  float eps = float(arg_number(info, 5, "eps"));
  require_cpu_f32(ortho, "ortho");
  require_cpu_f32(v, "rowSecondMoment");
  require_numel(ortho, checked_product({rows, cols}), "ortho");
  require_numel(v, rows, "rowSecondMoment");
  float* o = static_cast<float*>(ortho.data());
  float* vp = static_cast<float*>(v.data());
  run_on(Device{}, {ortho.storage(), v.storage()}, [=](void*) { normuon_normalize_cpu(o, vp, rows, cols, beta2, eps); });
  return info.Env().Undefined();
}

// adamw(weight, m, v, grad, { lr, beta1, beta2, eps, weightDecay, step })
Napi::Value adamw(const Napi::CallbackInfo& info) {
  NativeTensor& weight = arg_tensor(info, 0, "weight");
  NativeTensor& m = arg_tensor(info, 1, "m");
  NativeTensor& v = arg_tensor(info, 2, "v");
  NativeTensor& grad = arg_tensor(info, 3, "grad");
  Napi::Object o = arg_object(info, 4, "params");
  for (auto [t, name] : {std::pair{&weight, "weight"}, {&m, "m"}, {&v, "v"}, {&grad, "grad"}}) {
    require_cpu_f32(*t, name);
    require_numel(*t, weight.numel(), name);
  }
  float lr = float(field_number(o, "lr", "adamw params")), b1 = float(field_number(o, "beta1", "adamw params"));
  float b2 = float(field_number(o, "beta2", "adamw params")), eps = float(field_number(o, "eps", "adamw params"));
  float wd = float(field_number(o, "weightDecay", "adamw params"));
  int64_t step = field_int(o, "step", "adamw params", 1);
  float* w = static_cast<float*>(weight.data());
  float* mp = static_cast<float*>(m.data());
  float* vp = static_cast<float*>(v.data());
  const float* g = static_cast<const float*>(grad.data());
  int64_t n = weight.numel();
  run_on(Device{}, {weight.storage(), m.storage(), v.storage(), grad.storage()},
         [=](void*) { adamw_cpu(w, mp, vp, g, n, lr, b1, b2, eps, wd, step); });
  return info.Env().Undefined();
}

// newtonSchulzFlops(batch, rows, cols, steps, symmetric)
Napi::Value flops(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), newton_schulz_flops(arg_int(info, 0, "batch", 0), arg_int(info, 1, "rows", 0),
                                                           arg_int(info, 2, "cols", 0), int(arg_int(info, 3, "steps", 0, 100)),
                                                           arg_bool(info, 4, "symmetric")));
}

void register_optimizer(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "newtonSchulz", newton_schulz);
  set_function(env, exports, "muonMomentum", muon_momentum);
  set_function(env, exports, "muonApply", muon_apply);
  set_function(env, exports, "normuonNormalize", normuon_normalize);
  set_function(env, exports, "adamw", adamw);
  set_function(env, exports, "newtonSchulzFlops", flops);
}

}  // namespace
KILN_REGISTER_BINDING(register_optimizer);
}  // namespace kiln::binding

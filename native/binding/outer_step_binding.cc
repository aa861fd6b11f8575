// Binding functions for DiLoCo's outer-step ops (ops/outer_step.h). Packed pseudo-gradients
// travel as f32 tensors of packed_pseudo_gradient_bytes / 4 elements (the collectives move f32).
#include "../ops/outer_step.h"
#include "binding.h"

namespace kiln::binding {
namespace {

int arg_bits(const Napi::CallbackInfo& info, size_t i) {
  const int64_t bits = arg_int(info, i, "bits", 0, 8);
  if (bits != 0 && bits != 2 && bits != 4 && bits != 8) fail("ERR_ARG", "bits must be 0, 2, 4 or 8");
  return int(bits);
}

// pseudoGradientQuantize(packed, residual | null, anchor, current, bits)
Napi::Value pseudo_gradient_quantize(const Napi::CallbackInfo& info) {
  const int bits = arg_bits(info, 4);  // plain arguments before tensor handles (the order rule)
  TensorRef packed = arg_tensor(info, 0, "packed");
  std::optional<TensorRef> residual = arg_optional_tensor(info, 1, "residual");
  TensorRef anchor = arg_tensor(info, 2, "anchor");
  TensorRef current = arg_tensor(info, 3, "current");
  const int64_t n = anchor.numel();
  std::vector<const TensorRef*> all = {&packed, &anchor, &current};
  if (residual) all.push_back(&*residual);
  for (const TensorRef* t : all) {
    require_same_device(*t, anchor, "tensor", "anchor");
    require_dtype(*t, DType::f32, "tensor");
  }
  require_numel(current, n, "current");
  if (residual) require_numel(*residual, n, "residual");
  require_numel(packed, packed_pseudo_gradient_bytes(n, bits) / 4, "packed");
  // outputs must not overlap the inputs (anchor and current may alias each other: Δ = 0)
  require_disjoint({&packed, &anchor}, "pseudoGradientQuantize packed/anchor");
  require_disjoint({&packed, &current}, "pseudoGradientQuantize packed/current");
  if (residual) {
    require_disjoint({&*residual, &packed}, "pseudoGradientQuantize residual/packed");
    require_disjoint({&*residual, &anchor}, "pseudoGradientQuantize residual/anchor");
    require_disjoint({&*residual, &current}, "pseudoGradientQuantize residual/current");
  }
  PseudoGradientQuantizeParams p;
  p.packed = packed.data(), p.residual = residual ? static_cast<float*>(residual->data()) : nullptr;
  p.anchor = static_cast<const float*>(anchor.data()), p.current = static_cast<const float*>(current.data());
  p.n = n, p.bits = bits;
  std::vector<std::shared_ptr<Storage>> keep = {packed.storage(), anchor.storage(), current.storage()};
  if (residual) keep.push_back(residual->storage());
  Device device = anchor.device();
  run_on(device, keep, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return pseudo_gradient_quantize_cuda(p, static_cast<CUstream_st*>(stream));
#endif
    pseudo_gradient_quantize_cpu(p);
  });
  return info.Env().Undefined();
}

// dequantizeMean(mean, gathered, worldSize, bits)
Napi::Value dequantize_mean(const Napi::CallbackInfo& info) {
  const int64_t world = arg_int(info, 2, "worldSize", 1, 1 << 20);
  const int bits = arg_bits(info, 3);
  TensorRef mean = arg_tensor(info, 0, "mean");
  TensorRef gathered = arg_tensor(info, 1, "gathered");
  require_same_device(gathered, mean, "gathered", "mean");
  require_dtype(mean, DType::f32, "mean");
  require_dtype(gathered, DType::f32, "gathered");
  const int64_t n = mean.numel();
  require_numel(gathered, checked_product({world, packed_pseudo_gradient_bytes(n, bits) / 4}), "gathered");
  require_disjoint({&mean, &gathered}, "dequantizeMean mean/gathered");
  DequantizeMeanParams p;
  p.mean = static_cast<float*>(mean.data()), p.gathered = gathered.data(), p.n = n, p.world_size = world, p.bits = bits;
  Device device = mean.device();
  run_on(device, {mean.storage(), gathered.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return dequantize_mean_cuda(p, static_cast<CUstream_st*>(stream));
#endif
    dequantize_mean_cpu(p);
  });
  return info.Env().Undefined();
}

// outerNesterov(anchor, momentum, weights, meanDelta, lr, momentumFactor, nesterov, alpha, mix)
Napi::Value outer_nesterov(const Napi::CallbackInfo& info) {
  OuterNesterovParams p;
  p.lr = float(arg_number(info, 4, "lr"));
  p.momentum_factor = float(arg_number(info, 5, "momentumFactor"));
  p.nesterov = arg_bool(info, 6, "nesterov");
  p.alpha = float(arg_number(info, 7, "alpha"));
  p.mix = arg_bool(info, 8, "mix");
  TensorRef anchor = arg_tensor(info, 0, "anchor");
  TensorRef momentum = arg_tensor(info, 1, "momentum");
  TensorRef weights = arg_tensor(info, 2, "weights");
  TensorRef delta = arg_tensor(info, 3, "meanDelta");
  const int64_t n = anchor.numel();
  for (const TensorRef* t : {&anchor, &momentum, &weights, &delta}) {
    require_same_device(*t, anchor, "tensor", "anchor");
    require_dtype(*t, DType::f32, "tensor");
    require_numel(*t, n, "tensor");
  }
  require_disjoint({&anchor, &momentum, &weights, &delta}, "outerNesterov");
  p.anchor = static_cast<float*>(anchor.data()), p.momentum = static_cast<float*>(momentum.data());
  p.weights = static_cast<float*>(weights.data()), p.mean_delta = static_cast<const float*>(delta.data()), p.n = n;
  Device device = anchor.device();
  run_on(device, {anchor.storage(), momentum.storage(), weights.storage(), delta.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return outer_nesterov_cuda(p, static_cast<CUstream_st*>(stream));
#endif
    outer_nesterov_cpu(p);
  });
  return info.Env().Undefined();
}

void register_outer_step(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "pseudoGradientQuantize", pseudo_gradient_quantize);
  set_function(env, exports, "dequantizeMean", dequantize_mean);
  set_function(env, exports, "outerNesterov", outer_nesterov);
}

}  // namespace
KILN_REGISTER_BINDING(register_outer_step);
}  // namespace kiln::binding

// Binding for the model layers (ops/layers.h): embedding, RMSNorm, SwiGLU, cross-entropy.
// CPU (f32/f64/bf16/f16) and CUDA (f32/bf16/f16) launchers share one params struct per op;
// CUDA workspaces come from the caching allocator. Gradient-side tensors (rstd, loss, dtable,
// dweight) are f32, or f64 for f64 inputs.
#include "../ops/layers.h"
#include "binding.h"
#include "validate_calls.h"

namespace kiln::binding {
namespace {

DType grad_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

void same_device(std::initializer_list<const TensorRef*> tensors) {
  const TensorRef* first = *tensors.begin();
  for (const TensorRef* t : tensors) require_same_device(*t, *first, "tensor", "the first tensor");
}

void float_dtype(const TensorRef& t, const char* op) {
  if (t.dtype() == DType::i32) fail("ERR_DTYPE", std::string(op) + " takes float tensors");
  if (t.dtype() == DType::f64 && t.device().is_cuda()) fail("ERR_DTYPE", std::string(op) + ": f64 is CPU only");
}

std::shared_ptr<Storage> scratch(Device device, size_t bytes) {
  return device.is_cuda() && bytes ? Storage::allocate(device, bytes) : nullptr;
}

CUstream_st* as_stream(void* stream) { return static_cast<CUstream_st*>(stream); }

// embedding(out, table, ids, N, V, D)
Napi::Value embedding(const Napi::CallbackInfo& info) {
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef table = arg_tensor(info, 1, "table");
  TensorRef ids = arg_tensor(info, 2, "ids");
  EmbeddingForwardParams p;
  p.N = arg_int(info, 3, "N", 0), p.V = arg_int(info, 4, "V", 1), p.D = arg_int(info, 5, "D", 1);
  same_device({&out, &table, &ids});
  float_dtype(table, "embedding");
  require_dtype(out, table.dtype(), "out");
  require_dtype(ids, DType::i32, "ids");
  require_numel(out, checked_product({p.N, p.D}), "out");
  require_numel(table, checked_product({p.V, p.D}), "table");
  require_numel(ids, p.N, "ids");
  p.out = out.data(), p.table = table.data(), p.ids = static_cast<const int32_t*>(ids.data()), p.dtype = table.dtype();
  Device device = out.device();
  run_on(device, {out.storage(), table.storage(), ids.storage()}, [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return embedding_forward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    embedding_forward_cpu(p);
  });
  return info.Env().Undefined();
}

// embeddingBackward(dtable, ids, dout, N, V, D): dtable += scatter(dout)
Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  TensorRef dtable = arg_tensor(info, 0, "dtable");
  TensorRef ids = arg_tensor(info, 1, "ids");
  TensorRef dout = arg_tensor(info, 2, "dout");
  EmbeddingBackwardParams p;
  p.N = arg_int(info, 3, "N", 0), p.V = arg_int(info, 4, "V", 1), p.D = arg_int(info, 5, "D", 1);
  same_device({&dtable, &ids, &dout});
  float_dtype(dout, "embeddingBackward");
  require_dtype(dtable, grad_dtype(dout.dtype()), "dtable");
  require_dtype(ids, DType::i32, "ids");
  require_numel(dtable, checked_product({p.V, p.D}), "dtable");
  require_numel(dout, checked_product({p.N, p.D}), "dout");
  require_numel(ids, p.N, "ids");
  p.dtable = dtable.data(), p.dout = dout.data(), p.ids = static_cast<const int32_t*>(ids.data()), p.dtype = dout.dtype();
  Device device = dtable.device();
  std::vector<std::shared_ptr<Storage>> keep{dtable.storage(), ids.storage(), dout.storage()};
  if (auto ws = scratch(device, embedding_backward_workspace_bytes(p.N, p.V))) {
    p.workspace = ws->data(), p.workspace_bytes = ws->bytes();
    keep.push_back(ws);
  }
  run_on(device, std::move(keep), [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return embedding_backward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    embedding_backward_cpu(p);
  });
  return info.Env().Undefined();
}

// rmsnorm(y, rstd, x, weight, N, D, eps)
Napi::Value rmsnorm(const Napi::CallbackInfo& info) {
  TensorRef y = arg_tensor(info, 0, "y");
  TensorRef rstd = arg_tensor(info, 1, "rstd");
  TensorRef x = arg_tensor(info, 2, "x");
  TensorRef w = arg_tensor(info, 3, "weight");
  RmsnormForwardParams p;
  p.N = arg_int(info, 4, "N", 0), p.D = arg_int(info, 5, "D", 1);
  p.eps = arg_number(info, 6, "eps");
  same_device({&y, &rstd, &x, &w});
  float_dtype(x, "rmsnorm");
  require_dtype(y, x.dtype(), "y");
  require_dtype(w, x.dtype(), "weight");
  require_dtype(rstd, grad_dtype(x.dtype()), "rstd");
  require_numel(y, checked_product({p.N, p.D}), "y");
  require_numel(x, checked_product({p.N, p.D}), "x");
  require_numel(rstd, p.N, "rstd");
  require_numel(w, p.D, "weight");
  p.y = y.data(), p.rstd = rstd.data(), p.x = x.data(), p.weight = w.data(), p.dtype = x.dtype();
  Device device = x.device();
  validate_rmsnorm_forward(p, device);
  run_on(device, {y.storage(), rstd.storage(), x.storage(), w.storage()}, [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return rmsnorm_forward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    rmsnorm_forward_cpu(p);
  });
  return info.Env().Undefined();
}

// rmsnormBackward(dx, dweight, dy, x, weight, rstd, dresidual | null, N, D)
Napi::Value rmsnorm_backward(const Napi::CallbackInfo& info) {
  TensorRef dx = arg_tensor(info, 0, "dx");
  TensorRef dw = arg_tensor(info, 1, "dweight");
  TensorRef dy = arg_tensor(info, 2, "dy");
  TensorRef x = arg_tensor(info, 3, "x");
  TensorRef w = arg_tensor(info, 4, "weight");
  TensorRef rstd = arg_tensor(info, 5, "rstd");
  std::optional<TensorRef> res = arg_optional_tensor(info, 6, "dresidual");
  RmsnormBackwardParams p;
  p.N = arg_int(info, 7, "N", 0), p.D = arg_int(info, 8, "D", 1);
  same_device({&dx, &dw, &dy, &x, &w, &rstd});
  float_dtype(x, "rmsnormBackward");
  for (auto* t : {&dx, &dy, &w}) require_dtype(*t, x.dtype(), "rmsnormBackward tensor");
  require_dtype(dw, grad_dtype(x.dtype()), "dweight");
  require_dtype(rstd, grad_dtype(x.dtype()), "rstd");
  int64_t ND = checked_product({p.N, p.D});
  for (auto* t : {&dx, &dy, &x}) require_numel(*t, ND, "row tensor");
  require_numel(dw, p.D, "dweight");
  require_numel(w, p.D, "weight");
  require_numel(rstd, p.N, "rstd");
  std::vector<std::shared_ptr<Storage>> keep{dx.storage(), dw.storage(), dy.storage(), x.storage(), w.storage(), rstd.storage()};
  if (res) {
    require_same_device(*res, x, "dresidual", "x");
    require_dtype(*res, x.dtype(), "dresidual");
    require_numel(*res, ND, "dresidual");
    p.dresidual_in = res->data();
    keep.push_back(res->storage());
  }
  p.dx = dx.data(), p.dweight = dw.data(), p.dy = dy.data(), p.h = x.data(), p.weight = w.data(), p.rstd = rstd.data();
  p.dtype = x.dtype();
  Device device = x.device();
  if (auto ws = scratch(device, rmsnorm_backward_workspace_bytes(p.N, p.D))) {
    p.workspace = ws->data(), p.workspace_bytes = ws->bytes();
    keep.push_back(ws);
  }
  validate_rmsnorm_backward(p, device);
  run_on(device, std::move(keep), [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return rmsnorm_backward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    rmsnorm_backward_cpu(p);
  });
  return info.Env().Undefined();
}

// swiglu(out, in (N, 2F) = [gate | up], N, F)
Napi::Value swiglu(const Napi::CallbackInfo& info) {
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef in = arg_tensor(info, 1, "in");
  SwigluForwardParams p;
  p.N = arg_int(info, 2, "N", 0), p.F = arg_int(info, 3, "F", 1);
  same_device({&out, &in});
  float_dtype(in, "swiglu");
  require_dtype(out, in.dtype(), "out");
  require_numel(out, checked_product({p.N, p.F}), "out");
  require_numel(in, checked_product({p.N, 2, p.F}), "in");
  p.out = out.data(), p.gate = in.data();
  p.up = static_cast<const char*>(in.data()) + size_t(p.F) * dtype_size(in.dtype());
  p.ld_in = 2 * p.F, p.dtype = in.dtype();
  Device device = in.device();
  run_on(device, {out.storage(), in.storage()}, [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return swiglu_forward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    swiglu_forward_cpu(p);
  });
  return info.Env().Undefined();
}

// swigluBackward(din (N, 2F), in (N, 2F), dout (N, F), N, F)
Napi::Value swiglu_backward(const Napi::CallbackInfo& info) {
  TensorRef din = arg_tensor(info, 0, "din");
  TensorRef in = arg_tensor(info, 1, "in");
  TensorRef dout = arg_tensor(info, 2, "dout");
  SwigluBackwardParams p;
  p.N = arg_int(info, 3, "N", 0), p.F = arg_int(info, 4, "F", 1);
  same_device({&din, &in, &dout});
  float_dtype(in, "swigluBackward");
  require_dtype(din, in.dtype(), "din");
  require_dtype(dout, in.dtype(), "dout");
  require_numel(din, checked_product({p.N, 2, p.F}), "din");
  require_numel(in, checked_product({p.N, 2, p.F}), "in");
  require_numel(dout, checked_product({p.N, p.F}), "dout");
  size_t half = size_t(p.F) * dtype_size(in.dtype());
  p.dgate = din.data(), p.dup = static_cast<char*>(din.data()) + half;
  p.gate = in.data(), p.up = static_cast<const char*>(in.data()) + half;
  p.dout = dout.data(), p.ld_in = 2 * p.F, p.ld_dinput = 2 * p.F, p.dtype = in.dtype();
  Device device = in.device();
  run_on(device, {din.storage(), in.storage(), dout.storage()}, [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return swiglu_backward_cuda(p, as_stream(stream));
#endif
    (void)stream;
    swiglu_backward_cpu(p);
  });
  return info.Env().Undefined();
}

// crossEntropy(loss, dlogits | null, logits, targets, N, V, gradScale): dlogits may be logits
Napi::Value cross_entropy(const Napi::CallbackInfo& info) {
  TensorRef loss = arg_tensor(info, 0, "loss");
  std::optional<TensorRef> dlogits = arg_optional_tensor(info, 1, "dlogits");
  TensorRef logits = arg_tensor(info, 2, "logits");
  TensorRef targets = arg_tensor(info, 3, "targets");
  CrossEntropyParams p;
  p.N = arg_int(info, 4, "N", 0), p.V = arg_int(info, 5, "V", 1);
  p.dloss_scale = arg_number(info, 6, "gradScale");
  same_device({&loss, &logits, &targets});
  float_dtype(logits, "crossEntropy");
  require_dtype(loss, grad_dtype(logits.dtype()), "loss");
  require_dtype(targets, DType::i32, "targets");
  require_numel(logits, checked_product({p.N, p.V}), "logits");
  require_numel(loss, p.N, "loss");
  require_numel(targets, p.N, "targets");
  std::vector<std::shared_ptr<Storage>> keep{loss.storage(), logits.storage(), targets.storage()};
  if (dlogits) {
    require_same_device(*dlogits, logits, "dlogits", "logits");
    require_dtype(*dlogits, logits.dtype(), "dlogits");
    require_numel(*dlogits, p.N * p.V, "dlogits");
    p.dlogits = dlogits->data();
    keep.push_back(dlogits->storage());
  }
  p.loss = loss.data(), p.logits = logits.data(), p.targets = static_cast<const int32_t*>(targets.data()), p.dtype = logits.dtype();
  Device device = logits.device();
  run_on(device, std::move(keep), [p, device](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return cross_entropy_cuda(p, as_stream(stream));
#endif
    (void)stream;
    cross_entropy_cpu(p);
  });
  return info.Env().Undefined();
}

// gradNormClip(tensors: NativeTensor[], maxNorm, norm: NativeTensor (1) f32): writes the global
// L2 norm of all tensors into `norm` and, when maxNorm > 0, scales them by
// min(1, maxNorm / (norm + 1e-6)) — on the device, without a host round trip.
Napi::Value grad_norm_clip(const Napi::CallbackInfo& info) {
  std::vector<Napi::Value> values = arg_array_values(info, 0, "tensors");  // element getters run here, before any handle
  double max_norm = arg_number(info, 1, "maxNorm");
  TensorRef norm = arg_tensor(info, 2, "norm");
  std::vector<TensorRef> list = tensor_values(info.Env(), values, "tensors");
  require_dtype(norm, DType::f32, "norm");
  require_numel(norm, 1, "norm");
  std::vector<const TensorRef*> all{&norm};
  for (const TensorRef& t : list) all.push_back(&t);
  require_disjoint(all, "gradNormClip");  // a tensor listed twice would be counted and scaled twice
  auto spans = std::make_shared<std::vector<TensorSpan>>();
  std::vector<std::shared_ptr<Storage>> keep{norm.storage()};
  for (const TensorRef& t : list) {
    require_same_device(t, norm, "tensor", "norm");
    float_dtype(t, "gradNormClip");
    spans->push_back(TensorSpan{t.data(), t.numel(), t.dtype()});
    keep.push_back(t.storage());
  }
  Device device = norm.device();
  float* norm_ptr = static_cast<float*>(norm.data());
  std::shared_ptr<Storage> ws;
#if KILN_WITH_CUDA
  if (device.is_cuda()) {
    ws = scratch(device, grad_norm_workspace_bytes(spans->data(), int64_t(spans->size())));
    if (ws) keep.push_back(ws);
  }
#endif
  run_on(device, std::move(keep), [spans, max_norm, norm_ptr, device, ws](void* stream) {
    int64_t count = int64_t(spans->size());
#if KILN_WITH_CUDA
    if (device.is_cuda()) {
      grad_norm_cuda(norm_ptr, spans->data(), count, ws ? ws->data() : nullptr, ws ? ws->bytes() : 0, as_stream(stream));
      if (max_norm > 0) grad_clip_cuda(spans->data(), count, norm_ptr, max_norm, as_stream(stream));
      return;
    }
#endif
    (void)stream;
    double n = grad_norm_cpu(spans->data(), count);
    *norm_ptr = float(n);
    if (max_norm > 0) grad_clip_cpu(spans->data(), count, n, max_norm);
  });
  return info.Env().Undefined();
}

void register_layers(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "gradNormClip", grad_norm_clip);
  set_function(env, exports, "embedding", embedding);
  set_function(env, exports, "embeddingBackward", embedding_backward);
  set_function(env, exports, "rmsnorm", rmsnorm);
  set_function(env, exports, "rmsnormBackward", rmsnorm_backward);
  set_function(env, exports, "swiglu", swiglu);
  set_function(env, exports, "swigluBackward", swiglu_backward);
  set_function(env, exports, "crossEntropy", cross_entropy);
}

}  // namespace
KILN_REGISTER_BINDING(register_layers);
}  // namespace kiln::binding

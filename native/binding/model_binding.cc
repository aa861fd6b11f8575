// Binding for the model layers (ops/model_layers.h). CPU only in this build: the CUDA versions
// are issue 6's owed GPU work, so CUDA tensors get ERR_DEVICE instead of a silent fallback.
#include "../ops/model_layers.h"
#include "binding.h"

namespace kiln::binding {
namespace {

void cpu_only(std::initializer_list<const NativeTensor*> tensors, const char* op) {
  for (const NativeTensor* t : tensors) {
    if (t->device().is_cuda()) fail("ERR_DEVICE", std::string(op) + " runs on the CPU only in this build");
  }
}

void same_float_dtype(std::initializer_list<const NativeTensor*> tensors, const char* op) {
  DType d = (*tensors.begin())->dtype();
  if (d != DType::f32 && d != DType::f64) fail("ERR_DTYPE", std::string(op) + " takes f32 or f64 tensors on the CPU");
  for (const NativeTensor* t : tensors) require_dtype(*t, d, op);
}

// embedding(out, table, ids, N, V, D)
Napi::Value embedding(const Napi::CallbackInfo& info) {
  NativeTensor& out = arg_tensor(info, 0, "out");
  NativeTensor& table = arg_tensor(info, 1, "table");
  NativeTensor& ids = arg_tensor(info, 2, "ids");
  int64_t N = arg_int(info, 3, "N", 0), V = arg_int(info, 4, "V", 1), D = arg_int(info, 5, "D", 1);
  cpu_only({&out, &table, &ids}, "embedding");
  same_float_dtype({&out, &table}, "embedding");
  require_dtype(ids, DType::i32, "ids");
  require_numel(out, checked_product({N, D}), "out");
  require_numel(table, checked_product({V, D}), "table");
  require_numel(ids, N, "ids");
  void* o = out.data();
  const void* t = table.data();
  auto* i = static_cast<const int32_t*>(ids.data());
  DType dtype = out.dtype();
  run_on(Device{}, {out.storage(), table.storage(), ids.storage()}, [=](void*) { embedding_forward_cpu(o, t, i, N, V, D, dtype); });
  return info.Env().Undefined();
}

// embeddingBackward(dtable, ids, dout, N, V, D): dtable += scatter(dout)
Napi::Value embedding_backward(const Napi::CallbackInfo& info) {
  NativeTensor& dtable = arg_tensor(info, 0, "dtable");
  NativeTensor& ids = arg_tensor(info, 1, "ids");
  NativeTensor& dout = arg_tensor(info, 2, "dout");
  int64_t N = arg_int(info, 3, "N", 0), V = arg_int(info, 4, "V", 1), D = arg_int(info, 5, "D", 1);
  cpu_only({&dtable, &ids, &dout}, "embeddingBackward");
  same_float_dtype({&dtable, &dout}, "embeddingBackward");
  require_dtype(ids, DType::i32, "ids");
  require_numel(dtable, checked_product({V, D}), "dtable");
  require_numel(dout, checked_product({N, D}), "dout");
  require_numel(ids, N, "ids");
  void* dt = dtable.data();
  const void* g = dout.data();
  auto* i = static_cast<const int32_t*>(ids.data());
  DType dtype = dtable.dtype();
  run_on(Device{}, {dtable.storage(), ids.storage(), dout.storage()}, [=](void*) { embedding_backward_cpu(dt, i, g, N, V, D, dtype); });
  return info.Env().Undefined();
}

// rmsnorm(y, rstd, x, weight, N, D, eps)
Napi::Value rmsnorm(const Napi::CallbackInfo& info) {
  NativeTensor& y = arg_tensor(info, 0, "y");
  NativeTensor& rstd = arg_tensor(info, 1, "rstd");
  NativeTensor& x = arg_tensor(info, 2, "x");
  NativeTensor& w = arg_tensor(info, 3, "weight");
  int64_t N = arg_int(info, 4, "N", 0), D = arg_int(info, 5, "D", 1);
  double eps = arg_number(info, 6, "eps");
  cpu_only({&y, &rstd, &x, &w}, "rmsnorm");
  same_float_dtype({&y, &rstd, &x, &w}, "rmsnorm");
  require_numel(y, checked_product({N, D}), "y");
  require_numel(x, checked_product({N, D}), "x");
  require_numel(rstd, N, "rstd");
  require_numel(w, D, "weight");
  void *yp = y.data(), *rp = rstd.data();
  const void *xp = x.data(), *wp = w.data();
  DType dtype = x.dtype();
  run_on(Device{}, {y.storage(), rstd.storage(), x.storage(), w.storage()}, [=](void*) { rmsnorm_forward_cpu(yp, rp, xp, wp, N, D, eps, dtype); });
  return info.Env().Undefined();
}

// rmsnormBackward(dx, dweight, dy, x, weight, rstd, dresidual | null, N, D)
Napi::Value rmsnorm_backward(const Napi::CallbackInfo& info) {
  NativeTensor& dx = arg_tensor(info, 0, "dx");
  NativeTensor& dw = arg_tensor(info, 1, "dweight");
  NativeTensor& dy = arg_tensor(info, 2, "dy");
  NativeTensor& x = arg_tensor(info, 3, "x");
  NativeTensor& w = arg_tensor(info, 4, "weight");
  NativeTensor& rstd = arg_tensor(info, 5, "rstd");
  NativeTensor* res = arg_optional_tensor(info, 6, "dresidual");
  int64_t N = arg_int(info, 7, "N", 0), D = arg_int(info, 8, "D", 1);
  cpu_only({&dx, &dw, &dy, &x, &w, &rstd}, "rmsnormBackward");
  same_float_dtype({&dx, &dw, &dy, &x, &w, &rstd}, "rmsnormBackward");
  int64_t ND = checked_product({N, D});
  for (auto* t : {&dx, &dy, &x}) require_numel(*t, ND, "row tensor");
  require_numel(dw, D, "dweight");
  require_numel(w, D, "weight");
  require_numel(rstd, N, "rstd");
  std::vector<std::shared_ptr<Storage>> keep{dx.storage(), dw.storage(), dy.storage(), x.storage(), w.storage(), rstd.storage()};
  const void* rp = nullptr;
  if (res) {
    cpu_only({res}, "rmsnormBackward");
    require_dtype(*res, dx.dtype(), "dresidual");
    require_numel(*res, ND, "dresidual");
    rp = res->data();
    keep.push_back(res->storage());
  }
  void *dxp = dx.data(), *dwp = dw.data();
  const void *dyp = dy.data(), *xp = x.data(), *wp = w.data(), *sp = rstd.data();
  DType dtype = x.dtype();
  run_on(Device{}, std::move(keep), [=](void*) { rmsnorm_backward_cpu(dxp, dwp, dyp, xp, wp, sp, rp, N, D, dtype); });
  return info.Env().Undefined();
}

// swiglu(out, in, N, F) / swigluBackward(din, in, dout, N, F)
Napi::Value swiglu(const Napi::CallbackInfo& info) {
  NativeTensor& out = arg_tensor(info, 0, "out");
  NativeTensor& in = arg_tensor(info, 1, "in");
  int64_t N = arg_int(info, 2, "N", 0), F = arg_int(info, 3, "F", 1);
  cpu_only({&out, &in}, "swiglu");
  same_float_dtype({&out, &in}, "swiglu");
  require_numel(out, checked_product({N, F}), "out");
  require_numel(in, checked_product({N, 2, F}), "in");
  void* o = out.data();
  const void* i = in.data();
  DType dtype = in.dtype();
  run_on(Device{}, {out.storage(), in.storage()}, [=](void*) { swiglu_forward_cpu(o, i, N, F, dtype); });
  return info.Env().Undefined();
}

Napi::Value swiglu_backward(const Napi::CallbackInfo& info) {
  NativeTensor& din = arg_tensor(info, 0, "din");
  NativeTensor& in = arg_tensor(info, 1, "in");
  NativeTensor& dout = arg_tensor(info, 2, "dout");
  int64_t N = arg_int(info, 3, "N", 0), F = arg_int(info, 4, "F", 1);
  cpu_only({&din, &in, &dout}, "swigluBackward");
  same_float_dtype({&din, &in, &dout}, "swigluBackward");
  require_numel(din, checked_product({N, 2, F}), "din");
  require_numel(in, checked_product({N, 2, F}), "in");
  require_numel(dout, checked_product({N, F}), "dout");
  void* d = din.data();
  const void *i = in.data(), *g = dout.data();
  DType dtype = in.dtype();
  run_on(Device{}, {din.storage(), in.storage(), dout.storage()}, [=](void*) { swiglu_backward_cpu(d, i, g, N, F, dtype); });
  return info.Env().Undefined();
}

// crossEntropy(loss, dlogits | null, logits, targets, N, V, gradScale): dlogits may be logits
Napi::Value cross_entropy(const Napi::CallbackInfo& info) {
  NativeTensor& loss = arg_tensor(info, 0, "loss");
  NativeTensor* dlogits = arg_optional_tensor(info, 1, "dlogits");
  NativeTensor& logits = arg_tensor(info, 2, "logits");
  NativeTensor& targets = arg_tensor(info, 3, "targets");
  int64_t N = arg_int(info, 4, "N", 0), V = arg_int(info, 5, "V", 1);
  double scale = arg_number(info, 6, "gradScale");
  cpu_only({&loss, &logits, &targets}, "crossEntropy");
  same_float_dtype({&loss, &logits}, "crossEntropy");
  require_dtype(targets, DType::i32, "targets");
  require_numel(logits, checked_product({N, V}), "logits");
  require_numel(loss, N, "loss");
  require_numel(targets, N, "targets");
  std::vector<std::shared_ptr<Storage>> keep{loss.storage(), logits.storage(), targets.storage()};
  void* dp = nullptr;
  if (dlogits) {
    cpu_only({dlogits}, "crossEntropy");
    require_dtype(*dlogits, logits.dtype(), "dlogits");
    require_numel(*dlogits, N * V, "dlogits");
    dp = dlogits->data();
    keep.push_back(dlogits->storage());
  }
  void* lp = loss.data();
  const void* xp = logits.data();
  auto* tp = static_cast<const int32_t*>(targets.data());
  DType dtype = logits.dtype();
  run_on(Device{}, std::move(keep), [=](void*) { cross_entropy_cpu(lp, dp, xp, tp, N, V, scale, dtype); });
  return info.Env().Undefined();
}

void register_model(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "embedding", embedding);
  set_function(env, exports, "embeddingBackward", embedding_backward);
  set_function(env, exports, "rmsnorm", rmsnorm);
  set_function(env, exports, "rmsnormBackward", rmsnorm_backward);
  set_function(env, exports, "swiglu", swiglu);
  set_function(env, exports, "swigluBackward", swiglu_backward);
  set_function(env, exports, "crossEntropy", cross_entropy);
}

}  // namespace
KILN_REGISTER_BINDING(register_model);
}  // namespace kiln::binding

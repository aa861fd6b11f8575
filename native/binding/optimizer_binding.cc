// Binding for the optimizer kernels (ops/optimizer.h): the fused multi-tensor updates (one
// native call per list on the CPU, one kernel launch per list on CUDA, with the device-side list
// in a workspace from the caching allocator) and NorMuon's row normalization, on both backends.
// Newton–Schulz has its own binding (newton_schulz_binding.cc). CUDA paths compile here and are
// verified on a GPU by test/cuda/optimizer.test.ts.
#include <cmath>
#include <memory>
#include <vector>

#include "../ops/optimizer.h"
#include "binding.h"

namespace kiln::binding {
namespace {

CUstream_st* as_stream(void* stream) { return static_cast<CUstream_st*>(stream); }

std::shared_ptr<Storage> scratch(Device device, size_t bytes) {
  return device.is_cuda() && bytes ? Storage::allocate(device, bytes) : nullptr;
}

// An array argument's elements, read now (plain phase); resolve them with tensor_values later.
std::vector<Napi::Value> list_values(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t count) {
  std::vector<Napi::Value> values = arg_array_values(info, index, name);
  if (count >= 0 && int64_t(values.size()) != count) {
    fail("ERR_ARG", std::string(name) + " has " + std::to_string(values.size()) + " tensors, expected " + std::to_string(count));
  }
  return values;
}

void require_list(const std::vector<TensorRef>& list, const TensorRef& first, const char* name, std::initializer_list<DType> dtypes) {
  for (const TensorRef& t : list) {
    require_same_device(t, first, name, "the first weight");
    bool ok = false;
    for (DType d : dtypes) ok = ok || t.dtype() == d;
    if (!ok) fail("ERR_DTYPE", std::string(name) + " has a dtype this optimizer kernel does not take");
  }
}

// Every tensor of a multi-tensor call must be distinct memory: the same tensor twice (in one list
// or across lists) would be updated twice or read while written, a silent wrong answer.
void require_all_disjoint(std::initializer_list<const std::vector<TensorRef>*> lists, const char* what) {
  std::vector<const TensorRef*> all;
  for (auto* list : lists)
    for (const TensorRef& t : *list) all.push_back(&t);
  require_disjoint(all, what);
}

// Keeps every tensor of the lists alive until the queued op ran.
std::vector<std::shared_ptr<Storage>> keep_all(std::initializer_list<const std::vector<TensorRef>*> lists) {
  std::vector<std::shared_ptr<Storage>> keep;
  for (auto* list : lists)
    for (const TensorRef& t : *list) keep.push_back(t.storage());
  return keep;
}

// normuonNormalize(ortho (rows, cols), rowSecondMoment (rows), rows, cols, beta2, eps): CPU f32;
// CUDA f32 or bf16 ortho (three launches, workspace from the caching allocator).
Napi::Value normuon_normalize(const Napi::CallbackInfo& info) {
  TensorRef ortho = arg_tensor(info, 0, "ortho");
  TensorRef v = arg_tensor(info, 1, "rowSecondMoment");
  int64_t rows = arg_int(info, 2, "rows", 0), cols = arg_int(info, 3, "cols", 0);
  float beta2 = float(arg_number(info, 4, "beta2"));
  float eps = float(arg_number(info, 5, "eps"));
  require_same_device(v, ortho, "rowSecondMoment", "ortho");
  require_dtype(v, DType::f32, "rowSecondMoment");
  if (!ortho.device().is_cuda()) require_dtype(ortho, DType::f32, "ortho");
  require_numel(ortho, checked_product({rows, cols}), "ortho");
  require_numel(v, rows, "rowSecondMoment");
  void* o = ortho.data();
  DType dtype = ortho.dtype();
  float* vp = static_cast<float*>(v.data());
  normuon_normalize_validate(o, dtype, vp, rows, cols, beta2, eps);
  Device device = ortho.device();
  std::vector<std::shared_ptr<Storage>> keep{ortho.storage(), v.storage()};
  std::shared_ptr<Storage> ws;
  if (device.is_cuda()) {
#if KILN_WITH_CUDA
    ws = scratch(device, normuon_normalize_cuda_workspace_bytes(rows));
    if (ws) keep.push_back(ws);
#else
    fail("ERR_NO_CUDA", "this build has no CUDA kernels");
#endif
  }
  run_on(device, std::move(keep), [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return normuon_normalize_cuda(o, dtype, vp, rows, cols, beta2, eps, ws ? ws->data() : nullptr, ws ? ws->bytes() : 0, as_stream(stream));
#endif
    (void)stream;
    normuon_normalize_cpu(static_cast<float*>(o), vp, rows, cols, beta2, eps);
  });
  return info.Env().Undefined();
}

// A CUDA launcher where this build has CUDA, nullptr otherwise (its symbol is not linked then).
#if KILN_WITH_CUDA
#define KILN_IF_CUDA(f) f
#else
#define KILN_IF_CUDA(f) nullptr
#endif

template <typename T>
struct NotDeduced {
  using type = T;
};

// Enqueues one multi-tensor op: one CPU call, or one CUDA launch whose device-side list lives in
// a workspace from the caching allocator. `items` backs p.tensors and lives until the op ran.
template <typename Params, typename Item>
void enqueue_multi(Device device, std::vector<std::shared_ptr<Storage>> keep, Params p, std::shared_ptr<std::vector<Item>> items,
                   void (*cpu)(const Params&), typename NotDeduced<size_t (*)(const Params&)>::type workspace_bytes,
                   typename NotDeduced<void (*)(const Params&, void*, size_t, CUstream_st*)>::type cuda) {
  std::shared_ptr<Storage> ws;
  if (device.is_cuda()) {
    if (!cuda) fail("ERR_NO_CUDA", "this build has no CUDA kernels");
    ws = scratch(device, workspace_bytes(p));
    if (ws) keep.push_back(ws);
  }
  run_on(device, std::move(keep), [p, items, device, ws, cpu, cuda](void* stream) mutable {
    p.tensors = items->data();
    if (device.is_cuda()) {
      cuda(p, ws ? ws->data() : nullptr, ws ? ws->bytes() : 0, as_stream(stream));
    } else {
      cpu(p);
    }
  });
}

// adamwMulti(weights[], m[], v[], grads[], { lr, beta1, beta2, eps, weightDecay, step }): one
// AdamW step over the whole list (f32 everything).
Napi::Value adamw_multi(const Napi::CallbackInfo& info) {
  auto weight_values = list_values(info, 0, "weights", -1);
  int64_t count = int64_t(weight_values.size());
  auto m_values = list_values(info, 1, "m", count), v_values = list_values(info, 2, "v", count);
  auto grad_values = list_values(info, 3, "grads", count);
  Napi::Object o = arg_object(info, 4, "params");
  AdamWParams p;
  p.count = count;
  p.lr = float(field_number(o, "lr", "adamw params"));
  p.beta1 = float(field_number(o, "beta1", "adamw params"));
  p.beta2 = float(field_number(o, "beta2", "adamw params"));
  p.eps = float(field_number(o, "eps", "adamw params"));
  p.weight_decay = float(field_number(o, "weightDecay", "adamw params"));
  p.step = field_int(o, "step", "adamw params", 1);
  // Tensor handles after every plain argument (binding.h: the order rule).
  Napi::Env env = info.Env();
  auto weights = tensor_values(env, weight_values, "weights"), ms = tensor_values(env, m_values, "m");
  auto vs = tensor_values(env, v_values, "v"), grads = tensor_values(env, grad_values, "grads");
  if (count == 0) return env.Undefined();
  const TensorRef& first = weights[0];
  for (auto [list, name] : {std::pair{&weights, "weights"}, {&ms, "m"}, {&vs, "v"}, {&grads, "grads"}}) require_list(*list, first, name, {DType::f32});
  auto tensors = std::make_shared<std::vector<AdamWTensor>>();
  for (int64_t i = 0; i < count; ++i) {
    int64_t n = weights[i].numel();
    for (const TensorRef* t : {&ms[i], &vs[i], &grads[i]}) require_numel(*t, n, "adamwMulti tensor");
    tensors->push_back(AdamWTensor{static_cast<float*>(weights[i].data()), static_cast<float*>(ms[i].data()),
                                   static_cast<float*>(vs[i].data()), static_cast<const float*>(grads[i].data()), n});
  }
  require_all_disjoint({&weights, &ms, &vs, &grads}, "adamwMulti");
  p.tensors = tensors->data();
  adamw_multi_tensor_validate(p);
  enqueue_multi(first.device(), keep_all({&weights, &ms, &vs, &grads}), p, tensors, adamw_multi_tensor_cpu, KILN_IF_CUDA(adamw_multi_tensor_cuda_workspace_bytes), KILN_IF_CUDA(adamw_multi_tensor_cuda));
  return env.Undefined();
}

// muonMomentumMulti(momenta[], updates[], grads[], beta, nesterov): m = β·m + (1−β)·g and the
// Newton–Schulz input u (f32 or bf16, the updates' dtype) for the whole list.
Napi::Value muon_momentum_multi(const Napi::CallbackInfo& info) {
  auto momentum_values = list_values(info, 0, "momenta", -1);
  int64_t count = int64_t(momentum_values.size());
  auto update_values = list_values(info, 1, "updates", count), grad_values = list_values(info, 2, "grads", count);
  float beta = float(arg_number(info, 3, "beta"));
  bool nesterov = arg_bool(info, 4, "nesterov");
  // Tensor handles after every plain argument (binding.h: the order rule).
  Napi::Env env = info.Env();
  auto momenta = tensor_values(env, momentum_values, "momenta"), updates = tensor_values(env, update_values, "updates");
  auto grads = tensor_values(env, grad_values, "grads");
  if (count == 0) return env.Undefined();
  const TensorRef& first = momenta[0];
  require_list(momenta, first, "momenta", {DType::f32});
  require_list(grads, first, "grads", {DType::f32});
  require_list(updates, first, "updates", {DType::f32, DType::bf16});
  DType update_dtype = updates[0].dtype();
  auto tensors = std::make_shared<std::vector<MuonMomentumTensor>>();
  for (int64_t i = 0; i < count; ++i) {
    int64_t n = momenta[i].numel();
    require_dtype(updates[i], update_dtype, "updates (one dtype for the list)");
    require_numel(updates[i], n, "updates");
    require_numel(grads[i], n, "grads");
    tensors->push_back(MuonMomentumTensor{static_cast<float*>(momenta[i].data()), static_cast<const float*>(grads[i].data()), updates[i].data(), n});
  }
  require_all_disjoint({&momenta, &updates, &grads}, "muonMomentumMulti");
  MuonMomentumParams p;
  p.count = count;
  p.beta = beta;
  p.nesterov = nesterov;
  p.update_dtype = update_dtype;
  p.tensors = tensors->data();
  muon_momentum_multi_tensor_validate(p);
  enqueue_multi(first.device(), keep_all({&momenta, &updates, &grads}), p, tensors, muon_momentum_multi_tensor_cpu, KILN_IF_CUDA(muon_momentum_multi_tensor_cuda_workspace_bytes), KILN_IF_CUDA(muon_momentum_multi_tensor_cuda));
  return env.Undefined();
}

// muonApplyMulti(weights[], orthos[], scales: number[], lr, weightDecay): w = w·(1 − lr·wd) −
// lr·scale_i·o_i for the whole list (orthos f32 or bf16).
Napi::Value muon_apply_multi(const Napi::CallbackInfo& info) {
  auto weight_values = list_values(info, 0, "weights", -1);
  int64_t count = int64_t(weight_values.size());
  auto ortho_values = list_values(info, 1, "orthos", count);
  std::vector<double> scales = arg_number_list(info, 2, "scales");
  if (int64_t(scales.size()) != count) fail("ERR_ARG", "scales (argument 2) must be an array with one number per weight");
  float lr = float(arg_number(info, 3, "lr"));
  float wd = float(arg_number(info, 4, "weightDecay"));
  // Tensor handles after every plain argument (binding.h: the order rule).
  Napi::Env env = info.Env();
  auto weights = tensor_values(env, weight_values, "weights"), orthos = tensor_values(env, ortho_values, "orthos");
  if (count == 0) return env.Undefined();
  const TensorRef& first = weights[0];
  require_list(weights, first, "weights", {DType::f32});
  require_list(orthos, first, "orthos", {DType::f32, DType::bf16});
  DType ortho_dtype = orthos[0].dtype();
  auto tensors = std::make_shared<std::vector<MuonApplyTensor>>();
  for (int64_t i = 0; i < count; ++i) {
    require_dtype(orthos[i], ortho_dtype, "orthos (one dtype for the list)");
    require_numel(orthos[i], weights[i].numel(), "orthos");
    tensors->push_back(MuonApplyTensor{static_cast<float*>(weights[i].data()), orthos[i].data(), weights[i].numel(), float(scales[size_t(i)])});
  }
  require_all_disjoint({&weights, &orthos}, "muonApplyMulti");
  MuonApplyParams p;
  p.count = count;
  p.lr = lr;
  p.weight_decay = wd;
  p.ortho_dtype = ortho_dtype;
  p.tensors = tensors->data();
  muon_apply_multi_tensor_validate(p);
  enqueue_multi(first.device(), keep_all({&weights, &orthos}), p, tensors, muon_apply_multi_tensor_cpu, KILN_IF_CUDA(muon_apply_multi_tensor_cuda_workspace_bytes), KILN_IF_CUDA(muon_apply_multi_tensor_cuda));
  return env.Undefined();
}

void register_optimizer(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "normuonNormalize", normuon_normalize);
  set_function(env, exports, "adamwMulti", adamw_multi);
  set_function(env, exports, "muonMomentumMulti", muon_momentum_multi);
  set_function(env, exports, "muonApplyMulti", muon_apply_multi);
}

}  // namespace
KILN_REGISTER_BINDING(register_optimizer);
}  // namespace kiln::binding

// Binding for matmul (ops/matmul.h): converts the params object once, re-checks that every
// operand access stays inside its tensor, and enqueues the CPU or CUDA GEMM.
#include "../ops/cpu/matmul.h"
#include "../ops/matmul.h"
#include "binding.h"
#if KILN_WITH_CUDA
#include <cuda_runtime.h>

#include "../ops/cuda/matmul/matmul_cuda.h"
#endif

namespace kiln::binding {
namespace {

int64_t param_int(const Napi::Object& o, const char* name) { return field_int(o, name, "matmul params"); }
double param_number(const Napi::Object& o, const char* name) { return field_number(o, name, "matmul params"); }
bool param_bool(const Napi::Object& o, const char* name) { return field_bool(o, name, "matmul params"); }

// The largest element index a (rows x cols, leading dim ld) matrix batch touches, + 1.
void check_extent(const NativeTensor& t, const char* name, int64_t batch, int64_t stride, int64_t rows, int64_t cols,
                  int64_t ld) {
  if (rows == 0 || cols == 0 || batch == 0) return;
  if (ld < cols) fail("ERR_ARG", std::string(name) + ": leading dimension " + std::to_string(ld) + " < row width " + std::to_string(cols));
  __int128 last = __int128(batch - 1) * stride + __int128(rows - 1) * ld + (cols - 1);
  if (last >= t.numel()) {
    fail("ERR_SHAPE", std::string(name) + " is too small for the matmul: needs " + std::to_string(int64_t(last + 1)) +
                          " elements, has " + std::to_string(t.numel()));
  }
}

struct MatmulCall {
  MatmulParams p;
  Device device;
  bool reference = false;
  int config = -1;  // CUDA: a specific candidate (tuning), -1 for the dispatcher's choice
  std::vector<std::shared_ptr<Storage>> keep;
};

// Parses (out, a, b, residual | null, params) and re-checks every access against the tensors.
MatmulCall parse_matmul(const Napi::CallbackInfo& info) {
  NativeTensor& c = arg_tensor(info, 0, "out");
  NativeTensor& a = arg_tensor(info, 1, "a");
  NativeTensor& b = arg_tensor(info, 2, "b");
  NativeTensor* residual = arg_optional_tensor(info, 3, "residual");
  Napi::Object o = arg_object(info, 4, "params");

  MatmulCall call;
  MatmulParams& p = call.p;
  p.M = param_int(o, "M");
  p.N = param_int(o, "N");
  p.K = param_int(o, "K");
  p.batch = param_int(o, "batch");
  p.trans_a = param_bool(o, "transA");
  p.trans_b = param_bool(o, "transB");
  p.lda = param_int(o, "lda");
  p.ldb = param_int(o, "ldb");
  p.ldc = param_int(o, "ldc");
  p.stride_a = param_int(o, "strideA");
  p.stride_b = param_int(o, "strideB");
  p.stride_c = param_int(o, "strideC");
  p.alpha = float(param_number(o, "alpha"));
  p.beta = float(param_number(o, "beta"));
  int64_t epilogue = param_int(o, "epilogue");
  if (epilogue > 2) fail("ERR_ARG", "matmul params.epilogue must be 0 (none), 1 (residual) or 2 (swiglu)");
  p.epilogue = MatmulEpilogue(int32_t(epilogue));
  call.reference = param_bool(o, "reference");
  p.batch_invariant = o.Has("batchInvariant") && param_bool(o, "batchInvariant");
  if (o.Has("config") && !o.Get("config").IsUndefined()) call.config = int(field_int(o, "config", "matmul params", -1));

  require_same_device(a, c, "a", "out");
  require_same_device(b, c, "b", "out");
  require_dtype(b, a.dtype(), "b");
  p.ab_dtype = a.dtype();
  p.c_dtype = c.dtype();
  int64_t n_inner = p.epilogue == MatmulEpilogue::swiglu ? 2 * p.N : p.N;
  check_extent(a, "a", p.batch, p.stride_a, p.trans_a ? p.K : p.M, p.trans_a ? p.M : p.K, p.lda);
  check_extent(b, "b", p.batch, p.stride_b, p.trans_b ? n_inner : p.K, p.trans_b ? p.K : n_inner, p.ldb);
  check_extent(c, "out", p.batch, p.stride_c, p.M, p.N, p.ldc);
  if (p.epilogue == MatmulEpilogue::residual_add) {
    if (!residual) fail("ERR_ARG", "the residual epilogue needs a residual tensor");
    require_same_device(*residual, c, "residual", "out");
    require_dtype(*residual, c.dtype(), "residual");
    p.ld_residual = param_int(o, "ldResidual");
    p.stride_residual = param_int(o, "strideResidual");
    check_extent(*residual, "residual", p.batch, p.stride_residual, p.M, p.N, p.ld_residual);
  } else if (residual) {
    fail("ERR_ARG", "a residual tensor was given without the residual epilogue");
  }
  if (c.storage() == a.storage() || c.storage() == b.storage()) fail("ERR_ARG", "out must not share memory with a or b");
  p.a = a.data();
  p.b = b.data();
  p.c = c.data();
  p.residual = residual ? residual->data() : nullptr;
  call.device = c.device();
  call.keep = {c.storage(), a.storage(), b.storage()};
  if (residual) call.keep.push_back(residual->storage());

  if (call.device.is_cuda()) {
    if (call.reference) fail("ERR_ARG", "the reference matmul runs on the CPU only");
#if KILN_WITH_CUDA
    cuda_set_device(call.device.index);
    matmul_cuda_validate(p);
    if (call.config >= 0 && !matmul_cuda_config_supported(p, call.config)) {
      fail("ERR_ARG", std::string("matmul config ") + std::to_string(call.config) + " cannot run this call");
    }
#endif
  } else {
    if (call.config >= 0) fail("ERR_ARG", "matmul configs are CUDA candidates");
    matmul_validate(p);
  }
  return call;
}

// matmul(out, a, b, residual | null, params)
Napi::Value matmul(const Napi::CallbackInfo& info) {
  MatmulCall call = parse_matmul(info);
  MatmulParams p = call.p;
  Device device = call.device;
  bool reference = call.reference;
  int config = call.config;
  run_on(device, std::move(call.keep), [p, device, reference, config](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) {
      if (config >= 0) return matmul_cuda_with_config(p, config, static_cast<cudaStream_t>(stream));
      return matmul_cuda(p, static_cast<cudaStream_t>(stream));
    }
#endif
    (void)stream;
    (void)config;
    if (reference) {
      matmul_reference_cpu(p);
    } else {
      matmul_cpu(p);
    }
  });
  return info.Env().Undefined();
}

// matmulCandidates(out, a, b, residual | null, params) -> { key, defaultConfig, candidates: [{ config, name }] }
// The CUDA configurations that can run this call (for `kiln tune`), and its tune-cache key.
Napi::Value matmul_candidates(const Napi::CallbackInfo& info) {
  MatmulCall call = parse_matmul(info);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array list = Napi::Array::New(env);
  if (!call.device.is_cuda()) fail("ERR_DEVICE", "matmul tuning is for CUDA devices");
#if KILN_WITH_CUDA
  out.Set("key", matmul_cuda_tune_key(call.p));
  out.Set("defaultConfig", matmul_cuda_default_config(call.p));
  uint32_t n = 0;
  for (int i = 0; i < matmul_cuda_config_count(); ++i) {
    if (!matmul_cuda_config_supported(call.p, i)) continue;
    Napi::Object item = Napi::Object::New(env);
    item.Set("config", i);
    item.Set("name", matmul_cuda_config_name(i));
    list.Set(n++, item);
  }
#endif
  out.Set("candidates", list);
  return out;
}

// matmulConfigNames() -> string[]: every CUDA candidate by global index (empty without CUDA).
Napi::Value matmul_config_names(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env());
#if KILN_WITH_CUDA
  for (int i = 0; i < matmul_cuda_config_count(); ++i) names.Set(uint32_t(i), matmul_cuda_config_name(i));
#endif
  return names;
}

// matmulSetTuned(device, key, config): the dispatcher's winner for a tune key (-1 erases).
Napi::Value matmul_set_tuned(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  if (info.Length() < 2 || !info[1].IsString()) fail("ERR_ARG", "key (argument 1) must be a string");
  std::string key = info[1].As<Napi::String>().Utf8Value();
  if (!device.is_cuda()) fail("ERR_DEVICE", "matmul tuning is for CUDA devices");
#if KILN_WITH_CUDA
  int config = int(arg_int(info, 2, "config", -1, matmul_cuda_config_count() - 1));
  matmul_cuda_set_tuned(device.index, key, config);
#endif
  return info.Env().Undefined();
}

void register_matmul(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "matmul", matmul);
  set_function(env, exports, "matmulCandidates", matmul_candidates);
  set_function(env, exports, "matmulConfigNames", matmul_config_names);
  set_function(env, exports, "matmulSetTuned", matmul_set_tuned);
}

}  // namespace
KILN_REGISTER_BINDING(register_matmul);
}  // namespace kiln::binding

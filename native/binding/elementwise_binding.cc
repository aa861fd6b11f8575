// Binding functions for add, mul, scale, cast and row reductions (ops/elementwise.h).
#include "../ops/elementwise.h"
#include "binding.h"

namespace kiln::binding {
namespace {

// binary(op, out, a, b): op 0 add, 1 mul; all one dtype, device and numel.
Napi::Value binary(const Napi::CallbackInfo& info) {
  BinaryOp op = BinaryOp(int32_t(arg_int(info, 0, "op", 0, 1)));
  TensorRef out = arg_tensor(info, 1, "out");
  TensorRef a = arg_tensor(info, 2, "a");
  TensorRef b = arg_tensor(info, 3, "b");
  for (const TensorRef* t : {&a, &b}) {
    require_same_device(*t, out, "input", "out");
    require_dtype(*t, out.dtype(), "input");
    require_numel(*t, out.numel(), "input");
  }
  void *o = out.data();
  const void *x = a.data(), *y = b.data();
  DType dtype = out.dtype();
  int64_t n = out.numel();
  Device device = out.device();
  run_on(device, {out.storage(), a.storage(), b.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return binary_cuda(op, o, x, y, dtype, n, stream);
#endif
    binary_cpu(op, o, x, y, dtype, n);
  });
  return info.Env().Undefined();
}

// scale(out, a, alpha)
Napi::Value scale(const Napi::CallbackInfo& info) {
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef a = arg_tensor(info, 1, "a");
  double alpha = arg_number(info, 2, "alpha");
  require_same_device(a, out, "a", "out");
  require_dtype(a, out.dtype(), "a");
  require_numel(a, out.numel(), "a");
  void* o = out.data();
  const void* x = a.data();
  DType dtype = out.dtype();
  int64_t n = out.numel();
  Device device = out.device();
  run_on(device, {out.storage(), a.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return scale_cuda(o, x, alpha, dtype, n, stream);
#endif
    scale_cpu(o, x, alpha, dtype, n);
  });
  return info.Env().Undefined();
}

// cast(out, in): same device and numel, any dtypes.
Napi::Value cast(const Napi::CallbackInfo& info) {
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef in = arg_tensor(info, 1, "in");
  require_same_device(in, out, "in", "out");
  require_numel(in, out.numel(), "in");
  void* o = out.data();
  const void* x = in.data();
  DType od = out.dtype(), id = in.dtype();
  int64_t n = out.numel();
  Device device = out.device();
  run_on(device, {out.storage(), in.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return cast_cuda(o, od, x, id, n, stream);
#endif
    cast_cpu(o, od, x, id, n);
  });
  return info.Env().Undefined();
}

// reduceRows(out, in, rows, cols, mean)
Napi::Value reduce_rows(const Napi::CallbackInfo& info) {
  TensorRef out = arg_tensor(info, 0, "out");
  TensorRef in = arg_tensor(info, 1, "in");
  int64_t rows = arg_int(info, 2, "rows", 0);
  int64_t cols = arg_int(info, 3, "cols", 0);
  bool mean = arg_bool(info, 4, "mean");
  require_same_device(in, out, "in", "out");
  require_dtype(in, out.dtype(), "in");
  if (out.dtype() == DType::i32) fail("ERR_DTYPE", "sum and mean need a float dtype");
  require_numel(out, rows, "out");
  if (cols != 0 && rows > INT64_MAX / cols) fail("ERR_ARG", "rows * cols overflows");
  require_numel(in, rows * cols, "in");
  void* o = out.data();
  const void* x = in.data();
  DType dtype = out.dtype();
  Device device = out.device();
  run_on(device, {out.storage(), in.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return reduce_rows_cuda(o, x, dtype, rows, cols, mean, stream);
#endif
    reduce_rows_cpu(o, x, dtype, rows, cols, mean);
  });
  return info.Env().Undefined();
}

void register_elementwise(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "binary", binary);
  set_function(env, exports, "scale", scale);
  set_function(env, exports, "cast", cast);
  set_function(env, exports, "reduceRows", reduce_rows);
}

}  // namespace
KILN_REGISTER_BINDING(register_elementwise);
}  // namespace kiln::binding

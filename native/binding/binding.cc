// Addon entry point and the shared glue declared in binding.h.
#include "binding.h"

#include <algorithm>
#include <cmath>
#include <mutex>

namespace kiln::binding {

// ---- errors ----------------------------------------------------------------------------------

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("code", Napi::String::New(env, code));
  return error;
}

namespace {

struct AddonData {
  Napi::FunctionReference tensor_constructor;
};

using CallJs = std::function<void(Napi::Env)>;
void call_js(Napi::Env env, Napi::Function, std::nullptr_t*, CallJs* fn) {
  std::unique_ptr<CallJs> owned(fn);
  if (!env) return;  // environment is shutting down
  try {
    (*owned)(env);
  } catch (const Napi::Error& e) {
    // A completion must not throw into the loop; surface it as an uncaught exception.
    napi_fatal_exception(env, e.Value());
  }
}
using Completion = Napi::TypedThreadSafeFunction<std::nullptr_t, CallJs, call_js>;

Completion completion;
int pending_posts = 0;  // touched on the JS thread only

// Whether the entry point running on this thread has resolved a tensor handle yet (the order
// rule in binding.h). Per thread (worker_threads each load the addon), saved and restored around
// each call because user code run by a getter may call into the binding again.
thread_local bool tensors_resolved = false;

struct CallPhase {
  bool saved = tensors_resolved;
  CallPhase() { tensors_resolved = false; }
  ~CallPhase() { tensors_resolved = saved; }
};

// Identifies kiln's tensor handles without running user code (instanceof would consult
// Symbol.hasInstance and a Proxy's getPrototypeOf trap).
constexpr napi_type_tag tensor_type_tag = {0x6b696c6e74656e73ULL, 0x9e3c1f5a27d84b61ULL};

Napi::Value call_guarded(Napi::Value (*fn)(const Napi::CallbackInfo&), const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CallPhase phase;
  try {
    return fn(info);
  } catch (const KilnException& e) {
    throw make_error(env, e.code(), e.what());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw make_error(env, "ERR_OOM", "out of host memory");
  } catch (const std::exception& e) {
    throw make_error(env, "ERR_INTERNAL", e.what());
  }
}

}  // namespace

void set_function(Napi::Env env, Napi::Object exports, const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
  exports.Set(name, Napi::Function::New(
                        env, [fn](const Napi::CallbackInfo& info) { return call_guarded(fn, info); }, name));
}

// ---- arguments -------------------------------------------------------------------------------

static std::string arg_label(size_t i, const char* name) { return std::string(name) + " (argument " + std::to_string(i) + ")"; }

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min_value, int64_t max_value) {
  if (i >= info.Length() || !info[i].IsNumber()) fail("ERR_ARG", arg_label(i, name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::floor(v) != v) fail("ERR_ARG", arg_label(i, name) + " must be an integer, got " + std::to_string(v));
  if (std::fabs(v) > 9007199254740991.0) fail("ERR_ARG", arg_label(i, name) + " is beyond 2^53");
  int64_t r = int64_t(v);
  if (r < min_value || r > max_value) {
    fail("ERR_ARG", arg_label(i, name) + " = " + std::to_string(r) + " is out of range [" + std::to_string(min_value) +
                        ", " + std::to_string(max_value) + "]");
  }
  return r;
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) fail("ERR_ARG", arg_label(i, name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) fail("ERR_ARG", arg_label(i, name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t code = arg_int(info, i, name, 0, 4);
  return DType(int32_t(code));
}

Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t code = arg_int(info, i, name, -1, 1023);
  if (code < 0) return Device{};
  int count = cuda_device_count();
  if (count == 0) {
    BuildInfo b = build_info();
    fail("ERR_NO_CUDA", "cuda:" + std::to_string(code) + " requested but no CUDA device is available (" + b.cuda_status + ")");
  }
  if (code >= count) fail("ERR_DEVICE", "cuda:" + std::to_string(code) + " does not exist (" + std::to_string(count) + " CUDA devices)");
  return Device{DeviceType::cuda, int(code)};
}

void require_plain_phase(const char* what) {
  if (tensors_resolved) {
    fail("ERR_INTERNAL", std::string("binding bug: ") + what +
                             " was read after a tensor handle was resolved (plain arguments must be converted first)");
  }
}

TensorRef value_tensor(Napi::Env env, Napi::Value value, const std::string& label) {
  tensors_resolved = true;
  bool is_tensor = false;
  if (value.IsObject()) {
    napi_status status = napi_check_object_type_tag(env, value, &tensor_type_tag, &is_tensor);
    if (status != napi_ok) is_tensor = false;
  }
  if (!is_tensor) fail("ERR_ARG", label + " must be a native tensor handle");
  void* unwrapped = nullptr;
  if (napi_unwrap(env, value, &unwrapped) != napi_ok || !unwrapped) fail("ERR_ARG", label + " must be a native tensor handle");
  auto* t = static_cast<NativeTensor*>(unwrapped);
  if (t->disposed()) fail("ERR_DISPOSED", label + " was disposed");
  return TensorRef(t->storage(), t->offset_bytes(), t->numel(), t->dtype());
}

TensorRef arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length()) fail("ERR_ARG", arg_label(i, name) + " is missing");
  return value_tensor(info.Env(), info[i], arg_label(i, name));
}

std::optional<TensorRef> arg_optional_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return std::nullopt;
  return arg_tensor(info, i, name);
}

std::vector<Napi::Value> arg_array_values(const Napi::CallbackInfo& info, size_t i, const char* name) {
  require_plain_phase(name);
  if (i >= info.Length() || !info[i].IsArray()) fail("ERR_ARG", arg_label(i, name) + " must be an array");
  auto array = info[i].As<Napi::Array>();
  uint32_t length = array.Length();
  if (length > (1u << 24)) fail("ERR_ARG", arg_label(i, name) + " has more than 2^24 elements");
  std::vector<Napi::Value> values;
  values.reserve(length);
  for (uint32_t k = 0; k < length; ++k) values.push_back(array.Get(k));  // may run an element getter
  return values;
}

std::vector<TensorRef> tensor_values(Napi::Env env, const std::vector<Napi::Value>& values, const char* name) {
  std::vector<TensorRef> out;
  out.reserve(values.size());
  for (size_t k = 0; k < values.size(); ++k) out.push_back(value_tensor(env, values[k], std::string(name) + "[" + std::to_string(k) + "]"));
  return out;
}

std::vector<double> arg_number_list(const Napi::CallbackInfo& info, size_t i, const char* name) {
  std::vector<Napi::Value> values = arg_array_values(info, i, name);
  std::vector<double> out;
  out.reserve(values.size());
  for (const Napi::Value& v : values) {
    if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) fail("ERR_ARG", arg_label(i, name) + " must hold finite numbers");
    out.push_back(v.As<Napi::Number>().DoubleValue());
  }
  return out;
}

Napi::Value field_value(const Napi::Object& o, const char* name, const char* what) {
  require_plain_phase((std::string(what) + "." + name).c_str());
  return o.Get(name);  // may run a getter or a Proxy trap: before any tensor is resolved
}

int64_t field_int(const Napi::Object& o, const char* name, const char* what, int64_t min_value) {
  Napi::Value v = field_value(o, name, what);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || std::floor(d) != d || d < double(min_value) || d > 9007199254740991.0) {
    fail("ERR_ARG", std::string(what) + "." + name + " must be an integer >= " + std::to_string(min_value));
  }
  return int64_t(d);
}

double field_number(const Napi::Object& o, const char* name, const char* what) {
  Napi::Value v = field_value(o, name, what);
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) {
    fail("ERR_ARG", std::string(what) + "." + name + " must be a finite number");
  }
  return v.As<Napi::Number>().DoubleValue();
}

bool field_bool(const Napi::Object& o, const char* name, const char* what) {
  Napi::Value v = field_value(o, name, what);
  if (!v.IsBoolean()) fail("ERR_ARG", std::string(what) + "." + name + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

Napi::Object arg_object(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsObject()) fail("ERR_ARG", arg_label(i, name) + " must be an object");
  return info[i].As<Napi::Object>();
}

void require_numel(const TensorRef& t, int64_t numel, const char* name) {
  if (t.numel() != numel) {
    fail("ERR_SHAPE", std::string(name) + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(numel));
  }
}

int64_t checked_product(std::initializer_list<int64_t> sizes) {
  __int128 product = 1;
  for (int64_t size : sizes) {
    product *= size;
    if (product > (__int128(1) << 53)) fail("ERR_ARG", "tensor sizes multiply to more than 2^53 elements");
  }
  return int64_t(product);
}

void require_dtype(const TensorRef& t, DType dtype, const char* name) {
  if (t.dtype() != dtype) {
    fail("ERR_DTYPE", std::string(name) + " is " + dtype_name(t.dtype()) + ", expected " + dtype_name(dtype));
  }
}

void require_same_device(const TensorRef& a, const TensorRef& b, const char* a_name, const char* b_name) {
  if (a.device() != b.device()) {
    fail("ERR_DEVICE", std::string(a_name) + " is on " + a.device().name() + " but " + b_name + " is on " + b.device().name());
  }
}

void require_disjoint(const std::vector<const TensorRef*>& tensors, const char* what) {
  struct Range {
    const Storage* storage;
    size_t begin, end;
  };
  std::vector<Range> ranges;
  ranges.reserve(tensors.size());
  for (const TensorRef* t : tensors) {
    if (t->nbytes() == 0) continue;  // an empty tensor touches no memory
    ranges.push_back({t->storage().get(), t->offset_bytes(), t->offset_bytes() + t->nbytes()});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.storage != b.storage ? std::less<const Storage*>()(a.storage, b.storage) : a.begin < b.begin;
  });
  for (size_t k = 1; k < ranges.size(); ++k) {
    if (ranges[k].storage == ranges[k - 1].storage && ranges[k].begin < ranges[k - 1].end) {
      fail("ERR_ARG", std::string(what) + ": the same tensor (or overlapping views of one) appears twice; each must be distinct memory");
    }
  }
}

// ---- scheduling ------------------------------------------------------------------------------

void run_on(Device device, std::vector<std::shared_ptr<Storage>> keep, std::function<void(void* stream)> fn) {
  enqueue([device, keep = std::move(keep), fn = std::move(fn)]() {
    if (device.is_cuda()) {
      cuda_set_device(device.index);
      fn(cuda_stream(device.index));
    } else {
      fn(nullptr);
    }
  });
}

void begin_pending(Napi::Env env) {
  if (pending_posts++ == 0) completion.Ref(env);
}

void post_to_js(std::function<void(Napi::Env)> fn) {
  auto* wrapped = new CallJs([fn = std::move(fn)](Napi::Env env) {
    if (--pending_posts == 0) completion.Unref(env);
    fn(env);
  });
  if (completion.BlockingCall(wrapped) != napi_ok) delete wrapped;  // only during shutdown
}

// ---- registry --------------------------------------------------------------------------------

std::vector<Registrar>& registrars() {
  static std::vector<Registrar> list;
  return list;
}

Registration::Registration(Registrar registrar) { registrars().push_back(registrar); }

// ---- NativeTensor ----------------------------------------------------------------------------

Napi::Function NativeTensor::define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {InstanceMethod("dispose", &NativeTensor::dispose), InstanceMethod("view", &NativeTensor::view),
                      InstanceAccessor("numel", &NativeTensor::get_numel, nullptr),
                      InstanceAccessor("dtype", &NativeTensor::get_dtype, nullptr),
                      InstanceAccessor("device", &NativeTensor::get_device, nullptr),
                      InstanceAccessor("disposed", &NativeTensor::get_disposed, nullptr)});
}

namespace {
// Construction from JS is refused: handles come only from the binding's factory functions.
int construction_token = 0;
}  // namespace

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  if (info.Length() != 1 || !info[0].IsExternal() || info[0].As<Napi::External<int>>().Data() != &construction_token) {
    throw make_error(info.Env(), "ERR_ARG", "NativeTensor cannot be constructed directly; use kiln's tensor factories");
  }
}

Napi::Object NativeTensor::create(Napi::Env env, std::shared_ptr<Storage> storage, size_t offset_bytes, int64_t numel,
                                  DType dtype, bool owns_report) {
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object object = data->tensor_constructor.New({Napi::External<int>::New(env, &construction_token)});
  NativeTensor* t = NativeTensor::Unwrap(object);
  napi_status tagged = napi_type_tag_object(env, object, &tensor_type_tag);
  if (tagged != napi_ok) fail("ERR_INTERNAL", "could not tag a tensor handle");
  t->storage_ = std::move(storage);
  t->offset_bytes_ = offset_bytes;
  t->numel_ = numel;
  t->dtype_ = dtype;
  if (owns_report && !t->storage_->device().is_cuda()) {
    // V8 sees host bytes only: reporting GPU memory would trigger host GCs that cannot help.
    t->reported_bytes_ = int64_t(t->storage_->bytes());
    Napi::MemoryManagement::AdjustExternalMemory(env, t->reported_bytes_);
  }
  return object;
}

void NativeTensor::release(Napi::Env env) {
  if (reported_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -reported_bytes_);
    reported_bytes_ = 0;
  }
  storage_.reset();  // memory returns once queued ops holding it have run
}

NativeTensor::~NativeTensor() {
  // Finalizer (safety net): the env is still valid here; queued ops keep their own references.
  if (reported_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -reported_bytes_);
}

Napi::Value NativeTensor::dispose(const Napi::CallbackInfo& info) {
  release(info.Env());
  return info.Env().Undefined();
}

// view(offsetElements, numel[, dtype]): a handle on part of the same storage (slicing along
// dim 0, reshape, reinterpretation with a same-size dtype are all views).
Napi::Value NativeTensor::view(const Napi::CallbackInfo& info) {
  return call_guarded(
      [](const Napi::CallbackInfo& info) -> Napi::Value {
        NativeTensor* self = NativeTensor::Unwrap(info.This().As<Napi::Object>());
        if (self->disposed()) fail("ERR_DISPOSED", "tensor was disposed");
        int64_t offset = arg_int(info, 0, "offset", 0, self->numel_);
        int64_t numel = arg_int(info, 1, "numel", 0, self->numel_ - offset);
        DType dtype = self->dtype_;
        if (info.Length() > 2 && !info[2].IsUndefined()) {
          dtype = arg_dtype(info, 2, "dtype");
          if (dtype_size(dtype) != dtype_size(self->dtype_)) fail("ERR_DTYPE", "a view may only reinterpret a same-size dtype");
        }
        size_t offset_bytes = self->offset_bytes_ + size_t(offset) * dtype_size(self->dtype_);
        return NativeTensor::create(info.Env(), self->storage_, offset_bytes, numel, dtype, false);
      },
      info);
}

Napi::Value NativeTensor::get_numel(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(numel_)); }
Napi::Value NativeTensor::get_dtype(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), int32_t(dtype_)); }
Napi::Value NativeTensor::get_device(const Napi::CallbackInfo& info) {
  if (!storage_) return info.Env().Null();
  Device d = storage_->device();
  return Napi::Number::New(info.Env(), d.is_cuda() ? d.index : -1);
}
Napi::Value NativeTensor::get_disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed()); }

// ---- module init -----------------------------------------------------------------------------

static void shutdown(void*) {
  // Finish queued work (it may be writing user-visible results), then stop the worker.
  shutdown_queue();
}

static Napi::Object init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function ctor = NativeTensor::define(env);
  data->tensor_constructor = Napi::Persistent(ctor);
  env.SetInstanceData<AddonData>(data);
  exports.Set("NativeTensor", ctor);

  completion = Completion::New(env, "kiln-completion", 0, 1);
  completion.Unref(env);  // referenced only while a promise is pending
  napi_add_env_cleanup_hook(env, shutdown, nullptr);

  for (Registrar registrar : registrars()) registrar(env, exports);
  return exports;
}

}  // namespace kiln::binding

static Napi::Object kiln_init(Napi::Env env, Napi::Object exports) { return kiln::binding::init(env, exports); }
NODE_API_MODULE(kiln, kiln_init)

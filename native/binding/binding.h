// Shared N-API glue: argument conversion, error translation, the NativeTensor handle, the op
// registry and promise completion from the worker. No math here: the ops live in native/ops/
// (plain C++ and CUDA, no N-API), and a binding function only converts, checks and enqueues.
#pragma once
#include <napi.h>

#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../runtime/device.h"
#include "../runtime/dtype.h"
#include "../runtime/error.h"
#include "../runtime/queue.h"

namespace kiln::binding {

// A JS Error carrying `code` (lib/errors.ts turns it into a KilnError).
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message);

// ---- tensors ---------------------------------------------------------------------------------

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function define(Napi::Env env);
  static Napi::Object create(Napi::Env env, std::shared_ptr<Storage> storage, size_t offset_bytes, int64_t numel,
                             DType dtype, bool owns_report);
  explicit NativeTensor(const Napi::CallbackInfo& info);
  ~NativeTensor() override;

  void* data() const { return static_cast<char*>(storage_->data()) + offset_bytes_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t offset_bytes() const { return offset_bytes_; }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_->device(); }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }
  bool disposed() const { return !storage_; }

 private:
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value view(const Napi::CallbackInfo& info);
  Napi::Value get_numel(const Napi::CallbackInfo& info);
  Napi::Value get_dtype(const Napi::CallbackInfo& info);
  Napi::Value get_device(const Napi::CallbackInfo& info);
  Napi::Value get_disposed(const Napi::CallbackInfo& info);
  void release(Napi::Env env);

  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  int64_t reported_bytes_ = 0;  // host bytes reported to V8 by this handle (the allocating one)
};

// ---- tensor arguments ------------------------------------------------------------------------

// A tensor argument once accepted: it holds a reference on the storage, so the memory stays alive
// from the moment the binding accepts the handle until the queued task that captured `storage()`
// has run, whatever JavaScript does meanwhile (dispose() only drops the handle's own reference).
class TensorRef {
 public:
  TensorRef(std::shared_ptr<Storage> storage, size_t offset_bytes, int64_t numel, DType dtype)
      : storage_(std::move(storage)), offset_bytes_(offset_bytes), numel_(numel), dtype_(dtype) {}

  void* data() const { return static_cast<char*>(storage_->data()) + offset_bytes_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t offset_bytes() const { return offset_bytes_; }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_->device(); }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_;
  int64_t numel_;
  DType dtype_;
};

// ---- argument conversion (each throws KilnException ERR_ARG / ERR_DISPOSED) ------------------
//
// The order rule that makes hostile JavaScript harmless: an entry point converts every plain
// argument first (params objects, arrays, their elements: anything whose reading can run user
// code through a getter, a Proxy trap or an array element accessor), and only then resolves its
// tensor handles. Resolving runs no user code (the handle is recognised by its type tag, not by
// instanceof), so nothing can dispose a tensor between its acceptance and the enqueue; and the
// TensorRef keeps the storage alive even if it could. Every reader below that can run user code
// checks the rule at run time and fails with ERR_INTERNAL (a kiln bug) when an entry point reads
// a plain argument after resolving a tensor, so a new entry point that breaks the rule fails its
// first test.

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min_value = INT64_MIN,
                int64_t max_value = INT64_MAX);
double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
DType arg_dtype(const Napi::CallbackInfo& info, size_t i, const char* name);
Device arg_device(const Napi::CallbackInfo& info, size_t i, const char* name);  // -1 cpu, k cuda:k
TensorRef arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);
TensorRef value_tensor(Napi::Env env, Napi::Value value, const std::string& label);  // e.g. an array element
std::optional<TensorRef> arg_optional_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);  // null/undefined -> none
// A list argument's elements, read now (plain conversion: element getters run here), resolved
// later with tensor_values.
std::vector<Napi::Value> arg_array_values(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<TensorRef> tensor_values(Napi::Env env, const std::vector<Napi::Value>& values, const char* name);
// A list of finite numbers (element getters run here).
std::vector<double> arg_number_list(const Napi::CallbackInfo& info, size_t i, const char* name);

// Fields of a params object (e.g. matmul params, attention dims); `what` names the object.
Napi::Value field_value(const Napi::Object& o, const char* name, const char* what);
int64_t field_int(const Napi::Object& o, const char* name, const char* what, int64_t min_value = 0);
double field_number(const Napi::Object& o, const char* name, const char* what);
bool field_bool(const Napi::Object& o, const char* name, const char* what);
Napi::Object arg_object(const Napi::CallbackInfo& info, size_t i, const char* name);
// Fails with ERR_INTERNAL if this call already resolved a tensor handle (see the order rule).
void require_plain_phase(const char* what);

// Cheap re-checks of what lib/ already validated, so a bad call from plain JavaScript or a
// downstream library gets an error instead of a crash.
void require_numel(const TensorRef& t, int64_t numel, const char* name);
// Product of sizes, refusing (ERR_ARG) a product beyond 2^53 instead of wrapping around.
int64_t checked_product(std::initializer_list<int64_t> sizes);
void require_dtype(const TensorRef& t, DType dtype, const char* name);
void require_same_device(const TensorRef& a, const TensorRef& b, const char* a_name, const char* b_name);
// Refuses (ERR_ARG) two tensors whose memory overlaps: a multi-tensor op given the same tensor
// twice (or two views of one block) would update it twice, a silent wrong answer.
void require_disjoint(const std::vector<const TensorRef*>& tensors, const char* what);

// ---- scheduling ------------------------------------------------------------------------------

// Enqueues fn on the worker; for a CUDA device it runs with that device current and receives
// its stream (nullptr on the CPU). `keep` holds the storages the op touches alive until it ran.
void run_on(Device device, std::vector<std::shared_ptr<Storage>> keep, std::function<void(void* stream)> fn);

// Posts fn to the JS thread (from any thread). Each post must be matched by begin_pending()
// on the JS thread beforehand, which keeps the event loop alive until the post has run.
void begin_pending(Napi::Env env);
void post_to_js(std::function<void(Napi::Env)> fn);

// ---- registry --------------------------------------------------------------------------------

using Registrar = void (*)(Napi::Env env, Napi::Object exports);
struct Registration {
  explicit Registration(Registrar registrar);
};
std::vector<Registrar>& registrars();

// Exports fn under name, translating KilnException and std::exception into coded JS errors.
void set_function(Napi::Env env, Napi::Object exports, const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&));

}  // namespace kiln::binding

#define KILN_REGISTER_BINDING(fn) static ::kiln::binding::Registration kiln_registration_##fn(fn)

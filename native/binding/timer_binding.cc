// Binding for benchmark timing marks (runtime/timer.h).
#include <unordered_set>

#include "../runtime/timer.h"
#include "binding.h"

namespace kiln::binding {
namespace {

using MarkHandle = std::shared_ptr<TimerMark>;

// The marks this addon made and V8 has not yet collected: an External from anywhere else (another
// addon) is refused instead of being read as a mark. JS thread only (per thread for workers).
thread_local std::unordered_set<const MarkHandle*> live_marks;

MarkHandle& unwrap_mark(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsExternal()) fail("ERR_ARG", "argument " + std::to_string(i) + " must be a timer mark");
  auto* handle = static_cast<MarkHandle*>(info[i].As<Napi::External<void>>().Data());
  if (!handle || !live_marks.count(handle)) fail("ERR_ARG", "argument " + std::to_string(i) + " is not a timer mark made by timerMark()");
  return *handle;
}

// timerMark(device) -> mark; recorded when the queue reaches it.
Napi::Value timer_mark(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  auto mark = std::make_shared<TimerMark>(device);
  enqueue([mark] { mark->record(); });
  auto* handle = new MarkHandle(mark);
  live_marks.insert(handle);
  return Napi::External<MarkHandle>::New(info.Env(), handle, [](Napi::Env, MarkHandle* h) {
    live_marks.erase(h);
    delete h;
  });
}

// timerElapsed(start, end) -> Promise<number>: milliseconds of device time between the marks.
Napi::Value timer_elapsed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MarkHandle start = unwrap_mark(info, 0);
  MarkHandle end = unwrap_mark(info, 1);
  if (start->device() != end->device()) fail("ERR_DEVICE", "timer marks are on different devices");
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  begin_pending(env);
  enqueue_barrier([deferred, start, end](const TaskError& pending) {
    TaskError error = pending;
    double ms = 0;
    if (error.code.empty()) {
      try {
        ms = end->elapsed_since(*start);
      } catch (const KilnException& e) {
        error = {e.code(), e.what()};
      }
    }
    post_to_js([deferred, error, ms](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (!error.code.empty()) {
        deferred->Reject(make_error(env, error.code, error.message).Value());
      } else {
        deferred->Resolve(Napi::Number::New(env, ms));
      }
    });
  });
  return deferred->Promise();
}

void register_timer(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "timerMark", timer_mark);
  set_function(env, exports, "timerElapsed", timer_elapsed);
}

}  // namespace
KILN_REGISTER_BINDING(register_timer);
}  // namespace kiln::binding

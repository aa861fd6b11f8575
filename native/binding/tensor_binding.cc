// Binding functions for tensor lifetime, transfers, device queries and synchronization.
#include <cstring>
#include <utility>

#include "../ops/elementwise.h"
#include "../runtime/cpu_isa.h"
#include "../runtime/parallel.h"
#include "binding.h"

namespace kiln::binding {
namespace {

constexpr int64_t kMaxNumel = int64_t(1) << 48;

// empty(device, dtype, numel) -> NativeTensor (uninitialized)
Napi::Value empty(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  DType dtype = arg_dtype(info, 1, "dtype");
  int64_t numel = arg_int(info, 2, "numel", 0, kMaxNumel);
  if (dtype == DType::f64 && device.is_cuda()) fail("ERR_DTYPE", "f64 tensors live on the CPU only (reference checks)");
  auto storage = Storage::allocate(device, size_t(numel) * dtype_size(dtype));
  return NativeTensor::create(info.Env(), std::move(storage), 0, numel, dtype, true);
}

// The bytes of argument `index`, a typed array, DataView or Buffer (borrowed: copy before returning).
// Read through the C API so views of a SharedArrayBuffer work too (Napi::ArrayBuffer refuses
// those); a view of a detached buffer has no bytes.
std::pair<const uint8_t*, size_t> arg_bytes(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !(info[index].IsTypedArray() || info[index].IsDataView())) {
    fail("ERR_ARG", "data (argument " + std::to_string(index) + ") must be a typed array, DataView or Buffer");
  }
  napi_env env = info.Env();
  void* data = nullptr;
  size_t length = 0;
  napi_status status;
  if (info[index].IsTypedArray()) {
    napi_typedarray_type type;
    size_t elements = 0;
    status = napi_get_typedarray_info(env, info[index], &type, &elements, &data, nullptr, nullptr);
    length = info[index].As<Napi::TypedArray>().ByteLength();
  } else {
    status = napi_get_dataview_info(env, info[index], &length, &data, nullptr, nullptr);
  }
  if (status != napi_ok) fail("ERR_ARG", "data (argument " + std::to_string(index) + ") could not be read");
  if (!data) length = 0;
  return {static_cast<const uint8_t*>(data), length};
}

// fromBuffer(device, dtype, view: ArrayBufferView) -> NativeTensor holding a copy of the bytes.
Napi::Value from_buffer(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  DType dtype = arg_dtype(info, 1, "dtype");
  if (dtype == DType::f64 && device.is_cuda()) fail("ERR_DTYPE", "f64 tensors live on the CPU only (reference checks)");
  auto [bytes, length] = arg_bytes(info, 2);
  if (length % dtype_size(dtype) != 0) fail("ERR_ARG", "data length is not a multiple of the element size");
  int64_t numel = int64_t(length / dtype_size(dtype));
  auto storage = Storage::allocate(device, length);
  if (device.is_cuda()) {
    // Copy out of the JS buffer now (it may change after we return), upload in queue order.
    auto staging = std::make_shared<std::vector<uint8_t>>(bytes, bytes + length);
    run_on(device, {storage}, [storage, staging, device](void*) {
      cuda_memcpy(storage->data(), device, staging->data(), Device{}, staging->size());
    });
  } else if (length > 0) {
    // A fresh block no queued op can reference yet: fill it on the calling thread.
    std::memcpy(storage->data(), bytes, length);
  }
  return NativeTensor::create(info.Env(), std::move(storage), 0, numel, dtype, true);
}

// write(dst, view: ArrayBufferView): overwrites dst with the bytes, in queue order (ops enqueued
// before still see the old values). The bytes are staged on the host now, because the JS
// buffer may change after we return; dst's storage is reused, so a training step can feed
// each batch into tensors planned once.
Napi::Value write(const Napi::CallbackInfo& info) {
  TensorRef dst = arg_tensor(info, 0, "dst");
  auto [bytes, length] = arg_bytes(info, 1);
  if (length != dst.nbytes()) {
    fail("ERR_SHAPE", "write needs exactly " + std::to_string(dst.nbytes()) + " bytes for the tensor, got " + std::to_string(length));
  }
  if (length == 0) return info.Env().Undefined();
  auto staging = std::make_shared<std::vector<uint8_t>>(bytes, bytes + length);
  void* d = dst.data();
  Device device = dst.device();
  run_on(device, {dst.storage()}, [staging, d, device](void*) {
    if (device.is_cuda()) {
      cuda_memcpy(d, device, staging->data(), Device{}, staging->size());
    } else {
      std::memcpy(d, staging->data(), staging->size());
    }
  });
  return info.Env().Undefined();
}

// read(tensor) -> Promise<ArrayBuffer> with the raw bytes, after every op enqueued before.
Napi::Value read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorRef t = arg_tensor(info, 0, "tensor");
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  auto storage = t.storage();
  size_t offset = t.offset_bytes(), nbytes = t.nbytes();
  begin_pending(env);
  enqueue_barrier([deferred, storage, offset, nbytes](const TaskError& pending_error) {
    TaskError error = pending_error;
    auto host = std::make_shared<std::vector<uint8_t>>();
    if (error.code.empty()) {
      try {
        host->resize(nbytes);
        const void* src = static_cast<const char*>(storage->data()) + offset;
        if (storage->device().is_cuda()) {
          cuda_set_device(storage->device().index);
          cuda_memcpy(host->data(), Device{}, src, storage->device(), nbytes);
        } else if (nbytes) {
          std::memcpy(host->data(), src, nbytes);
        }
      } catch (const KilnException& e) {
        error = {e.code(), e.what()};
      } catch (const std::exception& e) {
        error = {"ERR_INTERNAL", e.what()};
      }
    }
    post_to_js([deferred, host, error](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (!error.code.empty()) {
        deferred->Reject(make_error(env, error.code, error.message).Value());
        return;
      }
      Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, host->size());
      if (!host->empty()) std::memcpy(buffer.Data(), host->data(), host->size());
      deferred->Resolve(buffer);
    });
  });
  return deferred->Promise();
}

// copy(dst, src): same dtype and numel, any devices.
Napi::Value copy(const Napi::CallbackInfo& info) {
  TensorRef dst = arg_tensor(info, 0, "dst");
  TensorRef src = arg_tensor(info, 1, "src");
  require_dtype(src, dst.dtype(), "src");
  require_numel(src, dst.numel(), "src");
  Device target = dst.device().is_cuda() ? dst.device() : src.device();
  void* d = dst.data();
  const void* s = src.data();
  size_t bytes = dst.nbytes();
  Device dd = dst.device(), sd = src.device();
  run_on(target, {dst.storage(), src.storage()}, [=](void*) {
    if (!dd.is_cuda() && !sd.is_cuda()) {
      if (d != s && bytes) std::memmove(d, s, bytes);
    } else {
      cuda_memcpy(d, dd, s, sd, bytes);
    }
  });
  return info.Env().Undefined();
}

// synchronize() -> Promise<void>: resolves when every op enqueued before has finished on
// every device; rejects with the first error a queued op raised since the last wait.
Napi::Value synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  begin_pending(env);
  enqueue_barrier([deferred](const TaskError& pending_error) {
    TaskError error = pending_error;
    try {
      for (int i = 0; i < cuda_device_count(); ++i) cuda_synchronize(i);
    } catch (const KilnException& e) {
      if (error.code.empty()) error = {e.code(), e.what()};
    }
    post_to_js([deferred, error](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (!error.code.empty()) {
        deferred->Reject(make_error(env, error.code, error.message).Value());
      } else {
        deferred->Resolve(env.Undefined());
      }
    });
  });
  return deferred->Promise();
}

// (major, minor, archs) -> { covered, via }: the check the runtime applies to each device.
Napi::Value cuda_arch_coverage_value(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsString()) {
    fail("ERR_ARG", "cudaArchCoverage(major, minor, archs) takes two numbers and a string");
  }
  ArchCoverage c = cuda_arch_coverage(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                                      info[2].As<Napi::String>().Utf8Value());
  Napi::Object out = Napi::Object::New(env);
  out.Set("covered", c.covered);
  out.Set("via", c.via);
  return out;
}

Napi::Value info_value(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BuildInfo b = build_info();
  Napi::Object out = Napi::Object::New(env);
  out.Set("cudaCompiled", b.cuda_compiled);
  out.Set("cudaVersion", b.cuda_version);
  out.Set("cudaArchs", b.cuda_archs);
  out.Set("cudaRuntimeVersion", b.cuda_runtime_version);
  out.Set("cudaDriverVersion", b.cuda_driver_version);
  out.Set("cudaStatus", b.cuda_status);
  out.Set("cpuThreads", num_threads());
  out.Set("cpuIsa", cpu_isa_name());
  Napi::Array devices = Napi::Array::New(env);
  int count = cuda_device_count();
  for (int i = 0; i < count; ++i) {
    CudaDeviceInfo d = cuda_device_info(i);
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("multiprocessors", d.multiprocessors);
    o.Set("totalMemory", double(d.total_memory));
    o.Set("memoryClockKhz", d.memory_clock_khz);
    o.Set("memoryBusWidthBits", d.memory_bus_width_bits);
    o.Set("clockKhz", d.clock_khz);
    o.Set("l2Bytes", double(d.l2_bytes));
    o.Set("sharedMemoryPerBlockOptin", double(d.shared_memory_per_block_optin));
    o.Set("sharedMemoryPerMultiprocessor", double(d.shared_memory_per_multiprocessor));
    o.Set("kernelsCovered", d.kernels.covered);
    o.Set("kernelsVia", d.kernels.via);
    devices.Set(uint32_t(i), o);
  }
  out.Set("devices", devices);
  return out;
}

Napi::Value memory_stats_value(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  MemoryStats s = memory_stats(device);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("allocated", double(s.allocated));
  out.Set("reserved", double(s.reserved));
  out.Set("peakAllocated", double(s.peak_allocated));
  out.Set("allocations", double(s.allocations));
  out.Set("deviceAllocations", double(s.device_allocations));
  return out;
}

Napi::Value reset_peak_memory_value(const Napi::CallbackInfo& info) {
  reset_peak_memory(arg_device(info, 0, "device"));
  return info.Env().Undefined();
}

Napi::Value empty_cache_value(const Napi::CallbackInfo& info) {
  Device device = arg_device(info, 0, "device");
  // Wait for queued work first: cached blocks may still be named by queued ops' streams.
  wait_idle();
  empty_cache(device);
  return info.Env().Undefined();
}

// fill(tensor, value)
Napi::Value fill(const Napi::CallbackInfo& info) {
  TensorRef t = arg_tensor(info, 0, "tensor");
  double value = arg_number(info, 1, "value");
  void* data = t.data();
  DType dtype = t.dtype();
  int64_t n = t.numel();
  Device device = t.device();
  run_on(device, {t.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return fill_cuda(data, dtype, value, n, stream);
#endif
    fill_cpu(data, dtype, value, n);
  });
  return info.Env().Undefined();
}

// random(tensor, kind, seedHigh, seedLow, offset, a, b): kind 0 uniform [a, b), 1 normal(a, b)
Napi::Value random(const Napi::CallbackInfo& info) {
  TensorRef t = arg_tensor(info, 0, "tensor");
  RandomParams p;
  p.kind = RandomKind(int32_t(arg_int(info, 1, "kind", 0, 1)));
  uint64_t seed_high = uint64_t(arg_int(info, 2, "seedHigh", 0, 0xffffffffLL));
  uint64_t seed_low = uint64_t(arg_int(info, 3, "seedLow", 0, 0xffffffffLL));
  p.seed = seed_high << 32 | seed_low;
  p.offset = uint64_t(arg_int(info, 4, "offset", 0));
  p.a = arg_number(info, 5, "a");
  p.b = arg_number(info, 6, "b");
  if (t.dtype() == DType::i32) fail("ERR_DTYPE", "random fills need a float dtype");
  void* data = t.data();
  DType dtype = t.dtype();
  int64_t n = t.numel();
  Device device = t.device();
  run_on(device, {t.storage()}, [=](void* stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) return random_cuda(data, dtype, p, n, stream);
#endif
    random_cpu(data, dtype, p, n);
  });
  return info.Env().Undefined();
}

void register_tensor(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "empty", empty);
  set_function(env, exports, "fromBuffer", from_buffer);
  set_function(env, exports, "read", read);
  set_function(env, exports, "write", write);
  set_function(env, exports, "copy", copy);
  set_function(env, exports, "fill", fill);
  set_function(env, exports, "random", random);
  set_function(env, exports, "synchronize", synchronize);
  set_function(env, exports, "info", info_value);
  set_function(env, exports, "cudaArchCoverage", cuda_arch_coverage_value);
  set_function(env, exports, "memoryStats", memory_stats_value);
  set_function(env, exports, "resetPeakMemory", reset_peak_memory_value);
  set_function(env, exports, "emptyCache", empty_cache_value);
}

}  // namespace
KILN_REGISTER_BINDING(register_tensor);
}  // namespace kiln::binding

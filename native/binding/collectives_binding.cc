// Binding functions for collective communication (runtime/communicator.h). Each collective is
// two queue tasks: the first hands the buffers to the communication thread once every op
// enqueued before it (the producers) has run; distWait's task blocks the queue until the
// collective finished, so the ops enqueued between the two overlap the communication.
//
// CUDA tensors (all-reduce, all-gather, broadcast; only with KILN_CUDA_DIST=1, unverified
// without GPUs) take one of two paths, chosen per call by cuda_path(): NCCL (runtime/nccl_comm.h)
// when libnccl.so.2 loads, else staged through host memory into Gloo.
#include <cstdlib>
#include <thread>

#include "../runtime/communicator.h"
#include "../runtime/nccl.h"
#include "../runtime/nccl_comm.h"
#include "binding.h"

namespace kiln::binding {
namespace {

using dist::Communicator;
using dist::Work;

struct CommHandle {
  std::shared_ptr<Communicator> comm;
};
// Filled by the hand-over task, read by the wait task (both on the queue worker, in order).
// CUDA tensors are staged through host memory: copied down before the hand-over, the
// collective runs on the host copies, `after_wait` copies the result back up.
struct WorkHandle {
  std::shared_ptr<std::shared_ptr<Work>> slot = std::make_shared<std::shared_ptr<Work>>();
  std::shared_ptr<Communicator> comm;
  Device device;
  std::shared_ptr<std::function<void()>> after_wait = std::make_shared<std::function<void()>>();
};

std::shared_ptr<Communicator> arg_comm(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsExternal()) fail("ERR_ARG", "argument " + std::to_string(i) + " must be a communicator");
  auto* h = info[i].As<Napi::External<CommHandle>>().Data();
  if (!h || !h->comm) fail("ERR_DISPOSED", "the communicator is closed");
  return h->comm;
}

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) fail("ERR_ARG", std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::string field_string(const Napi::Object& o, const char* name, const char* what) {
  Napi::Value v = field_value(o, name, what);  // may run a getter: before any tensor handle
  if (!v.IsString()) fail("ERR_ARG", std::string(what) + "." + name + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

Napi::Value make_work(Napi::Env env, WorkHandle* w) {
  return Napi::External<WorkHandle>::New(env, w, [](Napi::Env, WorkHandle* p) { delete p; });
}

void require_host_f32(const TensorRef& t, const char* name) {
  if (t.device().is_cuda()) fail("ERR_DEVICE", std::string(name) + ": this collective takes CPU tensors");
}

// CUDA tensors go through NCCL or host staging buffers; unverified without a GPU, so opt-in.
void require_staging_allowed(const TensorRef& t, const char* name) {
  if (!t.device().is_cuda()) return;
  const char* env = std::getenv("KILN_CUDA_DIST");
  if (!env || std::string(env) != "1") {
    fail("ERR_DEVICE", std::string(name) + " is on " + t.device().name() +
                           ": collectives on CUDA tensors (NCCL when libnccl.so.2 loads, else staged through host memory into Gloo) are written but unverified without GPUs; set KILN_CUDA_DIST=1 to run them");
  }
}

// The path of a CUDA collective. KILN_DIST_CUDA_BACKEND: auto (default: NCCL when it loads and
// this build has CUDA, else staging), nccl (an error when NCCL is missing), staged.
enum class CudaPath { nccl, staged };
CudaPath cuda_path() {
  const char* env = std::getenv("KILN_DIST_CUDA_BACKEND");
  std::string want = env && *env ? env : "auto";
  if (want == "staged") return CudaPath::staged;
  if (want != "auto" && want != "nccl") fail("ERR_ARG", "KILN_DIST_CUDA_BACKEND must be auto, nccl or staged; got '" + want + "'");
  const dist::NcclStatus& nccl = dist::nccl_status();
  if (nccl.available && build_info().cuda_compiled) return CudaPath::nccl;
  if (want == "nccl") {
    fail("ERR_DIST", "KILN_DIST_CUDA_BACKEND=nccl, but NCCL is not available: " +
                         (nccl.available ? std::string("this kiln build has no CUDA") : nccl.reason));
  }
  return CudaPath::staged;
}

// distAvailable() -> boolean: whether this build has Gloo.
Napi::Value dist_available(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), dist::gloo_available()); }

// distConnect({rank, worldSize, storeHost, storePort, token, prefix, bindHost, timeoutMs}) -> Promise<communicator>
Napi::Value dist_connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = arg_object(info, 0, "options");
  dist::CommOptions options;
  options.rank = int(field_int(o, "rank", "options", 0));
  options.world_size = int(field_int(o, "worldSize", "options", 1));
  options.store_host = field_string(o, "storeHost", "options");
  options.store_port = int(field_int(o, "storePort", "options", 0));
  options.token = field_string(o, "token", "options");
  options.prefix = field_string(o, "prefix", "options");
  options.bind_host = field_string(o, "bindHost", "options");
  options.timeout_ms = field_int(o, "timeoutMs", "options", 1);
  if (options.rank >= options.world_size) fail("ERR_ARG", "rank must be below worldSize");
  if (options.world_size > 1 && !dist::gloo_available()) {
    fail("ERR_NO_GLOO", "this kiln build has no Gloo, so it cannot run more than one rank: install it (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild kiln");
  }
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  begin_pending(env);
  // connecting blocks until every rank arrived: a thread of its own, never the JS thread (rank 0's store runs there)
  std::thread([deferred, options] {
    std::shared_ptr<Communicator> comm;
    TaskError error;
    try {
      comm = std::make_shared<Communicator>(options);
    } catch (const KilnException& e) {
      error = {e.code(), e.what()};
    } catch (const std::exception& e) {
      error = {"ERR_DIST", e.what()};
    }
    post_to_js([deferred, comm, error](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (!error.code.empty()) return deferred->Reject(make_error(env, error.code, error.message).Value());
      auto* h = new CommHandle{comm};
      deferred->Resolve(Napi::External<CommHandle>::New(env, h, [](Napi::Env, CommHandle* p) { delete p; }));
    });
  }).detach();
  return deferred->Promise();
}

// distAllReduce(comm, tensors[], average, bf16Wire, label) -> work. f32 tensors on one device, reduced in place
// as one message; CUDA tensors are staged through host memory (KILN_CUDA_DIST=1).
Napi::Value dist_all_reduce(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  // Plain arguments first (the list's element getters run here), then the tensor handles.
  std::vector<Napi::Value> elements = arg_array_values(info, 1, "tensors");
  bool average = arg_bool(info, 2, "average");
  bool bf16 = arg_bool(info, 3, "bf16Wire");
  std::string label = arg_string(info, 4, "label");
  std::vector<TensorRef> tensors = tensor_values(info.Env(), elements, "tensors");
  std::vector<const TensorRef*> distinct;
  for (const TensorRef& t : tensors) distinct.push_back(&t);
  require_disjoint(distinct, "all-reduce tensors");  // reduced in place: one tensor twice would be summed twice
  std::vector<float*> buffers;
  std::vector<int64_t> counts;
  std::vector<std::shared_ptr<Storage>> keep;
  Device device;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorRef& t = tensors[i];
    require_dtype(t, DType::f32, "tensor");
    require_staging_allowed(t, "tensor");
    if (i == 0) device = t.device();
    if (t.device() != device) fail("ERR_DEVICE", "all-reduce: every tensor must be on one device");
    buffers.push_back(static_cast<float*>(t.data()));
    counts.push_back(t.numel());
    keep.push_back(t.storage());
  }
  CudaPath path = device.is_cuda() ? cuda_path() : CudaPath::staged;
  auto* w = new WorkHandle{};
  w->comm = comm;
  w->device = device;
  auto slot = w->slot;
  auto after = w->after_wait;
  run_on(device, keep, [comm, slot, after, buffers, counts, average, bf16, label, keep, device, path](void* stream) {
    std::vector<std::shared_ptr<void>> hold(keep.begin(), keep.end());
    if (device.is_cuda() && path == CudaPath::nccl) {
      auto nccl = comm->nccl(device.index);
      comm->note_cuda_backend("nccl");
      *slot = nccl->all_reduce(buffers, counts, average, bf16, label, std::move(hold), stream);
      return;
    }
    if (!device.is_cuda()) {
      *slot = comm->all_reduce(buffers, counts, average, bf16, label, std::move(hold));
      return;
    }
    comm->note_cuda_backend("gloo-staged");
    cuda_synchronize(device.index);  // the producers ran on the device's stream
    auto staging = std::make_shared<std::vector<std::vector<float>>>(buffers.size());
    std::vector<float*> host;
    for (size_t i = 0; i < buffers.size(); ++i) {
      (*staging)[i].resize(size_t(counts[i]));
      cuda_memcpy((*staging)[i].data(), Device{}, buffers[i], device, size_t(counts[i]) * 4);
      host.push_back((*staging)[i].data());
    }
    hold.push_back(staging);
    *slot = comm->all_reduce(host, counts, average, bf16, label, std::move(hold));
    *after = [staging, buffers, counts, device] {
      for (size_t i = 0; i < buffers.size(); ++i) cuda_memcpy(buffers[i], device, (*staging)[i].data(), Device{}, size_t(counts[i]) * 4);
    };
  });
  return make_work(info.Env(), w);
}

// distAllReduceRaw(comm, tensor, average, label) -> work: f32/f64/i32 sum (or mean) in place.
Napi::Value dist_all_reduce_raw(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  bool average = arg_bool(info, 2, "average");
  std::string label = arg_string(info, 3, "label");
  TensorRef t = arg_tensor(info, 1, "tensor");
  require_host_f32(t, "tensor");
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64 && t.dtype() != DType::i32) fail("ERR_DTYPE", "all-reduce takes f32, f64 or i32");
  if (average && t.dtype() == DType::i32) fail("ERR_DTYPE", "an i32 all-reduce cannot average");
  auto* w = new WorkHandle{};
  w->comm = comm;
  auto slot = w->slot;
  void* data = t.data();
  int64_t n = t.numel();
  DType dtype = t.dtype();
  auto storage = t.storage();
  run_on(Device{}, {storage}, [=](void*) { *slot = comm->all_reduce_raw(data, n, dtype, average, label, {storage}); });
  return make_work(info.Env(), w);
}

// Queues a collective over a tensor's bytes in place (all-gather, broadcast): on the host
// through Gloo; a CUDA tensor through NCCL, or staged through a host copy into Gloo and copied
// back up after the wait (KILN_CUDA_DIST=1). `on_host` and `on_nccl` issue the collective on
// a buffer of `bytes` bytes.
template <typename OnHost, typename OnNccl>
Napi::Value queue_bytes_collective(const Napi::CallbackInfo& info, const std::shared_ptr<Communicator>& comm, const TensorRef& t,
                                   OnHost on_host, OnNccl on_nccl) {
  auto* w = new WorkHandle{};
  w->comm = comm;
  w->device = t.device();
  auto slot = w->slot;
  auto after = w->after_wait;
  void* data = t.data();
  size_t bytes = t.nbytes();
  auto storage = t.storage();
  Device device = t.device();
  CudaPath path = device.is_cuda() ? cuda_path() : CudaPath::staged;
  run_on(device, {storage}, [=](void* stream) {
    if (!device.is_cuda()) {
      *slot = on_host(data, std::vector<std::shared_ptr<void>>{storage});
      return;
    }
    if (path == CudaPath::nccl) {
      comm->note_cuda_backend("nccl");
      *slot = on_nccl(comm->nccl(device.index), data, std::vector<std::shared_ptr<void>>{storage}, stream);
      return;
    }
    comm->note_cuda_backend("gloo-staged");
    cuda_synchronize(device.index);
    auto staging = std::make_shared<std::vector<char>>(bytes);
    cuda_memcpy(staging->data(), Device{}, data, device, bytes);
    *slot = on_host(staging->data(), std::vector<std::shared_ptr<void>>{storage, staging});
    *after = [staging, data, bytes, device] { cuda_memcpy(data, device, staging->data(), Device{}, bytes); };
  });
  return make_work(info.Env(), w);
}

// distAllGather(comm, tensor, label) -> work: tensor holds worldSize equal chunks; this rank's chunk is the input.
// Any dtype (bytes); a CUDA tensor goes through NCCL or host staging (KILN_CUDA_DIST=1).
Napi::Value dist_all_gather(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  std::string label = arg_string(info, 2, "label");
  TensorRef t = arg_tensor(info, 1, "tensor");
  require_staging_allowed(t, "tensor");
  if (t.nbytes() % size_t(comm->world_size()) != 0) fail("ERR_SHAPE", "all-gather: the buffer is not worldSize equal chunks");
  int64_t chunk = int64_t(t.nbytes() / size_t(comm->world_size()));
  return queue_bytes_collective(
      info, comm, t, [=](void* buffer, std::vector<std::shared_ptr<void>> keep) { return comm->all_gather(buffer, chunk, label, std::move(keep)); },
      [=](const std::shared_ptr<dist::NcclCommunicator>& nccl, void* buffer, std::vector<std::shared_ptr<void>> keep, void* stream) {
        return nccl->all_gather(buffer, chunk, label, std::move(keep), stream);
      });
}

// distBroadcast(comm, tensor, root, label) -> work: any dtype (bytes); a CUDA tensor goes through NCCL or host
// staging (KILN_CUDA_DIST=1).
Napi::Value dist_broadcast(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  int root = int(arg_int(info, 2, "root", 0, comm->world_size() - 1));
  std::string label = arg_string(info, 3, "label");
  TensorRef t = arg_tensor(info, 1, "tensor");
  require_staging_allowed(t, "tensor");
  int64_t bytes = int64_t(t.nbytes());
  return queue_bytes_collective(
      info, comm, t, [=](void* buffer, std::vector<std::shared_ptr<void>> keep) { return comm->broadcast(buffer, bytes, root, label, std::move(keep)); },
      [=](const std::shared_ptr<dist::NcclCommunicator>& nccl, void* buffer, std::vector<std::shared_ptr<void>> keep, void* stream) {
        return nccl->broadcast(buffer, bytes, root, label, std::move(keep), stream);
      });
}

// distBarrier(comm, label) -> work
Napi::Value dist_barrier(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  std::string label = arg_string(info, 1, "label");
  auto* w = new WorkHandle{};
  w->comm = comm;
  auto slot = w->slot;
  run_on(Device{}, {}, [=](void*) { *slot = comm->barrier(label); });
  return make_work(info.Env(), w);
}

// distWait(work): a queue task that blocks until the collective finished (its failure becomes the queue's error).
Napi::Value dist_wait(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) fail("ERR_ARG", "argument 0 must be a collective's work handle");
  auto* w = info[0].As<Napi::External<WorkHandle>>().Data();
  auto slot = w->slot;
  auto comm = w->comm;
  auto after = w->after_wait;
  run_on(w->device, {}, [slot, comm, after](void*) {
    if (!*slot) fail("ERR_INTERNAL", "waited on a collective that was never handed over");
    comm->add_exposed((*slot)->wait());
    if (*after) (*after)();  // staged CUDA tensors: the result back to the device
  });
  return info.Env().Undefined();
}

// distStats(comm) -> {commMs, exposedMs, payloadBytes, wireBytes, collectives, lastMs} since the last call
Napi::Value dist_stats(const Napi::CallbackInfo& info) {
  auto comm = arg_comm(info, 0);
  dist::CommStats s = comm->take_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("commMs", s.comm_ms);
  o.Set("exposedMs", s.exposed_ms);
  o.Set("payloadBytes", double(s.payload_bytes));
  o.Set("wireBytes", double(s.wire_bytes));
  o.Set("collectives", double(s.collectives));
  o.Set("lastMs", s.last_ms);
  o.Set("cudaBackend", s.cuda_backend);
  return o;
}

// distNcclStatus() -> {available, library, version, reason}: whether CUDA collectives would use NCCL
// (loads libnccl.so.2, or KILN_NCCL_LIBRARY, once per process).
Napi::Value dist_nccl_status(const Napi::CallbackInfo& info) {
  const dist::NcclStatus& st = dist::nccl_status();
  bool cuda = build_info().cuda_compiled;
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("available", st.available && cuda);
  o.Set("library", st.library);
  o.Set("version", st.version ? dist::nccl_version_string(st.version) : std::string());
  o.Set("reason", st.available && !cuda ? std::string("this kiln build has no CUDA") : st.reason);
  return o;
}

// distClose(comm): after pending collectives; later use is ERR_DISPOSED.
Napi::Value dist_close(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) fail("ERR_ARG", "argument 0 must be a communicator");
  auto* h = info[0].As<Napi::External<CommHandle>>().Data();
  if (h && h->comm) {
    auto comm = std::move(h->comm);
    h->comm.reset();
    // after every queued task that may still hand work to it
    run_on(Device{}, {}, [comm](void*) { comm->close(); });
  }
  return info.Env().Undefined();
}

void register_collectives(Napi::Env env, Napi::Object exports) {
  set_function(env, exports, "distAvailable", dist_available);
  set_function(env, exports, "distConnect", dist_connect);
  set_function(env, exports, "distAllReduce", dist_all_reduce);
  set_function(env, exports, "distAllReduceRaw", dist_all_reduce_raw);
  set_function(env, exports, "distAllGather", dist_all_gather);
  set_function(env, exports, "distBroadcast", dist_broadcast);
  set_function(env, exports, "distBarrier", dist_barrier);
  set_function(env, exports, "distWait", dist_wait);
  set_function(env, exports, "distStats", dist_stats);
  set_function(env, exports, "distNcclStatus", dist_nccl_status);
  set_function(env, exports, "distClose", dist_close);
}

}  // namespace
KILN_REGISTER_BINDING(register_collectives);
}  // namespace kiln::binding

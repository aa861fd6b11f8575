// NcclCommunicator (nccl_comm.h). Without KILN_WITH_CUDA every entry fails with ERR_NO_CUDA.
#include "nccl_comm.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "device.h"
#include "error.h"
#include "nccl.h"
#include "store_client.h"

#if KILN_WITH_CUDA
#include <cuda_runtime.h>

#include "../ops/elementwise.h"
#endif

namespace kiln::dist {

#if KILN_WITH_CUDA

namespace {

using Clock = std::chrono::steady_clock;

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    fail("ERR_CUDA", std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

// One collective in flight: its events on the NCCL stream, what it holds alive, its Work.
// Shared between the queue worker (which enqueues it) and the watchdog; `mutex` guards it.
struct Pending {
  cudaEvent_t start = nullptr;  // recorded on the NCCL stream once the producers finished
  cudaEvent_t done = nullptr;   // recorded after the NCCL calls (and the bf16 unpacking)
  std::shared_ptr<Work> work;
  std::string label;
  std::vector<std::shared_ptr<void>> keep;
  uint64_t payload = 0, wire = 0;
  // the queue worker is still inside the NCCL calls (which may block, e.g. while NCCL connects
  // to a peer that is gone): `done` is not recorded yet; the timeout counts from the call
  bool enqueuing = true;
  bool started = false;  // the watchdog saw `start` complete: the timeout counts from then
  Clock::time_point deadline;
};

}  // namespace

struct NcclCommunicator::Impl {
  const NcclApi* api = nullptr;
  nccl_abi::Comm comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0, rank = 0, world = 1;
  int64_t timeout_ms = 60000;
  Record record;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Pending>> pending;  // in issue order, the order they complete in
  std::string broken;  // the first failure: every later collective fails with it at once
  bool aborted = false;
  bool stopping = false;
  std::thread watchdog;

  std::string prefix(const std::string& label) const { return "rank " + std::to_string(rank) + ": " + label + " failed: "; }
  std::string suffix() const { return " (NCCL on cuda:" + std::to_string(device) + ", collective timeout " + std::to_string(timeout_ms) + " ms)"; }

  // Caller holds `mutex`. Aborts the communicator once (ending NCCL's kernels, and NCCL calls
  // blocked on the queue worker) and fails every pending collective.
  void break_all(const std::string& why) {
    if (broken.empty()) broken = why;
    if (!aborted && comm) {
      api->comm_abort(comm);
      aborted = true;
    }
    for (auto& p : pending) {
      p->work->finish(prefix(p->label) + why + suffix());
      cudaEventDestroy(p->start);
      cudaEventDestroy(p->done);
      p->start = p->done = nullptr;
    }
    pending.clear();
    (void)cudaGetLastError();
  }

  void watch() {
    cudaSetDevice(device);
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      if (pending.empty()) {
        if (stopping) return;
        wake.wait(lock, [this] { return stopping || !pending.empty(); });
        continue;
      }
      std::shared_ptr<Pending> p = pending.front();
      if (p->enqueuing) {
        if (Clock::now() > p->deadline) {
          break_all("NCCL did not accept the collective within " + std::to_string(timeout_ms) + " ms (a peer gone?); the NCCL communicator was aborted");
          continue;
        }
      } else {
        if (!p->started) {
          cudaError_t s = cudaEventQuery(p->start);
          if (s == cudaSuccess) {
            p->started = true;
            p->deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
          } else if (s != cudaErrorNotReady) {
            break_all(std::string("CUDA error ") + cudaGetErrorName(s) + " before the collective started");
            continue;
          }
        }
        if (p->started) {
          cudaError_t s = cudaEventQuery(p->done);
          if (s == cudaSuccess) {
            float ms = 0;
            if (cudaEventElapsedTime(&ms, p->start, p->done) != cudaSuccess) (void)cudaGetLastError();
            pending.pop_front();
            cudaEventDestroy(p->start);
            cudaEventDestroy(p->done);
            p->start = p->done = nullptr;
            lock.unlock();
            if (record) record(double(ms), p->payload, p->wire);
            p->keep.clear();  // the buffers go back to the allocator only once the GPU is done with them
            p->work->finish("");
            lock.lock();
            continue;
          }
          if (s != cudaErrorNotReady) {
            break_all(std::string("CUDA error ") + cudaGetErrorName(s) + " (" + cudaGetErrorString(s) + ")");
            continue;
          }
          nccl_abi::Result async = nccl_abi::kSuccess;
          if (api->comm_get_async_error(comm, &async) == nccl_abi::kSuccess && async != nccl_abi::kSuccess &&
              async != nccl_abi::kInProgress) {
            break_all(api->describe(async) + " reported asynchronously (a peer gone?)");
            continue;
          }
          if (Clock::now() > p->deadline) {
            break_all("did not complete within " + std::to_string(timeout_ms) + " ms; the NCCL communicator was aborted");
            continue;
          }
        }
      }
      // poll: short enough to add little to a collective's latency, long enough to stay cheap
      wake.wait_for(lock, std::chrono::microseconds(200));
    }
  }

  // On the queue worker, device current. Orders the NCCL stream after compute, runs `issue`
  // between the start and done events, and hands the pair to the watchdog, which watches the
  // NCCL calls themselves too (they can block).
  std::shared_ptr<Work> launch(const std::string& label, std::vector<std::shared_ptr<void>> keep, void* compute_stream,
                               uint64_t payload, uint64_t wire, const std::function<void()>& issue) {
    auto work = std::make_shared<Work>();
    auto p = std::make_shared<Pending>();
    p->work = work;
    p->label = label;
    p->keep = std::move(keep);
    p->payload = payload;
    p->wire = wire;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (stopping) fail("ERR_DIST", "rank " + std::to_string(rank) + ": the communicator is closed");
      if (!broken.empty()) {
        work->finish(prefix(label) + broken + suffix());
        return work;
      }
    }
    cudaEvent_t ready = nullptr;
    try {
      cuda_check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
      cuda_check(cudaEventCreate(&p->start), "cudaEventCreate");
      cuda_check(cudaEventCreate(&p->done), "cudaEventCreate");
      cuda_check(cudaEventRecord(ready, static_cast<cudaStream_t>(compute_stream)), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(stream, ready, 0), "cudaStreamWaitEvent");
      cuda_check(cudaEventDestroy(ready), "cudaEventDestroy");  // safe once recorded and waited on
      ready = nullptr;
      cuda_check(cudaEventRecord(p->start, stream), "cudaEventRecord");
    } catch (const std::exception& e) {
      if (ready) cudaEventDestroy(ready);
      if (p->start) cudaEventDestroy(p->start);
      if (p->done) cudaEventDestroy(p->done);
      std::lock_guard<std::mutex> lock(mutex);
      break_all(e.what());  // a rank that skips a collective leaves the others waiting: nothing later can succeed
      work->finish(prefix(label) + e.what() + suffix());
      return work;
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      p->deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
      pending.push_back(p);
    }
    wake.notify_all();
    std::string error;
    try {
      issue();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::lock_guard<std::mutex> lock(mutex);
    if (!p->start) return work;  // the watchdog gave up on it meanwhile (the Work already failed)
    if (error.empty()) {
      cudaError_t s = cudaEventRecord(p->done, stream);
      if (s != cudaSuccess) error = std::string("cudaEventRecord: ") + cudaGetErrorName(s);
    }
    if (!error.empty()) {
      break_all(error);  // finishes this Work too: it is pending
      return work;
    }
    p->enqueuing = false;
    wake.notify_all();
    return work;
  }

  void nccl_check(nccl_abi::Result r, const char* what) const {
    if (r != nccl_abi::kSuccess) fail("ERR_DIST", std::string(what) + ": " + api->describe(r));
  }
};

NcclCommunicator::NcclCommunicator(const CommOptions& options, int device, int generation, Record record)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.api = &nccl_api();
  s.device = device;
  s.rank = options.rank;
  s.world = options.world_size;
  s.timeout_ms = options.timeout_ms;
  s.record = std::move(record);
  cuda_set_device(device);
  const NcclApi* api = s.api;
  auto create = [api] {
    nccl_abi::UniqueId id;
    nccl_abi::Result r = api->get_unique_id(&id);
    if (r != nccl_abi::kSuccess) fail("ERR_DIST", "ncclGetUniqueId: " + api->describe(r));
    return std::vector<char>(id.internal, id.internal + nccl_abi::kUniqueIdBytes);
  };
  std::vector<char> id_bytes;
  if (s.world == 1) {
    id_bytes = create();  // one rank: no store in the run
  } else {
    StoreClient store(options.store_host, options.store_port, options.token, options.prefix + "nccl/", options.timeout_ms);
    id_bytes = exchange_nccl_unique_id(store, s.rank, std::to_string(generation) + "/id", options.timeout_ms, create);
  }
  nccl_abi::UniqueId id;
  std::memcpy(id.internal, id_bytes.data(), sizeof(id.internal));

  // ncclCommInitRank blocks until every rank joined: on a thread of its own, so a rank that
  // never comes is a timeout here instead of a hang (the thread is abandoned then; if NCCL
  // returns later, the communicator it made is aborted).
  struct Init {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false, abandoned = false;
    nccl_abi::Result result = nccl_abi::kSuccess;
    nccl_abi::Comm comm = nullptr;
    std::string cuda_error;
  };
  auto init = std::make_shared<Init>();
  int world = s.world, rank = s.rank;
  std::thread([init, api, id, world, rank, device] {
    nccl_abi::Comm comm = nullptr;
    nccl_abi::Result r = nccl_abi::kSuccess;
    std::string cuda_error;
    cudaError_t set = cudaSetDevice(device);
    if (set != cudaSuccess) {
      cuda_error = std::string("cudaSetDevice: ") + cudaGetErrorName(set);
    } else {
      r = api->comm_init_rank(&comm, world, id, rank);
    }
    std::lock_guard<std::mutex> lock(init->mutex);
    init->done = true;
    init->result = r;
    init->comm = comm;
    init->cuda_error = cuda_error;
    if (init->abandoned && comm) api->comm_abort(comm);
    init->cv.notify_all();
  }).detach();
  {
    std::unique_lock<std::mutex> lock(init->mutex);
    if (!init->cv.wait_for(lock, std::chrono::milliseconds(s.timeout_ms), [&] { return init->done; })) {
      init->abandoned = true;
      fail("ERR_DIST", "rank " + std::to_string(s.rank) + ": setting up NCCL on cuda:" + std::to_string(device) + " did not finish within " +
                           std::to_string(s.timeout_ms) + " ms (is every rank running, each on its own GPU?)");
    }
    if (!init->cuda_error.empty()) fail("ERR_CUDA", "rank " + std::to_string(s.rank) + ": " + init->cuda_error);
    if (init->result != nccl_abi::kSuccess) {
      fail("ERR_DIST", "rank " + std::to_string(s.rank) + ": ncclCommInitRank on cuda:" + std::to_string(device) + ": " + api->describe(init->result));
    }
    s.comm = init->comm;
  }
  cudaError_t st = cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking);
  if (st != cudaSuccess) {
    api->comm_destroy(s.comm);
    s.comm = nullptr;
    cuda_check(st, "cudaStreamCreate (NCCL stream)");
  }
  s.watchdog = std::thread([impl = impl_.get()] { impl->watch(); });
}

NcclCommunicator::~NcclCommunicator() { close(); }

int NcclCommunicator::device() const { return impl_->device; }

void NcclCommunicator::close() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.stopping) return;
    s.stopping = true;  // the watchdog drains what is pending (each bounded by the timeout), then ends
  }
  s.wake.notify_all();
  if (s.watchdog.joinable()) s.watchdog.join();
  cudaSetDevice(s.device);
  if (s.comm && !s.aborted) s.api->comm_destroy(s.comm);
  s.comm = nullptr;
  if (s.stream) cudaStreamDestroy(s.stream);
  s.stream = nullptr;
  (void)cudaGetLastError();
}

std::shared_ptr<Work> NcclCommunicator::all_reduce(const std::vector<float*>& buffers, const std::vector<int64_t>& counts, bool average,
                                                   bool bf16_wire, const std::string& label, std::vector<std::shared_ptr<void>> keep,
                                                   void* compute_stream) {
  Impl& s = *impl_;
  if (buffers.size() != counts.size()) fail("ERR_ARG", "all_reduce: one count per buffer");
  if (bf16_wire && !s.api->has_bf16()) {
    fail("ERR_DIST", "the bf16 gradient wire needs NCCL 2.10 or later; this is NCCL " + nccl_version_string(s.api->version));
  }
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  size_t element = bf16_wire ? 2 : 4;
  uint64_t payload = uint64_t(total) * element;
  uint64_t wire = uint64_t(double(payload) * 2.0 * (s.world - 1) / s.world);
  std::shared_ptr<Storage> packed;
  if (bf16_wire && total > 0) {
    packed = Storage::allocate(Device{DeviceType::cuda, s.device}, size_t(total) * 2);
    keep.push_back(packed);
  }
  const NcclApi* api = s.api;
  Impl* impl = &s;
  return s.launch(label, std::move(keep), compute_stream, payload, wire, [=] {
    float scale = 1.0f / float(impl->world);
    if (bf16_wire) {
      // pack to bf16 (rounds once, as the Gloo path), sum in bf16, unpack, then scale in f32
      if (total == 0) return;
      auto* wire_buf = static_cast<uint16_t*>(packed->data());
      int64_t at = 0;
      for (size_t i = 0; i < buffers.size(); ++i) {
        cast_cuda(wire_buf + at, DType::bf16, buffers[i], DType::f32, counts[i], impl->stream);
        at += counts[i];
      }
      impl->nccl_check(api->all_reduce(wire_buf, wire_buf, size_t(total), nccl_abi::kBfloat16, nccl_abi::kSum, impl->comm, impl->stream),
                       "ncclAllReduce");
      at = 0;
      for (size_t i = 0; i < buffers.size(); ++i) {
        cast_cuda(buffers[i], DType::f32, wire_buf + at, DType::bf16, counts[i], impl->stream);
        if (average) scale_cuda(buffers[i], buffers[i], double(scale), DType::f32, counts[i], impl->stream);
        at += counts[i];
      }
      return;
    }
    // f32: one all-reduce per buffer in place, fused by NCCL's group call (no packing copies)
    bool use_avg = average && api->has_avg();
    impl->nccl_check(api->group_start(), "ncclGroupStart");
    nccl_abi::Result first = nccl_abi::kSuccess;
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (counts[i] == 0) continue;
      nccl_abi::Result r = api->all_reduce(buffers[i], buffers[i], size_t(counts[i]), nccl_abi::kFloat32,
                                           use_avg ? nccl_abi::kAvg : nccl_abi::kSum, impl->comm, impl->stream);
      if (r != nccl_abi::kSuccess && first == nccl_abi::kSuccess) first = r;
    }
    nccl_abi::Result ended = api->group_end();
    impl->nccl_check(first, "ncclAllReduce");
    impl->nccl_check(ended, "ncclGroupEnd");
    if (average && !use_avg) {  // NCCL before 2.10: the sum, then a scale on the NCCL stream
      for (size_t i = 0; i < buffers.size(); ++i) scale_cuda(buffers[i], buffers[i], double(scale), DType::f32, counts[i], impl->stream);
    }
  });
}

std::shared_ptr<Work> NcclCommunicator::all_gather(void* buffer, int64_t chunk_bytes, const std::string& label,
                                                   std::vector<std::shared_ptr<void>> keep, void* compute_stream) {
  Impl& s = *impl_;
  uint64_t payload = uint64_t(chunk_bytes) * uint64_t(s.world);
  uint64_t wire = uint64_t(double(payload) * (s.world - 1) / s.world);
  const NcclApi* api = s.api;
  Impl* impl = &s;
  return s.launch(label, std::move(keep), compute_stream, payload, wire, [=] {
    // in place: this rank's chunk sits at rank * chunk_bytes of the output, as NCCL allows
    char* out = static_cast<char*>(buffer);
    impl->nccl_check(api->all_gather(out + int64_t(impl->rank) * chunk_bytes, out, size_t(chunk_bytes), nccl_abi::kInt8, impl->comm, impl->stream),
                     "ncclAllGather");
  });
}

std::shared_ptr<Work> NcclCommunicator::broadcast(void* buffer, int64_t bytes, int root, const std::string& label,
                                                  std::vector<std::shared_ptr<void>> keep, void* compute_stream) {
  Impl& s = *impl_;
  if (root < 0 || root >= s.world) fail("ERR_ARG", "broadcast root " + std::to_string(root) + " is not a rank");
  const NcclApi* api = s.api;
  Impl* impl = &s;
  return s.launch(label, std::move(keep), compute_stream, uint64_t(bytes), uint64_t(bytes), [=] {
    impl->nccl_check(api->broadcast(buffer, buffer, size_t(bytes), nccl_abi::kInt8, root, impl->comm, impl->stream), "ncclBroadcast");
  });
}

#else  // no CUDA compiled in

struct NcclCommunicator::Impl {};

namespace {
[[noreturn]] void no_cuda() { fail("ERR_NO_CUDA", "kiln was built without CUDA: NCCL collectives need a CUDA build"); }
}  // namespace

NcclCommunicator::NcclCommunicator(const CommOptions&, int, int, Record) { no_cuda(); }
NcclCommunicator::~NcclCommunicator() = default;
int NcclCommunicator::device() const { return 0; }
void NcclCommunicator::close() {}
std::shared_ptr<Work> NcclCommunicator::all_reduce(const std::vector<float*>&, const std::vector<int64_t>&, bool, bool, const std::string&,
                                                   std::vector<std::shared_ptr<void>>, void*) {
  no_cuda();
}
std::shared_ptr<Work> NcclCommunicator::all_gather(void*, int64_t, const std::string&, std::vector<std::shared_ptr<void>>, void*) { no_cuda(); }
std::shared_ptr<Work> NcclCommunicator::broadcast(void*, int64_t, int, const std::string&, std::vector<std::shared_ptr<void>>, void*) { no_cuda(); }

#endif

}  // namespace kiln::dist

// Communicator on Gloo (see communicator.h). The rendezvous store is rank 0's Node process
// (lib/parallel/store.ts); its client is store_client.h, adapted here to gloo::rendezvous::Store.
#include "communicator.h"

#include <cstring>
#include <deque>
#include <thread>

#include "error.h"
#include "half.h"
#include "nccl_comm.h"
#include "store_client.h"

#if KILN_WITH_GLOO
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

namespace kiln::dist {

bool gloo_available() {
#if KILN_WITH_GLOO
  return true;
#else
  return false;
#endif
}

void Work::finish(std::string error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

bool Work::done() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

double Work::wait() {
  auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return done_; });
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!error_.empty()) fail("ERR_DIST", error_);
  return ms;
}

#if KILN_WITH_GLOO
namespace {

// Gloo's view of the run's store (store_client.h).
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(const std::string& host, int port, const std::string& token, const std::string& prefix, int64_t timeout_ms)
      : client_(host, port, token, prefix, timeout_ms), timeout_ms_(timeout_ms) {}

  void set(const std::string& key, const std::vector<char>& data) override { client_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return client_.get(key, timeout_ms_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, std::chrono::milliseconds(timeout_ms_)); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    for (const auto& k : keys) client_.get(k, timeout.count());
  }

 private:
  StoreClient client_;
  int64_t timeout_ms_;
};

// Sums of bf16 vectors, rounded back to bf16 (the optional reduced-precision gradient wire).
void bf16_sum(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<uint16_t*>(c);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(bf16_to_float(x[i]) + bf16_to_float(y[i]));
}

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

// Gloo's elementwise sum of T (the cast picks its (void*, const void*, const void*, size_t) overload).
template <typename T>
ReduceFn gloo_sum() {
  return static_cast<ReduceFn>(&gloo::sum<T>);
}

// Reduces `count` values of T in place across the ranks with `reduce`.
template <typename T>
void all_reduce_in_place(const std::shared_ptr<gloo::rendezvous::Context>& context, int64_t timeout_ms, T* data, size_t count,
                         ReduceFn reduce) {
  gloo::AllreduceOptions opts(context);
  opts.setTimeout(std::chrono::milliseconds(timeout_ms));
  opts.setInput(data, count);
  opts.setOutput(data, count);
  opts.setReduceFunction(reduce);
  gloo::allreduce(opts);
}

}  // namespace
#endif

struct Communicator::Impl {
#if KILN_WITH_GLOO
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
#endif
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  bool stopping = false;
  std::string broken;  // the first failure: later collectives fail at once with it
  CommStats stats;
  std::vector<char> staging;  // packed gradient buckets
  std::thread thread;
  std::vector<std::shared_ptr<NcclCommunicator>> nccl;  // CUDA tensors, one per device used
};

Communicator::Communicator(const CommOptions& options) : options_(options), impl_(std::make_unique<Impl>()) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    fail("ERR_ARG", "rank " + std::to_string(options.rank) + " is outside world size " + std::to_string(options.world_size));
  }
#if KILN_WITH_GLOO
  if (options.world_size > 1) {
    try {
      gloo::transport::tcp::attr attr;
      attr.hostname = options.bind_host;
      impl_->device = gloo::transport::tcp::CreateDevice(attr);
      impl_->context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
      impl_->context->setTimeout(std::chrono::milliseconds(options.timeout_ms));
      GlooStore store(options.store_host, options.store_port, options.token, options.prefix, options.timeout_ms);
      impl_->context->connectFullMesh(store, impl_->device);
    } catch (const KilnException&) {
      throw;
    } catch (const std::exception& e) {
      fail("ERR_DIST", "rank " + std::to_string(options.rank) + ": connecting to the other ranks failed: " + e.what());
    }
  }
#else
  if (options.world_size > 1) {
    fail("ERR_NO_GLOO", "this kiln build has no Gloo, so it cannot run more than one rank: install it (Debian/Ubuntu: apt-get install libgloo-dev) and rebuild (npm rebuild kiln, or npm install in the checkout)");
  }
#endif
  impl_->thread = std::thread([impl = impl_.get()] {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(impl->mutex);
        impl->wake.wait(lock, [impl] { return impl->stopping || !impl->jobs.empty(); });
        if (impl->jobs.empty()) return;
        job = std::move(impl->jobs.front());
        impl->jobs.pop_front();
      }
      job();
    }
  });
}

Communicator::~Communicator() { close(); }

void Communicator::close() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::vector<std::shared_ptr<NcclCommunicator>> nccl;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    nccl.swap(impl_->nccl);
  }
  for (auto& n : nccl) n->close();
#if KILN_WITH_GLOO
  impl_->context.reset();
  impl_->device.reset();
#endif
}

std::shared_ptr<Work> Communicator::submit(std::string label, std::function<void()> body, std::vector<std::shared_ptr<void>> keep) {
  auto work = std::make_shared<Work>();
  Impl* impl = impl_.get();
  int rank = options_.rank;
  int64_t timeout_ms = options_.timeout_ms;
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    if (impl->stopping) fail("ERR_DIST", "rank " + std::to_string(rank) + ": the communicator is closed");
    impl->jobs.push_back([impl, work, label, body = std::move(body), keep = std::move(keep), rank, timeout_ms] {
      std::string broken;
      {
        std::lock_guard<std::mutex> lock(impl->mutex);
        broken = impl->broken;
      }
      if (!broken.empty()) return work->finish(broken);
      std::string error;
      auto start = std::chrono::steady_clock::now();
      try {
        body();
      } catch (const std::exception& e) {
        error = "rank " + std::to_string(rank) + ": " + label + " failed: " + e.what() + " (collective timeout " +
                std::to_string(timeout_ms) + " ms)";
      }
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      {
        std::lock_guard<std::mutex> lock(impl->mutex);
        impl->stats.comm_ms += ms;
        impl->stats.last_ms = ms;
        impl->stats.collectives++;
        if (!error.empty() && impl->broken.empty()) impl->broken = error;
      }
      work->finish(error);
    });
  }
  impl->wake.notify_one();
  return work;
}

namespace {
void count_bytes(CommStats& s, std::mutex& m, uint64_t payload, double wire_factor) {
  std::lock_guard<std::mutex> lock(m);
  s.payload_bytes += payload;
  s.wire_bytes += uint64_t(double(payload) * wire_factor);
}
}  // namespace

std::shared_ptr<Work> Communicator::all_reduce(std::vector<float*> buffers, std::vector<int64_t> counts, bool average, bool bf16_wire,
                                              std::string label, std::vector<std::shared_ptr<void>> keep) {
  if (buffers.size() != counts.size()) fail("ERR_ARG", "all_reduce: one count per buffer");
  int world = options_.world_size;
  [[maybe_unused]] Impl* impl = impl_.get();  // unused without Gloo
  [[maybe_unused]] int64_t timeout_ms = options_.timeout_ms;
  return submit(label, [=] {
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    if (world == 1) {
      // one rank: the sum is the input, the average too
      return;
    }
#if KILN_WITH_GLOO
    size_t element = bf16_wire ? 2 : 4;
    if (buffers.size() == 1 && !bf16_wire) {
      // one f32 buffer: reduce in place, no staging copies
      all_reduce_in_place(impl->context, timeout_ms, buffers[0], size_t(total), gloo_sum<float>());
      if (average) {
        float scale = 1.0f / float(world);
        for (int64_t j = 0; j < total; ++j) buffers[0][j] *= scale;
      }
      count_bytes(impl->stats, impl->mutex, uint64_t(total) * 4, 2.0 * (world - 1) / world);
      return;
    }
    impl->staging.resize(size_t(total) * element);
    // pack (bf16 rounds once here)
    int64_t at = 0;
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (bf16_wire) {
        auto* dst = reinterpret_cast<uint16_t*>(impl->staging.data()) + at;
        for (int64_t j = 0; j < counts[i]; ++j) dst[j] = float_to_bf16(buffers[i][j]);
      } else {
        std::memcpy(impl->staging.data() + at * 4, buffers[i], size_t(counts[i]) * 4);
      }
      at += counts[i];
    }
    if (bf16_wire) {
      all_reduce_in_place(impl->context, timeout_ms, reinterpret_cast<uint16_t*>(impl->staging.data()), size_t(total), &bf16_sum);
    } else {
      all_reduce_in_place(impl->context, timeout_ms, reinterpret_cast<float*>(impl->staging.data()), size_t(total), gloo_sum<float>());
    }
    float scale = average ? 1.0f / float(world) : 1.0f;
    at = 0;
    for (size_t i = 0; i < buffers.size(); ++i) {
      if (bf16_wire) {
        auto* src = reinterpret_cast<uint16_t*>(impl->staging.data()) + at;
        for (int64_t j = 0; j < counts[i]; ++j) buffers[i][j] = bf16_to_float(src[j]) * scale;
      } else {
        auto* src = reinterpret_cast<float*>(impl->staging.data()) + at;
        for (int64_t j = 0; j < counts[i]; ++j) buffers[i][j] = src[j] * scale;
      }
      at += counts[i];
    }
    count_bytes(impl->stats, impl->mutex, uint64_t(total) * element, 2.0 * (world - 1) / world);
#endif
  }, std::move(keep));
}

std::shared_ptr<Work> Communicator::all_reduce_raw(void* data, int64_t count, DType dtype, bool average, std::string label,
                                                  std::vector<std::shared_ptr<void>> keep) {
  if (dtype != DType::f32 && dtype != DType::f64 && dtype != DType::i32) fail("ERR_DTYPE", "all_reduce_raw takes f32, f64 or i32");
  if (average && dtype == DType::i32) fail("ERR_DTYPE", "an i32 all-reduce cannot average");
  int world = options_.world_size;
  [[maybe_unused]] Impl* impl = impl_.get();  // unused without Gloo
  [[maybe_unused]] int64_t timeout_ms = options_.timeout_ms;
  return submit(label, [=] {
    if (world == 1) return;
#if KILN_WITH_GLOO
    if (dtype == DType::f32) {
      all_reduce_in_place(impl->context, timeout_ms, static_cast<float*>(data), size_t(count), gloo_sum<float>());
    } else if (dtype == DType::f64) {
      all_reduce_in_place(impl->context, timeout_ms, static_cast<double*>(data), size_t(count), gloo_sum<double>());
    } else {
      all_reduce_in_place(impl->context, timeout_ms, static_cast<int32_t*>(data), size_t(count), gloo_sum<int32_t>());
    }
    if (average) {
      if (dtype == DType::f32) {
        auto* p = static_cast<float*>(data);
        for (int64_t i = 0; i < count; ++i) p[i] /= float(world);
      } else {
        auto* p = static_cast<double*>(data);
        for (int64_t i = 0; i < count; ++i) p[i] /= double(world);
      }
    }
    count_bytes(impl->stats, impl->mutex, uint64_t(count) * dtype_size(dtype), 2.0 * (world - 1) / world);
#endif
  }, std::move(keep));
}

std::shared_ptr<Work> Communicator::all_gather(void* buffer, int64_t chunk_bytes, std::string label, std::vector<std::shared_ptr<void>> keep) {
  int world = options_.world_size;
  [[maybe_unused]] int rank = options_.rank;
  [[maybe_unused]] Impl* impl = impl_.get();  // unused without Gloo
  [[maybe_unused]] int64_t timeout_ms = options_.timeout_ms;
  return submit(label, [=] {
    if (world == 1) return;
#if KILN_WITH_GLOO
    // Gloo copies the input into the output first; give it a separate input
    std::vector<char> mine(static_cast<char*>(buffer) + rank * chunk_bytes, static_cast<char*>(buffer) + (rank + 1) * chunk_bytes);
    gloo::AllgatherOptions opts(impl->context);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    opts.setInput(mine.data(), size_t(chunk_bytes));
    opts.setOutput(static_cast<char*>(buffer), size_t(chunk_bytes) * world);
    gloo::allgather(opts);
    count_bytes(impl->stats, impl->mutex, uint64_t(chunk_bytes) * world, double(world - 1) / world);
#endif
  }, std::move(keep));
}

std::shared_ptr<Work> Communicator::broadcast(void* buffer, int64_t bytes, int root, std::string label, std::vector<std::shared_ptr<void>> keep) {
  if (root < 0 || root >= options_.world_size) fail("ERR_ARG", "broadcast root " + std::to_string(root) + " is not a rank");
  int world = options_.world_size;
  [[maybe_unused]] Impl* impl = impl_.get();  // unused without Gloo
  [[maybe_unused]] int64_t timeout_ms = options_.timeout_ms;
  return submit(label, [=] {
    if (world == 1) return;
#if KILN_WITH_GLOO
    gloo::BroadcastOptions opts(impl->context);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    opts.setRoot(root);
    opts.setOutput(static_cast<char*>(buffer), size_t(bytes));
    gloo::broadcast(opts);
    count_bytes(impl->stats, impl->mutex, uint64_t(bytes), 1.0);
#endif
  }, std::move(keep));
}

std::shared_ptr<Work> Communicator::barrier(std::string label) {
  int world = options_.world_size;
  [[maybe_unused]] Impl* impl = impl_.get();  // unused without Gloo
  [[maybe_unused]] int64_t timeout_ms = options_.timeout_ms;
  return submit(label, [=] {
    if (world == 1) return;
#if KILN_WITH_GLOO
    gloo::BarrierOptions opts(impl->context);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    gloo::barrier(opts);
#endif
  }, {});
}

std::shared_ptr<NcclCommunicator> Communicator::nccl(int device) {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (impl_->stopping) fail("ERR_DIST", "rank " + std::to_string(options_.rank) + ": the communicator is closed");
    for (auto& n : impl_->nccl) {
      if (n->device() == device) return n;
    }
  }
  int generation = int(impl_->nccl.size());  // only the op-queue worker creates them
  Impl* impl = impl_.get();
  auto created = std::make_shared<NcclCommunicator>(options_, device, generation, [impl](double ms, uint64_t payload, uint64_t wire) {
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->stats.comm_ms += ms;
    impl->stats.last_ms = ms;
    impl->stats.collectives++;
    impl->stats.payload_bytes += payload;
    impl->stats.wire_bytes += wire;
  });
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->nccl.push_back(created);
  return created;
}

void Communicator::note_cuda_backend(const char* name) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.cuda_backend = name;
}

void Communicator::add_exposed(double ms) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.exposed_ms += ms;
}

CommStats Communicator::take_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  CommStats s = impl_->stats;
  impl_->stats = CommStats{};
  impl_->stats.cuda_backend = s.cuda_backend;
  return s;
}

}  // namespace kiln::dist

// Communicator on Gloo (see communicator.h). The rendezvous store is rank 0's Node process
// (lib/dist/store.ts); this file holds its client side, a gloo::rendezvous::Store over one TCP
// connection. Wire protocol, little-endian:
//   request:  u8 op ('A' auth, 'S' set, 'G' get), u32 key length, key, u32 value length, value
//             (for 'G' the value is the timeout in milliseconds as decimal text; the store
//             answers once the key exists or the timeout passed)
//   response: u8 status (0 ok, 1 error), u32 length, value or error text
#include "communicator.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <thread>

#include "error.h"
#include "half.h"

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

// One blocking TCP connection to the rendezvous store.
class StoreClient : public gloo::rendezvous::Store {
 public:
  StoreClient(const std::string& host, int port, const std::string& token, const std::string& prefix, int64_t timeout_ms)
      : prefix_(prefix), timeout_ms_(timeout_ms) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) fail("ERR_DIST", "cannot resolve the rendezvous store " + host + ": " + gai_strerror(rc));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    // rank 0 may not be listening yet: retry until the timeout
    for (;;) {
      fd_ = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
      if (fd_ >= 0 && connect(fd_, found->ai_addr, found->ai_addrlen) == 0) break;
      if (fd_ >= 0) close(fd_);
      fd_ = -1;
      if (std::chrono::steady_clock::now() > deadline) {
        freeaddrinfo(found);
        fail("ERR_DIST", "cannot reach the rendezvous store at " + host + ":" + std::to_string(port) + " within " +
                             std::to_string(timeout_ms) + " ms (is rank 0 running?)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    freeaddrinfo(found);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!token.empty()) request('A', token, {});
  }
  ~StoreClient() override {
    if (fd_ >= 0) close(fd_);
  }

  void set(const std::string& key, const std::vector<char>& data) override { request('S', prefix_ + key, data); }
  std::vector<char> get(const std::string& key) override {
    std::string t = std::to_string(timeout_ms_);
    return request('G', prefix_ + key, std::vector<char>(t.begin(), t.end()));
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, std::chrono::milliseconds(timeout_ms_)); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::string t = std::to_string(timeout.count());
    for (const auto& k : keys) request('G', prefix_ + k, std::vector<char>(t.begin(), t.end()));
  }

 private:
  void write_all(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w <= 0) fail("ERR_DIST", "the rendezvous store closed the connection");
      p += w;
      n -= size_t(w);
    }
  }
  void read_all(void* data, size_t n) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      ssize_t r = ::recv(fd_, p, n, 0);
      if (r <= 0) fail("ERR_DIST", "the rendezvous store closed the connection (rank 0 gone?)");
      p += r;
      n -= size_t(r);
    }
  }
  std::vector<char> request(char op, const std::string& key, const std::vector<char>& value) {
    std::lock_guard<std::mutex> lock(mutex_);
    uint32_t kl = htole32(uint32_t(key.size())), vl = htole32(uint32_t(value.size()));
    std::vector<char> frame;
    frame.push_back(op);
    frame.insert(frame.end(), reinterpret_cast<char*>(&kl), reinterpret_cast<char*>(&kl) + 4);
    frame.insert(frame.end(), key.begin(), key.end());
    frame.insert(frame.end(), reinterpret_cast<char*>(&vl), reinterpret_cast<char*>(&vl) + 4);
    frame.insert(frame.end(), value.begin(), value.end());
    write_all(frame.data(), frame.size());
    uint8_t status = 0;
    uint32_t len = 0;
    read_all(&status, 1);
    read_all(&len, 4);
    len = le32toh(len);
    std::vector<char> out(len);
    if (len) read_all(out.data(), len);
    if (status != 0) fail("ERR_DIST", "rendezvous store: " + std::string(out.begin(), out.end()));
    return out;
  }

  int fd_ = -1;
  std::mutex mutex_;
  std::string prefix_;
  int64_t timeout_ms_;
};

// Sums of bf16 vectors, rounded back to bf16 (the optional reduced-precision gradient wire).
void bf16_sum(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<uint16_t*>(c);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(bf16_to_float(x[i]) + bf16_to_float(y[i]));
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
      StoreClient store(options.store_host, options.store_port, options.token, options.prefix, options.timeout_ms);
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
      gloo::AllreduceOptions opts(impl->context);
      opts.setTimeout(std::chrono::milliseconds(timeout_ms));
      opts.setInput(buffers[0], size_t(total));
      opts.setOutput(buffers[0], size_t(total));
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      gloo::allreduce(opts);
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
    gloo::AllreduceOptions opts(impl->context);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    if (bf16_wire) {
      auto* p = reinterpret_cast<uint16_t*>(impl->staging.data());
      opts.setInput(p, size_t(total));
      opts.setOutput(p, size_t(total));
      opts.setReduceFunction(&bf16_sum);
    } else {
      auto* p = reinterpret_cast<float*>(impl->staging.data());
      opts.setInput(p, size_t(total));
      opts.setOutput(p, size_t(total));
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    }
    gloo::allreduce(opts);
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
    gloo::AllreduceOptions opts(impl->context);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    using Fn = void (*)(void*, const void*, const void*, size_t);
    if (dtype == DType::f32) {
      opts.setInput(static_cast<float*>(data), size_t(count));
      opts.setOutput(static_cast<float*>(data), size_t(count));
      opts.setReduceFunction(static_cast<Fn>(&gloo::sum<float>));
    } else if (dtype == DType::f64) {
      opts.setInput(static_cast<double*>(data), size_t(count));
      opts.setOutput(static_cast<double*>(data), size_t(count));
      opts.setReduceFunction(static_cast<Fn>(&gloo::sum<double>));
    } else {
      opts.setInput(static_cast<int32_t*>(data), size_t(count));
      opts.setOutput(static_cast<int32_t*>(data), size_t(count));
      opts.setReduceFunction(static_cast<Fn>(&gloo::sum<int32_t>));
    }
    gloo::allreduce(opts);
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

void Communicator::add_exposed(double ms) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.exposed_ms += ms;
}

CommStats Communicator::take_stats() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  CommStats s = impl_->stats;
  impl_->stats = CommStats{};
  return s;
}

}  // namespace kiln::dist

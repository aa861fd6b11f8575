// The peer for kiln's collective bandwidth: a minimal driver straight against libgloo (Debian's
// libgloo-dev ships no benchmark binary). Ring all-reduce (sum, f32) of the same buffer sizes
// over the same TCP transport on 127.0.0.1, rendezvous through a FileStore in a shared dir.
//
//   g++ -O2 -std=c++17 bench/peers/gloo_allreduce.cc -lgloo -pthread -o /tmp/gloo_allreduce
//   RANK=r WORLD_SIZE=2 /tmp/gloo_allreduce STORE_DIR BYTES REPEATS   (one process per rank)
//
// Prints one JSON line per rank: {"bytes", "medianMs", "algBandwidthGBs", "busBandwidthGBs"}
// (nccl-tests: algbw = S / t, busbw = algbw · 2(W−1)/W).
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: RANK=r WORLD_SIZE=n %s STORE_DIR BYTES REPEATS\n", argv[0]);
    return 2;
  }
  const int rank = std::atoi(std::getenv("RANK"));
  const int world = std::atoi(std::getenv("WORLD_SIZE"));
  const size_t bytes = std::strtoull(argv[2], nullptr, 10);
  const int repeats = std::atoi(argv[3]);
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore store(argv[1]);
  gloo::rendezvous::PrefixStore prefixed(std::to_string(bytes), store);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, world);
  context->connectFullMesh(prefixed, device);
  std::vector<float> buffer(bytes / 4);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = float(i % 97) * 0.01f + float(rank);
  std::vector<double> times;
  for (int r = 0; r < repeats + 2; ++r) {  // two warm-ups
    gloo::BarrierOptions barrier(context);
    gloo::barrier(barrier);
    auto start = std::chrono::steady_clock::now();
    gloo::AllreduceOptions opts(context);
    opts.setInput(buffer.data(), buffer.size());
    opts.setOutput(buffer.data(), buffer.size());
    opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    gloo::allreduce(opts);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (r >= 2) times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  double median = times[times.size() / 2];
  double alg = double(bytes) / (median / 1e3) / 1e9;
  std::printf("{\"rank\":%d,\"bytes\":%zu,\"medianMs\":%.4f,\"algBandwidthGBs\":%.4f,\"busBandwidthGBs\":%.4f}\n", rank, bytes, median, alg,
              alg * 2.0 * (world - 1) / world);
  return 0;
}

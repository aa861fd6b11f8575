// Collective communication between processes (data-parallel training), on Gloo's TCP transport.
//
// A Communicator joins `world_size` ranks through a small key-value store that rank 0's process
// hosts (lib/parallel/store.ts; the wire protocol is in communicator.cc), then runs collectives on
// its own thread, in the order they were issued. The op queue hands a collective over when the
// ops before it (those that produced its input) have run, and a later "wait" task blocks the
// queue only when an op needs the result, so communication overlaps every op in between.
//
// Every collective has a timeout; a failure (a peer gone, a timeout) is reported by the wait as
// a KilnException ERR_DIST naming this rank, the step and the collective.
//
// Built only with Gloo (KILN_WITH_GLOO); without it `gloo_available()` is false and creating a
// communicator with more than one rank fails with ERR_NO_GLOO.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtype.h"

namespace kiln::dist {

bool gloo_available();

struct CommOptions {
  int rank = 0;
  int world_size = 1;
  std::string store_host = "127.0.0.1";
  int store_port = 0;
  std::string token;         // sent to the store first; empty: none
  std::string prefix;        // key prefix of this run in the store
  std::string bind_host = "127.0.0.1";  // address Gloo's TCP transport listens on
  int64_t timeout_ms = 60000;
};

// Counters since the last take_stats(): time collectives ran on the communication thread,
// time the op queue sat blocked waiting for one (exposed), payload bytes, and the bytes this
// rank sent on the wire (the algorithm's count: ring all-reduce 2(W-1)/W·S, all-gather (W-1)/W·S).
struct CommStats {
  double comm_ms = 0;
  double exposed_ms = 0;
  uint64_t payload_bytes = 0;
  uint64_t wire_bytes = 0;
  uint64_t collectives = 0;
  double last_ms = 0;  // the most recent collective alone (benchmarks)
  // the path CUDA tensors took: "nccl", "gloo-staged" (through host memory), or empty while
  // no CUDA collective ran; kept across take_stats()
  std::string cuda_backend;
};

// The completion of one collective: the communication thread marks it done (or failed); wait()
// blocks until then and rethrows the failure.
class Work {
 public:
  void finish(std::string error);
  // Blocks; returns milliseconds spent blocked; throws KilnException ERR_DIST on failure.
  double wait();
  bool done();

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string error_;
};

class NcclCommunicator;  // nccl_comm.h

class Communicator {
 public:
  explicit Communicator(const CommOptions& options);  // connects (blocking): call off the JS thread
  ~Communicator();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

  // Each enqueues the collective on the communication thread and returns its completion.
  // `label` (e.g. "step 12 grad bucket 3") goes into error messages.
  // all-reduce over several f32 buffers at once, packed into one message (a gradient bucket);
  // average divides by the world size; bf16_wire reduces in bf16 (half the bytes, rounded sums).
  std::shared_ptr<Work> all_reduce(std::vector<float*> buffers, std::vector<int64_t> counts, bool average, bool bf16_wire,
                                   std::string label, std::vector<std::shared_ptr<void>> keep);
  // Raw all-reduce sum of `count` elements of `dtype` (f32, f64 or i32) in place.
  std::shared_ptr<Work> all_reduce_raw(void* data, int64_t count, DType dtype, bool average, std::string label,
                                       std::vector<std::shared_ptr<void>> keep);
  // In place: buffer holds world_size chunks of chunk_bytes; this rank's chunk is the input.
  std::shared_ptr<Work> all_gather(void* buffer, int64_t chunk_bytes, std::string label, std::vector<std::shared_ptr<void>> keep);
  std::shared_ptr<Work> broadcast(void* buffer, int64_t bytes, int root, std::string label, std::vector<std::shared_ptr<void>> keep);
  std::shared_ptr<Work> barrier(std::string label);

  // The NCCL communicator of CUDA device `device` (nccl_comm.h), created on first use. Creating
  // it is collective (each rank asks for its device at the same point of the run) and blocks:
  // call it on the op-queue worker. Its collectives count in take_stats().
  std::shared_ptr<NcclCommunicator> nccl(int device);
  void note_cuda_backend(const char* name);

  void add_exposed(double ms);
  CommStats take_stats();
  void close();

 private:
  struct Impl;
  std::shared_ptr<Work> submit(std::string label, std::function<void()> body, std::vector<std::shared_ptr<void>> keep);
  CommOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::dist

// Collectives on CUDA tensors through NCCL (loaded at run time, nccl.h). Written, compiled,
// unverified without GPUs: the binding refuses CUDA collectives unless KILN_CUDA_DIST=1.
//
// One NCCL communicator per (kiln Communicator, CUDA device), on a CUDA stream of its own.
// A collective is issued on the op-queue worker: an event recorded on the device's compute
// stream orders it after its producers, the NCCL calls go on the NCCL stream, and an event
// recorded after them marks the end. A watchdog thread polls those events in issue order and
// finishes each Work when its event completed; distWait's queue task blocks on the Work, so
// later compute is enqueued only after the collective finished. A collective still running
// `timeout_ms` after it started on the GPU, an NCCL call that blocks the queue worker that long
// (NCCL connecting to a peer that is gone), or an asynchronous NCCL error makes the watchdog
// call ncclCommAbort: that Work and every later one fail with ERR_DIST naming the rank and the
// step label, as the Gloo communicator's do.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "communicator.h"

namespace kiln::dist {

class NcclCommunicator {
 public:
  // Receives each finished collective: GPU milliseconds, payload bytes, bytes sent.
  using Record = std::function<void(double ms, uint64_t payload_bytes, uint64_t wire_bytes)>;

  // Collective: every rank creates the communicator of its device at the same point (the
  // `generation`-th one of its kiln Communicator). Blocks for the unique-id exchange through the
  // run's store and NCCL's own setup, both bounded by options.timeout_ms. Run on the op-queue
  // worker. Throws ERR_DIST (NCCL missing, a rank missing, an NCCL error), ERR_NO_CUDA without
  // CUDA.
  NcclCommunicator(const CommOptions& options, int device, int generation, Record record);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int device() const;

  // Each: called on the op-queue worker with `device` current; `compute_stream` is kiln's
  // stream of that device. In place. `keep` stays alive until the collective ended.
  // f32 buffers summed (average: mean); bf16_wire reduces a bf16 copy (needs NCCL >= 2.10).
  std::shared_ptr<Work> all_reduce(const std::vector<float*>& buffers, const std::vector<int64_t>& counts, bool average,
                                   bool bf16_wire, const std::string& label, std::vector<std::shared_ptr<void>> keep,
                                   void* compute_stream);
  // buffer: world_size chunks of chunk_bytes; this rank's chunk is the input.
  std::shared_ptr<Work> all_gather(void* buffer, int64_t chunk_bytes, const std::string& label,
                                   std::vector<std::shared_ptr<void>> keep, void* compute_stream);
  std::shared_ptr<Work> broadcast(void* buffer, int64_t bytes, int root, const std::string& label,
                                  std::vector<std::shared_ptr<void>> keep, void* compute_stream);

  // Waits for pending collectives (each bounded by the timeout), then frees the communicator.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::dist

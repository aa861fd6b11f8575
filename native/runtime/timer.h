// Device-side timestamps for benchmarks: a mark is recorded in queue order (a CUDA event on
// the device's stream, or a steady-clock reading on the CPU worker), so the time between two
// marks is the device time of the ops between them, without host launch overhead.
#pragma once
#include <chrono>
#include <memory>

#include "device.h"

namespace kiln {

class TimerMark {
 public:
  explicit TimerMark(Device device);
  ~TimerMark();
  TimerMark(const TimerMark&) = delete;
  TimerMark& operator=(const TimerMark&) = delete;

  Device device() const { return device_; }
  void record();  // on the worker, in queue order
  // Milliseconds from `start` to this mark; both recorded, same device. Blocks until done.
  double elapsed_since(const TimerMark& start) const;

 private:
  Device device_;
  void* event_ = nullptr;  // cudaEvent_t
  std::chrono::steady_clock::time_point cpu_time_{};
  bool recorded_ = false;
};

}  // namespace kiln

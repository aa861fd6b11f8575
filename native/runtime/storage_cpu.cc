// Host memory and the entry point of Storage::allocate (CUDA blocks come from cuda_runtime.cc).
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "device.h"
#include "error.h"

namespace kiln {

void* cuda_allocate(int device_index, size_t bytes);  // cuda_runtime.cc
void cuda_free(int device_index, void* ptr, size_t bytes);

namespace {
std::mutex cpu_stats_mutex;
MemoryStats cpu_stats;
// Sizes beyond this are refused before asking the OS: no machine kiln runs on has 1 PiB.
constexpr size_t kMaxAllocation = size_t(1) << 50;
}  // namespace

std::shared_ptr<Storage> Storage::allocate(Device device, size_t bytes) {
  if (bytes > kMaxAllocation) {
    fail("ERR_OOM", "cannot allocate " + std::to_string(bytes) + " bytes on " + device.name() + ": larger than any device");
  }
  size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  void* data = nullptr;
  if (device.is_cuda()) {
    data = cuda_allocate(device.index, rounded);
  } else {
    data = std::aligned_alloc(64, rounded);
    if (!data) fail("ERR_OOM", "out of host memory allocating " + std::to_string(bytes) + " bytes");
    std::lock_guard<std::mutex> lock(cpu_stats_mutex);
    cpu_stats.allocated += rounded;
    cpu_stats.reserved += rounded;
    cpu_stats.allocations += 1;
    cpu_stats.device_allocations += 1;
    if (cpu_stats.allocated > cpu_stats.peak_allocated) cpu_stats.peak_allocated = cpu_stats.allocated;
  }
  return std::shared_ptr<Storage>(new Storage(device, data, rounded));
}

Storage::~Storage() {
  if (device_.is_cuda()) {
    cuda_free(device_.index, data_, bytes_);
  } else {
    std::free(data_);
    std::lock_guard<std::mutex> lock(cpu_stats_mutex);
    cpu_stats.allocated -= bytes_;
    cpu_stats.reserved -= bytes_;
  }
}

MemoryStats cpu_memory_stats() {
  std::lock_guard<std::mutex> lock(cpu_stats_mutex);
  return cpu_stats;
}

void cpu_reset_peak_memory() {
  std::lock_guard<std::mutex> lock(cpu_stats_mutex);
  cpu_stats.peak_allocated = cpu_stats.allocated;
}

}  // namespace kiln

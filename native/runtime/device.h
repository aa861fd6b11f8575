// Devices, memory and CUDA streams. Everything CUDA-specific is behind this interface so the
// CPU-only build (no nvcc) compiles the same callers; without CUDA, cuda_device_count() is 0.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_archs.h"

namespace kiln {

enum class DeviceType : int32_t { cpu = 0, cuda = 1 };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device& o) const { return type == o.type && (type == DeviceType::cpu || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string name() const { return is_cuda() ? "cuda:" + std::to_string(index) : "cpu"; }
};

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;
  int memory_clock_khz = 0;
  int memory_bus_width_bits = 0;
  int clock_khz = 0;
  size_t l2_bytes = 0;
  size_t shared_memory_per_block_optin = 0;
  size_t shared_memory_per_multiprocessor = 0;
  ArchCoverage kernels;  // can this build's architectures run on it (cuda_archs.h)
};

struct BuildInfo {
  bool cuda_compiled = false;
  std::string cuda_version;     // of the toolkit the addon was built with
  std::string cuda_archs;       // CMake architecture list
  int cuda_runtime_version = 0;
  int cuda_driver_version = 0;  // 0 when no driver is installed
  std::string cuda_status;      // why there are no devices, if there are none
};

BuildInfo build_info();
int cuda_device_count();  // 0 without CUDA, without a driver or without a GPU
CudaDeviceInfo cuda_device_info(int index);

// A block of device memory. CPU blocks come from aligned malloc, CUDA blocks from the caching
// allocator; the destructor returns them. Storage is shared (shared_ptr) by every tensor view
// and by every queued task that reads or writes it, so memory outlives pending work.
class Storage {
 public:
  static std::shared_ptr<Storage> allocate(Device device, size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Storage(Device device, void* data, size_t bytes) : device_(device), data_(data), bytes_(bytes) {}
  Device device_;
  void* data_;
  size_t bytes_;
};

struct MemoryStats {
  uint64_t allocated = 0;       // bytes held by live tensors
  uint64_t reserved = 0;        // bytes obtained from the device (allocated + cached)
  uint64_t peak_allocated = 0;  // high-water mark of allocated since the last reset
  uint64_t allocations = 0;     // allocation requests served
  uint64_t device_allocations = 0;  // of which went to cudaMalloc (cache misses)
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
void empty_cache(Device device);  // return cached, unused blocks to the driver

// The one CUDA stream kiln uses per device (created on first use). All CUDA ops of a device
// are issued on it in program order, which makes the caching allocator's reuse safe.
void* cuda_stream(int device_index);  // cudaStream_t, typed void* to keep CUDA out of callers
void cuda_set_device(int device_index);
void cuda_synchronize(int device_index);
void cuda_memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace kiln

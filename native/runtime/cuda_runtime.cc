// CUDA side of the runtime: device queries, one stream per device, and the caching allocator.
// Compiled in every build; without KILN_WITH_CUDA every entry reports "no CUDA".
//
// Caching allocator: freed blocks go to a per-device free list keyed by size and are reused by
// later requests of similar size, so a steady-state training step never calls cudaMalloc.
// Reuse is safe without events because every op of a device runs on that device's one stream in
// program order: a block freed after an op was enqueued can only be written by ops enqueued
// later. Sizes round to 512 B below 1 MiB and to 2 MiB above, to keep the free lists reusable.
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_archs.h"
#include "device.h"
#include "device_error.h"
#include "error.h"

#if KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace kiln {

MemoryStats cpu_memory_stats();  // storage_cpu.cc
void cpu_reset_peak_memory();

#if KILN_WITH_CUDA

namespace {

struct DeviceState {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;        // size -> pointer, cached
  std::unordered_map<void*, size_t> block_sizes;   // every block this allocator owns
  MemoryStats stats;
  cudaStream_t stream = nullptr;
  DeviceErrorRecord* error_record = nullptr;  // device memory, see device_error.h
  DeviceErrorRecord* error_host = nullptr;    // pinned copy read back at each wait
  ArchCoverage kernels;  // whether this build's architectures run on the device (cuda_archs.h)
};

struct CudaState {
  std::once_flag count_once;
  int count = 0;
  std::string status;
  std::vector<DeviceState*> devices;  // leaked at exit on purpose: the driver may already be gone
};

CudaState& state() {
  static CudaState* s = new CudaState();
  return *s;
}

std::string built_archs() {
#ifdef KILN_CUDA_ARCHS
  return KILN_CUDA_ARCHS;
#else
  return "";
#endif
}

void ensure_counted() {
  CudaState& s = state();
  std::call_once(s.count_once, [&] {
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      s.count = 0;
      s.status = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    } else {
      s.count = count;
      s.status = count > 0 ? "ok" : "no CUDA device";
    }
    for (int i = 0; i < s.count; ++i) {
      DeviceState* d = new DeviceState();
      int major = 0, minor = 0;
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
      (void)cudaGetLastError();
      d->kernels = cuda_arch_coverage(major, minor, built_archs());
      s.devices.push_back(d);
    }
  });
}

DeviceState& device_state(int index) {
  ensure_counted();
  CudaState& s = state();
  if (index < 0 || index >= s.count) {
    fail(s.count == 0 ? "ERR_NO_CUDA" : "ERR_DEVICE",
         s.count == 0 ? "no CUDA device is available (" + s.status + ")"
                      : "cuda:" + std::to_string(index) + " does not exist (" + std::to_string(s.count) + " CUDA devices)");
  }
  return *s.devices[index];
}

// A device this build can launch kernels on. Every kernel works on device memory, so checking
// at allocation (and cudaSetDevice) makes a build without code for the GPU a clear error before
// any launch, while synchronize() and memory statistics still work.
DeviceState& usable_device_state(int index) {
  DeviceState& d = device_state(index);
  if (!d.kernels.covered) {
    fail("ERR_NO_CUDA", "cuda:" + std::to_string(index) + " cannot run this build's CUDA kernels: " + d.kernels.via +
                            ". Rebuild for the GPUs present with `KILN_FORCE_BUILD=1 npm rebuild kiln` (or set "
                            "KILN_CUDA_ARCHS), or use the CPU");
  }
  return d;
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    fail("ERR_CUDA", std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

size_t round_block(size_t bytes) {
  constexpr size_t small = 512, large = size_t(2) << 20;
  return bytes <= (size_t(1) << 20) ? (bytes + small - 1) / small * small : (bytes + large - 1) / large * large;
}

void release_cached(DeviceState& d) {  // caller holds d.mutex and has set the device
  for (auto& [size, ptr] : d.free_blocks) {
    cudaFree(ptr);
    d.block_sizes.erase(ptr);
    d.stats.reserved -= size;
  }
  d.free_blocks.clear();
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.cuda_compiled = true;
  info.cuda_version = std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
#ifdef KILN_CUDA_ARCHS
  info.cuda_archs = KILN_CUDA_ARCHS;
#endif
  cudaRuntimeGetVersion(&info.cuda_runtime_version);
  if (cudaDriverGetVersion(&info.cuda_driver_version) != cudaSuccess) info.cuda_driver_version = 0;
  ensure_counted();
  info.cuda_status = state().status;
  return info;
}

int cuda_device_count() {
  ensure_counted();
  return state().count;
}

CudaDeviceInfo cuda_device_info(int index) {
  device_state(index);
  CudaDeviceInfo info;
  info.index = index;
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  info.memory_bus_width_bits = prop.memoryBusWidth;
  info.l2_bytes = size_t(prop.l2CacheSize);
  info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  info.shared_memory_per_multiprocessor = prop.sharedMemPerMultiprocessor;
  int value = 0;
  if (cudaDeviceGetAttribute(&value, cudaDevAttrMemoryClockRate, index) == cudaSuccess) info.memory_clock_khz = value;
  if (cudaDeviceGetAttribute(&value, cudaDevAttrClockRate, index) == cudaSuccess) info.clock_khz = value;
  (void)cudaGetLastError();
  info.kernels = device_state(index).kernels;
  return info;
}

void cuda_set_device(int index) {
  usable_device_state(index);
  check(cudaSetDevice(index), "cudaSetDevice");
}

void* cuda_stream(int index) {
  DeviceState& d = device_state(index);
  std::lock_guard<std::mutex> lock(d.mutex);
  if (!d.stream) {
    check(cudaSetDevice(index), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&d.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  return d.stream;
}

DeviceErrorRecord* cuda_device_error_record(int index) {
  DeviceState& d = device_state(index);
  std::lock_guard<std::mutex> lock(d.mutex);
  if (!d.error_record) {
    int previous = 0;
    check(cudaGetDevice(&previous), "cudaGetDevice");
    check(cudaSetDevice(index), "cudaSetDevice");
    void* record = nullptr;
    void* host = nullptr;
    check(cudaMalloc(&record, sizeof(DeviceErrorRecord)), "cudaMalloc (device error record)");
    check(cudaMemset(record, 0, sizeof(DeviceErrorRecord)), "cudaMemset (device error record)");
    check(cudaMallocHost(&host, sizeof(DeviceErrorRecord)), "cudaMallocHost (device error record)");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    d.error_host = static_cast<DeviceErrorRecord*>(host);
    d.error_record = static_cast<DeviceErrorRecord*>(record);
    check(cudaSetDevice(previous), "cudaSetDevice");
  }
  return d.error_record;
}

namespace {

// Waits for the stream; then, if a kernel of this device reported an argument error (only
// once some op asked for the record), clears the record and throws it as ERR_ARG.
void synchronize_and_report(int index, cudaStream_t stream) {
  DeviceState& d = device_state(index);
  DeviceErrorRecord* record = nullptr;
  {
    std::lock_guard<std::mutex> lock(d.mutex);
    record = d.error_record;
  }
  if (record) check(cudaMemcpyAsync(d.error_host, record, sizeof(DeviceErrorRecord), cudaMemcpyDeviceToHost, stream),
                    "cudaMemcpyAsync (device error record)");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  if (record && d.error_host->kind != kDeviceErrorNone) {
    const std::string message = describe_device_error(*d.error_host);
    d.error_host->kind = kDeviceErrorNone;
    check(cudaMemsetAsync(record, 0, sizeof(DeviceErrorRecord), stream), "cudaMemsetAsync (device error record)");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    fail("ERR_ARG", message);
  }
}

}  // namespace

void cuda_synchronize(int index) {
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream(index));
  check(cudaSetDevice(index), "cudaSetDevice");
  synchronize_and_report(index, stream);
}

void* cuda_allocate(int index, size_t bytes) {
  DeviceState& d = usable_device_state(index);
  size_t size = round_block(bytes);
  std::lock_guard<std::mutex> lock(d.mutex);
  d.stats.allocations += 1;
  // Best fit among cached blocks; accept at most 2x waste for small blocks, 2 MiB for large.
  auto it = d.free_blocks.lower_bound(size);
  size_t waste_limit = size <= (size_t(1) << 20) ? size : size_t(2) << 20;
  void* ptr = nullptr;
  if (it != d.free_blocks.end() && it->first - size <= waste_limit) {
    ptr = it->second;
    size = it->first;
    d.free_blocks.erase(it);
  } else {
    check(cudaSetDevice(index), "cudaSetDevice");
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation && !d.free_blocks.empty()) {
      (void)cudaGetLastError();
      release_cached(d);
      status = cudaMalloc(&ptr, size);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      (void)cudaGetLastError();
      fail(status == cudaErrorMemoryAllocation ? "ERR_OOM" : "ERR_CUDA",
           "cannot allocate " + std::to_string(bytes) + " bytes on cuda:" + std::to_string(index) + " (" +
               cudaGetErrorName(status) + "; kiln holds " + std::to_string(d.stats.allocated) + " bytes, device has " +
               std::to_string(free_bytes) + " of " + std::to_string(total_bytes) + " bytes free)");
    }
    d.block_sizes[ptr] = size;
    d.stats.reserved += size;
    d.stats.device_allocations += 1;
  }
  d.stats.allocated += size;
  if (d.stats.allocated > d.stats.peak_allocated) d.stats.peak_allocated = d.stats.allocated;
  return ptr;
}

void cuda_free(int index, void* ptr, size_t) {
  DeviceState& d = *state().devices[index];
  std::lock_guard<std::mutex> lock(d.mutex);
  auto it = d.block_sizes.find(ptr);
  if (it == d.block_sizes.end()) return;  // not ours: never happens, but never cudaFree a stranger
  d.stats.allocated -= it->second;
  d.free_blocks.emplace(it->second, ptr);
}

void cuda_memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  int index = dst_device.is_cuda() ? dst_device.index : src_device.index;
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream(index));
  check(cudaSetDevice(index), "cudaSetDevice");
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Peer copy on the destination's stream, ordered both ways with the source's stream by
    // events (no host wait): it starts after the source's pending work (which may still be
    // writing src), and the source stream's later work waits for it to finish reading src, so
    // the caching allocator may hand src's block to the next op of the source device at once.
    cudaStream_t src_stream = static_cast<cudaStream_t>(cuda_stream(src_device.index));
    cudaEvent_t src_ready = nullptr, copy_done = nullptr;
    check(cudaSetDevice(src_device.index), "cudaSetDevice");
    check(cudaEventCreateWithFlags(&src_ready, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventRecord(src_ready, src_stream), "cudaEventRecord");
    check(cudaSetDevice(index), "cudaSetDevice");
    check(cudaEventCreateWithFlags(&copy_done, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaStreamWaitEvent(stream, src_ready, 0), "cudaStreamWaitEvent");
    check(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream), "cudaMemcpyPeerAsync");
    check(cudaEventRecord(copy_done, stream), "cudaEventRecord");
    check(cudaSetDevice(src_device.index), "cudaSetDevice");
    check(cudaStreamWaitEvent(src_stream, copy_done, 0), "cudaStreamWaitEvent");
    // Destroying a recorded event is safe: its resources go once the work completes.
    check(cudaEventDestroy(src_ready), "cudaEventDestroy");
    check(cudaSetDevice(index), "cudaSetDevice");
    check(cudaEventDestroy(copy_done), "cudaEventDestroy");
    return;
  }
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), "cudaMemcpyAsync");
  // Device-to-host copies are read right after by the caller (and are a wait: kernels' argument
  // errors are reported here); host-to-device copies from pageable memory return once staged,
  // so the caller may free its buffer.
  if (!dst_device.is_cuda()) synchronize_and_report(index, stream);
}

MemoryStats memory_stats(Device device) {
  if (!device.is_cuda()) return cpu_memory_stats();
  DeviceState& d = device_state(device.index);
  std::lock_guard<std::mutex> lock(d.mutex);
  return d.stats;
}

void reset_peak_memory(Device device) {
  if (!device.is_cuda()) return cpu_reset_peak_memory();
  DeviceState& d = device_state(device.index);
  std::lock_guard<std::mutex> lock(d.mutex);
  d.stats.peak_allocated = d.stats.allocated;
}

void empty_cache(Device device) {
  if (!device.is_cuda()) return;
  DeviceState& d = device_state(device.index);
  cuda_synchronize(device.index);
  std::lock_guard<std::mutex> lock(d.mutex);
  release_cached(d);
}

#else  // no CUDA compiled in

namespace {
[[noreturn]] void no_cuda() { fail("ERR_NO_CUDA", "kiln was built without CUDA (at install there was no nvcc or no GPU; `KILN_CUDA=1 KILN_FORCE_BUILD=1 npm rebuild kiln` builds it)"); }
}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.cuda_status = "built without CUDA";
  return info;
}
int cuda_device_count() { return 0; }
CudaDeviceInfo cuda_device_info(int) { no_cuda(); }
void cuda_set_device(int) { no_cuda(); }
void* cuda_stream(int) { no_cuda(); }
void cuda_synchronize(int) { no_cuda(); }
void* cuda_allocate(int, size_t) { no_cuda(); }
void cuda_free(int, void*, size_t) {}
void cuda_memcpy(void*, Device, const void*, Device, size_t) { no_cuda(); }
DeviceErrorRecord* cuda_device_error_record(int) { no_cuda(); }
MemoryStats memory_stats(Device device) {
  if (device.is_cuda()) no_cuda();
  return cpu_memory_stats();
}
void reset_peak_memory(Device device) {
  if (device.is_cuda()) no_cuda();
  cpu_reset_peak_memory();
}
void empty_cache(Device device) {
  if (device.is_cuda()) no_cuda();
}

#endif

}  // namespace kiln

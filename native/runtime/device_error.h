// Argument errors that only a kernel can see (values inside device tensors: decode lengths,
// block tables), reported without a host sync on the hot path.
//
// Each CUDA device has one DeviceErrorRecord in device memory (cuda_device_error_record). A
// kernel that finds a bad value clamps (never reads or writes out of bounds) and claims the
// record with atomicCAS on `kind`, so the first error wins. The next wait on that device
// (synchronize, a device-to-host read) copies the record back with the stream's work, clears
// it and throws KilnException ERR_ARG with describe_device_error's message: the same code and
// the same point (the next wait) at which the CPU op's in-task check reports the error.
#pragma once
#include <cstdint>
#include <string>

namespace kiln {

enum DeviceErrorKind : int32_t {
  kDeviceErrorNone = 0,
  kDecodeSeqLen = 1,     // attention_decode: seq_lens[b] outside [1, capacity]
  kDecodeBlockId = 2,    // attention_decode: block_table[b, index] outside [0, num_blocks)
  kAppendPosition = 3,   // kv_append: token position start[b] + t outside [0, capacity)
  kAppendBlockId = 4,    // kv_append: block_table[b, index] outside [0, num_blocks)
};

struct DeviceErrorRecord {
  int32_t kind;   // DeviceErrorKind; 0 = no error
  int32_t b;      // sequence
  int64_t index;  // logical block (block ids) or position
  int64_t value;  // the bad value
  int64_t limit;  // capacity or num_blocks
};

inline std::string describe_device_error(const DeviceErrorRecord& r) {
  const std::string b = std::to_string(r.b), index = std::to_string(r.index), value = std::to_string(r.value),
                    limit = std::to_string(r.limit);
  switch (r.kind) {
    case kDecodeSeqLen:
      return "attention_decode: seq_lens[" + b + "] = " + value + " is outside [1, " + limit + "]";
    case kDecodeBlockId:
      return "attention_decode: block_table[" + b + ", " + index + "] = " + value + " is outside [0, " + limit + ")";
    case kAppendPosition:
      return "kv_append: token position " + value + " of sequence " + b + " does not fit the block table (capacity " +
             limit + ")";
    case kAppendBlockId:
      return "kv_append: block_table[" + b + ", " + index + "] = " + value + " is outside [0, " + limit + ")";
    default:
      return "a kernel reported an unknown argument error (kind " + std::to_string(r.kind) + ")";
  }
}

// Device pointer to `device`'s record (allocated and zeroed on first use; the current device
// is left as it was). Throws ERR_NO_CUDA without CUDA.
DeviceErrorRecord* cuda_device_error_record(int device);

}  // namespace kiln

#if defined(__CUDACC__)
namespace kiln {
// Claims the record for the first error; later errors (same kernel or later ones) are dropped
// until the host has reported and cleared it.
__device__ __forceinline__ void report_device_error(DeviceErrorRecord* record, int32_t kind, int32_t b, int64_t index,
                                                    int64_t value, int64_t limit) {
  if (record == nullptr) return;
  if (atomicCAS(reinterpret_cast<int*>(&record->kind), 0, int(kind)) == 0) {
    record->b = b;
    record->index = index;
    record->value = value;
    record->limit = limit;
  }
}
}  // namespace kiln
#endif

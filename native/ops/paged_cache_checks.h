// What makes a paged-KV-cache value valid, shared by the CPU ops (ops/cpu/kv_cache.cc: checked
// for every sequence before anything is written, ERR_ARG) and the CUDA kernels
// (ops/cuda/attention/decode.cu, kv_cache.cu: checked where the value is read, the access
// clamped or skipped, the error reported through runtime/device_error.h). Both devices use these
// predicates and describe_device_error's messages, so they accept and refuse the same inputs.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif

namespace kiln {

// attention_decode: a sequence has 1..capacity tokens (capacity = max_blocks * block_size).
KILN_HOST_DEVICE inline bool decode_seq_len_valid(int64_t len, int64_t capacity) { return len >= 1 && len <= capacity; }

// A physical block id read from a block table.
KILN_HOST_DEVICE inline bool block_id_valid(int64_t id, int64_t num_blocks) { return id >= 0 && id < num_blocks; }

// kv_append: a token position inside the block table.
KILN_HOST_DEVICE inline bool append_position_valid(int64_t position, int64_t capacity) {
  return position >= 0 && position < capacity;
}

}  // namespace kiln

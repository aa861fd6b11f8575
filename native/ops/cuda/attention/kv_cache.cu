// Paged KV-cache append on the GPU (contract: ops/attention.h).
//
//   k_cache, v_cache: (num_blocks, block_size, Hkv, D)   block_table: (B, max_blocks) i32
//   k_new, v_new: (B, Tnew, Hkv, D)   start: (B) i32
//   for t < Tnew: token p = start[b] + t goes to block block_table[b, p / block_size], slot
//   p % block_size:  cache[block, slot, h, :] = new[b, t, h, :]  (=; other slots untouched).
// One thread per 16-byte chunk of a (b, t, h) row, K and V both. The host cannot read start and
// the table without a sync, so they are checked here with the CPU op's rules
// (paged_cache_checks.h): a position outside the table or a block id outside [0, num_blocks) is
// skipped (nothing out of bounds is written) and reported as ERR_ARG at the next wait
// (runtime/device_error.h).
#include <algorithm>
#include <cmath>
#include <string>

#include "../../../runtime/device_error.h"
#include "../../paged_cache_checks.h"
#include "attention_cuda.h"
#include "flash_common.cuh"

namespace kiln {
namespace {

struct AppendArgs {
  uint4* k_cache;
  uint4* v_cache;
  const uint4* k_new;
  const uint4* v_new;
  const int32_t* block_table;
  const int32_t* start;
  DeviceErrorRecord* error;
  int64_t total_chunks;  // B * Tnew * Hkv * chunks_per_row
  int Tnew, Hkv, chunks_per_row, block_size, max_blocks, num_blocks;
};

__global__ void kv_append_kernel(const AppendArgs a) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < a.total_chunks;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(i % a.chunks_per_row);
    const int64_t r = i / a.chunks_per_row;  // (b * Tnew + t) * Hkv + h
    const int h = int(r % a.Hkv);
    const int64_t bt = r / a.Hkv;
    const int t = int(bt % a.Tnew);
    const int b = int(bt / a.Tnew);
    const int64_t pos = int64_t(a.start[b]) + t;
    const int64_t capacity = int64_t(a.max_blocks) * a.block_size;
    if (!append_position_valid(pos, capacity)) {
      if (h == 0 && c == 0) report_device_error(a.error, kAppendPosition, b, pos, pos, capacity);
      continue;
    }
    const int64_t logical = pos / a.block_size;
    const int phys = a.block_table[int64_t(b) * a.max_blocks + logical];
    if (!block_id_valid(phys, a.num_blocks)) {
      if (h == 0 && c == 0) report_device_error(a.error, kAppendBlockId, b, logical, phys, a.num_blocks);
      continue;
    }
    const int64_t dst = ((int64_t(phys) * a.block_size + pos % a.block_size) * a.Hkv + h) * a.chunks_per_row + c;
    a.k_cache[dst] = a.k_new[i];
    a.v_cache[dst] = a.v_new[i];
  }
}

}  // namespace

void kv_append_cuda_validate(const KvAppendParams& p) {
  const char* op = "kv_append_cuda";
  check(p.dtype == DType::f32 || p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string(op) + ": dtype must be f32, bf16 or f16, got " + dtype_name(p.dtype));
  check(p.B >= 0 && p.Tnew >= 0 && p.Hkv >= 1 && p.D >= 1 && p.block_size >= 1 && p.max_blocks >= 0 &&
            p.num_blocks >= 0,
        "ERR_SHAPE", std::string(op) + ": bad shape");
  const int64_t row_bytes = p.D * int64_t(dtype_size(p.dtype));
  check(row_bytes % 16 == 0, "ERR_ARG", std::string(op) + ": D * dtype size must be a multiple of 16 bytes");
  check(p.num_blocks < (int64_t(1) << 31) && p.max_blocks < (int64_t(1) << 31) && p.Tnew < (int64_t(1) << 31),
        "ERR_SHAPE", std::string(op) + ": shape too large");
  if (p.B == 0 || p.Tnew == 0) return;
  attn_host::check_aligned16(p.k_cache, op, "k_cache");
  attn_host::check_aligned16(p.v_cache, op, "v_cache");
  attn_host::check_aligned16(p.k_new, op, "k_new");
  attn_host::check_aligned16(p.v_new, op, "v_new");
  check(p.block_table != nullptr && p.start != nullptr, "ERR_ARG", std::string(op) + ": null block_table/start");
}

void kv_append_cuda(const KvAppendParams& p, cudaStream_t stream) {
  kv_append_cuda_validate(p);
  if (p.B == 0 || p.Tnew == 0) return;
  const int64_t row_bytes = p.D * int64_t(dtype_size(p.dtype));
  AppendArgs a;
  a.k_cache = static_cast<uint4*>(p.k_cache);
  a.v_cache = static_cast<uint4*>(p.v_cache);
  a.k_new = static_cast<const uint4*>(p.k_new);
  a.v_new = static_cast<const uint4*>(p.v_new);
  a.block_table = p.block_table;
  a.start = p.start;
  a.chunks_per_row = int(row_bytes / 16);
  a.total_chunks = p.B * p.Tnew * p.Hkv * a.chunks_per_row;
  a.Tnew = int(p.Tnew);
  a.Hkv = int(p.Hkv);
  a.block_size = int(p.block_size);
  a.max_blocks = int(p.max_blocks);
  a.num_blocks = int(p.num_blocks);
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  a.error = cuda_device_error_record(device);
  const int blocks = int(std::min<int64_t>((a.total_chunks + 255) / 256, 8192));
  kv_append_kernel<<<blocks, 256, 0, stream>>>(a);
  cuda_check_launch("kv_append_kernel");
}

}  // namespace kiln

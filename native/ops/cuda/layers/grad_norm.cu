// Gradient norm over a list of tensors, and clipping by it, on CUDA (contract: ops/layers.h).
//   norm = sqrt(Σ_tensors Σ_j x_j²);  clip: x_j *= min(1, max_norm / (norm + 1e-6))  (in place)
// Deterministic: every tensor is cut into fixed 16K-element chunks, one block per chunk writes
// its f32 sum of squares to its own workspace slot, then one block adds the slots in a fixed
// order (f64 per thread, fixed tree) and writes the f32 norm. Tensors travel to the kernels in
// a by-value table of up to kMaxTensors entries per launch (longer lists take several launches).
// The clip kernel reads the norm from device memory: no host synchronization anywhere.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../../layers.h"
#include "../common.cuh"
#include "storage.cuh"

namespace kiln {
namespace {
using namespace layers_cuda;

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// Fixed shuffle tree: deterministic. `scratch` holds 32 floats; reusable after the call returns.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  x = warp_sum(x);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(x);
}

constexpr int64_t kChunk = int64_t(1) << 14;  // elements per block; must match grad_norm_workspace_bytes
constexpr int kThreads = 256;
constexpr int kMaxTensors = 48;               // table stays ~1.5 KB of kernel parameters

struct ChunkTable {
  void* data[kMaxTensors];
  int64_t numel[kMaxTensors];
  int64_t first_chunk[kMaxTensors + 1];  // chunk index (within this launch) where tensor k starts
  int32_t dtype[kMaxTensors];
  int32_t count;
};

__device__ __forceinline__ int find_tensor(const ChunkTable& table, int64_t chunk) {
  int k = 0;
  while (k + 1 < table.count && chunk >= table.first_chunk[k + 1]) ++k;
  return k;
}

template <class T>
__device__ float chunk_sum_squares(const T* x, int64_t n) {
  float sum = 0.0f;
  constexpr int w = Vec16<T>::n;
  if (n == kChunk && aligned16(x)) {
    for (int64_t j = int64_t(threadIdx.x) * w; j < n; j += int64_t(blockDim.x) * w) {
      const Vec16<T> v = load_vec(x + j);
#pragma unroll
      for (int k = 0; k < w; ++k) sum += to_f32(v.v[k]) * to_f32(v.v[k]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += to_f32(x[j]) * to_f32(x[j]);
  }
  return sum;
}

__global__ void __launch_bounds__(kThreads) grad_norm_partial_kernel(float* __restrict__ partial, ChunkTable table) {
  __shared__ float scratch[32];
  const int k = find_tensor(table, blockIdx.x);
  const int64_t begin = (int64_t(blockIdx.x) - table.first_chunk[k]) * kChunk;
  const int64_t n = min(kChunk, table.numel[k] - begin);
  float sum;
  switch (DType(table.dtype[k])) {
    case DType::bf16: sum = chunk_sum_squares(static_cast<const __nv_bfloat16*>(table.data[k]) + begin, n); break;
    case DType::f16: sum = chunk_sum_squares(static_cast<const __half*>(table.data[k]) + begin, n); break;
    default: sum = chunk_sum_squares(static_cast<const float*>(table.data[k]) + begin, n); break;
  }
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block of 1024 threads: thread t adds slots t, t+1024, ... in f64, then a fixed tree.
__global__ void __launch_bounds__(1024) grad_norm_final_kernel(float* __restrict__ norm, const float* __restrict__ partial,
                                                               int64_t slots) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < slots; j += blockDim.x) sum += double(partial[j]);
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = scratch[threadIdx.x];
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (threadIdx.x == 0) *norm = float(sqrt(sum));
  }
}

template <class T>
__device__ void scale_chunk(T* x, int64_t n, float s) {
  constexpr int w = Vec16<T>::n;
  if (n == kChunk && aligned16(x)) {
    for (int64_t j = int64_t(threadIdx.x) * w; j < n; j += int64_t(blockDim.x) * w) {
      Vec16<T> v = load_vec(x + j);
#pragma unroll
      for (int k = 0; k < w; ++k) v.v[k] = from_f32<T>(to_f32(v.v[k]) * s);
      store_vec(x + j, v);
    }
  } else {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) x[j] = from_f32<T>(to_f32(x[j]) * s);
  }
}

__global__ void __launch_bounds__(kThreads) grad_clip_kernel(ChunkTable table, const float* __restrict__ norm, float max_norm) {
  const float s = fminf(1.0f, max_norm / (*norm + 1e-6f));
  if (!(s < 1.0f)) return;  // nothing to scale (a NaN norm also lands here: fminf drops the NaN)
  const int k = find_tensor(table, blockIdx.x);
  const int64_t begin = (int64_t(blockIdx.x) - table.first_chunk[k]) * kChunk;
  const int64_t n = min(kChunk, table.numel[k] - begin);
  switch (DType(table.dtype[k])) {
    case DType::bf16: scale_chunk(static_cast<__nv_bfloat16*>(table.data[k]) + begin, n, s); break;
    case DType::f16: scale_chunk(static_cast<__half*>(table.data[k]) + begin, n, s); break;
    default: scale_chunk(static_cast<float*>(table.data[k]) + begin, n, s); break;
  }
}

void check_list(const TensorSpan* tensors, int64_t count, const char* op) {
  check(count >= 0 && (count == 0 || tensors), "ERR_ARG", std::string(op) + ": bad tensor list");
  for (int64_t k = 0; k < count; ++k) {
    check(tensors[k].numel >= 0, "ERR_SHAPE", std::string(op) + ": negative numel");
    check(tensors[k].numel == 0 || tensors[k].data, "ERR_ARG", std::string(op) + ": null tensor");
    const DType t = tensors[k].dtype;
    check(t == DType::f32 || t == DType::bf16 || t == DType::f16, "ERR_DTYPE",
          std::string(op) + " on CUDA takes f32, bf16 or f16 tensors, got " + dtype_name(t));
  }
}

// Calls launch(table, chunks_in_table, chunk_offset) for consecutive groups of non-empty tensors.
template <class Launch>
void for_each_table(const TensorSpan* tensors, int64_t count, Launch&& launch) {
  ChunkTable table{};
  int64_t chunks = 0, offset = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    launch(table, chunks, offset);
    offset += chunks;
    chunks = 0;
    table = ChunkTable{};
  };
  for (int64_t k = 0; k < count; ++k) {
    if (tensors[k].numel == 0) continue;
    const int64_t c = (tensors[k].numel + kChunk - 1) / kChunk;
    if (table.count == kMaxTensors || chunks + c > int64_t(1) << 30) flush();
    table.data[table.count] = tensors[k].data;
    table.numel[table.count] = tensors[k].numel;
    table.dtype[table.count] = int32_t(tensors[k].dtype);
    table.first_chunk[table.count] = chunks;
    chunks += c;
    table.count++;
    table.first_chunk[table.count] = chunks;
  }
  flush();
}

}  // namespace

void grad_norm_cuda(float* norm, const TensorSpan* tensors, int64_t count, void* workspace, size_t workspace_bytes,
                    cudaStream_t stream) {
  check_list(tensors, count, "grad_norm");
  check(norm != nullptr, "ERR_ARG", "grad_norm: null norm pointer");
  const size_t need = grad_norm_workspace_bytes(tensors, count);
  check(workspace && workspace_bytes >= need, "ERR_ARG", "grad_norm: needs " + std::to_string(need) + " bytes of workspace");
  float* partial = static_cast<float*>(workspace);
  int64_t slots = 0;
  for_each_table(tensors, count, [&](const ChunkTable& table, int64_t chunks, int64_t offset) {
    grad_norm_partial_kernel<<<unsigned(chunks), kThreads, 0, stream>>>(partial + offset, table);
    cuda_check_launch("grad_norm_partial_kernel");
    slots = offset + chunks;
  });
  grad_norm_final_kernel<<<1, 1024, 0, stream>>>(norm, partial, slots);  // slots = 0 -> norm 0
  cuda_check_launch("grad_norm_final_kernel");
}

void grad_clip_cuda(const TensorSpan* tensors, int64_t count, const float* norm, double max_norm, cudaStream_t stream) {
  check_list(tensors, count, "grad_clip");
  check(norm != nullptr, "ERR_ARG", "grad_clip: null norm pointer");
  for_each_table(tensors, count, [&](const ChunkTable& table, int64_t chunks, int64_t) {
    grad_clip_kernel<<<unsigned(chunks), kThreads, 0, stream>>>(table, norm, float(max_norm));
    cuda_check_launch("grad_clip_kernel");
  });
}

}  // namespace kiln

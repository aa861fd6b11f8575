// Fused multi-tensor optimizer kernels on CUDA (contract and math: ops/optimizer.h).
//
// Every op is ONE launch over a whole list of tensors, after apex/PyTorch multi_tensor_apply:
// each tensor is cut into kMultiTensorChunk-element chunks, grid.x enumerates the chunks of all
// tensors, and each block finds its tensor by binary search over a device-side descriptor array
// (pointers, numel, first chunk, per-tensor scale) that the launcher copies into the workspace.
// Loads are coalesced scalar loads with 4 independent elements in flight per thread (no
// alignment requirement). The sum of squares adds a tiny second launch that reduces the
// per-chunk partials in a fixed order (deterministic, no atomics).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../../optimizer.h"
#include "../common.cuh"

namespace kiln {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

struct DeviceTensor {
  void* ptr[4];         // op-specific roles (see each kernel)
  int64_t numel;
  int64_t first_chunk;  // prefix sum of the chunk counts of the tensors before this one
  float scale;          // Muon apply's per-tensor scale
  float pad_;
};

// Host: descriptors + total chunk count. The device copy lives at the start of the workspace.
struct Table {
  std::vector<DeviceTensor> tensors;
  int64_t chunks = 0;
  void add(void* p0, void* p1, void* p2, void* p3, int64_t numel, float scale) {
    DeviceTensor d{{p0, p1, p2, p3}, numel, chunks, scale, 0.f};
    tensors.push_back(d);
    chunks += (numel + kMultiTensorChunk - 1) / kMultiTensorChunk;
  }
  size_t table_bytes() const { return (tensors.size() * sizeof(DeviceTensor) + 255) / 256 * 256; }
};

__device__ __forceinline__ const DeviceTensor& find_tensor(const DeviceTensor* list, int count, int64_t chunk) {
  // last tensor whose first_chunk <= chunk (tensors without chunks share their successor's start)
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (list[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return list[lo];
}

// Runs body(tensor, i) for every element i of this block's chunk.
template <class Body>
__device__ __forceinline__ void for_chunk(const DeviceTensor* list, int count, Body body) {
  const int64_t chunk = blockIdx.x;
  const DeviceTensor& t = find_tensor(list, count, chunk);
  const int64_t begin = (chunk - t.first_chunk) * kMultiTensorChunk;
  const int64_t end = min(t.numel, begin + kMultiTensorChunk);
  for (int64_t base = begin + threadIdx.x; base < end; base += int64_t(kThreads) * kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + int64_t(u) * kThreads;
      if (i < end) body(t, i);
    }
  }
}

// ptr: weight, exp_avg, exp_avg_sq, grad
__global__ void __launch_bounds__(kThreads) adamw_kernel(const DeviceTensor* list, int count, float lr, float beta1,
                                                         float beta2, float eps, float decay, float inv_c1,
                                                         float inv_sqrt_c2) {
  for_chunk(list, count, [&](const DeviceTensor& t, int64_t i) {
    float* w = static_cast<float*>(t.ptr[0]);
    float* m = static_cast<float*>(t.ptr[1]);
    float* v = static_cast<float*>(t.ptr[2]);
    const float g = static_cast<const float*>(t.ptr[3])[i];
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] * decay - lr * (mi * inv_c1) / (sqrtf(vi) * inv_sqrt_c2 + eps);
  });
}

// ptr: momentum, grad, update
template <bool kNesterov, bool kBf16Update>
__global__ void __launch_bounds__(kThreads) muon_momentum_kernel(const DeviceTensor* list, int count, float beta) {
  for_chunk(list, count, [&](const DeviceTensor& t, int64_t i) {
    float* m = static_cast<float*>(t.ptr[0]);
    const float g = static_cast<const float*>(t.ptr[1])[i];
    const float mi = beta * m[i] + (1.f - beta) * g;
    m[i] = mi;
    const float u = kNesterov ? (1.f - beta) * g + beta * mi : mi;
    if (kBf16Update) static_cast<__nv_bfloat16*>(t.ptr[2])[i] = __float2bfloat16_rn(u);
    else static_cast<float*>(t.ptr[2])[i] = u;
  });
}

// ptr: weight, ortho
template <bool kBf16Ortho>
__global__ void __launch_bounds__(kThreads) muon_apply_kernel(const DeviceTensor* list, int count, float lr, float decay) {
  for_chunk(list, count, [&](const DeviceTensor& t, int64_t i) {
    float* w = static_cast<float*>(t.ptr[0]);
    const float o = kBf16Ortho ? __bfloat162float(static_cast<const __nv_bfloat16*>(t.ptr[1])[i])
                               : static_cast<const float*>(t.ptr[1])[i];
    w[i] = w[i] * decay - (lr * t.scale) * o;
  });
}

template <bool kBf16>
__device__ __forceinline__ float load_x(const void* p, int64_t i) {
  return kBf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

// ptr: data. partials[chunk] = Σ x² over the chunk (fixed-order tree in the block).
template <bool kBf16>
__global__ void __launch_bounds__(kThreads) sum_squares_kernel(const DeviceTensor* list, int count, float* partials) {
  float sum = 0.f;
  for_chunk(list, count, [&](const DeviceTensor& t, int64_t i) {
    const float x = load_x<kBf16>(t.ptr[0], i);
    sum = fmaf(x, x, sum);
  });
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __shared__ float warp_sums[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    partials[blockIdx.x] = total;
  }
}

// One block: per_tensor[j] = Σ partials of tensor j (one thread per tensor, in chunk order, in
// double); total = Σ_j per_tensor[j] in tensor order by thread 0.
__global__ void __launch_bounds__(kThreads) sum_squares_finalize_kernel(const DeviceTensor* list, int count,
                                                                        int64_t total_chunks, const float* partials,
                                                                        double* scratch, float* per_tensor, float* total) {
  for (int j = threadIdx.x; j < count; j += kThreads) {
    const int64_t c0 = list[j].first_chunk;
    const int64_t c1 = j + 1 < count ? list[j + 1].first_chunk : total_chunks;
    double s = 0;
    for (int64_t c = c0; c < c1; ++c) s += partials[c];
    scratch[j] = s;
    if (per_tensor) per_tensor[j] = float(s);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int j = 0; j < count; ++j) s += scratch[j];
    *total = float(s);
  }
}

// ptr: data
template <bool kBf16>
__global__ void __launch_bounds__(kThreads) scale_kernel(const DeviceTensor* list, int count, float scale,
                                                         const float* sum_squares, float max_norm) {
  float factor = scale;
  if (sum_squares) factor *= fminf(1.f, max_norm / (sqrtf(*sum_squares) + 1e-6f));
  for_chunk(list, count, [&](const DeviceTensor& t, int64_t i) {
    if (kBf16) {
      __nv_bfloat16* x = static_cast<__nv_bfloat16*>(t.ptr[0]);
      x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) * factor);
    } else {
      static_cast<float*>(t.ptr[0])[i] *= factor;
    }
  });
}

// Copies the descriptors into the workspace; returns the device pointer (null: nothing to do).
const DeviceTensor* upload(const Table& table, void* workspace, size_t workspace_bytes, size_t need, cudaStream_t stream,
                           const char* op) {
  if (table.chunks == 0) return nullptr;
  check(workspace != nullptr && workspace_bytes >= need, "ERR_ARG",
        std::string(op) + ": workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(need));
  check(reinterpret_cast<uintptr_t>(workspace) % 256 == 0, "ERR_ARG", std::string(op) + ": workspace must be 256-byte aligned");
  check(table.chunks <= 0x7fffffff && table.tensors.size() <= 0x7fffffff, "ERR_ARG", std::string(op) + ": too many chunks");
  KILN_CUDA_CHECK(cudaMemcpyAsync(workspace, table.tensors.data(), table.tensors.size() * sizeof(DeviceTensor),
                                  cudaMemcpyHostToDevice, stream));
  return static_cast<const DeviceTensor*>(workspace);
}

Table table_of(const AdamWParams& p) {
  Table t;
  for (int64_t j = 0; j < p.count; ++j) {
    const AdamWTensor& x = p.tensors[j];
    t.add(x.weight, x.exp_avg, x.exp_avg_sq, const_cast<float*>(x.grad), x.numel, 1.f);
  }
  return t;
}
Table table_of(const MuonMomentumParams& p) {
  Table t;
  for (int64_t j = 0; j < p.count; ++j) {
    const MuonMomentumTensor& x = p.tensors[j];
    t.add(x.momentum, const_cast<float*>(x.grad), x.update, nullptr, x.numel, 1.f);
  }
  return t;
}
Table table_of(const MuonApplyParams& p) {
  Table t;
  for (int64_t j = 0; j < p.count; ++j) {
    const MuonApplyTensor& x = p.tensors[j];
    t.add(x.weight, const_cast<void*>(x.ortho), nullptr, nullptr, x.numel, x.scale);
  }
  return t;
}
Table table_of(const TensorListParams& p) {
  Table t;
  for (int64_t j = 0; j < p.count; ++j) t.add(p.tensors[j].data, nullptr, nullptr, nullptr, p.tensors[j].numel, 1.f);
  return t;
}

size_t sum_squares_bytes(const Table& t) {
  return t.table_bytes() + size_t(t.chunks) * 4 + 256 + t.tensors.size() * 8 + 256;
}

}  // namespace

size_t adamw_multi_tensor_cuda_workspace_bytes(const AdamWParams& p) {
  adamw_multi_tensor_validate(p);
  return table_of(p).table_bytes();
}

void adamw_multi_tensor_cuda(const AdamWParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  adamw_multi_tensor_validate(p);
  const Table table = table_of(p);
  const DeviceTensor* list = upload(table, workspace, workspace_bytes, table.table_bytes(), stream, "adamw_multi_tensor_cuda");
  if (!list) return;
  const double c1 = 1 - std::pow(double(p.beta1), double(p.step)), c2 = 1 - std::pow(double(p.beta2), double(p.step));
  adamw_kernel<<<unsigned(table.chunks), kThreads, 0, stream>>>(list, int(table.tensors.size()), p.lr, p.beta1, p.beta2,
                                                               p.eps, 1 - p.lr * p.weight_decay, float(1 / c1),
                                                               float(1 / std::sqrt(c2)));
  cuda_check_launch("adamw_kernel");
}

size_t muon_momentum_multi_tensor_cuda_workspace_bytes(const MuonMomentumParams& p) {
  muon_momentum_multi_tensor_validate(p);
  return table_of(p).table_bytes();
}

void muon_momentum_multi_tensor_cuda(const MuonMomentumParams& p, void* workspace, size_t workspace_bytes,
                                     CUstream_st* stream) {
  muon_momentum_multi_tensor_validate(p);
  const Table table = table_of(p);
  const DeviceTensor* list =
      upload(table, workspace, workspace_bytes, table.table_bytes(), stream, "muon_momentum_multi_tensor_cuda");
  if (!list) return;
  const int count = int(table.tensors.size());
  KILN_BOOL_SWITCH(p.nesterov, kNesterov, [&] {
    KILN_BOOL_SWITCH(p.update_dtype == DType::bf16, kBf16, [&] {
      muon_momentum_kernel<kNesterov, kBf16><<<unsigned(table.chunks), kThreads, 0, stream>>>(list, count, p.beta);
    });
  });
  cuda_check_launch("muon_momentum_kernel");
}

size_t muon_apply_multi_tensor_cuda_workspace_bytes(const MuonApplyParams& p) {
  muon_apply_multi_tensor_validate(p);
  return table_of(p).table_bytes();
}

void muon_apply_multi_tensor_cuda(const MuonApplyParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  muon_apply_multi_tensor_validate(p);
  const Table table = table_of(p);
  const DeviceTensor* list = upload(table, workspace, workspace_bytes, table.table_bytes(), stream, "muon_apply_multi_tensor_cuda");
  if (!list) return;
  const int count = int(table.tensors.size());
  const float decay = 1 - p.lr * p.weight_decay;
  KILN_BOOL_SWITCH(p.ortho_dtype == DType::bf16, kBf16, [&] {
    muon_apply_kernel<kBf16><<<unsigned(table.chunks), kThreads, 0, stream>>>(list, count, p.lr, decay);
  });
  cuda_check_launch("muon_apply_kernel");
}

size_t sum_of_squares_multi_tensor_cuda_workspace_bytes(const TensorListParams& p) {
  tensor_list_validate(p, "sum_of_squares");
  return sum_squares_bytes(table_of(p));
}

void sum_of_squares_multi_tensor_cuda(float* total, float* per_tensor, const TensorListParams& p, void* workspace,
                                      size_t workspace_bytes, CUstream_st* stream) {
  tensor_list_validate(p, "sum_of_squares");
  check(total != nullptr, "ERR_ARG", "sum_of_squares_multi_tensor_cuda: null total");
  const Table table = table_of(p);
  const DeviceTensor* list =
      upload(table, workspace, workspace_bytes, sum_squares_bytes(table), stream, "sum_of_squares_multi_tensor_cuda");
  if (!list) {  // nothing (or only empty tensors): the sums are zero
    KILN_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(float), stream));
    if (per_tensor && p.count > 0) KILN_CUDA_CHECK(cudaMemsetAsync(per_tensor, 0, size_t(p.count) * sizeof(float), stream));
    return;
  }
  char* ws = static_cast<char*>(workspace);
  float* partials = reinterpret_cast<float*>(ws + table.table_bytes());
  double* scratch = reinterpret_cast<double*>(ws + table.table_bytes() + (size_t(table.chunks) * 4 + 255) / 256 * 256);
  const int count = int(table.tensors.size());
  KILN_BOOL_SWITCH(p.dtype == DType::bf16, kBf16, [&] {
    sum_squares_kernel<kBf16><<<unsigned(table.chunks), kThreads, 0, stream>>>(list, count, partials);
  });
  cuda_check_launch("sum_squares_kernel");
  sum_squares_finalize_kernel<<<1, kThreads, 0, stream>>>(list, count, table.chunks, partials, scratch, per_tensor, total);
  cuda_check_launch("sum_squares_finalize_kernel");
}

size_t scale_multi_tensor_cuda_workspace_bytes(const TensorListParams& p) {
  tensor_list_validate(p, "scale");
  return table_of(p).table_bytes();
}

void scale_multi_tensor_cuda(const TensorListParams& p, float scale, const float* sum_squares, float max_norm,
                             void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  tensor_list_validate(p, "scale");
  check(std::isfinite(scale) && (!sum_squares || (std::isfinite(max_norm) && max_norm > 0)), "ERR_ARG",
        "scale_multi_tensor_cuda: scale must be finite and max_norm finite and > 0");
  const Table table = table_of(p);
  const DeviceTensor* list = upload(table, workspace, workspace_bytes, table.table_bytes(), stream, "scale_multi_tensor_cuda");
  if (!list) return;
  const int count = int(table.tensors.size());
  KILN_BOOL_SWITCH(p.dtype == DType::bf16, kBf16, [&] {
    scale_kernel<kBf16><<<unsigned(table.chunks), kThreads, 0, stream>>>(list, count, scale, sum_squares, max_norm);
  });
  cuda_check_launch("scale_kernel");
}

}  // namespace kiln

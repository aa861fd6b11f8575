// Embedding lookup and its deterministic scatter-add backward on CUDA (contract: ops/layers.h).
//   forward : out (N, D) = table (V, D)[ids (N)]; an id outside [0, V) gives a NaN row  (=)
//   backward: dtable (V, D) f32 += Σ_{i: ids[i]=v} dout[i, :], positions in ascending order (+=)
// Backward without float atomics, in four steps on the stream (workspace: counts, starts, order):
//   1. counts[v] = number of positions with id v        (integer atomics: exact)
//   2. one block: starts = exclusive scan of counts; then one warp walks the ids in order,
//      32 at a time, giving each position its slot starts[id] + (earlier positions with id),
//      so order[] is a stable counting sort of the positions (counts[v] ends as bucket end)
//   3. one block per vocab row: sums its bucket's dout rows in position order in f32 and adds
//      the sum to dtable once. Same inputs -> same bits, on every run.
// Out-of-range ids are skipped by the backward. Vectorized (16-byte) path when D is a multiple
// of 16/sizeof(T) and the pointers are 16-byte aligned; scalar path otherwise.
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

template <class T, bool kVector>
__global__ void embedding_forward_kernel(T* __restrict__ out, const T* __restrict__ table, const int32_t* __restrict__ ids,
                                         int64_t N, int64_t V, int64_t D) {
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const int32_t id = ids[row];
    const bool valid = id >= 0 && id < V;
    const T* src = table + (valid ? int64_t(id) : 0) * D;
    T* dst = out + row * D;
    if (kVector) {
      constexpr int n = Vec16<T>::n;
      for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
        Vec16<T> v;
        if (valid) {
          v = load_vec(src + c);
        } else {
#pragma unroll
          for (int k = 0; k < n; ++k) v.v[k] = from_f32<T>(nan);
        }
        store_vec(dst + c, v);
      }
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = valid ? src[c] : from_f32<T>(nan);
    }
  }
}

__global__ void embedding_count_kernel(int32_t* __restrict__ counts, const int32_t* __restrict__ ids, int64_t N, int64_t V) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    if (id >= 0 && id < V) atomicAdd(counts + id, 1);
  }
}

// One block of exactly 1024 threads. counts (V): in, bucket sizes; out, bucket ends.
// starts (V): out, bucket starts. order (N): out, positions sorted stably by id.
__global__ void __launch_bounds__(1024) embedding_bucket_kernel(int32_t* __restrict__ counts, int32_t* __restrict__ starts,
                                                                int32_t* __restrict__ order, const int32_t* __restrict__ ids,
                                                                int64_t N, int64_t V) {
  __shared__ int32_t warp_totals[32];
  __shared__ int32_t carry;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) carry = 0;
  __syncthreads();
  for (int64_t base = 0; base < V; base += 1024) {
    const int64_t v = base + threadIdx.x;
    const int32_t count = v < V ? counts[v] : 0;
    int32_t inclusive = count;  // inclusive scan within the warp
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      int32_t other = __shfl_up_sync(0xffffffffu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
      int32_t total = warp_totals[lane];
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        int32_t other = __shfl_up_sync(0xffffffffu, total, offset);
        if (lane >= offset) total += other;
      }
      warp_totals[lane] = total;  // inclusive over warps
    }
    __syncthreads();
    const int32_t start = carry + (warp > 0 ? warp_totals[warp - 1] : 0) + inclusive - count;
    if (v < V) {
      starts[v] = start;
      counts[v] = start;  // becomes the write cursor, then the bucket end
    }
    __syncthreads();  // everyone has read carry and warp_totals
    if (threadIdx.x == 0) carry += warp_totals[31];
    __syncthreads();
  }
  if (warp != 0) return;
  // Stable scatter by one warp: lanes holding the same id take consecutive slots in lane order.
  for (int64_t base = 0; base < N; base += 32) {
    const int64_t i = base + lane;
    const int32_t id = i < N ? ids[i] : -1;
    const bool valid = i < N && id >= 0 && id < V;
    const unsigned group = __match_any_sync(0xffffffffu, valid ? id : -1 - lane);  // invalid lanes stay alone
    const int rank = __popc(group & ((1u << lane) - 1u));
    const int32_t cursor = valid ? counts[id] : 0;
    __syncwarp();  // every lane of a group has read the cursor before its first lane moves it
    if (valid) {
      order[cursor + rank] = int32_t(i);
      if (rank == 0) counts[id] = cursor + __popc(group);
    }
    __syncwarp();  // the moved cursors are visible to the next 32 positions
  }
}

template <class T, bool kVector>
__global__ void embedding_accumulate_kernel(float* __restrict__ dtable, const T* __restrict__ dout,
                                            const int32_t* __restrict__ starts, const int32_t* __restrict__ ends,
                                            const int32_t* __restrict__ order, int64_t V, int64_t D) {
  for (int64_t v = blockIdx.x; v < V; v += gridDim.x) {
    const int32_t begin = starts[v], end = ends[v];
    if (begin == end) continue;
    float* dst = dtable + v * D;
    if (kVector) {
      constexpr int n = Vec16<T>::n;
      for (int64_t c = int64_t(threadIdx.x) * n; c < D; c += int64_t(blockDim.x) * n) {
        float acc[n];
#pragma unroll
        for (int k = 0; k < n; ++k) acc[k] = 0.0f;
        for (int32_t j = begin; j < end; ++j) {
          const Vec16<T> g = load_vec(dout + int64_t(order[j]) * D + c);
#pragma unroll
          for (int k = 0; k < n; ++k) acc[k] += to_f32(g.v[k]);
        }
#pragma unroll
        for (int k = 0; k < n; k += 4) {  // n is 4 or 8: whole float4s, 16-byte aligned
          float4 t = *reinterpret_cast<float4*>(dst + c + k);
          t.x += acc[k];
          t.y += acc[k + 1];
          t.z += acc[k + 2];
          t.w += acc[k + 3];
          *reinterpret_cast<float4*>(dst + c + k) = t;
        }
      }
    } else {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.0f;
        for (int32_t j = begin; j < end; ++j) acc += to_f32(dout[int64_t(order[j]) * D + c]);
        dst[c] += acc;
      }
    }
  }
}

int row_threads(int64_t vectors_per_row) {
  // enough threads for one pass over a row, 32..256
  int64_t t = (vectors_per_row + 31) / 32 * 32;
  return int(t < 32 ? 32 : (t > 256 ? 256 : t));
}

}  // namespace

void embedding_forward_cuda(const EmbeddingForwardParams& p, cudaStream_t stream) {
  check(p.N >= 0 && p.V >= 0 && p.D >= 0, "ERR_SHAPE", "embedding: negative size");
  if (p.N == 0 || p.D == 0) return;
  check(p.out && p.table && p.ids, "ERR_ARG", "embedding: null pointer");
  dispatch_cuda_dtype(p.dtype, "embedding", [&](auto tag) {
    using T = decltype(tag);
    constexpr int n = Vec16<T>::n;
    const bool vector = p.D % n == 0 && aligned16(p.out) && aligned16(p.table);
    const int threads = row_threads(vector ? p.D / n : p.D);
    const int grid = int(p.N < 65536 * 4 ? p.N : 65536 * 4);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      embedding_forward_kernel<T, kVector><<<grid, threads, 0, stream>>>(static_cast<T*>(p.out), static_cast<const T*>(p.table),
                                                                          p.ids, p.N, p.V, p.D);
    });
    cuda_check_launch("embedding_forward_kernel");
  });
}

void embedding_backward_cuda(const EmbeddingBackwardParams& p, cudaStream_t stream) {
  check(p.N >= 0 && p.V >= 0 && p.D >= 0, "ERR_SHAPE", "embedding backward: negative size");
  check(p.N < (int64_t(1) << 31) && p.V < (int64_t(1) << 31), "ERR_SHAPE", "embedding backward: N and V must be < 2^31");
  if (p.N == 0 || p.D == 0 || p.V == 0) return;
  check(p.dtable && p.dout && p.ids, "ERR_ARG", "embedding backward: null pointer");
  const size_t need = embedding_backward_workspace_bytes(p.N, p.V);
  check(p.workspace && p.workspace_bytes >= need && aligned16(p.workspace), "ERR_ARG",
        "embedding backward: needs " + std::to_string(need) + " bytes of 16-byte aligned workspace");
  auto round = [](size_t b) { return (b + 255) / 256 * 256; };
  char* ws = static_cast<char*>(p.workspace);
  int32_t* counts = reinterpret_cast<int32_t*>(ws);
  int32_t* starts = reinterpret_cast<int32_t*>(ws + round(size_t(p.V) * 4));
  int32_t* order = reinterpret_cast<int32_t*>(ws + 2 * round(size_t(p.V) * 4));
  dispatch_cuda_dtype(p.dtype, "embedding backward", [&](auto tag) {
    using T = decltype(tag);
    KILN_CUDA_CHECK(cudaMemsetAsync(counts, 0, size_t(p.V) * 4, stream));
    const int count_grid = ceil_div(p.N, 256) < 4096 ? ceil_div(p.N, 256) : 4096;
    embedding_count_kernel<<<count_grid, 256, 0, stream>>>(counts, p.ids, p.N, p.V);
    cuda_check_launch("embedding_count_kernel");
    embedding_bucket_kernel<<<1, 1024, 0, stream>>>(counts, starts, order, p.ids, p.N, p.V);
    cuda_check_launch("embedding_bucket_kernel");
    constexpr int n = Vec16<T>::n;
    const bool vector = p.D % n == 0 && aligned16(p.dout) && aligned16(p.dtable);
    const int threads = row_threads(vector ? p.D / n : p.D);
    const int grid = int(p.V < 65536 * 4 ? p.V : 65536 * 4);
    KILN_BOOL_SWITCH(vector, kVector, [&] {
      embedding_accumulate_kernel<T, kVector><<<grid, threads, 0, stream>>>(static_cast<float*>(p.dtable),
                                                                             static_cast<const T*>(p.dout), starts, counts,
                                                                             order, p.V, p.D);
    });
    cuda_check_launch("embedding_accumulate_kernel");
  });
}

}  // namespace kiln

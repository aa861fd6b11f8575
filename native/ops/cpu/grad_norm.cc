// Gradient norm over a list of tensors and clipping by it, on the CPU (contract: ops/layers.h).
//   norm = sqrt(Σ_tensors Σ_j x_j²)      (f64 accumulation)
//   clip: x_j *= min(1, max_norm / (norm + 1e-6))   (in place)
// Every tensor is cut into fixed 64K-element chunks; each chunk's f64 sum is written to its own
// slot and the slots are added in order, so the norm does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../element_access.h"
#include "../layers.h"
#include "layers_storage.h"

namespace kiln {
using namespace layers_storage;
namespace {

constexpr int64_t kChunk = int64_t(1) << 16;

void check_list(const TensorSpan* tensors, int64_t count, const char* op) {
  check(count >= 0 && (count == 0 || tensors), "ERR_ARG", std::string(op) + ": bad tensor list");
  for (int64_t k = 0; k < count; ++k) {
    check(tensors[k].numel >= 0, "ERR_SHAPE", std::string(op) + ": negative numel");
    check(tensors[k].numel == 0 || tensors[k].data, "ERR_ARG", std::string(op) + ": null tensor");
    check(tensors[k].dtype != DType::i32, "ERR_DTYPE", std::string(op) + ": i32 tensors are not supported");
  }
}

template <class S>
double sum_squares(const S* x, int64_t n) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 f64 partial sums (vectorizable)
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) {
      double v = double(load(x + j + k));
      part[k] += v * v;
    }
  double total = 0;
  for (; j < n; ++j) total += double(load(x + j)) * double(load(x + j));
  for (int k = 0; k < 8; ++k) total += double(part[k]);
  return total;
}

}  // namespace

double grad_norm_reference_cpu(const TensorSpan* tensors, int64_t count) {
  check_list(tensors, count, "grad_norm");
  double total = 0;
  for (int64_t k = 0; k < count; ++k)
    for (int64_t j = 0; j < tensors[k].numel; ++j) {
      double v = load_as_double(tensors[k].data, tensors[k].dtype, j);
      total += v * v;
    }
  return std::sqrt(total);
}

double grad_norm_cpu(const TensorSpan* tensors, int64_t count) {
  check_list(tensors, count, "grad_norm");
  std::vector<int64_t> first_chunk(size_t(count) + 1, 0);
  for (int64_t k = 0; k < count; ++k) first_chunk[size_t(k) + 1] = first_chunk[size_t(k)] + (tensors[k].numel + kChunk - 1) / kChunk;
  const int64_t chunks = first_chunk[size_t(count)];
  std::vector<double> partial(size_t(chunks), 0.0);
  parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    int64_t k = std::upper_bound(first_chunk.begin(), first_chunk.end(), lo) - first_chunk.begin() - 1;
    for (int64_t c = lo; c < hi; ++c) {
      while (c >= first_chunk[size_t(k) + 1]) ++k;
      const TensorSpan& t = tensors[k];
      const int64_t begin = (c - first_chunk[size_t(k)]) * kChunk;
      const int64_t n = std::min(kChunk, t.numel - begin);
      dispatch_storage(t.dtype, "grad_norm", [&](auto tag) {
        using S = decltype(tag);
        partial[size_t(c)] = sum_squares(static_cast<const S*>(t.data) + begin, n);
      });
    }
  });
  double total = 0;
  for (double v : partial) total += v;
  return std::sqrt(total);
}

void grad_clip_reference_cpu(const TensorSpan* tensors, int64_t count, double norm, double max_norm) {
  check_list(tensors, count, "grad_clip");
  const double scale = std::min(1.0, max_norm / (norm + 1e-6));
  if (!(scale < 1.0)) return;
  for (int64_t k = 0; k < count; ++k)
    for (int64_t j = 0; j < tensors[k].numel; ++j)
      store_from_double(tensors[k].data, tensors[k].dtype, j, load_as_double(tensors[k].data, tensors[k].dtype, j) * scale);
}

void grad_clip_cpu(const TensorSpan* tensors, int64_t count, double norm, double max_norm) {
  check_list(tensors, count, "grad_clip");
  const double scale = std::min(1.0, max_norm / (norm + 1e-6));
  if (!(scale < 1.0)) return;  // nothing to do (also skips a NaN norm: no NaN is spread)
  for (int64_t k = 0; k < count; ++k) {
    const TensorSpan& t = tensors[k];
    dispatch_storage(t.dtype, "grad_clip", [&](auto tag) {
      using S = decltype(tag);
      using C = compute_t<S>;
      S* x = static_cast<S*>(t.data);
      const C s = C(scale);
      parallel_for(0, t.numel, kChunk, [&](int64_t lo, int64_t hi) {
        for (int64_t j = lo; j < hi; ++j) store(x + j, load(x + j) * s);
      });
    });
  }
}

size_t grad_norm_workspace_bytes(const TensorSpan* tensors, int64_t count) {
  // one f32 partial per 16K-element chunk of the CUDA kernel (see cuda/layers/grad_norm.cu)
  constexpr int64_t kCudaChunk = int64_t(1) << 14;
  int64_t chunks = 0;
  for (int64_t k = 0; k < count; ++k) chunks += (std::max<int64_t>(tensors[k].numel, 0) + kCudaChunk - 1) / kCudaChunk;
  return size_t(std::max<int64_t>(chunks, 1)) * sizeof(float);
}

}  // namespace kiln

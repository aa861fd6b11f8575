// Embedding lookup and its scatter-add backward on the CPU (contract and math: ops/layers.h).
//   forward : out (N, D) = table (V, D)[ids (N)]                      (=)
//   backward: dtable (V, D) += Σ_{i: ids[i]=v} dout[i, :], in position order     (+=)
// The fast backward gives each thread a range of columns and walks all positions in order, so
// every dtable element is summed by one thread in one fixed order: deterministic, no sort.
#include <cstring>
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


void check_ids(const int32_t* ids, int64_t N, int64_t V) {
  for (int64_t i = 0; i < N; ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      fail("ERR_ARG", "embedding: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                          " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

void check_forward(const EmbeddingForwardParams& p) {
  check(p.N >= 0 && p.V >= 0 && p.D >= 0, "ERR_SHAPE", "embedding: negative size");
  check(p.dtype != DType::i32, "ERR_DTYPE", "embedding: table must be a float dtype");
  check(p.N == 0 || p.D == 0 || (p.out && p.table && p.ids), "ERR_ARG", "embedding: null pointer");
  check_ids(p.ids, p.N, p.V);
}

void check_backward(const EmbeddingBackwardParams& p) {
  check(p.N >= 0 && p.V >= 0 && p.D >= 0, "ERR_SHAPE", "embedding backward: negative size");
  check(p.dtype != DType::i32, "ERR_DTYPE", "embedding backward: dout must be a float dtype");
  check(p.N == 0 || p.D == 0 || (p.dtable && p.dout && p.ids), "ERR_ARG", "embedding backward: null pointer");
  check_ids(p.ids, p.N, p.V);
}

}  // namespace

void embedding_forward_reference_cpu(const EmbeddingForwardParams& p) {
  check_forward(p);
  for (int64_t i = 0; i < p.N; ++i)
    for (int64_t d = 0; d < p.D; ++d)
      store_from_double(p.out, p.dtype, i * p.D + d, load_as_double(p.table, p.dtype, int64_t(p.ids[i]) * p.D + d));
}

void embedding_forward_cpu(const EmbeddingForwardParams& p) {
  check_forward(p);
  const size_t row_bytes = size_t(p.D) * dtype_size(p.dtype);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / int64_t(std::max<size_t>(row_bytes, 1)));
  parallel_for(0, p.N, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      std::memcpy(static_cast<char*>(p.out) + size_t(i) * row_bytes,
                  static_cast<const char*>(p.table) + size_t(p.ids[i]) * row_bytes, row_bytes);
  });
}

void embedding_backward_reference_cpu(const EmbeddingBackwardParams& p) {
  check_backward(p);
  const DType gd = gradient_dtype(p.dtype);
  // per vocab row, a double sum in position order, added to dtable once
  std::vector<double> acc(size_t(p.D));
  std::vector<char> seen(size_t(p.V), 0);
  for (int64_t i = 0; i < p.N; ++i) seen[size_t(p.ids[i])] = 1;
  for (int64_t v = 0; v < p.V; ++v) {
    if (!seen[size_t(v)]) continue;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t i = 0; i < p.N; ++i)
      if (p.ids[i] == v)
        for (int64_t d = 0; d < p.D; ++d) acc[size_t(d)] += load_as_double(p.dout, p.dtype, i * p.D + d);
    for (int64_t d = 0; d < p.D; ++d)
      store_from_double(p.dtable, gd, v * p.D + d, load_as_double(p.dtable, gd, v * p.D + d) + acc[size_t(d)]);
  }
}

void embedding_backward_cpu(const EmbeddingBackwardParams& p) {
  check_backward(p);
  dispatch_storage(p.dtype, "embedding backward", [&](auto tag) {
    using S = decltype(tag);
    using G = compute_t<S>;  // gradient dtype: f32, or f64 for f64
    const S* dout = static_cast<const S*>(p.dout);
    G* dtable = static_cast<G*>(p.dtable);
    // columns are owned by threads; 64-column grain keeps each thread on whole cache lines
    parallel_for(0, p.D, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = 0; i < p.N; ++i) {
        const S* src = dout + i * p.D;
        G* dst = dtable + int64_t(p.ids[i]) * p.D;
        for (int64_t d = lo; d < hi; ++d) dst[d] += G(load(src + d));
      }
    });
  });
}

size_t embedding_backward_workspace_bytes(int64_t N, int64_t V) {
  // counts (V) + bucket starts (V) + sorted positions (N), i32, each section 256-byte aligned
  auto round = [](size_t b) { return (b + 255) / 256 * 256; };
  return 2 * round(size_t(std::max<int64_t>(V, 1)) * 4) + round(size_t(std::max<int64_t>(N, 1)) * 4);
}

}  // namespace kiln

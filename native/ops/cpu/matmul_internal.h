// Internal to the CPU matmul (matmul.cc, matmul_reference.cc, matmul_blocked.cc,
// matmul_skinny.cc): the entry points of the two fast paths and what they share. The contract
// is ops/matmul.h; the public entry points are in ops/cpu/matmul.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "../../runtime/dtype.h"
#include "../../runtime/half.h"
#include "../matmul.h"

namespace kiln::matmul_cpu_detail {

// matmul_cpu sends M <= kSkinnyM (and every M with batch_invariant), K > 0, to the skinny path.
constexpr int64_t kSkinnyM = 8;

// The fast paths. p is validated (matmul_validate) and batch, M and N are > 0.
//   matmul_blocked_cpu (matmul_blocked.cc): the packed, cache-blocked GEMM; any M, K >= 0.
//   matmul_skinny_cpu (matmul_skinny.cc): B read in place, no packing; K > 0.
void matmul_blocked_cpu(const MatmulParams& p);
void matmul_skinny_cpu(const MatmulParams& p);

// ---------- per-thread buffers ----------

// Grown on demand, 64-byte aligned, kept for the life of the (pool) thread.
struct AlignedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  ~AlignedBuffer() { std::free(ptr); }
  void* get(size_t need);  // matmul.cc
};

struct ThreadBuffers {
  AlignedBuffer pack_a, pack_b, scratch, edge;
};

// This thread's buffers, one set per thread shared by both paths (matmul.cc).
ThreadBuffers& thread_buffers();

// Each including file gets its own copy of these, as when the four files were one.
namespace {

// Columns of opB and of the accumulator: N, or 2N for swiglu ([gate | up]).
inline int64_t inner_n(const MatmulParams& p) { return p.epilogue == MatmulEpilogue::swiglu ? 2 * p.N : p.N; }

// ---------- stores ----------

template <class T>
inline T load_c(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::bf16: return T(bf16_to_float(static_cast<const uint16_t*>(p)[i]));
    case DType::f16: return T(f16_to_float(static_cast<const uint16_t*>(p)[i]));
    case DType::f64: return T(static_cast<const double*>(p)[i]);
    default: return T(static_cast<const float*>(p)[i]);
  }
}

template <class T>
inline void store_c(void* p, DType t, int64_t i, T v) {
  switch (t) {
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16(float(v)); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16(float(v)); break;
    case DType::f64: static_cast<double*>(p)[i] = double(v); break;
    default: static_cast<float*>(p)[i] = float(v); break;
  }
}

}  // namespace

}  // namespace kiln::matmul_cpu_detail

// Matmul on the CPU (contract: ops/matmul.h).
//
//   for z in [0, batch):  acc = alpha · opA(A_z)·opB(B_z)       opA(A): (M, K)  opB(B): (K, Ninner)
//                         C_z = epilogue(acc + beta · C_z)      C: (M, N)  (beta == 0: C not read)
//   Ninner = N, or 2N for swiglu (C = silu(acc[:, :N]) · acc[:, N:]).
//
// Two implementations:
//   matmul_reference_cpu: the oracle, a triple loop in double.
//   matmul_cpu: a GotoBLAS/BLIS-style blocked GEMM. Loop nest per tile of C a thread owns:
//     jc over NC columns of C   → (pc over KC of K: pack B (KC x NC) into NR-wide panels
//                                    → ic over MC rows: pack A (MC x KC) into MR-tall panels
//                                       → jr over NR panels → ir over MR panels: microkernel)
//   Packing does the transposes and the bf16/f16 → f32 widening, and zero-pads panel edges, so the
//   microkernel always runs on full MR x NR tiles from contiguous memory. The microkernel keeps
//   the MR x NR accumulator in registers over one KC slice, then merges it into its destination:
//   d = alpha·acc (first slice, beta == 0), d = alpha·acc + beta·d (first slice), d = alpha·acc + d.
//   The destination is C itself when C has the compute dtype and no swiglu ("direct"); otherwise
//   an f32 scratch for the tile's rows x NC columns, converted and epilogued after the last slice.
//   For swiglu each NC block packs the gate columns and then the matching up columns, so a
//   block's scratch holds both halves of the columns it finishes.
//   Every element's K sum runs in the same order whatever the tiling, so results do not depend
//   on the thread count. M <= 8 takes run_skinny instead (no packing; dot products along B rows
//   for trans_b, row updates otherwise). batch_invariant sends every M to run_skinny, which
//   computes each output element with the same instruction sequence whatever M is (f32 on
//   AVX-512: 4 x 4 tiles of 16-lane dot products, dot_tile_avx512; otherwise groups of 8 rows),
//   so a row's result is bit-identical whatever rows share the call (the serving engine's
//   batches: decode at M = 1 reads the weights once, with no packing).
//   Measured (Zen 4, 2 threads, f32, 2048^3 and the 1.4B shapes): 190-205 GFLOP/s, 0.95-1.0x
//   numpy/OpenBLAS; bf16 in/out 193, swiglu 186; f64 94. One thread: 104 (OpenBLAS 101).
#include "matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../element_access.h"
#include "simd.h"

namespace kiln {

namespace {

// ---------- validation ----------

bool is_float_dtype(DType t) {
  int32_t code = static_cast<int32_t>(t);
  return dtype_valid(code) && dtype_is_float(t);
}

std::string dname(DType t) { return dtype_valid(static_cast<int32_t>(t)) ? dtype_name(t) : "an invalid dtype code"; }

int64_t inner_n(const MatmulParams& p) { return p.epilogue == MatmulEpilogue::swiglu ? 2 * p.N : p.N; }

}  // namespace

void matmul_validate(const MatmulParams& p) {
  const std::string op = "matmul: ";
  check(is_float_dtype(p.ab_dtype), "ERR_DTYPE", op + "A/B dtype must be f32, f64, bf16 or f16, got " + dname(p.ab_dtype));
  check(is_float_dtype(p.c_dtype), "ERR_DTYPE", op + "C dtype must be f32, f64, bf16 or f16, got " + dname(p.c_dtype));
  if (p.ab_dtype == DType::f64 || p.c_dtype == DType::f64)
    check(p.ab_dtype == p.c_dtype, "ERR_DTYPE",
          op + "f64 cannot be mixed with other dtypes (A/B " + dname(p.ab_dtype) + ", C " + dname(p.c_dtype) + ")");
  if (p.ab_dtype == DType::f32)
    check(p.c_dtype == DType::f32, "ERR_DTYPE", op + "f32 inputs need an f32 C, got " + dname(p.c_dtype));
  check(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 0, "ERR_SHAPE",
        op + "M, N, K and batch must be >= 0, got M=" + std::to_string(p.M) + " N=" + std::to_string(p.N) +
            " K=" + std::to_string(p.K) + " batch=" + std::to_string(p.batch));
  const int32_t epi = static_cast<int32_t>(p.epilogue);
  check(epi >= 0 && epi <= 2, "ERR_ARG", op + "unknown epilogue " + std::to_string(epi));
  if (p.epilogue == MatmulEpilogue::swiglu)
    check(p.beta == 0.0f, "ERR_ARG", op + "the swiglu epilogue needs beta == 0, got " + std::to_string(p.beta));
  // Sizes large enough to overflow int64 index math are rejected outright.
  const int64_t limit = int64_t(1) << 40;
  check(p.M < limit && p.N < limit && p.K < limit && p.batch < limit, "ERR_SHAPE", op + "dimension too large");

  const int64_t n_in = inner_n(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;  // nothing is read or written
  const bool reads_ab = p.K > 0;

  check(p.c != nullptr, "ERR_ARG", op + "C is null");
  check(p.ldc >= std::max<int64_t>(1, p.N), "ERR_ARG",
        op + "ldc (" + std::to_string(p.ldc) + ") must be >= N (" + std::to_string(p.N) + ")");
  if (reads_ab) {
    check(p.a != nullptr && p.b != nullptr, "ERR_ARG", op + "A or B is null");
    const int64_t a_row = p.trans_a ? p.M : p.K;  // stored A is (K, M) with trans_a, else (M, K)
    const int64_t b_row = p.trans_b ? p.K : n_in;  // stored B is (Ninner, K) with trans_b, else (K, Ninner)
    check(p.lda >= std::max<int64_t>(1, a_row), "ERR_ARG",
          op + "lda (" + std::to_string(p.lda) + ") must be >= the stored row width " + std::to_string(a_row) +
              (p.trans_a ? " (M, A is stored K x M)" : " (K)"));
    check(p.ldb >= std::max<int64_t>(1, b_row), "ERR_ARG",
          op + "ldb (" + std::to_string(p.ldb) + ") must be >= the stored row width " + std::to_string(b_row) +
              (p.trans_b ? " (K, B is stored Ninner x K)" : " (Ninner = N, or 2N for swiglu)"));
  }
  if (p.epilogue == MatmulEpilogue::residual_add) {
    check(p.residual != nullptr, "ERR_ARG", op + "residual_add needs a residual");
    check(p.ld_residual >= std::max<int64_t>(1, p.N), "ERR_ARG",
          op + "ld_residual (" + std::to_string(p.ld_residual) + ") must be >= N (" + std::to_string(p.N) + ")");
  }
  if (p.batch > 1) {
    check(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0 && p.stride_residual >= 0, "ERR_ARG",
          op + "batch strides must be >= 0");
    // C batches must not overlap: either whole (M, ldc) blocks apart, or rows interleaved
    // (e.g. C laid out (M, batch, N): stride_c >= N and every batch's row fits inside ldc).
    const int64_t block = (p.M - 1) * p.ldc + p.N;
    const bool disjoint_blocks = p.stride_c >= block;
    const bool interleaved_rows = p.stride_c >= p.N && (p.batch - 1) * p.stride_c + p.N <= p.ldc;
    check(disjoint_blocks || interleaved_rows, "ERR_ARG",
          op + "stride_c (" + std::to_string(p.stride_c) + ") makes the C batches overlap");
  }
}

// ---------- reference ----------

void matmul_reference_cpu(const MatmulParams& p) {
  matmul_validate(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu;
  auto a_at = [&](int64_t z, int64_t m, int64_t k) {
    const int64_t i = z * p.stride_a + (p.trans_a ? k * p.lda + m : m * p.lda + k);
    return load_as_double(p.a, p.ab_dtype, i);
  };
  auto b_at = [&](int64_t z, int64_t k, int64_t n) {
    const int64_t i = z * p.stride_b + (p.trans_b ? n * p.ldb + k : k * p.ldb + n);
    return load_as_double(p.b, p.ab_dtype, i);
  };
  auto dot = [&](int64_t z, int64_t m, int64_t n) {
    double s = 0.0;
    for (int64_t k = 0; k < p.K; ++k) s += a_at(z, m, k) * b_at(z, k, n);
    return double(p.alpha) * s;
  };
  for (int64_t z = 0; z < p.batch; ++z) {
    for (int64_t m = 0; m < p.M; ++m) {
      for (int64_t n = 0; n < p.N; ++n) {
        const int64_t ci = z * p.stride_c + m * p.ldc + n;
        double v;
        if (swiglu) {
          const double gate = dot(z, m, n), up = dot(z, m, p.N + n);
          v = gate / (1.0 + std::exp(-gate)) * up;
        } else {
          v = dot(z, m, n);
          if (p.beta != 0.0f) v += double(p.beta) * load_as_double(p.c, p.c_dtype, ci);
          if (p.epilogue == MatmulEpilogue::residual_add)
            v += load_as_double(p.residual, p.c_dtype, z * p.stride_residual + m * p.ld_residual + n);
        }
        store_from_double(p.c, p.c_dtype, ci, v);
      }
    }
  }
}

namespace {

// ---------- ISA selection ----------


// ---------- microkernels ----------
//
// kernel(kc, a, b, d, ldd, alpha, beta): acc (MR x NR) = sum over kc of a-panel column x b-panel
// row, where the A panel is k-major MR floats per k and the B panel NR floats per k; then
//   beta == 0: d = alpha·acc (d not read)      else: d = alpha·acc + beta·d
// for the full MR x NR tile at d (row stride ldd). Products are added to acc in k order, one FMA
// (or multiply-add) per step, so each element's value is independent of where its tile lies.

// Portable kernel: plain loops the compiler vectorizes for the baseline ISA.
template <class T, int MR, int NR>
void kernel_generic(int64_t kc, const T* __restrict a, const T* __restrict b, T* d, int64_t ldd, T alpha, T beta) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int i = 0; i < MR; ++i) {
    T* row = d + i * ldd;
    if (beta == T(0)) {
      for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) row[j] = alpha * acc[i][j] + beta * row[j];
    }
  }
}

#if KILN_X86

// AVX-512: 14 rows x 2 vectors of 16 = 28 zmm accumulators + 2 B vectors; A broadcast from memory.
constexpr int kMr512 = 14, kNr512 = 32;

KILN_TARGET_AVX512 void kernel_avx512(int64_t kc, const float* __restrict a, const float* __restrict b, float* d,
                                      int64_t ldd, float alpha, float beta) {
  __m512 c[kMr512][2];
#pragma GCC unroll 14
  for (int i = 0; i < kMr512; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < kMr512; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
    }
    a += kMr512;
    b += kNr512;
  }
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 14
    for (int i = 0; i < kMr512; ++i) {
      _mm512_storeu_ps(d + i * ldd, _mm512_mul_ps(va, c[i][0]));
      _mm512_storeu_ps(d + i * ldd + 16, _mm512_mul_ps(va, c[i][1]));
    }
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < kMr512; ++i) {
      float* row = d + i * ldd;
      _mm512_storeu_ps(row, _mm512_add_ps(_mm512_mul_ps(va, c[i][0]), _mm512_mul_ps(vb, _mm512_loadu_ps(row))));
      _mm512_storeu_ps(row + 16,
                       _mm512_add_ps(_mm512_mul_ps(va, c[i][1]), _mm512_mul_ps(vb, _mm512_loadu_ps(row + 16))));
    }
  }
}

// AVX2: 6 rows x 2 vectors of 8 = 12 ymm accumulators + 2 B vectors + 1 broadcast.
constexpr int kMr256 = 6, kNr256 = 16;

KILN_TARGET_AVX2 void kernel_avx2(int64_t kc, const float* __restrict a, const float* __restrict b, float* d,
                                  int64_t ldd, float alpha, float beta) {
  __m256 c[kMr256][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMr256; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kMr256; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
    }
    a += kMr256;
    b += kNr256;
  }
  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.0f) {
#pragma GCC unroll 6
    for (int i = 0; i < kMr256; ++i) {
      _mm256_storeu_ps(d + i * ldd, _mm256_mul_ps(va, c[i][0]));
      _mm256_storeu_ps(d + i * ldd + 8, _mm256_mul_ps(va, c[i][1]));
    }
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < kMr256; ++i) {
      float* row = d + i * ldd;
      _mm256_storeu_ps(row, _mm256_add_ps(_mm256_mul_ps(va, c[i][0]), _mm256_mul_ps(vb, _mm256_loadu_ps(row))));
      _mm256_storeu_ps(row + 8,
                       _mm256_add_ps(_mm256_mul_ps(va, c[i][1]), _mm256_mul_ps(vb, _mm256_loadu_ps(row + 8))));
    }
  }
}

// f64 twins of the two kernels above (same tile shapes in vectors: 14 x 2 zmm of 8, 6 x 2 ymm of 4).
constexpr int kMr512d = 14, kNr512d = 16;

KILN_TARGET_AVX512 void kernel_avx512_f64(int64_t kc, const double* __restrict a, const double* __restrict b,
                                          double* d, int64_t ldd, double alpha, double beta) {
  __m512d c[kMr512d][2];
#pragma GCC unroll 14
  for (int i = 0; i < kMr512d; ++i) c[i][0] = c[i][1] = _mm512_setzero_pd();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512d b0 = _mm512_loadu_pd(b);
    const __m512d b1 = _mm512_loadu_pd(b + 8);
#pragma GCC unroll 14
    for (int i = 0; i < kMr512d; ++i) {
      const __m512d ai = _mm512_set1_pd(a[i]);
      c[i][0] = _mm512_fmadd_pd(ai, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_pd(ai, b1, c[i][1]);
    }
    a += kMr512d;
    b += kNr512d;
  }
  const __m512d va = _mm512_set1_pd(alpha);
  const __m512d vb = _mm512_set1_pd(beta);
#pragma GCC unroll 14
  for (int i = 0; i < kMr512d; ++i) {
    double* row = d + i * ldd;
    for (int h = 0; h < 2; ++h) {
      __m512d x = _mm512_mul_pd(va, c[i][h]);
      if (beta != 0.0) x = _mm512_add_pd(x, _mm512_mul_pd(vb, _mm512_loadu_pd(row + 8 * h)));
      _mm512_storeu_pd(row + 8 * h, x);
    }
  }
}

constexpr int kMr256d = 6, kNr256d = 8;

KILN_TARGET_AVX2 void kernel_avx2_f64(int64_t kc, const double* __restrict a, const double* __restrict b, double* d,
                                      int64_t ldd, double alpha, double beta) {
  __m256d c[kMr256d][2];
#pragma GCC unroll 6
  for (int i = 0; i < kMr256d; ++i) c[i][0] = c[i][1] = _mm256_setzero_pd();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256d b0 = _mm256_loadu_pd(b);
    const __m256d b1 = _mm256_loadu_pd(b + 4);
#pragma GCC unroll 6
    for (int i = 0; i < kMr256d; ++i) {
      const __m256d ai = _mm256_broadcast_sd(a + i);
      c[i][0] = _mm256_fmadd_pd(ai, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_pd(ai, b1, c[i][1]);
    }
    a += kMr256d;
    b += kNr256d;
  }
  const __m256d va = _mm256_set1_pd(alpha);
  const __m256d vb = _mm256_set1_pd(beta);
#pragma GCC unroll 6
  for (int i = 0; i < kMr256d; ++i) {
    double* row = d + i * ldd;
    for (int h = 0; h < 2; ++h) {
      __m256d x = _mm256_mul_pd(va, c[i][h]);
      if (beta != 0.0) x = _mm256_add_pd(x, _mm256_mul_pd(vb, _mm256_loadu_pd(row + 4 * h)));
      _mm256_storeu_pd(row + 4 * h, x);
    }
  }
}

#endif  // KILN_X86

// ---------- per-thread buffers ----------

// Grown on demand, 64-byte aligned, kept for the life of the (pool) thread.
struct AlignedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  ~AlignedBuffer() { std::free(ptr); }
  void* get(size_t need) {
    if (need > bytes) {
      std::free(ptr);
      ptr = nullptr;
      bytes = 0;
      const size_t rounded = (need + 4095) / 4096 * 4096;
      ptr = std::aligned_alloc(64, rounded);
      if (!ptr) fail("ERR_OOM", "matmul: cannot allocate " + std::to_string(rounded) + " bytes of packing buffer");
      bytes = rounded;
    }
    return ptr;
  }
};

struct ThreadBuffers {
  AlignedBuffer pack_a, pack_b, scratch, edge;
};

ThreadBuffers& thread_buffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

// ---------- packing ----------

// One matrix operand seen as X (rows x K): X[r, k] = p[r * ld + k] when k_contiguous, else
// p[k * ld + r]. A is X = opA(A); B is packed as X = opB(B)ᵀ so both pack the same way.
struct Operand {
  const void* p;
  int64_t ld;
  bool k_contiguous;
};

template <class S, class T>
inline T widen(S v);
template <>
inline float widen<float, float>(float v) { return v; }
template <>
inline double widen<double, double>(double v) { return v; }

struct Bf16 { uint16_t bits; };
struct F16 { uint16_t bits; };
template <>
inline float widen<Bf16, float>(Bf16 v) { return bf16_to_float(v.bits); }
template <>
inline float widen<F16, float>(F16 v) { return f16_to_float(v.bits); }

// Packs rows [r0, r0 + rows) and k in [k0, k0 + kc) of X into ceil(rows / W) panels, each kc x W
// (k-major), rows past the end zero-filled.
template <class S, class T, int W>
void pack_panels(const Operand& x, int64_t r0, int64_t rows, int64_t k0, int64_t kc, T* __restrict dst) {
  const S* src = static_cast<const S*>(x.p);
  for (int64_t pr = 0; pr < rows; pr += W, dst += W * kc) {
    const int64_t valid = std::min<int64_t>(W, rows - pr);
    if (x.k_contiguous) {
      if (valid < W)
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t i = valid; i < W; ++i) dst[k * W + i] = T(0);
      // 4 rows at a time: each streams along k, the writes interleave into the panel.
      int64_t i = 0;
      for (; i + 4 <= valid; i += 4) {
        const S* s0 = src + (r0 + pr + i) * x.ld + k0;
        const S* s1 = s0 + x.ld;
        const S* s2 = s1 + x.ld;
        const S* s3 = s2 + x.ld;
        T* d = dst + i;
        for (int64_t k = 0; k < kc; ++k, d += W) {
          d[0] = widen<S, T>(s0[k]);
          d[1] = widen<S, T>(s1[k]);
          d[2] = widen<S, T>(s2[k]);
          d[3] = widen<S, T>(s3[k]);
        }
      }
      for (; i < valid; ++i) {
        const S* s = src + (r0 + pr + i) * x.ld + k0;
        for (int64_t k = 0; k < kc; ++k) dst[k * W + i] = widen<S, T>(s[k]);
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const S* s = src + (k0 + k) * x.ld + r0 + pr;
        T* d = dst + k * W;
        if (valid == W) {
          for (int64_t i = 0; i < W; ++i) d[i] = widen<S, T>(s[i]);
        } else {
          for (int64_t i = 0; i < valid; ++i) d[i] = widen<S, T>(s[i]);
          for (int64_t i = valid; i < W; ++i) d[i] = T(0);
        }
      }
    }
  }
}

template <class T, int W>
void pack_dispatch(DType t, const Operand& x, int64_t r0, int64_t rows, int64_t k0, int64_t kc, T* dst) {
  if constexpr (sizeof(T) == 8) {
    pack_panels<double, T, W>(x, r0, rows, k0, kc, dst);
  } else {
    switch (t) {
      case DType::bf16: pack_panels<Bf16, T, W>(x, r0, rows, k0, kc, dst); break;
      case DType::f16: pack_panels<F16, T, W>(x, r0, rows, k0, kc, dst); break;
      default: pack_panels<float, T, W>(x, r0, rows, k0, kc, dst); break;
    }
  }
}

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

// ---------- the blocked driver ----------

template <class T>
using KernelFn = void (*)(int64_t, const T*, const T*, T*, int64_t, T, T);

template <class T, int MR_, int NR_, KernelFn<T> Kernel_>
struct KernelSpec {
  using type = T;
  static constexpr int MR = MR_, NR = NR_;
  static constexpr KernelFn<T> kernel = Kernel_;
};

struct Blocking {
  int64_t mc, kc, nc;
};

// One batch element's operands (pointers already offset by z * stride).
struct BatchView {
  Operand a, b;
  void* c;
  const void* r;
};

// Whether the residual's and C's address ranges (over all batches) intersect.
bool residual_overlaps_c(const MatmulParams& p) {
  const int64_t es = int64_t(dtype_size(p.c_dtype));
  auto extent = [&](int64_t stride, int64_t ld) { return ((p.batch - 1) * stride + (p.M - 1) * ld + p.N) * es; };
  const uintptr_t c0 = reinterpret_cast<uintptr_t>(p.c), r0 = reinterpret_cast<uintptr_t>(p.residual);
  const uintptr_t c1 = c0 + uintptr_t(extent(p.stride_c, p.ldc)), r1 = r0 + uintptr_t(extent(p.stride_residual, p.ld_residual));
  return c0 < r1 && r0 < c1;
}

template <class Spec>
class GemmDriver {
  using T = typename Spec::type;
  static constexpr int MR = Spec::MR, NR = Spec::NR;

 public:
  GemmDriver(const MatmulParams& p, Blocking blk) : p_(p), blk_(blk) {
    blk_.mc = std::max<int64_t>(MR, blk_.mc / MR * MR);
    blk_.nc = std::max<int64_t>(NR, blk_.nc / NR * NR);
    swiglu_ = p.epilogue == MatmulEpilogue::swiglu;
    // Accumulating in C itself needs C in the compute dtype, no swiglu, and a residual that is not
    // C's own memory (C is overwritten by the first K slice, before the residual is read).
    direct_ = !swiglu_ && p.c_dtype == (sizeof(T) == 8 ? DType::f64 : DType::f32) &&
              !(p.epilogue == MatmulEpilogue::residual_add && residual_overlaps_c(p));
  }

  BatchView view(int64_t z) const {
    const size_t ab = dtype_size(p_.ab_dtype), cs = dtype_size(p_.c_dtype);
    BatchView v;
    v.a = {static_cast<const char*>(p_.a) + z * p_.stride_a * ab, p_.lda, !p_.trans_a};
    v.b = {static_cast<const char*>(p_.b) + z * p_.stride_b * ab, p_.ldb, p_.trans_b};
    v.c = static_cast<char*>(p_.c) + z * p_.stride_c * cs;
    v.r = p_.residual ? static_cast<const char*>(p_.residual) + z * p_.stride_residual * cs : nullptr;
    return v;
  }

  // C rows [m0, m1) x columns [n0, n1) of batch element z.
  void run_tile(int64_t z, int64_t m0, int64_t m1, int64_t n0, int64_t n1) const {
    const BatchView v = view(z);
    const int64_t mt = m1 - m0;
    ThreadBuffers& buf = thread_buffers();
    const int64_t halves = swiglu_ ? 2 : 1;
    // Output columns per NC block; with scratch, bounded so the scratch stays near 4 MB.
    int64_t nc = blk_.nc;
    if (!direct_) {
      const int64_t budget = (int64_t(4) << 20) / int64_t(sizeof(T));
      nc = std::min(nc, std::max<int64_t>(NR, budget / (mt * halves) / NR * NR));
    }
    const int64_t kc_max = std::min(blk_.kc, p_.K);
    const int64_t nc_panels_max = (std::min(nc, n1 - n0) + NR - 1) / NR * halves;
    T* pack_b = static_cast<T*>(buf.pack_b.get(sizeof(T) * size_t(kc_max * nc_panels_max * NR)));
    const int64_t mc_max = std::min(blk_.mc, (mt + MR - 1) / MR * MR);
    T* pack_a = static_cast<T*>(buf.pack_a.get(sizeof(T) * size_t(kc_max * mc_max)));
    T* edge = static_cast<T*>(buf.edge.get(sizeof(T) * MR * NR));
    T* scratch = nullptr;
    if (!direct_) scratch = static_cast<T*>(buf.scratch.get(sizeof(T) * size_t(mt * nc_panels_max * NR)));

    for (int64_t jc = n0; jc < n1; jc += nc) {
      const int64_t ncb = std::min(nc, n1 - jc);
      const int64_t half_panels = (ncb + NR - 1) / NR;
      const int64_t panels = half_panels * halves;
      T* dest;
      int64_t ldd;
      if (direct_) {
        dest = static_cast<T*>(v.c) + m0 * p_.ldc + jc;
        ldd = p_.ldc;
      } else {
        dest = scratch;
        ldd = panels * NR;
      }
      for (int64_t pc = 0; pc < p_.K; pc += blk_.kc) {
        const int64_t kcb = std::min(blk_.kc, p_.K - pc);
        pack_dispatch<T, NR>(p_.ab_dtype, v.b, jc, ncb, pc, kcb, pack_b);
        if (swiglu_) pack_dispatch<T, NR>(p_.ab_dtype, v.b, p_.N + jc, ncb, pc, kcb, pack_b + half_panels * NR * kcb);
        const bool first = pc == 0, last = pc + kcb >= p_.K;
        const T beta = first ? (direct_ ? T(p_.beta) : T(0)) : T(1);
        const T alpha = T(p_.alpha);
        for (int64_t ic = m0; ic < m1; ic += blk_.mc) {
          const int64_t mcb = std::min(blk_.mc, m1 - ic);
          pack_dispatch<T, MR>(p_.ab_dtype, v.a, ic, mcb, pc, kcb, pack_a);
          for (int64_t jr = 0; jr < panels; ++jr) {
            const int64_t col0 = (jr % half_panels) * NR;  // within this half (gate or up)
            const int64_t n_valid = std::min<int64_t>(NR, ncb - col0);
            const T* bp = pack_b + jr * NR * kcb;
            for (int64_t ir = 0; ir < mcb; ir += MR) {
              const int64_t m_valid = std::min<int64_t>(MR, mcb - ir);
              const T* ap = pack_a + ir * kcb;
              T* d = dest + (ic - m0 + ir) * ldd + jr * NR;
              if (m_valid == MR && n_valid == NR) {
                Spec::kernel(kcb, ap, bp, d, ldd, alpha, beta);
              } else {
                // Edge tile: the kernel merges into a full-size copy, so the arithmetic (and the
                // result) is exactly that of a full tile.
                if (beta != T(0)) {
                  std::fill(edge, edge + MR * NR, T(0));
                  for (int64_t i = 0; i < m_valid; ++i) std::copy(d + i * ldd, d + i * ldd + n_valid, edge + i * NR);
                }
                Spec::kernel(kcb, ap, bp, edge, NR, alpha, beta);
                for (int64_t i = 0; i < m_valid; ++i) std::copy(edge + i * NR, edge + i * NR + n_valid, d + i * ldd);
              }
            }
          }
          if (last) finish(v, ic, mcb, jc, ncb, dest + (ic - m0) * ldd, ldd, half_panels * NR);
        }
      }
    }
  }

  // K == 0: acc = 0, C = epilogue(beta·C).
  void run_empty_k(int64_t z, int64_t m0, int64_t m1, int64_t n0, int64_t n1) const {
    const BatchView v = view(z);
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t ci = m * p_.ldc + n;
        T x = T(0);
        if (p_.beta != 0.0f) x = T(p_.beta) * load_c<T>(v.c, p_.c_dtype, ci);
        if (p_.epilogue == MatmulEpilogue::residual_add) x += load_c<T>(v.r, p_.c_dtype, m * p_.ld_residual + n);
        if (swiglu_) x = T(0);  // silu(0) · 0
        store_c<T>(v.c, p_.c_dtype, ci, x);
      }
  }

 private:
  // After the last K slice of rows [ic, ic + mcb) x columns [jc, jc + ncb): apply the epilogue and
  // store. s points at the first of these rows in the destination (C itself when direct).
  void finish(const BatchView& v, int64_t ic, int64_t mcb, int64_t jc, int64_t ncb, const T* s, int64_t lds,
              int64_t up_offset) const {
    const bool residual = p_.epilogue == MatmulEpilogue::residual_add;
    if (direct_) {
      if (!residual) return;
      T* c = static_cast<T*>(v.c);
      const T* r = static_cast<const T*>(v.r);
      for (int64_t i = 0; i < mcb; ++i) {
        T* crow = c + (ic + i) * p_.ldc + jc;
        const T* rrow = r + (ic + i) * p_.ld_residual + jc;
        for (int64_t j = 0; j < ncb; ++j) crow[j] += rrow[j];
      }
      return;
    }
    for (int64_t i = 0; i < mcb; ++i) {
      const T* srow = s + i * lds;
      const int64_t cbase = (ic + i) * p_.ldc + jc;
      if (swiglu_) {
        for (int64_t j = 0; j < ncb; ++j) {
          const T g = srow[j], u = srow[up_offset + j];
          store_c<T>(v.c, p_.c_dtype, cbase + j, g / (T(1) + std::exp(-g)) * u);
        }
      } else {
        const int64_t rbase = (ic + i) * p_.ld_residual + jc;
        for (int64_t j = 0; j < ncb; ++j) {
          T x = srow[j];
          if (p_.beta != 0.0f) x += T(p_.beta) * load_c<T>(v.c, p_.c_dtype, cbase + j);
          if (residual) x += load_c<T>(v.r, p_.c_dtype, rbase + j);
          store_c<T>(v.c, p_.c_dtype, cbase + j, x);
        }
      }
    }
  }

  const MatmulParams& p_;
  Blocking blk_;
  bool swiglu_ = false, direct_ = false;
};

// Splits each batch element's C into tm x tn tiles (aligned to the micro-tile) so that
// batch * tm * tn is a multiple of the thread count when possible, then runs the tiles with
// parallel_for (each thread gets a contiguous run of tiles).
template <class Spec>
void run_gemm(const MatmulParams& p, Blocking blk) {
  constexpr int MR = Spec::MR, NR = Spec::NR;
  GemmDriver<Spec> driver(p, blk);
  const int64_t n_in = inner_n(p);
  const double flops = 2.0 * double(p.M) * double(n_in) * double(std::max<int64_t>(p.K, 1)) * double(p.batch);
  int64_t threads = flops < 4e6 ? 1 : num_threads();
  const int64_t m_units = (p.M + MR - 1) / MR, n_units = (p.N + NR - 1) / NR;
  auto gcd = [](int64_t x, int64_t y) {
    while (y) {
      int64_t t = x % y;
      x = y;
      y = t;
    }
    return x;
  };
  int64_t g = threads / gcd(p.batch, threads);  // tiles per batch element
  int64_t tm = 1, tn = 1;
  for (; g > 1; --g) {
    // Among tm * tn == g that fit the micro-tile grid, take the one with the squarest tiles
    // (least packing traffic: A is packed tn times, B tm times).
    double best = -1;
    for (int64_t a = 1; a <= g; ++a) {
      if (g % a) continue;
      const int64_t b = g / a;
      if (a > m_units || b > n_units) continue;
      const double tile_m = double(p.M) / double(a), tile_n = double(n_in) / double(b);
      const double cost = tile_m * tile_n * (1.0 / tile_m + 1.0 / tile_n);  // ~ pack traffic per flop
      if (best < 0 || cost < best) {
        best = cost;
        tm = a;
        tn = b;
      }
    }
    if (best >= 0) break;
  }
  const int64_t tiles = p.batch * tm * tn;
  auto bound = [](int64_t units, int64_t parts, int64_t i, int64_t unit, int64_t size) {
    return std::min(size, units * i / parts * unit);
  };
  parallel_for(0, tiles, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t z = t / (tm * tn), im = (t / tn) % tm, in = t % tn;
      const int64_t m0 = bound(m_units, tm, im, MR, p.M), m1 = bound(m_units, tm, im + 1, MR, p.M);
      const int64_t n0 = bound(n_units, tn, in, NR, p.N), n1 = bound(n_units, tn, in + 1, NR, p.N);
      if (m0 >= m1 || n0 >= n1) continue;
      if (p.K == 0) driver.run_empty_k(z, m0, m1, n0, n1);
      else driver.run_tile(z, m0, m1, n0, n1);
    }
  });
}

// ---------- skinny path (M <= kSkinnyM: decode-time x·Wᵀ, GEMV-like) ----------
//
// With a handful of rows the blocked path would spend its time packing B for a mostly padded
// micro-tile. Here B is read once, in place: with trans_b each C column is M dot products along a
// contiguous B row; without it each B row updates M partial output rows (axpy). A's M rows are
// gathered (widened) to a contiguous buffer first. The K sum order differs from the blocked path,
// but the choice depends only on M, never on the thread count.

constexpr int64_t kSkinnyM = 8;
// B rows (trans_b) a group of A rows meets before the next group comes (kept in L1/L2)
constexpr int64_t kSubColumns = 32;

// 64-byte vectors: one zmm on AVX-512, split by the compiler into ymm / xmm registers elsewhere.
template <class T>
using Vec = simd::Vec<T, 64>;
using simd::vload;

// out[m * ldo] = dot(a + m * K, b) for m < M (M <= kSkinnyM).
template <class T>
KILN_INLINE void dot_rows_body(const T* a, int64_t M, const T* b, int64_t K, T* out, int64_t ldo) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::kLanes;
  V acc[kSkinnyM][2] = {};
  int64_t k = 0;
  for (; k + 2 * L <= K; k += 2 * L) {
    const V b0 = vload<V>(b + k), b1 = vload<V>(b + k + L);
    for (int64_t m = 0; m < M; ++m) {
      acc[m][0] += vload<V>(a + m * K + k) * b0;
      acc[m][1] += vload<V>(a + m * K + k + L) * b1;
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    const V v = acc[m][0] + acc[m][1];
    T s = 0;
    for (int i = 0; i < L; ++i) s += v[i];
    for (int64_t kk = k; kk < K; ++kk) s += a[m * K + kk] * b[kk];
    out[m * ldo] = s;
  }
}

// out[m * ldo + j] += sum over r < rows of a[m * K + r] * b[r * ldb + j], for m < M, j < n
// (rows == 4: four B rows per pass over out, so out is loaded and stored a quarter as often).
template <class T>
KILN_INLINE void axpy_rows_body(const T* a, int64_t M, int64_t K, const T* b, int64_t ldb, int64_t rows, int64_t n,
                                T* out, int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    T* o = out + m * ldo;
    if (rows == 4) {
      const T a0 = a[m * K], a1 = a[m * K + 1], a2 = a[m * K + 2], a3 = a[m * K + 3];
      const T *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;
      for (int64_t j = 0; j < n; ++j) o[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        const T am = a[m * K + r];
        const T* br = b + r * ldb;
        for (int64_t j = 0; j < n; ++j) o[j] += am * br[j];
      }
    }
  }
}

template <class T>
struct SkinnyFns {
  void (*dot)(const T*, int64_t, const T*, int64_t, T*, int64_t);
  void (*axpy)(const T*, int64_t, int64_t, const T*, int64_t, int64_t, int64_t, T*, int64_t);
};

template <class T>
void dot_rows_generic(const T* a, int64_t M, const T* b, int64_t K, T* out, int64_t ldo) { dot_rows_body(a, M, b, K, out, ldo); }
template <class T>
void axpy_rows_generic(const T* a, int64_t M, int64_t K, const T* b, int64_t ldb, int64_t rows, int64_t n, T* out,
                      int64_t ldo) {
  axpy_rows_body(a, M, K, b, ldb, rows, n, out, ldo);
}
#if KILN_X86
template <class T>
KILN_TARGET_AVX512 void dot_rows_avx512(const T* a, int64_t M, const T* b, int64_t K, T* out, int64_t ldo) { dot_rows_body(a, M, b, K, out, ldo); }
template <class T>
KILN_TARGET_AVX512 void axpy_rows_avx512(const T* a, int64_t M, int64_t K, const T* b, int64_t ldb, int64_t rows, int64_t n, T* out,
                                         int64_t ldo) {
  axpy_rows_body(a, M, K, b, ldb, rows, n, out, ldo);
}
template <class T>
KILN_TARGET_AVX2 void dot_rows_avx2(const T* a, int64_t M, const T* b, int64_t K, T* out, int64_t ldo) { dot_rows_body(a, M, b, K, out, ldo); }
template <class T>
KILN_TARGET_AVX2 void axpy_rows_avx2(const T* a, int64_t M, int64_t K, const T* b, int64_t ldb, int64_t rows, int64_t n, T* out,
                                       int64_t ldo) {
  axpy_rows_body(a, M, K, b, ldb, rows, n, out, ldo);
}
#endif

template <class T>
SkinnyFns<T> skinny_fns() {
#if KILN_X86
  if (cpu_isa() == Isa::avx512) return {dot_rows_avx512<T>, axpy_rows_avx512<T>};
  if (cpu_isa() == Isa::avx2) return {dot_rows_avx2<T>, axpy_rows_avx2<T>};
#endif
  return {dot_rows_generic<T>, axpy_rows_generic<T>};
}

// Widens n elements of type dtype at src (element stride 1) to dst.
template <class T>
void widen_row(DType t, const void* src, int64_t n, T* dst) {
  if constexpr (sizeof(T) == 8) {
    std::memcpy(dst, src, size_t(n) * sizeof(T));
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    switch (t) {
      case DType::bf16: for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(h[i]); break;
      case DType::f16: for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_float(h[i]); break;
      default: std::memcpy(dst, src, size_t(n) * sizeof(T)); break;
    }
  }
}

#if KILN_X86
// Batch-invariant f32 tile (AVX-512): R rows x C columns of dot products out[r, c] = a_r · b_c.
// Every element has its own 16-lane accumulator (lane l sums k = l mod 16 in k order, fused
// multiply-adds, the K tail masked to zero), reduced by _mm512_reduce_add_ps: the same
// instructions for an element whatever R, C and M are, so its value never depends on the batch,
// while a 4 x 4 tile loads 8 vectors per 16 FMAs (the 8-row dot path loads 18).
template <int R, int C>
KILN_TARGET_AVX512 void dot_tile_avx512(const float* a, int64_t K, const float* const* b, float* out, int64_t ldo) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_loadu_ps(b[c] + k);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_loadu_ps(a + r * K + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(av, bv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const __mmask16 mask = __mmask16((1u << (K - k)) - 1);
    __m512 bv[C];
    for (int c = 0; c < C; ++c) bv[c] = _mm512_maskz_loadu_ps(mask, b[c] + k);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_maskz_loadu_ps(mask, a + r * K + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(av, bv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * ldo + c] = _mm512_reduce_add_ps(acc[r][c]);
}

template <int R>
void dot_tile_rows(int64_t cols, const float* a, int64_t K, const float* const* b, float* out, int64_t ldo) {
  switch (cols) {
    case 1: dot_tile_avx512<R, 1>(a, K, b, out, ldo); break;
    case 2: dot_tile_avx512<R, 2>(a, K, b, out, ldo); break;
    case 3: dot_tile_avx512<R, 3>(a, K, b, out, ldo); break;
    default: dot_tile_avx512<R, 4>(a, K, b, out, ldo); break;
  }
}

// out (rows x cols, leading dim ldo) = A rows (rows x K) · B rows b[0..cols)ᵀ, rows, cols <= 4.
void dot_tile(int64_t rows, int64_t cols, const float* a, int64_t K, const float* const* b, float* out, int64_t ldo) {
  switch (rows) {
    case 1: dot_tile_rows<1>(cols, a, K, b, out, ldo); break;
    case 2: dot_tile_rows<2>(cols, a, K, b, out, ldo); break;
    case 3: dot_tile_rows<3>(cols, a, K, b, out, ldo); break;
    default: dot_tile_rows<4>(cols, a, K, b, out, ldo); break;
  }
}
#endif

template <class T>
void run_skinny(const MatmulParams& p) {
  const SkinnyFns<T> fns = skinny_fns<T>();
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu, residual = p.epilogue == MatmulEpilogue::residual_add;
  const size_t ab = dtype_size(p.ab_dtype), cs = dtype_size(p.c_dtype);
  const bool b_native = p.ab_dtype == (sizeof(T) == 8 ? DType::f64 : DType::f32);
#if KILN_X86
  const bool tiled = sizeof(T) == 4 && cpu_isa() == Isa::avx512;
#endif
  constexpr int64_t kChunk = 512;  // output columns per task
  const int64_t chunks = (p.N + kChunk - 1) / kChunk;
  const int64_t halves = swiglu ? 2 : 1;
  const double flops = 2.0 * double(p.M) * double(p.N * halves) * double(p.K) * double(p.batch);
  const int64_t grain = flops < 4e6 ? p.batch * chunks : 1;
  parallel_for(0, p.batch * chunks, grain, [&](int64_t lo, int64_t hi) {
    ThreadBuffers& buf = thread_buffers();
    T* arows = static_cast<T*>(buf.pack_a.get(sizeof(T) * size_t(p.M * p.K + 1)));
    T* acc = static_cast<T*>(buf.scratch.get(sizeof(T) * size_t(p.M * kChunk * halves)));
    T* brow = static_cast<T*>(buf.pack_b.get(sizeof(T) * size_t(std::max(kSubColumns * p.K, 4 * kChunk))));
    int64_t gathered_z = -1;
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t z = t / chunks, n0 = (t % chunks) * kChunk, nb = std::min(kChunk, p.N - n0);
      const char* a = static_cast<const char*>(p.a) + z * p.stride_a * ab;
      const char* b = static_cast<const char*>(p.b) + z * p.stride_b * ab;
      if (z != gathered_z) {  // opA rows 0..M-1, widened, (M, K) contiguous
        for (int64_t m = 0; m < p.M; ++m)
          for (int64_t k = 0; k < p.K; ++k) {
            const int64_t i = p.trans_a ? k * p.lda + m : m * p.lda + k;
            arows[m * p.K + k] = T(load_c<T>(a, p.ab_dtype, i));
          }
        gathered_z = z;
      }
      // acc (M, halves * nb): the gate (or only) columns, then the up columns
      const int64_t ldo = halves * nb;
      for (int64_t h = 0; h < halves; ++h) {
        const int64_t col0 = h * p.N + n0;
        T* out = acc + h * nb;
#if KILN_X86
        if (p.trans_b && p.batch_invariant && tiled) {
          // f32 on AVX-512: 4 x 4 tiles of independent dot products (see dot_tile_avx512)
          for (int64_t j0 = 0; j0 < nb; j0 += kSubColumns) {
            const int64_t jn = std::min(kSubColumns, nb - j0);
            const float* rows_b[kSubColumns];
            for (int64_t j = 0; j < jn; ++j) {
              const char* src = b + (col0 + j0 + j) * p.ldb * ab;
              if (b_native) {
                rows_b[j] = reinterpret_cast<const float*>(src);
              } else {
                widen_row<T>(p.ab_dtype, src, p.K, brow + j * p.K);
                rows_b[j] = reinterpret_cast<const float*>(brow + j * p.K);
              }
            }
            for (int64_t m0 = 0; m0 < p.M; m0 += 4)
              for (int64_t j = 0; j < jn; j += 4)
                dot_tile(std::min<int64_t>(4, p.M - m0), std::min<int64_t>(4, jn - j), reinterpret_cast<const float*>(arows) + m0 * p.K, p.K,
                         rows_b + j, reinterpret_cast<float*>(out) + m0 * ldo + j0 + j, ldo);
          }
        } else
#endif
        if (p.trans_b) {
          // kSubColumns B rows stay in cache while every group of kSkinnyM A rows meets them; each
          // output element is one dot() call whatever M is, so a row's result does not depend on M
          for (int64_t j0 = 0; j0 < nb; j0 += kSubColumns) {
            const int64_t jn = std::min(kSubColumns, nb - j0);
            if (!b_native)
              for (int64_t j = 0; j < jn; ++j) widen_row<T>(p.ab_dtype, b + (col0 + j0 + j) * p.ldb * ab, p.K, brow + j * p.K);
            for (int64_t m0 = 0; m0 < p.M; m0 += kSkinnyM) {
              const int64_t rows = std::min(kSkinnyM, p.M - m0);
              for (int64_t j = 0; j < jn; ++j) {
                const T* row = b_native ? reinterpret_cast<const T*>(b + (col0 + j0 + j) * p.ldb * ab) : brow + j * p.K;
                fns.dot(arows + m0 * p.K, rows, row, p.K, out + m0 * ldo + j0 + j, ldo);
              }
            }
          }
        } else {
          for (int64_t m = 0; m < p.M; ++m) std::fill(out + m * ldo, out + m * ldo + nb, T(0));
          for (int64_t k = 0; k < p.K; k += 4) {
            const int64_t rows = std::min<int64_t>(4, p.K - k);
            const char* src = b + (k * p.ldb + col0) * ab;
            if (b_native) {
              fns.axpy(arows + k, p.M, p.K, reinterpret_cast<const T*>(src), p.ldb, rows, nb, out, ldo);
            } else {
              for (int64_t r = 0; r < rows; ++r) widen_row<T>(p.ab_dtype, src + r * p.ldb * ab, nb, brow + r * kChunk);
              fns.axpy(arows + k, p.M, p.K, brow, kChunk, rows, nb, out, ldo);
            }
          }
        }
      }
      // epilogue and store
      char* c = static_cast<char*>(p.c) + z * p.stride_c * cs;
      const char* r = residual ? static_cast<const char*>(p.residual) + z * p.stride_residual * cs : nullptr;
      const T alpha = T(p.alpha);
      for (int64_t m = 0; m < p.M; ++m)
        for (int64_t j = 0; j < nb; ++j) {
          const int64_t ci = m * p.ldc + n0 + j;
          T x = alpha * acc[m * ldo + j];
          if (swiglu) {
            const T u = alpha * acc[m * ldo + nb + j];
            x = x / (T(1) + std::exp(-x)) * u;
          } else {
            if (p.beta != 0.0f) x += T(p.beta) * load_c<T>(c, p.c_dtype, ci);
            if (residual) x += load_c<T>(r, p.c_dtype, m * p.ld_residual + n0 + j);
          }
          store_c<T>(c, p.c_dtype, ci, x);
        }
    }
  });
}

Blocking blocking_from_env(Blocking b) {
  auto get = [](const char* name, int64_t dflt) {
    const char* s = std::getenv(name);
    return s ? std::max<int64_t>(1, std::atoll(s)) : dflt;
  };
  b.mc = get("KILN_GEMM_MC", b.mc);
  b.kc = get("KILN_GEMM_KC", b.kc);
  b.nc = get("KILN_GEMM_NC", b.nc);
  return b;
}

}  // namespace

const char* matmul_cpu_isa() { return cpu_isa_name(); }

void matmul_cpu(const MatmulParams& p) {
  matmul_validate(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;
  // Blocking {MC, KC, NC} measured on Zen 4 (32 KB L1d, 1 MB L2): KC = 512 f32 (256 f64) keeps the
  // MR x KC A panel in L1 and the KC x NR B panel in L2; larger KC also means fewer C merges.
  const bool f64 = p.ab_dtype == DType::f64;
  if ((p.M <= kSkinnyM || p.batch_invariant) && p.K > 0) {
    if (f64) run_skinny<double>(p);
    else run_skinny<float>(p);
    return;
  }
#if KILN_X86
  if (cpu_isa() == Isa::avx512) {
    if (f64) run_gemm<KernelSpec<double, kMr512d, kNr512d, kernel_avx512_f64>>(p, blocking_from_env({kMr512d * 12, 256, 2048}));
    else run_gemm<KernelSpec<float, kMr512, kNr512, kernel_avx512>>(p, blocking_from_env({kMr512 * 12, 512, 2048}));
    return;
  }
  if (cpu_isa() == Isa::avx2) {
    if (f64) run_gemm<KernelSpec<double, kMr256d, kNr256d, kernel_avx2_f64>>(p, blocking_from_env({kMr256d * 24, 256, 2048}));
    else run_gemm<KernelSpec<float, kMr256, kNr256, kernel_avx2>>(p, blocking_from_env({kMr256 * 24, 512, 2048}));
    return;
  }
#endif
  if (f64) run_gemm<KernelSpec<double, 4, 4, kernel_generic<double, 4, 4>>>(p, blocking_from_env({128, 256, 2048}));
  else run_gemm<KernelSpec<float, 4, 8, kernel_generic<float, 4, 8>>>(p, blocking_from_env({128, 512, 2048}));
}

}  // namespace kiln

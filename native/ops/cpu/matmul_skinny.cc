// The CPU matmul's skinny path, matmul_skinny_cpu (contract: ops/matmul.h), for M <= kSkinnyM
// (decode-time x·Wᵀ, GEMV-like) and for every M with batch_invariant.
//
// With a handful of rows the blocked path would spend its time packing B for a mostly padded
// micro-tile. Here B is read once, in place: with trans_b each C column is M dot products along a
// contiguous B row; without it each B row updates M partial output rows (axpy). A's M rows are
// gathered (widened) to a contiguous buffer first. The K sum order differs from the blocked path,
// but the choice depends only on M, never on the thread count.
// batch_invariant sends every M here: each output element is computed with the same instruction
// sequence whatever M is (f32 on AVX-512: 4 x 4 tiles of 16-lane dot products, dot_tile_avx512;
// otherwise groups of 8 rows), so a row's result is bit-identical whatever rows share the call
// (the serving engine's batches: decode at M = 1 reads the weights once, with no packing).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "matmul_internal.h"
#include "simd.h"

namespace kiln::matmul_cpu_detail {

namespace {

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

}  // namespace

void matmul_skinny_cpu(const MatmulParams& p) {
  if (p.ab_dtype == DType::f64) run_skinny<double>(p);
  else run_skinny<float>(p);
}

}  // namespace kiln::matmul_cpu_detail

// The CPU matmul's blocked path, matmul_blocked_cpu (contract: ops/matmul.h): a
// GotoBLAS/BLIS-style blocked GEMM. Loop nest per tile of C a thread owns:
//   jc over NC columns of C   → (pc over KC of K: pack B (KC x NC) into NR-wide panels
//                                  → ic over MC rows: pack A (MC x KC) into MR-tall panels
//                                     → jr over NR panels → ir over MR panels: microkernel)
// Packing does the transposes and the bf16/f16 → f32 widening, and zero-pads panel edges, so the
// microkernel always runs on full MR x NR tiles from contiguous memory. The microkernel keeps
// the MR x NR accumulator in registers over one KC slice, then merges it into its destination:
// d = alpha·acc (first slice, beta == 0), d = alpha·acc + beta·d (first slice), d = alpha·acc + d.
// The destination is C itself when C has the compute dtype and no swiglu ("direct"); otherwise
// an f32 scratch for the tile's rows x NC columns, converted and epilogued after the last slice.
// For swiglu each NC block packs the gate columns and then the matching up columns, so a
// block's scratch holds both halves of the columns it finishes.
// Every element's K sum runs in the same order whatever the tiling, so results do not depend
// on the thread count.
// Microkernels: AVX-512 14x32 f32 and 14x16 f64, AVX2+FMA 6x16 f32 and 6x8 f64, portable 4x8 f32
// and 4x4 f64, picked at run time (runtime/cpu_isa.h; the attributes are simd.h's).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "matmul_internal.h"
#include "simd.h"

namespace kiln::matmul_cpu_detail {

namespace {

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

void matmul_blocked_cpu(const MatmulParams& p) {
  // Blocking {MC, KC, NC} measured on Zen 4 (32 KB L1d, 1 MB L2): KC = 512 f32 (256 f64) keeps the
  // MR x KC A panel in L1 and the KC x NR B panel in L2; larger KC also means fewer C merges.
  const bool f64 = p.ab_dtype == DType::f64;
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

}  // namespace kiln::matmul_cpu_detail

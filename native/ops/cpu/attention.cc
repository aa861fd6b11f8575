// Attention forward and backward on the CPU (contract: ops/attention.h).
//
//   q: (B, Tq, Hq, D)  k, v: (B, Tk, Hkv, D)  out: (B, Tq, Hq, D)  lse: (B, Hq, Tq)
//   S = scale q·kᵀ (causal: key j masked for query i when j > i + Tk - Tq), P = softmax(S),
//   out = P·v, lse = log sum_j exp(S_ij).
//   Backward: dP = dout·vᵀ, Delta_i = dout_i·out_i, dS = P (dP - Delta),
//   dq = scale dS·k, dk = scale dSᵀ·q, dv = Pᵀ·dout (dk, dv summed over the group's query heads).
//   Every gradient is written (=).
//
// Two implementations of each direction:
//   *_reference_cpu: plain loops in double over one row of the score matrix at a time (the oracle).
//   *_cpu: FlashAttention-2 on the CPU. Queries and keys are cut into 64-row tiles; a query tile
//     streams over the key tiles it can see (fully masked tiles are never visited) keeping a running
//     max m, sum l and unnormalized output O (online softmax), so no T×T matrix exists. The scores
//     live in log2 units (scale·log2 e folded in) so the exponential is a cheap exp2. The backward
//     recomputes P = exp2(S - lse) per tile in two race-free passes: one per (kv head, key tile)
//     accumulating dk, dv over every query head of the group and every query tile, one per
//     (query head, query tile) accumulating dq. That costs 7 tile GEMMs per (query tile, key
//     tile) pair instead of FlashAttention-2's 5, but needs no atomics and is deterministic. K and V are packed once per call into tile-major
//     layouts (Kᵀ tiles for S = Q·Kᵀ, zero-padded V rows for O += P·V) so the inner GEMM tiles
//     read contiguous, zero-padded memory; D is padded to a multiple of 64 bytes.
//   The tile GEMMs use GCC vector extensions; the same source is compiled for AVX-512, AVX2+FMA
//   and the baseline ISA (target attributes) and picked at run time.
#include "attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "simd.h"

namespace kiln {

namespace {

constexpr int64_t kBr = 64;  // query rows per tile
constexpr int64_t kBc = 64;  // keys per tile
constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2 = 0.6931471805599453094;

// ---------- validation ----------

void check_float_dtype(DType t, const char* op) {
  int32_t code = static_cast<int32_t>(t);
  check(dtype_valid(code) && dtype_is_float(t), "ERR_DTYPE",
        std::string(op) + ": dtype must be f32, f64, bf16 or f16, got " + (dtype_valid(code) ? dtype_name(t) : "an invalid code"));
}

// Product of non-negative sizes, rejecting anything that would not fit an int64 byte count.
int64_t checked_numel(std::initializer_list<int64_t> dims, const char* op) {
  double approx = 1.0;
  int64_t n = 1;
  for (int64_t d : dims) {
    approx *= double(d);
    n *= d;
  }
  check(approx < 1e17, "ERR_SHAPE", std::string(op) + ": tensor too large");
  return n;
}

void check_attention_shape(const char* op, int64_t B, int64_t Tq, int64_t Tk, int64_t Hq, int64_t Hkv, int64_t D, float scale) {
  check(B >= 0 && Tq >= 0 && Tk >= 0, "ERR_SHAPE",
        std::string(op) + ": B, Tq, Tk must be >= 0, got B=" + std::to_string(B) + " Tq=" + std::to_string(Tq) + " Tk=" + std::to_string(Tk));
  check(Hq >= 1 && Hkv >= 1 && D >= 1, "ERR_SHAPE",
        std::string(op) + ": Hq, Hkv, D must be >= 1, got Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D));
  check(Hq % Hkv == 0, "ERR_SHAPE",
        std::string(op) + ": Hkv must divide Hq (grouped-query attention), got Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv));
  check(std::isfinite(scale), "ERR_ARG", std::string(op) + ": scale must be finite");
  checked_numel({B, Tq, Hq, D}, op);
  checked_numel({B, Tk, Hkv, D}, op);
}

void check_ptr(const void* ptr, int64_t numel, const char* op, const char* name) {
  check(numel == 0 || ptr != nullptr, "ERR_ARG", std::string(op) + ": " + name + " is null");
}

// ---------- typed row load / store (compute type T: float, or double for f64) ----------

template <class T>
void load_row(T* dst, const void* src, DType dt, int64_t offset, int64_t n) {
  switch (dt) {
    case DType::f32: {
      const float* s = static_cast<const float*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = T(s[i]);
      break;
    }
    case DType::f64: {
      const double* s = static_cast<const double*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = T(s[i]);
      break;
    }
    case DType::bf16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = T(bf16_to_float(s[i]));
      break;
    }
    case DType::f16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = T(f16_to_float(s[i]));
      break;
    }
    default: fail("ERR_DTYPE", "attention: unsupported dtype");
  }
}

template <class T>
void store_row(void* dst, DType dt, int64_t offset, const T* src, int64_t n) {
  switch (dt) {
    case DType::f32: {
      float* d = static_cast<float*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = float(src[i]);
      break;
    }
    case DType::f64: {
      double* d = static_cast<double*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = double(src[i]);
      break;
    }
    case DType::bf16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(float(src[i]));
      break;
    }
    case DType::f16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_f16(float(src[i]));
      break;
    }
    default: fail("ERR_DTYPE", "attention: unsupported dtype");
  }
}

// Last key index (inclusive) query row i may see; Tk - 1 without causal masking.
inline int64_t last_visible_key(int64_t i, int64_t Tq, int64_t Tk, bool causal) {
  return causal ? std::min(Tk - 1, i + (Tk - Tq)) : Tk - 1;
}

// ---------- ISA selection (runtime/cpu_isa.h picks; simd.h's attributes compile each variant) ----------

// Kernel shapes per ISA: vector bytes, rows (R) and vectors per row (NV) of the GEMM micro-tile,
// sized so R*NV accumulators plus NV operand vectors fit the register file.
struct CfgAvx512 { static constexpr int kBytes = 64, kR = 4, kNV = 4; };
struct CfgAvx2 { static constexpr int kBytes = 32, kR = 4, kNV = 2; };
struct CfgGeneric { static constexpr int kBytes = 16, kR = 4, kNV = 2; };

// D is padded to a multiple of 64 bytes worth of elements: a whole number of vectors for every ISA.
template <class T>
int64_t padded_dim(int64_t D) {
  constexpr int64_t w = 64 / sizeof(T);
  return (D + w - 1) / w * w;
}

using simd::Vec;
using simd::vload;
using simd::vstore;

// C[R][NV*W] (= or +=) A[R][K] · B[K][NV*W]; A, B, C row-major with leading dims lda, ldb, ldc.
template <class T, int Bytes, int R, int NV, bool kAccumulate>
KILN_INLINE void micro_tile(int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  using V = typename Vec<T, Bytes>::type;
  constexpr int W = Vec<T, Bytes>::kLanes;
  V acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = kAccumulate ? vload<V>(c + r * ldc + v * W) : V{};
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = vload<V>(b + k * ldb + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const T ar = a[r * lda + k];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) vstore(c + r * ldc + v * W, acc[r][v]);
}

// C[M][N] (= or +=) A[M][K] · B[K][N]; M a multiple of Cfg::kR, N a multiple of the lane count.
template <class T, class Cfg, bool kAccumulate>
KILN_INLINE void gemm_tile(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  constexpr int W = Vec<T, Cfg::kBytes>::kLanes;
  constexpr int kCols = Cfg::kNV * W;
  for (int64_t i = 0; i < M; i += Cfg::kR) {
    int64_t j = 0;
    for (; j + kCols <= N; j += kCols)
      micro_tile<T, Cfg::kBytes, Cfg::kR, Cfg::kNV, kAccumulate>(K, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);
    for (; j < N; j += W) micro_tile<T, Cfg::kBytes, Cfg::kR, 1, kAccumulate>(K, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);
  }
}

// 2^x for x <= ~0: rounds x to n + f (|f| <= 1/2), 2^f by a degree-6 polynomial (relative error
// ~2e-7), 2^n through the exponent bits. x < -126 (including -inf) gives exactly 0.
template <int Bytes>
KILN_INLINE typename Vec<float, Bytes>::type exp2_vec(const typename Vec<float, Bytes>::type& x) {
  using V = typename Vec<float, Bytes>::type;
  typedef int32_t VI __attribute__((vector_size(Bytes)));
  const V lo = V{} - 126.0f, hi = V{} + 126.0f;
  V xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  V n = (xc + kMagic) - kMagic;
  V f = xc - n;
  V p = V{} + 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  V r = p * (V)bits;  // (V)bits reinterprets the bits
  return x < lo ? V{} : r;
}

// s[0..kBc): s = s * c - shift for j < visible, -inf (masked) beyond; returns the max of s.
template <class T, int Bytes>
KILN_INLINE T scale_mask_max(T* s, T c, T shift, int64_t visible) {
  using V = typename Vec<T, Bytes>::type;
  constexpr int W = Vec<T, Bytes>::kLanes;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < visible; ++j) s[j] = s[j] * c - shift;
  for (int64_t j = visible; j < kBc; ++j) s[j] = neg_inf;
  V m = vload<V>(s);
  for (int64_t j = W; j < kBc; j += W) {
    V x = vload<V>(s + j);
    m = x > m ? x : m;
  }
  T r = m[0];
  for (int l = 1; l < W; ++l) r = m[l] > r ? m[l] : r;
  return r;
}

// s[j] = 2^(s[j] - m) for j < kBc; returns the sum. Masked entries (-inf) become 0.
template <class T, int Bytes>
KILN_INLINE T exp2_row_sum(T* s, T m) {
  if constexpr (std::is_same<T, float>::value) {
    using V = typename Vec<float, Bytes>::type;
    constexpr int W = Vec<float, Bytes>::kLanes;
    V acc{};
    for (int64_t j = 0; j < kBc; j += W) {
      V e = exp2_vec<Bytes>(vload<V>(s + j) - m);
      vstore(s + j, e);
      acc += e;
    }
    float r = 0.0f;
    for (int l = 0; l < W; ++l) r += acc[l];
    return r;
  } else {
    T r = 0;
    for (int64_t j = 0; j < kBc; ++j) {
      s[j] = std::exp2(s[j] - m);
      r += s[j];
    }
    return r;
  }
}

// s[j] = 2^(s[j]) in place for j < kBc (inputs already shifted; -inf gives 0).
template <class T, int Bytes>
KILN_INLINE void exp2_row(T* s) {
  if constexpr (std::is_same<T, float>::value) {
    using V = typename Vec<float, Bytes>::type;
    constexpr int W = Vec<float, Bytes>::kLanes;
    for (int64_t j = 0; j < kBc; j += W) vstore(s + j, exp2_vec<Bytes>(vload<V>(s + j)));
  } else {
    for (int64_t j = 0; j < kBc; ++j) s[j] = std::exp2(s[j]);
  }
}

// Runs job.run<Cfg>(next) on every pool thread; items are claimed dynamically from `next`, so
// uneven (causal) items balance. job.run is always_inline, so it is compiled for each ISA here.
#if KILN_X86
template <class Job>
KILN_TARGET_AVX512_PREFER512 void run_job_avx512(const Job& job, std::atomic<int64_t>& next) { job.template run<CfgAvx512>(next); }
template <class Job>
KILN_TARGET_AVX2 void run_job_avx2(const Job& job, std::atomic<int64_t>& next) { job.template run<CfgAvx2>(next); }
#endif
template <class Job>
void run_job_generic(const Job& job, std::atomic<int64_t>& next) { job.template run<CfgGeneric>(next); }

template <class Job>
void run_job(const Job& job, int64_t items) {
  if (items <= 0) return;
  std::atomic<int64_t> next{0};
  const Isa isa = cpu_isa();
  const int64_t workers = std::min<int64_t>(num_threads(), items);
  parallel_for(0, workers, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t w = lo; w < hi; ++w) {
#if KILN_X86
      if (isa == Isa::avx512) { run_job_avx512(job, next); continue; }
      if (isa == Isa::avx2) { run_job_avx2(job, next); continue; }
#endif
      run_job_generic(job, next);
    }
  });
}

// ---------- packing (layouts the tile GEMMs read) ----------

// kt: (B, Hkv, nkb, D, kBc) = Kᵀ per key tile, zero beyond Tk.
template <class T>
void pack_transposed_tiles(std::vector<T>& kt, const void* src, DType dt, int64_t B, int64_t Tk, int64_t Hkv, int64_t D) {
  const int64_t nkb = (Tk + kBc - 1) / kBc;
  kt.assign(static_cast<size_t>(B * Hkv * nkb * D * kBc), T(0));
  parallel_for(0, B * Hkv * nkb, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> row(static_cast<size_t>(D));
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t kb = t % nkb, bh = t / nkb, b = bh / Hkv, h = bh % Hkv;
      T* tile = kt.data() + t * D * kBc;
      const int64_t k0 = kb * kBc, kvalid = std::min(kBc, Tk - k0);
      for (int64_t j = 0; j < kvalid; ++j) {
        load_row(row.data(), src, dt, ((b * Tk + k0 + j) * Hkv + h) * D, D);
        for (int64_t d = 0; d < D; ++d) tile[d * kBc + j] = row[d];
      }
    }
  });
}

// rows: (B, H, nblocks, block, Dp) = the rows of each tile, zero-padded to Dp columns and to a
// whole tile; src is (B, T, H, D).
template <class T>
void pack_row_tiles(std::vector<T>& rows, const void* src, DType dt, int64_t B, int64_t T_len, int64_t H, int64_t D, int64_t block) {
  const int64_t nb = (T_len + block - 1) / block, Dp = padded_dim<T>(D);
  rows.assign(static_cast<size_t>(B * H * nb * block * Dp), T(0));
  parallel_for(0, B * H * nb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t kb = t % nb, bh = t / nb, b = bh / H, h = bh % H;
      T* tile = rows.data() + t * block * Dp;
      const int64_t r0 = kb * block, valid = std::min(block, T_len - r0);
      for (int64_t j = 0; j < valid; ++j) load_row(tile + j * Dp, src, dt, ((b * T_len + r0 + j) * H + h) * D, D);
    }
  });
}

// ---------- forward ----------

template <class T>
struct ForwardJob {
  const AttentionParams* p;
  const T* kt;      // (B, Hkv, nkb, D, kBc)
  const T* v_rows;  // (B, Hkv, nkb, kBc, Dp)
  int64_t Dp, nqb, nkb, group;
  T c;  // scale * log2(e): scores in log2 units

  template <class Cfg>
  KILN_INLINE void run(std::atomic<int64_t>& next) const {
    const AttentionParams& a = *p;
    const int64_t D = a.D, Tq = a.Tq, Tk = a.Tk, Hq = a.Hq, Hkv = a.Hkv;
    constexpr int64_t R = Cfg::kR;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    std::vector<T> q_tile(static_cast<size_t>(kBr * Dp)), o_acc(static_cast<size_t>(kBr * Dp)), s(static_cast<size_t>(kBr * kBc)), m(kBr), l(kBr);
    const int64_t items = a.B * Hq * nqb;
    for (int64_t item; (item = next.fetch_add(1)) < items;) {
      // Heaviest (last, with causal) query tiles first.
      const int64_t qb = nqb - 1 - item / (a.B * Hq), bh = item % (a.B * Hq), b = bh / Hq, h = bh % Hq, hk = h / group;
      const int64_t q0 = qb * kBr, qvalid = std::min(kBr, Tq - q0), mrows = (qvalid + R - 1) / R * R;
      std::fill(q_tile.begin(), q_tile.begin() + mrows * Dp, T(0));
      for (int64_t i = 0; i < qvalid; ++i) load_row(q_tile.data() + i * Dp, a.q, a.dtype, ((b * Tq + q0 + i) * Hq + h) * D, D);
      std::fill(o_acc.begin(), o_acc.begin() + mrows * Dp, T(0));
      std::fill(m.begin(), m.end(), neg_inf);
      std::fill(l.begin(), l.end(), T(0));

      const int64_t last_key = last_visible_key(q0 + qvalid - 1, Tq, Tk, a.causal);
      const int64_t kb_end = last_key < 0 ? 0 : std::min(nkb, last_key / kBc + 1);
      for (int64_t kb = 0; kb < kb_end; ++kb) {
        const int64_t k0 = kb * kBc, kvalid = std::min(kBc, Tk - k0);
        const T* kt_tile = kt + ((b * Hkv + hk) * nkb + kb) * D * kBc;
        const T* v_tile = v_rows + ((b * Hkv + hk) * nkb + kb) * kBc * Dp;
        // s: (mrows, kBc) = q_tile · Kᵀ
        gemm_tile<T, Cfg, false>(mrows, kBc, D, q_tile.data(), Dp, kt_tile, kBc, s.data(), kBc);
        for (int64_t i = 0; i < mrows; ++i) {
          T* row = s.data() + i * kBc;
          int64_t visible = i < qvalid ? std::min(kvalid, last_visible_key(q0 + i, Tq, Tk, a.causal) + 1 - k0) : 0;
          visible = std::max<int64_t>(visible, 0);
          const T row_max = scale_mask_max<T, Cfg::kBytes>(row, c, T(0), visible);
          const T m_new = std::max(m[i], row_max);
          if (m_new == neg_inf) {  // nothing visible yet: contributes nothing
            std::fill(row, row + kBc, T(0));
            continue;
          }
          const T correction = std::exp2(m[i] - m_new);  // 0 when m[i] = -inf
          l[i] = l[i] * correction + exp2_row_sum<T, Cfg::kBytes>(row, m_new);
          m[i] = m_new;
          if (correction != T(1)) {
            T* o = o_acc.data() + i * Dp;
            for (int64_t d = 0; d < Dp; ++d) o[d] *= correction;
          }
        }
        // o_acc: (mrows, Dp) += P · V  (P entries of masked keys are 0, V rows past Tk are 0)
        gemm_tile<T, Cfg, true>(mrows, Dp, kvalid, s.data(), kBc, v_tile, Dp, o_acc.data(), Dp);
      }
      T* lse = static_cast<T*>(a.lse) + (b * Hq + h) * Tq + q0;
      for (int64_t i = 0; i < qvalid; ++i) {
        T* o = o_acc.data() + i * Dp;
        if (l[i] > T(0)) {
          const T inv = T(1) / l[i];
          for (int64_t d = 0; d < D; ++d) o[d] *= inv;
          lse[i] = T((double(m[i]) + std::log2(double(l[i]))) * kLn2);
        } else {  // the row sees no key (causal with Tq > Tk)
          std::fill(o, o + D, T(0));
          lse[i] = neg_inf;
        }
        store_row(a.out, a.dtype, ((b * Tq + q0 + i) * Hq + h) * D, o, D);
      }
    }
  }
};

template <class T>
void attention_forward_fast(const AttentionParams& p) {
  ForwardJob<T> job;
  job.p = &p;
  job.Dp = padded_dim<T>(p.D);
  job.nqb = (p.Tq + kBr - 1) / kBr;
  job.nkb = (p.Tk + kBc - 1) / kBc;
  job.group = p.Hq / p.Hkv;
  job.c = T(double(p.scale) * kLog2e);
  std::vector<T> kt, v_rows;
  pack_transposed_tiles(kt, p.k, p.dtype, p.B, p.Tk, p.Hkv, p.D);
  pack_row_tiles(v_rows, p.v, p.dtype, p.B, p.Tk, p.Hkv, p.D, kBc);
  job.kt = kt.data();
  job.v_rows = v_rows.data();
  run_job(job, p.B * p.Hq * job.nqb);
}

// ---------- backward ----------

template <class T>
struct BackwardShared {
  const AttentionBackwardParams* p;
  const T* kt;      // (B, Hkv, nkb, D, kBc)   Kᵀ tiles, for S = Q·Kᵀ
  const T* vt;      // (B, Hkv, nkb, D, kBc)   Vᵀ tiles, for dP = dO·Vᵀ
  const T* k_rows;  // (B, Hkv, nkb, kBc, Dp)  K rows, for dQ += dS·K
  const T* q_rows;  // (B, Hq, nqb, kBr, Dp)
  const T* do_rows; // (B, Hq, nqb, kBr, Dp)
  const T* lse2;    // (B, Hq, nqb * kBr) lse in log2 units; -inf on padding rows
  const T* delta;   // (B, Hq, nqb * kBr)
  int64_t Dp, nqb, nkb, group;
  T c;  // scale * log2(e)

  // For a (query tile, key tile) pair: s <- P, dp <- dS = P (dP - Delta), given s = Q·Kᵀ and
  // dp = dO·Vᵀ (both (mrows, kBc)). Rows past qvalid and masked keys get P = dS = 0.
  template <class Cfg>
  KILN_INLINE void p_and_ds(T* s, T* dp, int64_t mrows, int64_t q0, int64_t qvalid, int64_t k0, int64_t kvalid,
                            const T* lse2_rows, const T* delta_rows) const {
    const AttentionBackwardParams& a = *p;
    for (int64_t i = 0; i < mrows; ++i) {
      T* srow = s + i * kBc;
      T* dprow = dp + i * kBc;
      int64_t visible = i < qvalid ? std::min(kvalid, last_visible_key(q0 + i, a.Tq, a.Tk, a.causal) + 1 - k0) : 0;
      if (i < qvalid && lse2_rows[i] == -std::numeric_limits<T>::infinity()) visible = 0;
      visible = std::max<int64_t>(visible, 0);
      if (visible == 0) {
        std::fill(srow, srow + kBc, T(0));
        std::fill(dprow, dprow + kBc, T(0));
        continue;
      }
      scale_mask_max<T, Cfg::kBytes>(srow, c, lse2_rows[i], visible);
      exp2_row<T, Cfg::kBytes>(srow);
      const T di = delta_rows[i];
      for (int64_t j = 0; j < kBc; ++j) dprow[j] = srow[j] * (dprow[j] - di);
    }
  }
};

// (rows, cols) block of src (leading dim lds) -> dst (cols, rows) with leading dim ldd.
template <class T>
KILN_INLINE void transpose_tile(T* dst, int64_t ldd, const T* src, int64_t lds, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

// Pass 1: one item per (b, kv head, key tile); dk, dv of the tile summed over the group's query
// heads and every query tile that sees it.
template <class T>
struct BackwardKvJob : BackwardShared<T> {
  template <class Cfg>
  KILN_INLINE void run(std::atomic<int64_t>& next) const {
    const AttentionBackwardParams& a = *this->p;
    const int64_t D = a.D, Dp = this->Dp, Tq = a.Tq, Tk = a.Tk, Hq = a.Hq, Hkv = a.Hkv;
    const int64_t nqb = this->nqb, nkb = this->nkb, group = this->group;
    constexpr int64_t R = Cfg::kR;
    std::vector<T> s(static_cast<size_t>(kBr * kBc)), dp(static_cast<size_t>(kBr * kBc)), pt(static_cast<size_t>(kBc * kBr)), dst(static_cast<size_t>(kBc * kBr));
    std::vector<T> dk_acc(static_cast<size_t>(kBc * Dp)), dv_acc(static_cast<size_t>(kBc * Dp));
    const int64_t items = a.B * Hkv * nkb;
    for (int64_t item; (item = next.fetch_add(1)) < items;) {
      // Early key tiles are seen by the most queries (causal): take them first.
      const int64_t kb = item / (a.B * Hkv), bh = item % (a.B * Hkv), b = bh / Hkv, hk = bh % Hkv;
      const int64_t k0 = kb * kBc, kvalid = std::min(kBc, Tk - k0), krows = (kvalid + R - 1) / R * R;
      const T* kt_tile = this->kt + ((b * Hkv + hk) * nkb + kb) * D * kBc;
      const T* vt_tile = this->vt + ((b * Hkv + hk) * nkb + kb) * D * kBc;
      std::fill(dk_acc.begin(), dk_acc.end(), T(0));
      std::fill(dv_acc.begin(), dv_acc.end(), T(0));
      // First query row that sees key k0: i + Tk - Tq >= k0.
      const int64_t first_q = a.causal ? std::max<int64_t>(0, k0 - (Tk - Tq)) : 0;
      for (int64_t hh = 0; hh < group; ++hh) {
        const int64_t h = hk * group + hh;
        for (int64_t qb = first_q / kBr; qb < nqb; ++qb) {
          const int64_t q0 = qb * kBr, qvalid = std::min(kBr, Tq - q0), mrows = (qvalid + R - 1) / R * R;
          const T* q_tile = this->q_rows + ((b * Hq + h) * nqb + qb) * kBr * Dp;
          const T* do_tile = this->do_rows + ((b * Hq + h) * nqb + qb) * kBr * Dp;
          const int64_t row0 = (b * Hq + h) * nqb * kBr + q0;
          gemm_tile<T, Cfg, false>(mrows, kBc, D, q_tile, Dp, kt_tile, kBc, s.data(), kBc);
          gemm_tile<T, Cfg, false>(mrows, kBc, D, do_tile, Dp, vt_tile, kBc, dp.data(), kBc);
          this->template p_and_ds<Cfg>(s.data(), dp.data(), mrows, q0, qvalid, k0, kvalid, this->lse2 + row0, this->delta + row0);
          transpose_tile(pt.data(), kBr, s.data(), kBc, mrows, krows);
          transpose_tile(dst.data(), kBr, dp.data(), kBc, mrows, krows);
          // dv: (krows, Dp) += Pᵀ · dO;  dk: (krows, Dp) += dSᵀ · Q
          gemm_tile<T, Cfg, true>(krows, Dp, mrows, pt.data(), kBr, do_tile, Dp, dv_acc.data(), Dp);
          gemm_tile<T, Cfg, true>(krows, Dp, mrows, dst.data(), kBr, q_tile, Dp, dk_acc.data(), Dp);
        }
      }
      const T scale = T(a.scale);
      for (int64_t j = 0; j < kvalid; ++j) {
        T* dk_row = dk_acc.data() + j * Dp;
        for (int64_t d = 0; d < D; ++d) dk_row[d] *= scale;
        const int64_t off = ((b * Tk + k0 + j) * Hkv + hk) * D;
        store_row(a.dk, a.dtype, off, dk_row, D);
        store_row(a.dv, a.dtype, off, dv_acc.data() + j * Dp, D);
      }
    }
  }
};

// Pass 2: one item per (b, query head, query tile); dq accumulated over the visible key tiles.
template <class T>
struct BackwardQJob : BackwardShared<T> {
  template <class Cfg>
  KILN_INLINE void run(std::atomic<int64_t>& next) const {
    const AttentionBackwardParams& a = *this->p;
    const int64_t D = a.D, Dp = this->Dp, Tq = a.Tq, Tk = a.Tk, Hq = a.Hq, Hkv = a.Hkv;
    const int64_t nqb = this->nqb, nkb = this->nkb, group = this->group;
    constexpr int64_t R = Cfg::kR;
    std::vector<T> s(static_cast<size_t>(kBr * kBc)), dp(static_cast<size_t>(kBr * kBc)), dq_acc(static_cast<size_t>(kBr * Dp));
    const int64_t items = a.B * Hq * nqb;
    for (int64_t item; (item = next.fetch_add(1)) < items;) {
      const int64_t qb = nqb - 1 - item / (a.B * Hq), bh = item % (a.B * Hq), b = bh / Hq, h = bh % Hq, hk = h / group;
      const int64_t q0 = qb * kBr, qvalid = std::min(kBr, Tq - q0), mrows = (qvalid + R - 1) / R * R;
      const T* q_tile = this->q_rows + ((b * Hq + h) * nqb + qb) * kBr * Dp;
      const T* do_tile = this->do_rows + ((b * Hq + h) * nqb + qb) * kBr * Dp;
      const int64_t row0 = (b * Hq + h) * nqb * kBr + q0;
      std::fill(dq_acc.begin(), dq_acc.end(), T(0));
      const int64_t last_key = last_visible_key(q0 + qvalid - 1, Tq, Tk, a.causal);
      const int64_t kb_end = last_key < 0 ? 0 : std::min(nkb, last_key / kBc + 1);
      for (int64_t kb = 0; kb < kb_end; ++kb) {
        const int64_t k0 = kb * kBc, kvalid = std::min(kBc, Tk - k0);
        const int64_t tile = (b * Hkv + hk) * nkb + kb;
        gemm_tile<T, Cfg, false>(mrows, kBc, D, q_tile, Dp, this->kt + tile * D * kBc, kBc, s.data(), kBc);
        gemm_tile<T, Cfg, false>(mrows, kBc, D, do_tile, Dp, this->vt + tile * D * kBc, kBc, dp.data(), kBc);
        this->template p_and_ds<Cfg>(s.data(), dp.data(), mrows, q0, qvalid, k0, kvalid, this->lse2 + row0, this->delta + row0);
        // dq: (mrows, Dp) += dS · K
        gemm_tile<T, Cfg, true>(mrows, Dp, kvalid, dp.data(), kBc, this->k_rows + tile * kBc * Dp, Dp, dq_acc.data(), Dp);
      }
      const T scale = T(a.scale);
      for (int64_t i = 0; i < qvalid; ++i) {
        T* dq_row = dq_acc.data() + i * Dp;
        for (int64_t d = 0; d < D; ++d) dq_row[d] *= scale;
        store_row(a.dq, a.dtype, ((b * Tq + q0 + i) * Hq + h) * D, dq_row, D);
      }
    }
  }
};

template <class T>
void attention_backward_fast(const AttentionBackwardParams& p) {
  const int64_t B = p.B, Tq = p.Tq, Tk = p.Tk, Hq = p.Hq, Hkv = p.Hkv, D = p.D;
  BackwardShared<T> sh;
  sh.p = &p;
  sh.Dp = padded_dim<T>(D);
  sh.nqb = (Tq + kBr - 1) / kBr;
  sh.nkb = (Tk + kBc - 1) / kBc;
  sh.group = Hq / Hkv;
  sh.c = T(double(p.scale) * kLog2e);
  std::vector<T> kt, vt, k_rows, q_rows, do_rows, lse2, delta;
  pack_transposed_tiles(kt, p.k, p.dtype, B, Tk, Hkv, D);
  pack_transposed_tiles(vt, p.v, p.dtype, B, Tk, Hkv, D);
  pack_row_tiles(k_rows, p.k, p.dtype, B, Tk, Hkv, D, kBc);
  pack_row_tiles(q_rows, p.q, p.dtype, B, Tq, Hq, D, kBr);
  pack_row_tiles(do_rows, p.dout, p.dtype, B, Tq, Hq, D, kBr);
  // lse2 and Delta per (b, h, padded row); Delta_i = dout_i · out_i summed in double.
  const int64_t rows_per_head = sh.nqb * kBr;
  lse2.assign(static_cast<size_t>(B * Hq * rows_per_head), -std::numeric_limits<T>::infinity());
  delta.assign(static_cast<size_t>(B * Hq * rows_per_head), T(0));
  const T* lse_in = static_cast<const T*>(p.lse);
  parallel_for(0, B * Hq, 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> o(static_cast<size_t>(D)), g(static_cast<size_t>(D));
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / Hq, h = bh % Hq;
      for (int64_t i = 0; i < Tq; ++i) {
        lse2[static_cast<size_t>(bh * rows_per_head + i)] = T(double(lse_in[bh * Tq + i]) * kLog2e);
        const int64_t off = ((b * Tq + i) * Hq + h) * D;
        load_row(o.data(), p.out, p.dtype, off, D);
        load_row(g.data(), p.dout, p.dtype, off, D);
        double sum = 0.0;
        for (int64_t d = 0; d < D; ++d) sum += o[d] * g[d];
        delta[static_cast<size_t>(bh * rows_per_head + i)] = T(sum);
      }
    }
  });
  sh.kt = kt.data();
  sh.vt = vt.data();
  sh.k_rows = k_rows.data();
  sh.q_rows = q_rows.data();
  sh.do_rows = do_rows.data();
  sh.lse2 = lse2.data();
  sh.delta = delta.data();
  BackwardKvJob<T> kv_job;
  static_cast<BackwardShared<T>&>(kv_job) = sh;
  run_job(kv_job, B * Hkv * sh.nkb);
  BackwardQJob<T> q_job;
  static_cast<BackwardShared<T>&>(q_job) = sh;
  run_job(q_job, B * Hq * sh.nqb);
}

// ---------- reference (double) ----------

std::vector<double> to_double(const void* src, DType dt, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  if (n > 0) load_row(out.data(), src, dt, 0, n);
  return out;
}

void attention_forward_reference_impl(const AttentionParams& p) {
  const int64_t B = p.B, Tq = p.Tq, Tk = p.Tk, Hq = p.Hq, Hkv = p.Hkv, D = p.D, group = Hq / Hkv;
  const std::vector<double> q = to_double(p.q, p.dtype, B * Tq * Hq * D);
  const std::vector<double> k = to_double(p.k, p.dtype, B * Tk * Hkv * D);
  const std::vector<double> v = to_double(p.v, p.dtype, B * Tk * Hkv * D);
  const double scale = p.scale;
  parallel_for(0, B * Hq * Tq, 16, [&](int64_t lo, int64_t hi) {
    std::vector<double> scores(static_cast<size_t>(Tk)), o(static_cast<size_t>(D));
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t i = r % Tq, bh = r / Tq, b = bh / Hq, h = bh % Hq, hk = h / group;
      const double* qi = &q[static_cast<size_t>(((b * Tq + i) * Hq + h) * D)];
      const int64_t last = last_visible_key(i, Tq, Tk, p.causal);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= last; ++j) {
        const double* kj = &k[static_cast<size_t>(((b * Tk + j) * Hkv + hk) * D)];
        double dot = 0.0;
        for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
        scores[static_cast<size_t>(j)] = scale * dot;
        mx = std::max(mx, scores[static_cast<size_t>(j)]);
      }
      std::fill(o.begin(), o.end(), 0.0);
      double sum = 0.0;
      for (int64_t j = 0; j <= last; ++j) {
        const double pj = std::exp(scores[static_cast<size_t>(j)] - mx);
        sum += pj;
        const double* vj = &v[static_cast<size_t>(((b * Tk + j) * Hkv + hk) * D)];
        for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] += pj * vj[d];
      }
      const double lse = last < 0 ? -std::numeric_limits<double>::infinity() : mx + std::log(sum);
      for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] = last < 0 ? 0.0 : o[static_cast<size_t>(d)] / sum;
      store_row(p.out, p.dtype, ((b * Tq + i) * Hq + h) * D, o.data(), D);
      if (p.dtype == DType::f64) static_cast<double*>(p.lse)[bh * Tq + i] = lse;
      else static_cast<float*>(p.lse)[bh * Tq + i] = float(lse);
    }
  });
}

void attention_backward_reference_impl(const AttentionBackwardParams& p) {
  const int64_t B = p.B, Tq = p.Tq, Tk = p.Tk, Hq = p.Hq, Hkv = p.Hkv, D = p.D, group = Hq / Hkv;
  const int64_t nq = B * Tq * Hq * D, nk = B * Tk * Hkv * D;
  const std::vector<double> q = to_double(p.q, p.dtype, nq), k = to_double(p.k, p.dtype, nk), v = to_double(p.v, p.dtype, nk);
  const std::vector<double> out = to_double(p.out, p.dtype, nq), dout = to_double(p.dout, p.dtype, nq);
  const std::vector<double> lse = to_double(p.lse, p.dtype == DType::f64 ? DType::f64 : DType::f32, B * Hq * Tq);
  const double scale = p.scale;
  // One item per (b, kv head): it owns dk, dv of that head and dq of the group's query heads.
  parallel_for(0, B * Hkv, 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> dk(static_cast<size_t>(Tk * D)), dv(static_cast<size_t>(Tk * D)), dq(static_cast<size_t>(D)), prob(static_cast<size_t>(Tk)), dprob(static_cast<size_t>(Tk));
    for (int64_t bk = lo; bk < hi; ++bk) {
      const int64_t b = bk / Hkv, hk = bk % Hkv;
      std::fill(dk.begin(), dk.end(), 0.0);
      std::fill(dv.begin(), dv.end(), 0.0);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t qoff = ((b * Tq + i) * Hq + h) * D;
          const double* qi = &q[static_cast<size_t>(qoff)];
          const double* gi = &dout[static_cast<size_t>(qoff)];
          const double* oi = &out[static_cast<size_t>(qoff)];
          const double lse_i = lse[static_cast<size_t>((b * Hq + h) * Tq + i)];
          double delta = 0.0;
          for (int64_t d = 0; d < D; ++d) delta += gi[d] * oi[d];
          const int64_t last = lse_i == -std::numeric_limits<double>::infinity() ? -1 : last_visible_key(i, Tq, Tk, p.causal);
          std::fill(dq.begin(), dq.end(), 0.0);
          for (int64_t j = 0; j <= last; ++j) {
            const double* kj = &k[static_cast<size_t>(((b * Tk + j) * Hkv + hk) * D)];
            const double* vj = &v[static_cast<size_t>(((b * Tk + j) * Hkv + hk) * D)];
            double s = 0.0, dpj = 0.0;
            for (int64_t d = 0; d < D; ++d) {
              s += qi[d] * kj[d];
              dpj += gi[d] * vj[d];
            }
            const double pj = std::exp(scale * s - lse_i);
            const double ds = pj * (dpj - delta);
            for (int64_t d = 0; d < D; ++d) {
              dq[static_cast<size_t>(d)] += scale * ds * kj[d];
              dk[static_cast<size_t>(j * D + d)] += scale * ds * qi[d];
              dv[static_cast<size_t>(j * D + d)] += pj * gi[d];
            }
          }
          store_row(p.dq, p.dtype, qoff, dq.data(), D);
        }
      }
      for (int64_t j = 0; j < Tk; ++j) {
        const int64_t off = ((b * Tk + j) * Hkv + hk) * D;
        store_row(p.dk, p.dtype, off, &dk[static_cast<size_t>(j * D)], D);
        store_row(p.dv, p.dtype, off, &dv[static_cast<size_t>(j * D)], D);
      }
    }
  });
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Public entry points
// ------------------------------------------------------------------------------------------

void attention_forward_validate(const AttentionParams& p) {
  const char* op = "attention_forward";
  check_float_dtype(p.dtype, op);
  check_attention_shape(op, p.B, p.Tq, p.Tk, p.Hq, p.Hkv, p.D, p.scale);
  const int64_t nq = p.B * p.Tq * p.Hq * p.D, nk = p.B * p.Tk * p.Hkv * p.D;
  check_ptr(p.q, nq, op, "q");
  check_ptr(p.out, nq, op, "out");
  check_ptr(p.lse, p.B * p.Hq * p.Tq, op, "lse");
  check_ptr(p.k, nk, op, "k");
  check_ptr(p.v, nk, op, "v");
}

void attention_backward_validate(const AttentionBackwardParams& p) {
  const char* op = "attention_backward";
  check_float_dtype(p.dtype, op);
  check_attention_shape(op, p.B, p.Tq, p.Tk, p.Hq, p.Hkv, p.D, p.scale);
  const int64_t nq = p.B * p.Tq * p.Hq * p.D, nk = p.B * p.Tk * p.Hkv * p.D;
  check_ptr(p.q, nq, op, "q");
  check_ptr(p.out, nq, op, "out");
  check_ptr(p.dout, nq, op, "dout");
  check_ptr(p.dq, nq, op, "dq");
  check_ptr(p.lse, p.B * p.Hq * p.Tq, op, "lse");
  check_ptr(p.k, nk, op, "k");
  check_ptr(p.v, nk, op, "v");
  check_ptr(p.dk, nk, op, "dk");
  check_ptr(p.dv, nk, op, "dv");
}

void attention_forward_cpu(const AttentionParams& p) {
  attention_forward_validate(p);
  if (p.B * p.Tq * p.Hq == 0) return;
  if (p.dtype == DType::f64) attention_forward_fast<double>(p);
  else attention_forward_fast<float>(p);
}

void attention_forward_reference_cpu(const AttentionParams& p) {
  attention_forward_validate(p);
  if (p.B * p.Tq * p.Hq == 0) return;
  attention_forward_reference_impl(p);
}

void attention_backward_cpu(const AttentionBackwardParams& p) {
  attention_backward_validate(p);
  if (p.B * p.Hq * (p.Tq + p.Tk) == 0) return;
  if (p.dtype == DType::f64) attention_backward_fast<double>(p);
  else attention_backward_fast<float>(p);
}

void attention_backward_reference_cpu(const AttentionBackwardParams& p) {
  attention_backward_validate(p);
  if (p.B * p.Hq * (p.Tq + p.Tk) == 0) return;
  attention_backward_reference_impl(p);
}

}  // namespace kiln

// Paged KV cache on the CPU: append and single-token decode attention (contract: ops/attention.h).
//
//   k_cache, v_cache: (num_blocks, block_size, Hkv, D); block_table: (B, max_blocks) i32;
//   token t of sequence b lives at block block_table[b, t / block_size], slot t % block_size.
//   kv_append:  cache[token start[b] + t] = k_new/v_new[b, t]   (B, Tnew, Hkv, D), written (=).
//   decode:     q: (B, Hq, D); for each b and query head h (kv head h / (Hq / Hkv)):
//               s_t = scale q·k_t over t < seq_lens[b]; out[b, h] = sum_t softmax(s)_t v_t;
//               lse[b, h] = log sum_t exp(s_t) (optional; f64 for f64, else f32).
// Block ids and positions come from tensors, so they are checked here, for every sequence,
// before anything is written.
//
// The fast decode works per (sequence, kv head): each cached K/V row is converted once and
// used by every query head of the group; accumulation in f32 (f64 for f64). The reference
// accumulates in double, one query head at a time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../../runtime/device_error.h"
#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../paged_cache_checks.h"
#include "attention.h"

namespace kiln {
namespace {

template <class T>
void load_row(T* dst, const void* src, DType dt, int64_t offset, int64_t n) {
  switch (dt) {
    case DType::f32: for (int64_t i = 0; i < n; ++i) dst[i] = T(static_cast<const float*>(src)[offset + i]); break;
    case DType::f64: for (int64_t i = 0; i < n; ++i) dst[i] = T(static_cast<const double*>(src)[offset + i]); break;
    case DType::bf16: for (int64_t i = 0; i < n; ++i) dst[i] = T(bf16_to_float(static_cast<const uint16_t*>(src)[offset + i])); break;
    case DType::f16: for (int64_t i = 0; i < n; ++i) dst[i] = T(f16_to_float(static_cast<const uint16_t*>(src)[offset + i])); break;
    default: fail("ERR_DTYPE", "kv cache: unsupported dtype");
  }
}

template <class T>
void store_row(void* dst, DType dt, int64_t offset, const T* src, int64_t n) {
  switch (dt) {
    case DType::f32: for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[offset + i] = float(src[i]); break;
    case DType::f64: for (int64_t i = 0; i < n; ++i) static_cast<double*>(dst)[offset + i] = double(src[i]); break;
    case DType::bf16: for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[offset + i] = float_to_bf16(float(src[i])); break;
    case DType::f16: for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[offset + i] = float_to_f16(float(src[i])); break;
    default: fail("ERR_DTYPE", "kv cache: unsupported dtype");
  }
}

void check_cache_shape(const char* op, DType dtype, int64_t B, int64_t Hkv, int64_t D, int64_t block_size, int64_t max_blocks,
                       int64_t num_blocks) {
  const int32_t code = static_cast<int32_t>(dtype);
  check(dtype_valid(code) && dtype_is_float(dtype), "ERR_DTYPE", std::string(op) + ": dtype must be f32, f64, bf16 or f16");
  check(B >= 0 && Hkv >= 1 && D >= 1, "ERR_SHAPE",
        std::string(op) + ": need B >= 0, Hkv >= 1, D >= 1, got B=" + std::to_string(B) + " Hkv=" + std::to_string(Hkv) +
            " D=" + std::to_string(D));
  check(block_size >= 1 && max_blocks >= 1 && num_blocks >= 1, "ERR_SHAPE",
        std::string(op) + ": block_size, max_blocks, num_blocks must be >= 1");
  check(double(num_blocks) * double(block_size) * double(Hkv) * double(D) < 1e17 && double(B) * double(max_blocks) < 1e17 &&
            double(max_blocks) * double(block_size) < 2147483647.0,
        "ERR_SHAPE", std::string(op) + ": cache too large");
}

// Throws ERR_ARG unless the blocks holding tokens [first, last] of sequence b are valid ids
// (the CUDA kernels apply the same predicate and message: paged_cache_checks.h, device_error.h).
void check_blocks(DeviceErrorKind kind, const int32_t* block_table, int64_t b, int64_t max_blocks, int64_t num_blocks,
                  int64_t block_size, int64_t first, int64_t last) {
  for (int64_t blk = first / block_size; blk <= last / block_size; ++blk) {
    const int32_t id = block_table[b * max_blocks + blk];
    if (!block_id_valid(id, num_blocks)) fail("ERR_ARG", describe_device_error({kind, int32_t(b), blk, id, num_blocks}));
  }
}

// Offset (in elements) of row (token t of sequence b, kv head hk) in the cache.
inline int64_t cache_offset(const int32_t* block_table, int64_t b, int64_t t, int64_t hk, int64_t max_blocks,
                            int64_t block_size, int64_t Hkv, int64_t D) {
  const int64_t block = block_table[b * max_blocks + t / block_size];
  return ((block * block_size + t % block_size) * Hkv + hk) * D;
}

void check_seq_lens(const AttentionDecodeParams& p) {
  const int64_t capacity = p.max_blocks * p.block_size;
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t len = p.seq_lens[b];
    if (!decode_seq_len_valid(len, capacity))
      fail("ERR_ARG", describe_device_error({kDecodeSeqLen, int32_t(b), b, len, capacity}));
    check_blocks(kDecodeBlockId, p.block_table, b, p.max_blocks, p.num_blocks, p.block_size, 0, len - 1);
  }
}

// Dot product with independent lane sums, so the compiler vectorizes it without reassociation.
template <class T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int kLanes = 16;
  T acc[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[d + l] * b[d + l];
  T r = 0;
  for (; d < n; ++d) r += a[d] * b[d];
  for (int l = 0; l < kLanes; ++l) r += acc[l];
  return r;
}

template <class T>
void decode_fast(const AttentionDecodeParams& p) {
  const int64_t B = p.B, Hq = p.Hq, Hkv = p.Hkv, D = p.D, group = Hq / Hkv;
  parallel_for(0, B * Hkv, 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> q(static_cast<size_t>(group * D)), row(static_cast<size_t>(D)), o(static_cast<size_t>(group * D)), scores, m(static_cast<size_t>(group)), l(static_cast<size_t>(group));
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / Hkv, hk = item % Hkv, len = p.seq_lens[b];
      scores.resize(static_cast<size_t>(group * len));
      for (int64_t g = 0; g < group; ++g) load_row(q.data() + g * D, p.q, p.dtype, (b * Hq + hk * group + g) * D, D);
      // s[g, t] = scale q_g·k_t
      for (int64_t t = 0; t < len; ++t) {
        load_row(row.data(), p.k_cache, p.dtype, cache_offset(p.block_table, b, t, hk, p.max_blocks, p.block_size, Hkv, D), D);
        for (int64_t g = 0; g < group; ++g) scores[static_cast<size_t>(g * len + t)] = T(p.scale) * dot(q.data() + g * D, row.data(), D);
      }
      for (int64_t g = 0; g < group; ++g) {
        T* s = scores.data() + g * len;
        const T mx = *std::max_element(s, s + len);
        T sum = 0;
        for (int64_t t = 0; t < len; ++t) {
          s[t] = std::exp(s[t] - mx);
          sum += s[t];
        }
        m[static_cast<size_t>(g)] = mx;
        l[static_cast<size_t>(g)] = sum;
      }
      std::fill(o.begin(), o.end(), T(0));
      for (int64_t t = 0; t < len; ++t) {
        load_row(row.data(), p.v_cache, p.dtype, cache_offset(p.block_table, b, t, hk, p.max_blocks, p.block_size, Hkv, D), D);
        for (int64_t g = 0; g < group; ++g) {
          const T pt = scores[static_cast<size_t>(g * len + t)];
          T* og = o.data() + g * D;
          for (int64_t d = 0; d < D; ++d) og[d] += pt * row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = hk * group + g;
        T* og = o.data() + g * D;
        const T inv = T(1) / l[static_cast<size_t>(g)];
        for (int64_t d = 0; d < D; ++d) og[d] *= inv;
        store_row(p.out, p.dtype, (b * Hq + h) * D, og, D);
        if (p.lse) static_cast<T*>(p.lse)[b * Hq + h] = m[static_cast<size_t>(g)] + std::log(l[static_cast<size_t>(g)]);
      }
    }
  });
}

}  // namespace

void kv_append_validate(const KvAppendParams& p) {
  const char* op = "kv_append";
  check_cache_shape(op, p.dtype, p.B, p.Hkv, p.D, p.block_size, p.max_blocks, p.num_blocks);
  check(p.Tnew >= 0, "ERR_SHAPE", "kv_append: Tnew must be >= 0");
  check(double(p.B) * double(p.Tnew) * double(p.Hkv) * double(p.D) < 1e17, "ERR_SHAPE", "kv_append: k_new too large");
  check(p.k_cache && p.v_cache, "ERR_ARG", "kv_append: k_cache or v_cache is null");
  if (p.B * p.Tnew > 0) {
    check(p.k_new && p.v_new, "ERR_ARG", "kv_append: k_new or v_new is null");
    check(p.block_table && p.start, "ERR_ARG", "kv_append: block_table or start is null");
  }
}

void kv_append_cpu(const KvAppendParams& p) {
  kv_append_validate(p);
  if (p.B * p.Tnew == 0) return;
  const int64_t capacity = p.max_blocks * p.block_size;
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t start = p.start[b];
    for (int64_t position : {start, start + p.Tnew - 1})
      if (!append_position_valid(position, capacity))
        fail("ERR_ARG", describe_device_error({kAppendPosition, int32_t(b), position, position, capacity}));
    check_blocks(kAppendBlockId, p.block_table, b, p.max_blocks, p.num_blocks, p.block_size, start, start + p.Tnew - 1);
  }
  // A (token, all kv heads) row is contiguous in both layouts: copy it whole.
  const size_t row_bytes = static_cast<size_t>(p.Hkv * p.D) * dtype_size(p.dtype);
  const int64_t row_elems = p.Hkv * p.D;
  parallel_for(0, p.B * p.Tnew, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / p.Tnew, t = p.start[b] + r % p.Tnew;
      const int64_t dst = cache_offset(p.block_table, b, t, 0, p.max_blocks, p.block_size, p.Hkv, p.D);
      const size_t es = dtype_size(p.dtype);
      std::memcpy(static_cast<char*>(p.k_cache) + static_cast<size_t>(dst) * es, static_cast<const char*>(p.k_new) + static_cast<size_t>(r * row_elems) * es, row_bytes);
      std::memcpy(static_cast<char*>(p.v_cache) + static_cast<size_t>(dst) * es, static_cast<const char*>(p.v_new) + static_cast<size_t>(r * row_elems) * es, row_bytes);
    }
  });
}

void attention_decode_validate(const AttentionDecodeParams& p) {
  const char* op = "attention_decode";
  check_cache_shape(op, p.dtype, p.B, p.Hkv, p.D, p.block_size, p.max_blocks, p.num_blocks);
  check(p.Hq >= 1 && p.Hq % p.Hkv == 0, "ERR_SHAPE",
        "attention_decode: Hkv must divide Hq, got Hq=" + std::to_string(p.Hq) + " Hkv=" + std::to_string(p.Hkv));
  check(std::isfinite(p.scale), "ERR_ARG", "attention_decode: scale must be finite");
  check(p.k_cache && p.v_cache, "ERR_ARG", "attention_decode: k_cache or v_cache is null");
  if (p.B > 0) {
    check(p.q && p.out, "ERR_ARG", "attention_decode: q or out is null");
    check(p.block_table && p.seq_lens, "ERR_ARG", "attention_decode: block_table or seq_lens is null");
  }
}

void attention_decode_cpu(const AttentionDecodeParams& p) {
  attention_decode_validate(p);
  if (p.B == 0) return;
  check_seq_lens(p);
  if (p.dtype == DType::f64) decode_fast<double>(p);
  else decode_fast<float>(p);
}

void attention_decode_reference_cpu(const AttentionDecodeParams& p) {
  attention_decode_validate(p);
  if (p.B == 0) return;
  check_seq_lens(p);
  const int64_t Hq = p.Hq, Hkv = p.Hkv, D = p.D, group = Hq / Hkv;
  parallel_for(0, p.B * Hq, 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> q(static_cast<size_t>(D)), k(static_cast<size_t>(D)), v(static_cast<size_t>(D)), o(static_cast<size_t>(D)), s;
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t b = item / Hq, h = item % Hq, hk = h / group, len = p.seq_lens[b];
      load_row(q.data(), p.q, p.dtype, item * D, D);
      s.assign(static_cast<size_t>(len), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < len; ++t) {
        load_row(k.data(), p.k_cache, p.dtype, cache_offset(p.block_table, b, t, hk, p.max_blocks, p.block_size, Hkv, D), D);
        double acc = 0.0;
        for (int64_t d = 0; d < D; ++d) acc += q[static_cast<size_t>(d)] * k[static_cast<size_t>(d)];
        s[static_cast<size_t>(t)] = double(p.scale) * acc;
        mx = std::max(mx, s[static_cast<size_t>(t)]);
      }
      double sum = 0.0;
      std::fill(o.begin(), o.end(), 0.0);
      for (int64_t t = 0; t < len; ++t) {
        const double pt = std::exp(s[static_cast<size_t>(t)] - mx);
        sum += pt;
        load_row(v.data(), p.v_cache, p.dtype, cache_offset(p.block_table, b, t, hk, p.max_blocks, p.block_size, Hkv, D), D);
        for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] += pt * v[static_cast<size_t>(d)];
      }
      for (int64_t d = 0; d < D; ++d) o[static_cast<size_t>(d)] /= sum;
      store_row(p.out, p.dtype, item * D, o.data(), D);
      if (p.lse) {
        const double lse = mx + std::log(sum);
        if (p.dtype == DType::f64) static_cast<double*>(p.lse)[item] = lse;
        else static_cast<float*>(p.lse)[item] = float(lse);
      }
    }
  });
}

}  // namespace kiln

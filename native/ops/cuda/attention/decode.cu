// Paged-KV decode attention on the GPU, split-K over tokens (flash-decoding).
//
//   q: (B, Hq, D)  k_cache, v_cache: (num_blocks, block_size, Hkv, D)  block_table: (B, max_blocks)
//   seq_lens: (B) -> out: (B, Hq, D) (=) = softmax(scale q·Kᵀ) V over tokens [0, seq_lens[b]),
//   lse: (B, Hq) f32 (=, optional) natural-log log-sum-exp of the scaled scores.
//
// Pass 1, one block (4 warps) per (split, kv head x query-head chunk, b): the split's token range
// is read once through the block table and shared by the kG query heads of the chunk (the whole
// GQA group when it has <= 8 heads). A token is handled by D/8 lanes, each holding 8 dims in one
// 16-byte load; a warp covers 32/(D/8) tokens per step, unrolled 4x so 8 loads are in flight per
// lane. Online softmax (log2 domain) per lane group, merged across lane groups (shuffles) and
// warps (smem). Writes the normalized partial out (f32) and its lse for the split to workspace.
// Pass 2, one block per (b, h), D threads: out = Σ_s w_s o_s / Σ_s w_s, w_s = exp(lse_s - max).
// Workspace: [partial out: max_splits x B x Hq x D f32][partial lse: max_splits x B x Hq f32].
#include <algorithm>
#include <cmath>
#include <string>

#include "../../../runtime/device_error.h"
#include "../../paged_cache_checks.h"
#include "attention_cuda.h"
#include "flash_common.cuh"

namespace kiln {
namespace {

using namespace attn;

constexpr int kDecodeThreads = 128;
constexpr int kDecodeWarps = kDecodeThreads / 32;
constexpr int kDecodeUnroll = 4;
constexpr int kMaxSplits = 64;

struct DecodeArgs {
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const int32_t* block_table;
  const int32_t* seq_lens;
  float* part_out;  // (num_splits, B, Hq, D)
  float* part_lse;  // (num_splits, B, Hq), natural log
  DeviceErrorRecord* error;  // where a bad seq_len or block id is reported (device_error.h)
  int B, Hq, Hkv, block_size, max_blocks, num_blocks, num_splits, split_len, head_chunks;
  float scale_log2;
};

// Splits allowed for a max_seq_len (and so the workspace); at least 64 tokens per split.
inline int max_splits_for(int64_t max_seq_len) {
  return int(std::max<int64_t>(1, std::min<int64_t>(kMaxSplits, (max_seq_len + 63) / 64)));
}

template <typename T, int kD, int kG>
__global__ void __launch_bounds__(kDecodeThreads) decode_split_kernel(const DecodeArgs a) {
  constexpr int kLanesPerToken = kD / 8;
  constexpr int kTokensPerWarp = 32 / kLanesPerToken;
  constexpr int kTokensPerStep = kDecodeWarps * kDecodeUnroll * kTokensPerWarp;
  __shared__ float red_m[kDecodeWarps][kG], red_l[kDecodeWarps][kG];
  __shared__ float red_acc[kDecodeWarps][kG][kD];

  const int split = blockIdx.x, b = blockIdx.z;
  const int hk = blockIdx.y / a.head_chunks, chunk = blockIdx.y % a.head_chunks;
  const int group = a.Hq / a.Hkv;
  const int h0 = hk * group + chunk * kG;  // first query head of this block
  const int n_heads = min(kG, group - chunk * kG);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int tg = lane / kLanesPerToken, sub = lane % kLanesPerToken;  // token group, 8-dim slice

  // The host cannot read seq_lens and the table without a sync, so they are checked here, as
  // the CPU op checks them (paged_cache_checks.h): a bad length is reported and clamped into
  // [0, capacity] (0 tokens: out = 0, lse = -inf), a bad block id is reported and its tokens
  // skipped, so nothing outside the cache or the table is ever read.
  const int capacity = a.max_blocks * a.block_size;
  int seq_len = a.seq_lens[b];
  if (!decode_seq_len_valid(seq_len, capacity)) {
    if (split == 0 && blockIdx.y == 0 && tid == 0) report_device_error(a.error, kDecodeSeqLen, b, b, seq_len, capacity);
    seq_len = min(max(seq_len, 0), capacity);
  }
  const int t_begin = split * a.split_len;
  const int t_end = split == a.num_splits - 1 ? seq_len : min(seq_len, t_begin + a.split_len);

  float q[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (g < n_heads) {
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const T*>(a.q) + (int64_t(b) * a.Hq + h0 + g) * kD +
                                                        sub * 8);
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = unpack2<T>(w[i]);
        q[g][2 * i] = f.x * a.scale_log2;
        q[g][2 * i + 1] = f.y * a.scale_log2;
      }
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) q[g][i] = 0.f;
    }
  }

  float m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int32_t* table = a.block_table + int64_t(b) * a.max_blocks;
  for (int step = t_begin; step < t_end; step += kTokensPerStep) {
    uint4 kr[kDecodeUnroll], vr[kDecodeUnroll];
    bool valid[kDecodeUnroll];
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int t = step + (warp * kDecodeUnroll + u) * kTokensPerWarp + tg;
      valid[u] = t < t_end;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (valid[u]) {
        const int phys = table[t / a.block_size];
        if (!block_id_valid(phys, a.num_blocks)) {
          report_device_error(a.error, kDecodeBlockId, b, t / a.block_size, phys, a.num_blocks);
          valid[u] = false;
          continue;
        }
        const int64_t off = ((int64_t(phys) * a.block_size + t % a.block_size) * a.Hkv + hk) * kD + sub * 8;
        kr[u] = *reinterpret_cast<const uint4*>(kc + off);
        vr[u] = *reinterpret_cast<const uint4*>(vc + off);
      }
    }
    // Scores (log2 domain) for the kDecodeUnroll tokens of this lane group, all heads.
    float s[kDecodeUnroll][kG];
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const uint32_t w[4] = {kr[u].x, kr[u].y, kr[u].z, kr[u].w};
      float kf[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = unpack2<T>(w[i]);
        kf[2 * i] = f.x;
        kf[2 * i + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d += q[g][i] * kf[i];
#pragma unroll
        for (int off = 1; off < kLanesPerToken; off <<= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
        s[u][g] = valid[u] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kDecodeUnroll; ++u) mx = fmaxf(mx, s[u][g]);
      if (mx == -INFINITY) continue;  // no valid token yet for this lane group
      const float alpha = exp2f(m[g] - mx);
      m[g] = mx;
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
#pragma unroll
      for (int u = 0; u < kDecodeUnroll; ++u) {
        const float p = exp2f(s[u][g] - mx);  // 0 for invalid tokens
        l[g] += p;
        const uint32_t w[4] = {vr[u].x, vr[u].y, vr[u].z, vr[u].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = unpack2<T>(w[i]);
          acc[g][2 * i] += p * f.x;
          acc[g][2 * i + 1] += p * f.y;
        }
      }
    }
  }

  // Merge the lane groups of the warp (lanes with the same `sub`).
#pragma unroll
  for (int off = kLanesPerToken; off < 32; off <<= 1) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float m_o = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[g], off);
      const float mx = fmaxf(m[g], m_o);
      const float a_self = mx == -INFINITY ? 0.f : exp2f(m[g] - mx);
      const float a_other = mx == -INFINITY ? 0.f : exp2f(m_o - mx);
      l[g] = l[g] * a_self + l_o * a_other;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float acc_o = __shfl_xor_sync(0xffffffffu, acc[g][i], off);
        acc[g][i] = acc[g][i] * a_self + acc_o * a_other;
      }
      m[g] = mx;
    }
  }
  if (tg == 0) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      if (sub == 0) {
        red_m[warp][g] = m[g];
        red_l[warp][g] = l[g];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) red_acc[warp][g][sub * 8 + i] = acc[g][i];
    }
  }
  __syncthreads();
  // Merge the warps; write the split's normalized partial output and lse.
  for (int i = tid; i < n_heads * kD; i += kDecodeThreads) {
    const int g = i / kD, d = i % kD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) mx = fmaxf(mx, red_m[w][g]);
    float L = 0.f, o = 0.f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecodeWarps; ++w) {
        const float f = exp2f(red_m[w][g] - mx);
        L += red_l[w][g] * f;
        o += red_acc[w][g][d] * f;
      }
    }
    const int64_t row = (int64_t(split) * a.B + b) * a.Hq + h0 + g;
    a.part_out[row * kD + d] = L > 0.f ? o / L : 0.f;
    if (d == 0) a.part_lse[row] = L > 0.f ? (mx + log2f(L)) * kLn2 : -INFINITY;
  }
}

template <typename T, int kD>
__global__ void decode_combine_kernel(const DecodeArgs a, T* __restrict__ out, float* __restrict__ lse) {
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  const int64_t stride = int64_t(a.B) * a.Hq;  // between splits
  const int64_t row = int64_t(b) * a.Hq + h;
  float mx = -INFINITY;
  for (int s = 0; s < a.num_splits; ++s) mx = fmaxf(mx, a.part_lse[s * stride + row]);
  float den = 0.f, num = 0.f;
  if (mx != -INFINITY) {
    for (int s = 0; s < a.num_splits; ++s) {
      const float w = __expf(a.part_lse[s * stride + row] - mx);
      den += w;
      num += w * a.part_out[(s * stride + row) * kD + d];
    }
  }
  out[row * kD + d] = T(den > 0.f ? num / den : 0.f);
  if (lse != nullptr && d == 0) lse[row] = den > 0.f ? mx + logf(den) : -INFINITY;
}

template <typename T, int kD, int kG>
void launch_decode(const AttentionDecodeParams& p, DecodeArgs& a, int sm_count, cudaStream_t stream) {
  const int group = int(p.Hq / p.Hkv);
  a.head_chunks = (group + kG - 1) / kG;
  const int64_t base_blocks = p.B * p.Hkv * a.head_chunks;
  constexpr int kTokensPerStep = kDecodeWarps * kDecodeUnroll * (32 / (kD / 8));
  // Enough splits for ~2 waves of blocks, within the workspace's max_splits.
  int splits = int(std::min<int64_t>(max_splits_for(p.max_seq_len), (2 * sm_count + base_blocks - 1) / base_blocks));
  splits = std::max(splits, 1);
  int64_t split_len = (p.max_seq_len + splits - 1) / splits;
  split_len = (split_len + kTokensPerStep - 1) / kTokensPerStep * kTokensPerStep;
  splits = int(std::max<int64_t>(1, (p.max_seq_len + split_len - 1) / split_len));
  a.num_splits = splits;
  a.split_len = int(split_len);
  const dim3 grid(unsigned(splits), unsigned(p.Hkv * a.head_chunks), unsigned(p.B));
  decode_split_kernel<T, kD, kG><<<grid, kDecodeThreads, 0, stream>>>(a);
  cuda_check_launch("decode_split_kernel");
  decode_combine_kernel<T, kD><<<dim3(unsigned(p.Hq), unsigned(p.B)), kD, 0, stream>>>(a, static_cast<T*>(p.out),
                                                                                      static_cast<float*>(p.lse));
  cuda_check_launch("decode_combine_kernel");
}

template <typename T, int kD>
void decode_typed(const AttentionDecodeParams& p, DecodeArgs& a, int sm_count, cudaStream_t stream) {
  const int64_t group = p.Hq / p.Hkv;
  if (group == 1)
    launch_decode<T, kD, 1>(p, a, sm_count, stream);
  else if (group == 2)
    launch_decode<T, kD, 2>(p, a, sm_count, stream);
  else if (group <= 4)
    launch_decode<T, kD, 4>(p, a, sm_count, stream);
  else
    launch_decode<T, kD, 8>(p, a, sm_count, stream);
}

template <typename T>
void decode_dispatch(const AttentionDecodeParams& p, DecodeArgs& a, int sm_count, cudaStream_t stream) {
  if (p.D == 64)
    decode_typed<T, 64>(p, a, sm_count, stream);
  else
    decode_typed<T, 128>(p, a, sm_count, stream);
}

}  // namespace

size_t attention_decode_workspace_bytes(int64_t B, int64_t Hq, int64_t D, int64_t max_seq_len) {
  if (B <= 0 || Hq <= 0 || D <= 0) return 0;
  const size_t splits = size_t(max_splits_for(max_seq_len));
  return attn_host::align256(splits * size_t(B * Hq * D) * sizeof(float)) +
         attn_host::align256(splits * size_t(B * Hq) * sizeof(float));
}

void attention_decode_cuda_validate(const AttentionDecodeParams& p) {
  const char* op = "attention_decode_cuda";
  check(p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string(op) + ": dtype must be bf16 or f16, got " + dtype_name(p.dtype));
  check(p.B >= 0 && p.Hq >= 1 && p.Hkv >= 1 && p.block_size >= 1 && p.max_blocks >= 1 && p.num_blocks >= 1,
        "ERR_SHAPE", std::string(op) + ": bad shape");
  check(p.Hq % p.Hkv == 0, "ERR_SHAPE", std::string(op) + ": Hkv must divide Hq");
  check(p.D == 64 || p.D == 128, "ERR_ARG", std::string(op) + ": head dim must be 64 or 128, got " + std::to_string(p.D));
  check(p.max_seq_len >= 1 && p.max_seq_len <= p.max_blocks * p.block_size, "ERR_ARG",
        std::string(op) + ": need 1 <= max_seq_len <= max_blocks * block_size");
  // grid: (splits, Hkv * head chunks <= Hq, B) for pass 1, (Hq, B) for pass 2
  check(p.B < 65536 && p.Hq < 65536 && p.max_seq_len < (int64_t(1) << 30) && p.num_blocks < (int64_t(1) << 31) &&
            p.max_blocks * p.block_size < (int64_t(1) << 31),
        "ERR_SHAPE",
        std::string(op) + ": shape too large");
  check(std::isfinite(p.scale), "ERR_ARG", std::string(op) + ": scale must be finite");
  if (p.B == 0) return;
  const int cc = attn_host::device_cc();
  check(cc >= 80, "ERR_ARG", std::string(op) + ": needs a compute capability 8.0+ GPU");
  attn_host::check_aligned16(p.q, op, "q");
  attn_host::check_aligned16(p.k_cache, op, "k_cache");
  attn_host::check_aligned16(p.v_cache, op, "v_cache");
  attn_host::check_aligned16(p.out, op, "out");
  check(p.block_table != nullptr && p.seq_lens != nullptr, "ERR_ARG", std::string(op) + ": null block_table/seq_lens");
  check(p.lse == nullptr || (reinterpret_cast<uintptr_t>(p.lse) & 3u) == 0, "ERR_ARG",
        std::string(op) + ": lse must be 4-byte aligned");
  check(p.workspace != nullptr && (reinterpret_cast<uintptr_t>(p.workspace) & 255u) == 0, "ERR_ARG",
        std::string(op) + ": workspace (attention_decode_workspace_bytes) must be non-null and 256-byte aligned");
}

void attention_decode_cuda(const AttentionDecodeParams& p, cudaStream_t stream) {
  attention_decode_cuda_validate(p);
  if (p.B == 0) return;
  int sm_count = 0;
  attn_host::device_cc(&sm_count);
  DecodeArgs a;
  a.q = p.q;
  a.k_cache = p.k_cache;
  a.v_cache = p.v_cache;
  a.block_table = p.block_table;
  a.seq_lens = p.seq_lens;
  const int splits_max = max_splits_for(p.max_seq_len);
  a.part_out = static_cast<float*>(p.workspace);
  a.part_lse = reinterpret_cast<float*>(static_cast<char*>(p.workspace) +
                                        attn_host::align256(size_t(splits_max) * size_t(p.B * p.Hq * p.D) * 4));
  a.B = int(p.B);
  a.Hq = int(p.Hq);
  a.Hkv = int(p.Hkv);
  a.block_size = int(p.block_size);
  a.max_blocks = int(p.max_blocks);
  a.num_blocks = int(p.num_blocks);
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  a.error = cuda_device_error_record(device);
  a.scale_log2 = p.scale * attn::kLog2e;
  if (p.dtype == DType::bf16)
    decode_dispatch<__nv_bfloat16>(p, a, sm_count, stream);
  else
    decode_dispatch<__half>(p, a, sm_count, stream);
}

}  // namespace kiln

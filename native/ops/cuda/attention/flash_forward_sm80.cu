// FlashAttention-2 forward on Ampere tensor cores (runs on sm_80/86/89/90).
//
//   q: (B, Tq, Hq, D)  k, v: (B, Tk, Hkv, D)  -> out: (B, Tq, Hq, D) (=), lse: (B, Hq, Tq) f32 (=)
//   S = scale q·kᵀ (causal: key j masked for query i when j > i + Tk - Tq), out = softmax(S) v,
//   lse = log Σ_j exp S_ij; rows seeing no key get out = 0, lse = -inf.
//
// One block per (query tile of kBlockM rows, query head, batch); each warp owns 16 query rows.
// Per key tile of kBlockN keys: S = Q Kᵀ (Q fragments kept in registers), online softmax in the
// log2 domain (S is multiplied by scale·log2e once, exp2f everywhere), O = O·alpha + P V with P
// reused straight from the S accumulators as A fragments. K and V have one shared buffer each:
// V_j streams in while S_j is computed, K_{j+1} while softmax + P V_j run (cp.async groups).
// smem: Q kBlockM x D + K, V kBlockN x D each, all bf16/f16 swizzled:
//   D=64: 24 KB, D=128: 48 KB with kBlockM = kBlockN = 64 (4 warps). Registers (ptxas, sm_86):
//   D=64 ~130, D=128 ~173, no spills -> 3 resp. 2 blocks per SM on the A40 (regs and smem).
#include <cmath>
#include <string>

#include "attention_cuda.h"
#include "flash_common.cuh"

namespace kiln {
namespace {

using namespace attn;

struct FwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  int Tq, Tk, Hq, Hkv;
  float scale_log2;  // scale * log2(e)
};

template <typename T, int kD, int kBlockM, int kBlockN, bool kCausal>
__global__ void __launch_bounds__(kBlockM / 16 * 32) flash_forward_kernel(const FwdArgs a) {
  constexpr int kWarps = kBlockM / 16;
  constexpr int kThreads = kWarps * 32;
  constexpr int kChunks = kD / 8;
  constexpr int kNT = kBlockN / 8;  // S n-tiles per warp
  constexpr int kDT = kD / 8;       // O n-tiles per warp
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);  // (kBlockM, kD) swizzled; reused to stage out
  T* k_s = q_s + kBlockM * kD;              // (kBlockN, kD)
  T* v_s = k_s + kBlockN * kD;              // (kBlockN, kD)

  const int m_block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (a.Hq / a.Hkv);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int m0 = m_block * kBlockM;
  const int causal_offset = a.Tk - a.Tq;

  const int64_t q_row_stride = int64_t(a.Hq) * kD, kv_row_stride = int64_t(a.Hkv) * kD;
  const T* q_base = static_cast<const T*>(a.q) + (int64_t(b) * a.Tq * a.Hq + h) * kD;
  const T* k_base = static_cast<const T*>(a.k) + (int64_t(b) * a.Tk * a.Hkv + hk) * kD;
  const T* v_base = static_cast<const T*>(a.v) + (int64_t(b) * a.Tk * a.Hkv + hk) * kD;
  T* out_base = static_cast<T*>(a.out) + (int64_t(b) * a.Tq * a.Hq + h) * kD;

  int n_end = (a.Tk + kBlockN - 1) / kBlockN;
  if (kCausal) {
    const int last_key = min(m0 + kBlockM, a.Tq) - 1 + causal_offset;  // last key the tile's last row sees
    n_end = last_key < 0 ? 0 : min(n_end, last_key / kBlockN + 1);
  }

  // This thread's two query rows (C fragment rows g and g+8 of the warp's 16).
  const int row_lo = m0 + warp * 16 + (lane >> 2);
  const int row_hi = row_lo + 8;

  float o[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_lo = -INFINITY, m_hi = -INFINITY;  // running row max (log2 domain)
  float l_lo = 0.f, l_hi = 0.f;              // this thread's partial row sums (quad-reduced at the end)
  uint32_t qf[kD / 16][4];

  if (n_end > 0) {
    load_tile_async<kBlockM, kD, kThreads>(q_s, q_base, q_row_stride, m0, a.Tq, tid);
    load_tile_async<kBlockN, kD, kThreads>(k_s, k_base, kv_row_stride, 0, a.Tk, tid);
    cp_async_commit();
  }

  for (int j = 0; j < n_end; ++j) {
    const int n0 = j * kBlockN;
    __syncthreads();  // every warp finished P·V_{j-1}: the V buffer is free
    load_tile_async<kBlockN, kD, kThreads>(v_s, v_base, kv_row_stride, n0, a.Tk, tid);
    cp_async_commit();
    cp_async_wait<1>();  // Q and K_j landed (V_j may still be in flight)
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk)
        ldmatrix_x4(qf[kk], q_s + swz<kD>(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8));
    }

    // S = Q K_jᵀ: (16 x kBlockN) per warp.
    float s[kNT][4];
#pragma unroll
    for (int i = 0; i < kNT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
#pragma unroll
      for (int nn = 0; nn < kBlockN / 16; ++nn) {
        uint32_t kb[4];  // b0,b1 of key n-tile 2nn, then of 2nn+1
        ldmatrix_x4(kb, k_s + swz<kD>(nn * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 16 + ((lane >> 3) & 1) * 8));
        mma_16816<T>(s[2 * nn], qf[kk], kb[0], kb[1]);
        mma_16816<T>(s[2 * nn + 1], qf[kk], kb[2], kb[3]);
      }
    }

    __syncthreads();  // every warp finished reading K_j
    if (j + 1 < n_end) load_tile_async<kBlockN, kD, kThreads>(k_s, k_base, kv_row_stride, n0 + kBlockN, a.Tk, tid);
    cp_async_commit();  // possibly empty: keeps the group count uniform

    // Online softmax (log2 domain).
    const bool need_mask = (n0 + kBlockN > a.Tk) || (kCausal && n0 + kBlockN - 1 > m0 + causal_offset);
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * a.scale_log2;
        if (need_mask) {
          const int col = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
          const int row = e < 2 ? row_lo : row_hi;
          if (col >= a.Tk || (kCausal && col > row + causal_offset)) x = -INFINITY;
        }
        s[nt][e] = x;
      }
    }
    float mx_lo = m_lo, mx_hi = m_hi;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      mx_lo = fmaxf(mx_lo, fmaxf(s[nt][0], s[nt][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {  // the 4 lanes of a quad share a row
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    // A row with no visible key so far keeps max -inf: subtract 0 instead (all its p are 0).
    const float base_lo = mx_lo == -INFINITY ? 0.f : mx_lo;
    const float base_hi = mx_hi == -INFINITY ? 0.f : mx_hi;
    const float alpha_lo = exp2f(m_lo - base_lo), alpha_hi = exp2f(m_hi - base_hi);  // 0 when m was -inf
    m_lo = mx_lo;
    m_hi = mx_hi;
    float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - base_lo);
      s[nt][1] = exp2f(s[nt][1] - base_lo);
      s[nt][2] = exp2f(s[nt][2] - base_hi);
      s[nt][3] = exp2f(s[nt][3] - base_hi);
      sum_lo += s[nt][0] + s[nt][1];
      sum_hi += s[nt][2] + s[nt][3];
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      o[dt][0] *= alpha_lo;
      o[dt][1] *= alpha_lo;
      o[dt][2] *= alpha_hi;
      o[dt][3] *= alpha_hi;
    }

    cp_async_wait<1>();  // V_j landed (K_{j+1} may still be in flight)
    __syncthreads();

    // O += P V_j: P's accumulators for key n-tiles 2kk, 2kk+1 form the A fragment of k-step kk.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dd = 0; dd < kD / 16; ++dd) {
        uint32_t vb[4];  // b0,b1 of d n-tile 2dd, then of 2dd+1
        ldmatrix_x4_trans(vb, v_s + swz<kD>(kk * 16 + (lane & 15), dd * 16 + (lane >> 4) * 8));
        mma_16816<T>(o[2 * dd], pa, vb[0], vb[1]);
        mma_16816<T>(o[2 * dd + 1], pa, vb[2], vb[3]);
      }
    }
  }

  // Epilogue: full row sums, normalize, stage through this warp's own Q rows, 16-byte stores.
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = l_lo > 0.f ? 1.f / l_lo : 0.f;
  const float inv_hi = l_hi > 0.f ? 1.f / l_hi : 0.f;
  if ((lane & 3) == 0) {
    float* lse_row = a.lse + (int64_t(b) * a.Hq + h) * a.Tq;
    if (row_lo < a.Tq) lse_row[row_lo] = l_lo > 0.f ? (m_lo + log2f(l_lo)) * kLn2 : -INFINITY;
    if (row_hi < a.Tq) lse_row[row_hi] = l_hi > 0.f ? (m_hi + log2f(l_hi)) * kLn2 : -INFINITY;
  }
  __syncthreads();  // (no other warp reads Q any more; also orders against the last cp.async use)
  const int r_lo = warp * 16 + (lane >> 2);
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    const int col = dt * 8 + (lane & 3) * 2;
    *reinterpret_cast<uint32_t*>(q_s + swz<kD>(r_lo, col)) = pack2<T>(o[dt][0] * inv_lo, o[dt][1] * inv_lo);
    *reinterpret_cast<uint32_t*>(q_s + swz<kD>(r_lo + 8, col)) = pack2<T>(o[dt][2] * inv_hi, o[dt][3] * inv_hi);
  }
  __syncthreads();
#pragma unroll
  for (int i = tid; i < kBlockM * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    if (m0 + r < a.Tq)
      *reinterpret_cast<uint4*>(out_base + int64_t(m0 + r) * q_row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(q_s + swz<kD>(r, c * 8));
  }
}

template <typename T, int kD, int kBlockM, int kBlockN>
void launch_forward(const FwdArgs& args, int B, bool causal, cudaStream_t stream) {
  constexpr int kThreads = kBlockM / 16 * 32;
  constexpr int kSmem = (kBlockM + 2 * kBlockN) * kD * int(sizeof(T));
  const dim3 grid(unsigned(ceil_div(args.Tq, kBlockM)), unsigned(args.Hq), unsigned(B));
  KILN_BOOL_SWITCH(causal, kCausal, [&] {
    auto kernel = flash_forward_kernel<T, kD, kBlockM, kBlockN, kCausal>;
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    kernel<<<grid, kThreads, kSmem, stream>>>(args);
    cuda_check_launch("flash_forward_kernel");
  });
}

template <typename T>
void forward_typed(const AttentionParams& p, const FwdArgs& args, cudaStream_t stream) {
  if (p.D == 64)
    launch_forward<T, 64, 64, 64>(args, int(p.B), p.causal, stream);
  else
    launch_forward<T, 128, 64, 64>(args, int(p.B), p.causal, stream);
}

}  // namespace

void attention_forward_cuda_validate(const AttentionParams& p) {
  const char* op = "attention_forward_cuda";
  check(p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string(op) + ": dtype must be bf16 or f16, got " + dtype_name(p.dtype));
  check(p.B >= 0 && p.Tq >= 0 && p.Tk >= 0 && p.Hq >= 1 && p.Hkv >= 1, "ERR_SHAPE",
        std::string(op) + ": need B, Tq, Tk >= 0 and Hq, Hkv >= 1");
  check(p.Hq % p.Hkv == 0, "ERR_SHAPE", std::string(op) + ": Hkv must divide Hq");
  check(p.D == 64 || p.D == 128, "ERR_ARG", std::string(op) + ": head dim must be 64 or 128, got " + std::to_string(p.D));
  const int64_t lim = int64_t(1) << 30;
  check(p.B < 65536 && p.Tq < lim && p.Tk < lim && p.Hq < 65536, "ERR_SHAPE", std::string(op) + ": shape too large");
  check(std::isfinite(p.scale), "ERR_ARG", std::string(op) + ": scale must be finite");
  if (p.B == 0 || p.Tq == 0) return;
  attn_host::check_attention_path(op);
  attn_host::check_aligned16(p.q, op, "q");
  attn_host::check_aligned16(p.out, op, "out");
  check(p.lse != nullptr, "ERR_ARG", std::string(op) + ": lse is null");
  check((reinterpret_cast<uintptr_t>(p.lse) & 3u) == 0, "ERR_ARG", std::string(op) + ": lse must be 4-byte aligned");
  if (p.Tk > 0) {
    attn_host::check_aligned16(p.k, op, "k");
    attn_host::check_aligned16(p.v, op, "v");
  }
}

void attention_forward_cuda(const AttentionParams& p, cudaStream_t stream) {
  attention_forward_cuda_validate(p);
  if (p.B == 0 || p.Tq == 0) return;
  FwdArgs args;
  args.q = p.q;
  args.k = p.k;
  args.v = p.v;
  args.out = p.out;
  args.lse = static_cast<float*>(p.lse);
  args.Tq = int(p.Tq);
  args.Tk = int(p.Tk);
  args.Hq = int(p.Hq);
  args.Hkv = int(p.Hkv);
  args.scale_log2 = p.scale * attn::kLog2e;
  if (p.dtype == DType::bf16)
    forward_typed<__nv_bfloat16>(p, args, stream);
  else
    forward_typed<__half>(p, args, stream);
}

}  // namespace kiln

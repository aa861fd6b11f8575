// FlashAttention-2 backward on Ampere tensor cores (runs on sm_80/86/89/90).
//
//   inputs q: (B, Tq, Hq, D), k, v: (B, Tk, Hkv, D), out, dout: (B, Tq, Hq, D), lse: (B, Hq, Tq) f32
//   P = exp(scale q·kᵀ - lse) (masked as the forward), dP = dout·vᵀ, Delta_i = Σ_d dout·out,
//   dS = P ∘ (dP - Delta);  dq = scale dS·k,  dk = scale Σ_group dSᵀ·q,  dv = Σ_group Pᵀ·dout
//   (all three written with =, in q's dtype; dk/dv summed over the query heads of a kv group).
//
// Passes (all on `stream`):
//   1. zero the f32 dq accumulator (workspace), compute Delta (B, Hq, Tq) f32 into workspace.
//   2. main kernel: one block per (key tile of kBlockN keys, kv head, batch) loops over every
//      query head of the group and every query tile of kBlockM rows that can see the key tile.
//      dK, dV live in registers for the whole loop (so the group sum needs no atomics), warp w
//      owning keys 16w..16w+15. Per query tile: Sᵀ = K Qᵀ, Pᵀ, dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ,
//      dK += dSᵀ Q, dSᵀ -> smem, dQ_tile = dS K (warps split the tile's rows x columns) added to
//      the f32 accumulator with atomicAdd (other key tiles add to the same rows).
//      Q, dO, lse, Delta are double buffered (cp.async prefetch of the next (head, tile)).
//   3. convert the dq accumulator to q's dtype.
// Tiles (padded smem rows of D + 8): D=64: kBlockN=128 (8 warps), kBlockM=64, smem 91 KB;
// D=128: kBlockN=64 (4 warps), kBlockM=32, smem 74 KB (both fit the A40's 99 KB opt-in).
#include <cmath>
#include <string>

#include "attention_cuda.h"
#include "flash_common.cuh"

namespace kiln {
namespace {

using namespace attn;

struct BwdArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;    // (B, Hq, Tq)
  const float* delta;  // (B, Hq, Tq)
  float* dq_accum;     // (B, Tq, Hq, D), pre-scaled by `scale`
  void* dk;
  void* dv;
  int Tq, Tk, Hq, Hkv;
  float scale, scale_log2;
};

template <int kD, int kBlockN, int kBlockM>
struct BwdSmem {
  static constexpr int kDsStride = kBlockM + 8;  // padded rows: conflict-free ldmatrix.trans / stores
  static constexpr int kKV = kBlockN * (kD + 8);  // elements (padded rows)
  static constexpr int kQ = kBlockM * (kD + 8);
  static constexpr int kBytes = (2 * kKV + 4 * kQ + kBlockN * kDsStride) * 2 + 4 * kBlockM * 4;
};

// Delta[b, h, i] = Σ_d dout[b, i, h, d] * out[b, i, h, d]; one warp per (b, i, h) row.
template <typename T>
__global__ void attention_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout, float* __restrict__ delta,
                                       int64_t rows, int Tq, int Hq, int D) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const uint32_t* o2 = reinterpret_cast<const uint32_t*>(out + row * D);
  const uint32_t* d2 = reinterpret_cast<const uint32_t*>(dout + row * D);
  float acc = 0.f;
  for (int i = lane; i < D / 2; i += 32) {
    const float2 a = unpack2<T>(o2[i]), c = unpack2<T>(d2[i]);
    acc += a.x * c.x + a.y * c.y;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) {
    // row = (b * Tq + i) * Hq + h  ->  delta index (b * Hq + h) * Tq + i
    const int64_t h = row % Hq, bi = row / Hq, i = bi % Tq, b = bi / Tq;
    delta[(b * Hq + h) * Tq + i] = acc;
  }
}

template <typename T>
__global__ void attention_dq_convert_kernel(const float* __restrict__ src, T* __restrict__ dst, int64_t n2) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n2; i += int64_t(gridDim.x) * blockDim.x) {
    const float2 v = reinterpret_cast<const float2*>(src)[i];
    reinterpret_cast<uint32_t*>(dst)[i] = pack2<T>(v.x, v.y);
  }
}

template <typename T, int kD, int kBlockN, int kBlockM, bool kCausal>
__global__ void __launch_bounds__(kBlockN / 16 * 32) flash_backward_kernel(const BwdArgs a) {
  constexpr int kWarps = kBlockN / 16;
  constexpr int kThreads = kWarps * 32;
  using Smem = BwdSmem<kD, kBlockN, kBlockM>;
  constexpr int kMT = kBlockM / 8;  // Sᵀ n-tiles (queries) per warp
  constexpr int kDT = kD / 8;       // dK/dV n-tiles per warp
  // dQ tile (kBlockM x kD) split over the warps: kRowGroups x kColGroups of (16 x kDqCols).
  constexpr int kRowGroups = kBlockM / 16;
  static_assert(kWarps % kRowGroups == 0, "warps must cover the dQ row groups");
  constexpr int kColGroups = kWarps / kRowGroups;
  constexpr int kDqCols = kD / kColGroups;
  static_assert(kDqCols % 16 == 0, "dQ column slice must be a multiple of 16");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);  // (kBlockN, kD) in padded rows of kD + 8
  T* v_s = k_s + Smem::kKV;
  T* q_s = v_s + Smem::kKV;                 // [2][kBlockM, kD]
  T* do_s = q_s + 2 * Smem::kQ;             // [2][kBlockM, kD]
  T* ds_s = do_s + 2 * Smem::kQ;            // (kBlockN, kDsStride): dSᵀ, keys x queries
  float* lse_s = reinterpret_cast<float*>(ds_s + kBlockN * Smem::kDsStride);  // [2][kBlockM], log2 domain
  float* delta_s = lse_s + 2 * kBlockM;                                        // [2][kBlockM]

  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int group = a.Hq / a.Hkv;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int n0 = n_block * kBlockN;
  const int causal_offset = a.Tk - a.Tq;

  const int64_t q_row_stride = int64_t(a.Hq) * kD, kv_row_stride = int64_t(a.Hkv) * kD;
  const int64_t kv_off = (int64_t(b) * a.Tk * a.Hkv + hk) * kD;

  // Query tiles that can see some key of this tile: query i sees key j iff j <= i + offset.
  const int m_tiles = (a.Tq + kBlockM - 1) / kBlockM;
  const int m_begin = kCausal ? max(0, n0 - causal_offset) / kBlockM : 0;
  const int tiles_per_head = max(0, m_tiles - m_begin);
  const int total = group * tiles_per_head;

  // Issue the loads of iteration t (query head, query tile) into stage `st`.
  auto load_iteration = [&](int t, int st) {
    const int h = hk * group + t / tiles_per_head;
    const int m0 = (m_begin + t % tiles_per_head) * kBlockM;
    const int64_t q_off = (int64_t(b) * a.Tq * a.Hq + h) * kD;
    load_tile_async<kBlockM, kD, kThreads, true>(q_s + st * Smem::kQ, static_cast<const T*>(a.q) + q_off, q_row_stride, m0,
                                           a.Tq, tid);
    load_tile_async<kBlockM, kD, kThreads, true>(do_s + st * Smem::kQ, static_cast<const T*>(a.dout) + q_off, q_row_stride,
                                           m0, a.Tq, tid);
    for (int i = tid; i < kBlockM; i += kThreads) {
      const int row = m0 + i;
      float l = INFINITY, d = 0.f;  // rows past Tq: P = exp2(s - inf) = 0
      if (row < a.Tq) {
        const int64_t idx = (int64_t(b) * a.Hq + h) * a.Tq + row;
        const float lse = a.lse[idx];
        l = lse == -INFINITY ? INFINITY : lse * kLog2e;  // a row that saw no key has P = 0
        d = a.delta[idx];
      }
      lse_s[st * kBlockM + i] = l;
      delta_s[st * kBlockM + i] = d;
    }
  };

  float dk[kDT][4], dv[kDT][4];
#pragma unroll
  for (int i = 0; i < kDT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;

  load_tile_async<kBlockN, kD, kThreads, true>(k_s, static_cast<const T*>(a.k) + kv_off, kv_row_stride, n0, a.Tk, tid);
  load_tile_async<kBlockN, kD, kThreads, true>(v_s, static_cast<const T*>(a.v) + kv_off, kv_row_stride, n0, a.Tk, tid);
  if (total > 0) load_iteration(0, 0);
  cp_async_commit();

  const int key_lo = n0 + warp * 16 + (lane >> 2);  // this thread's key rows (C rows g, g+8)
  const int key_hi = key_lo + 8;

  for (int t = 0; t < total; ++t) {
    const int st = t & 1;
    const int h = hk * group + t / tiles_per_head;
    const int m0 = (m_begin + t % tiles_per_head) * kBlockM;
    if (t + 1 < total) load_iteration(t + 1, st ^ 1);  // stage st^1 was freed by the last barrier
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* qt = q_s + st * Smem::kQ;
    const T* dot = do_s + st * Smem::kQ;
    const float* lse_t = lse_s + st * kBlockM;
    const float* delta_t = delta_s + st * kBlockM;

    // Sᵀ = K_w Qᵀ (16 keys x kBlockM queries).
    float pt[kMT][4];
#pragma unroll
    for (int i = 0; i < kMT; ++i) pt[i][0] = pt[i][1] = pt[i][2] = pt[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t ka[4];
      ldmatrix_x4(ka, k_s + pad<kD>(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int mm = 0; mm < kBlockM / 16; ++mm) {
        uint32_t qb[4];
        ldmatrix_x4(qb, qt + pad<kD>(mm * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 16 + ((lane >> 3) & 1) * 8));
        mma_16816<T>(pt[2 * mm], ka, qb[0], qb[1]);
        mma_16816<T>(pt[2 * mm + 1], ka, qb[2], qb[3]);
      }
    }
    // Pᵀ = exp2(Sᵀ scale log2e - lse log2e), masked.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = mt * 8 + (lane & 3) * 2 + (e & 1);
        const int key = e < 2 ? key_lo : key_hi;
        float p = exp2f(pt[mt][e] * a.scale_log2 - lse_t[qi]);
        if (key >= a.Tk || (kCausal && key > m0 + qi + causal_offset)) p = 0.f;
        pt[mt][e] = p;
      }
    }
    // dV_w += Pᵀ dO.
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack2<T>(pt[2 * kk][0], pt[2 * kk][1]);
      pa[1] = pack2<T>(pt[2 * kk][2], pt[2 * kk][3]);
      pa[2] = pack2<T>(pt[2 * kk + 1][0], pt[2 * kk + 1][1]);
      pa[3] = pack2<T>(pt[2 * kk + 1][2], pt[2 * kk + 1][3]);
#pragma unroll
      for (int dd = 0; dd < kD / 16; ++dd) {
        uint32_t bb[4];
        ldmatrix_x4_trans(bb, dot + pad<kD>(kk * 16 + (lane & 15), dd * 16 + (lane >> 4) * 8));
        mma_16816<T>(dv[2 * dd], pa, bb[0], bb[1]);
        mma_16816<T>(dv[2 * dd + 1], pa, bb[2], bb[3]);
      }
    }
    // dPᵀ = V_w dOᵀ.
    float dst[kMT][4];
#pragma unroll
    for (int i = 0; i < kMT; ++i) dst[i][0] = dst[i][1] = dst[i][2] = dst[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t va[4];
      ldmatrix_x4(va, v_s + pad<kD>(warp * 16 + (lane & 15), kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int mm = 0; mm < kBlockM / 16; ++mm) {
        uint32_t ob[4];
        ldmatrix_x4(ob, dot + pad<kD>(mm * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 16 + ((lane >> 3) & 1) * 8));
        mma_16816<T>(dst[2 * mm], va, ob[0], ob[1]);
        mma_16816<T>(dst[2 * mm + 1], va, ob[2], ob[3]);
      }
    }
    // dSᵀ = Pᵀ ∘ (dPᵀ - Delta); store it (keys x queries) for the dQ product.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = mt * 8 + (lane & 3) * 2 + (e & 1);
        dst[mt][e] = pt[mt][e] * (dst[mt][e] - delta_t[qi]);
      }
      const int col = mt * 8 + (lane & 3) * 2;
      const int r = warp * 16 + (lane >> 2);
      *reinterpret_cast<uint32_t*>(ds_s + r * Smem::kDsStride + col) = pack2<T>(dst[mt][0], dst[mt][1]);
      *reinterpret_cast<uint32_t*>(ds_s + (r + 8) * Smem::kDsStride + col) = pack2<T>(dst[mt][2], dst[mt][3]);
    }
    // dK_w += dSᵀ Q.
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      uint32_t sa[4];
      sa[0] = pack2<T>(dst[2 * kk][0], dst[2 * kk][1]);
      sa[1] = pack2<T>(dst[2 * kk][2], dst[2 * kk][3]);
      sa[2] = pack2<T>(dst[2 * kk + 1][0], dst[2 * kk + 1][1]);
      sa[3] = pack2<T>(dst[2 * kk + 1][2], dst[2 * kk + 1][3]);
#pragma unroll
      for (int dd = 0; dd < kD / 16; ++dd) {
        uint32_t bb[4];
        ldmatrix_x4_trans(bb, qt + pad<kD>(kk * 16 + (lane & 15), dd * 16 + (lane >> 4) * 8));
        mma_16816<T>(dk[2 * dd], sa, bb[0], bb[1]);
        mma_16816<T>(dk[2 * dd + 1], sa, bb[2], bb[3]);
      }
    }
    __syncthreads();  // dSᵀ complete
    {
      // dQ tile += dS K for rows rg*16.., columns cg*kDqCols..
      const int rg = warp % kRowGroups, cg = warp / kRowGroups;
      float dq[kDqCols / 8][4];
#pragma unroll
      for (int i = 0; i < kDqCols / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t sa[4];  // A = dS (queries x keys) read transposed from dSᵀ
        ldmatrix_x4_trans(sa, ds_s + (kk * 16 + (lane & 7) + ((lane >> 4) << 3)) * Smem::kDsStride + rg * 16 +
                                  ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int dd = 0; dd < kDqCols / 16; ++dd) {
          uint32_t bb[4];
          ldmatrix_x4_trans(bb, k_s + pad<kD>(kk * 16 + (lane & 15), cg * kDqCols + dd * 16 + (lane >> 4) * 8));
          mma_16816<T>(dq[2 * dd], sa, bb[0], bb[1]);
          mma_16816<T>(dq[2 * dd + 1], sa, bb[2], bb[3]);
        }
      }
      const int q_lo = m0 + rg * 16 + (lane >> 2);
      float* acc_base = a.dq_accum + (int64_t(b) * a.Tq * a.Hq + h) * kD;
#pragma unroll
      for (int dt = 0; dt < kDqCols / 8; ++dt) {
        const int col = cg * kDqCols + dt * 8 + (lane & 3) * 2;
        if (q_lo < a.Tq) {
          float* p = acc_base + int64_t(q_lo) * q_row_stride + col;
          atomicAdd(p, dq[dt][0] * a.scale);
          atomicAdd(p + 1, dq[dt][1] * a.scale);
        }
        if (q_lo + 8 < a.Tq) {
          float* p = acc_base + int64_t(q_lo + 8) * q_row_stride + col;
          atomicAdd(p, dq[dt][2] * a.scale);
          atomicAdd(p + 1, dq[dt][3] * a.scale);
        }
      }
    }
    __syncthreads();  // this stage's Q/dO/lse/Delta and dSᵀ are free for the next prefetch
  }

  // Write dK (scaled) and dV for this warp's 16 keys.
  T* dk_base = static_cast<T*>(a.dk) + kv_off;
  T* dv_base = static_cast<T*>(a.dv) + kv_off;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    const int col = dt * 8 + (lane & 3) * 2;
    if (key_lo < a.Tk) {
      const int64_t o = int64_t(key_lo) * kv_row_stride + col;
      *reinterpret_cast<uint32_t*>(dk_base + o) = pack2<T>(dk[dt][0] * a.scale, dk[dt][1] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + o) = pack2<T>(dv[dt][0], dv[dt][1]);
    }
    if (key_hi < a.Tk) {
      const int64_t o = int64_t(key_hi) * kv_row_stride + col;
      *reinterpret_cast<uint32_t*>(dk_base + o) = pack2<T>(dk[dt][2] * a.scale, dk[dt][3] * a.scale);
      *reinterpret_cast<uint32_t*>(dv_base + o) = pack2<T>(dv[dt][2], dv[dt][3]);
    }
  }
}

template <typename T, int kD, int kBlockN, int kBlockM>
void launch_backward(const BwdArgs& args, int B, bool causal, cudaStream_t stream) {
  constexpr int kThreads = kBlockN / 16 * 32;
  constexpr int kSmem = BwdSmem<kD, kBlockN, kBlockM>::kBytes;
  const dim3 grid(unsigned(ceil_div(args.Tk, kBlockN)), unsigned(args.Hkv), unsigned(B));
  KILN_BOOL_SWITCH(causal, kCausal, [&] {
    auto kernel = flash_backward_kernel<T, kD, kBlockN, kBlockM, kCausal>;
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    kernel<<<grid, kThreads, kSmem, stream>>>(args);
    cuda_check_launch("flash_backward_kernel");
  });
}

template <typename T>
void backward_typed(const AttentionBackwardParams& p, BwdArgs& args, cudaStream_t stream) {
  const int64_t q_elems = p.B * p.Tq * p.Hq * p.D;
  const int64_t rows = p.B * p.Tq * p.Hq;
  KILN_CUDA_CHECK(cudaMemsetAsync(args.dq_accum, 0, size_t(q_elems) * sizeof(float), stream));
  attention_delta_kernel<T><<<unsigned(ceil_div(rows * 32, 256)), 256, 0, stream>>>(
      static_cast<const T*>(p.out), static_cast<const T*>(p.dout), const_cast<float*>(args.delta), rows, int(p.Tq),
      int(p.Hq), int(p.D));
  cuda_check_launch("attention_delta_kernel");
  if (p.Tk > 0) {
    if (p.D == 64)
      launch_backward<T, 64, 128, 64>(args, int(p.B), p.causal, stream);
    else
      launch_backward<T, 128, 64, 32>(args, int(p.B), p.causal, stream);
  }
  const int64_t n2 = q_elems / 2;
  const int blocks = int(std::min<int64_t>((n2 + 255) / 256, 4096));
  attention_dq_convert_kernel<T><<<blocks, 256, 0, stream>>>(args.dq_accum, static_cast<T*>(p.dq), n2);
  cuda_check_launch("attention_dq_convert_kernel");
}

}  // namespace

size_t attention_backward_workspace_bytes(int64_t B, int64_t Tq, int64_t Hq, int64_t D) {
  if (B <= 0 || Tq <= 0 || Hq <= 0 || D <= 0) return 0;
  return attn_host::align256(size_t(B * Tq * Hq * D) * sizeof(float)) +
         attn_host::align256(size_t(B * Hq * Tq) * sizeof(float));
}

void attention_backward_cuda_validate(const AttentionBackwardParams& p) {
  const char* op = "attention_backward_cuda";
  check(p.dtype == DType::bf16 || p.dtype == DType::f16, "ERR_DTYPE",
        std::string(op) + ": dtype must be bf16 or f16, got " + dtype_name(p.dtype));
  check(p.B >= 0 && p.Tq >= 0 && p.Tk >= 0 && p.Hq >= 1 && p.Hkv >= 1, "ERR_SHAPE",
        std::string(op) + ": need B, Tq, Tk >= 0 and Hq, Hkv >= 1");
  check(p.Hq % p.Hkv == 0, "ERR_SHAPE", std::string(op) + ": Hkv must divide Hq");
  check(p.D == 64 || p.D == 128, "ERR_ARG", std::string(op) + ": head dim must be 64 or 128, got " + std::to_string(p.D));
  const int64_t lim = int64_t(1) << 30;
  check(p.B < 65536 && p.Tq < lim && p.Tk < lim && p.Hq < 65536, "ERR_SHAPE", std::string(op) + ": shape too large");
  check(std::isfinite(p.scale), "ERR_ARG", std::string(op) + ": scale must be finite");
  if (p.B == 0) return;
  attn_host::check_attention_path(op);
  const bool has_q = p.Tq > 0, has_k = p.Tk > 0;
  if (has_k) {
    attn_host::check_aligned16(p.k, op, "k");
    attn_host::check_aligned16(p.v, op, "v");
    attn_host::check_aligned16(p.dk, op, "dk");
    attn_host::check_aligned16(p.dv, op, "dv");
  }
  if (!has_q) return;
  attn_host::check_aligned16(p.q, op, "q");
  attn_host::check_aligned16(p.out, op, "out");
  attn_host::check_aligned16(p.dout, op, "dout");
  attn_host::check_aligned16(p.dq, op, "dq");
  check(p.lse != nullptr && (reinterpret_cast<uintptr_t>(p.lse) & 3u) == 0, "ERR_ARG",
        std::string(op) + ": lse must be a non-null 4-byte aligned pointer");
  check(p.workspace != nullptr && (reinterpret_cast<uintptr_t>(p.workspace) & 255u) == 0, "ERR_ARG",
        std::string(op) + ": workspace (attention_backward_workspace_bytes) must be non-null and 256-byte aligned");
}

void attention_backward_cuda(const AttentionBackwardParams& p, cudaStream_t stream) {
  attention_backward_cuda_validate(p);
  if (p.B == 0) return;
  if (p.Tq == 0) {
    // No query: dk = dv = 0.
    if (p.Tk > 0) {
      const size_t bytes = size_t(p.B * p.Tk * p.Hkv * p.D) * 2;
      KILN_CUDA_CHECK(cudaMemsetAsync(p.dk, 0, bytes, stream));
      KILN_CUDA_CHECK(cudaMemsetAsync(p.dv, 0, bytes, stream));
    }
    return;
  }
  BwdArgs args;
  args.q = p.q;
  args.k = p.k;
  args.v = p.v;
  args.dout = p.dout;
  args.lse = static_cast<const float*>(p.lse);
  args.dq_accum = static_cast<float*>(p.workspace);
  args.delta = reinterpret_cast<const float*>(static_cast<char*>(p.workspace) +
                                              attn_host::align256(size_t(p.B * p.Tq * p.Hq * p.D) * sizeof(float)));
  args.dk = p.dk;
  args.dv = p.dv;
  args.Tq = int(p.Tq);
  args.Tk = int(p.Tk);
  args.Hq = int(p.Hq);
  args.Hkv = int(p.Hkv);
  args.scale = p.scale;
  args.scale_log2 = p.scale * attn::kLog2e;
  if (p.dtype == DType::bf16)
    backward_typed<__nv_bfloat16>(p, args, stream);
  else
    backward_typed<__half>(p, args, stream);
}

}  // namespace kiln

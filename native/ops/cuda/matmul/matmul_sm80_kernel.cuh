// Ampere tensor-core GEMM (mma.sync m16n8k16, bf16/f16 in, f32 accumulate), sm_80 and later.
//
//   C_z (M x N) = epilogue(alpha * opA(A_z)·opB(B_z) + beta * C_z)      (contract: ops/matmul.h)
//
// Structure (one CTA per BM x BN output tile, grouped raster for L2 reuse, batch on grid.y):
//   global --cp.async 16B, zero-filled tails--> STAGES-deep smem ring --ldmatrix(.trans)-->
//   registers --mma.sync--> f32 accumulators --fused epilogue--> C
// Shared-memory tiles keep the operand's global layout (no transposes on the way in):
//   A:  !trans_a  a_tile[BM][BK]  (K contiguous)  -> ldmatrix        gives the row-major A fragment
//        trans_a  a_tile[BK][BM]  (M contiguous)  -> ldmatrix.trans  gives the same fragment
//   B:   trans_b  b_tile[BN][BK]  (K contiguous)  -> ldmatrix        gives the "col" B fragment
//       !trans_b  b_tile[BK][BN]  (N contiguous)  -> ldmatrix.trans  gives the same fragment
// Swizzle: 16-byte chunks are XOR-permuted inside each 128-byte line (rows of 4 chunks) or by
// row & 7 (rows of >= 8 chunks), so the 8 row addresses of every ldmatrix phase hit 8
// distinct bank groups.
// Swiglu: the CTA computes BN/2 outputs; inside each warp's WN columns the first WN/2 are gate
// columns and the last WN/2 the matching up columns (global column + N), so accumulator tile j
// (gate) and j + NJ/2 (up) sit in the same thread and the epilogue writes silu(gate)*up.
// Requirements (checked by matmul_sm80_supported): 16-byte aligned A and B, lda, ldb, stride_a,
// stride_b % 8 == 0, and N % 8 == 0 for swiglu with !trans_b. Tails in M, N and K are handled
// by predicated cp.async with zero fill, so any M, N, K >= 0 is fine.
//
// This header holds the kernel and its launchers; each of the five tile configurations is
// instantiated (16 variants: trans_a x trans_b x f16 x swiglu) in its own translation unit
// (configuration 0 with the host-side dispatch in matmul_sm80.cu, 1 to 4 in files named after
// their configuration, matmul_sm80_<BM>x<BN>x<BK>_w<warps>_s<stages>.cu), so a parallel build
// compiles them side by side.
#pragma once
#include <cstdio>

#include "../common.cuh"
#include "matmul_internal.cuh"

namespace kiln {
namespace matmul_detail {
namespace {  // each including TU gets its own copy and instantiates only its configuration

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct Sm80Tile {
  static constexpr int BM = BM_, BN = BN_, BK = 32, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  static constexpr int MI = WM / 16, NJ = WN / 8;              // mma tiles per warp
  static constexpr int A_STAGE = BM * BK, B_STAGE = BN * BK;   // elements per stage
  static constexpr int SMEM_BYTES = STAGES * (A_STAGE + B_STAGE) * 2;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile must be a multiple of 16 (swiglu halves of 8)");
  static_assert((BM * BK / 8) % THREADS == 0 && (BN * BK / 8) % THREADS == 0, "chunks must divide evenly");
  static_assert(BM % 64 == 0 && BN % 64 == 0, "M/N-contiguous tiles need >= 8 chunks per row");
};

// The configurations, in the order of matmul_sm80_config_name. Configuration 0 is compiled in
// matmul_sm80.cu, 1 to 4 each in matmul_<its name>.cu.
using Cfg0 = Sm80Tile<128, 128, 2, 4, 3>;  // sm80_128x128x32_w8_s3: 48 KB smem (registers, ~164, allow 1 CTA/SM)
using Cfg1 = Sm80Tile<128, 128, 2, 4, 4>;  // sm80_128x128x32_w8_s4: 64 KB
using Cfg2 = Sm80Tile<128, 64, 2, 2, 4>;   // sm80_128x64x32_w4_s4: 48 KB, 4 warps
using Cfg3 = Sm80Tile<64, 128, 2, 2, 4>;   // sm80_64x128x32_w4_s4: 48 KB, 4 warps (wide N, e.g. swiglu)
using Cfg4 = Sm80Tile<64, 64, 2, 2, 4>;    // sm80_64x64x32_w4_s4: 32 KB, small / skinny problems
// (A 256x128 config with 64x64 warp tiles was tried: 128 accumulators/thread hit 254-255
// registers and spilled on sm_90a, so it is left out.)

// Chunk (16 bytes = 8 elements) index of logical (row, chunk) in a tile of C chunks per row.
template <int C>
__device__ __forceinline__ int swizzle_chunk(int row, int c) {
  if constexpr (C == 4) {
    int idx = row * 4 + c;  // two rows per 128-byte line: permute by line index
    return (idx & ~7) | ((idx & 7) ^ ((idx >> 3) & 7));
  } else {
    static_assert(C % 8 == 0, "rows of >= 8 chunks");
    return row * C + ((c & ~7) | ((c & 7) ^ (row & 7)));
  }
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; src_bytes < 16 zero-fills the rest (0 reads nothing).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <bool F16>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (F16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ int clamp_elems(int remaining) { return remaining <= 0 ? 0 : (remaining >= 8 ? 8 : remaining); }

// Global column (in opB's 2N- or N-wide space) of local B tile column `col`, and whether it
// is inside the output (n_out < N).
template <class Cfg, bool SWIGLU>
__device__ __forceinline__ int64_t b_global_col(int col, int n_out_base, int N, bool& valid) {
  if constexpr (SWIGLU) {
    int w = col / Cfg::WN, r = col % Cfg::WN;
    bool up = r >= Cfg::WN / 2;
    int n_out = n_out_base + w * (Cfg::WN / 2) + (up ? r - Cfg::WN / 2 : r);
    valid = n_out < N;
    return int64_t(n_out) + (up ? N : 0);
  } else {
    int n_out = n_out_base + col;
    valid = n_out < N;
    return n_out;
  }
}

template <class Cfg, bool TRANS_A, bool TRANS_B, bool F16, bool SWIGLU>
__global__ void __launch_bounds__(Cfg::THREADS) matmul_sm80_kernel(MatmulArgs p, int tiles_m, int tiles_n) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES, THREADS = Cfg::THREADS;
  constexpr int MI = Cfg::MI, NJ = Cfg::NJ;
  constexpr int BN_OUT = SWIGLU ? BN / 2 : BN;  // output columns per CTA
  extern __shared__ __align__(128) uint16_t smem[];
  uint16_t* a_smem = smem;                         // STAGES x A_STAGE
  uint16_t* b_smem = smem + STAGES * Cfg::A_STAGE;  // STAGES x B_STAGE

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / Cfg::WARPS_N, warp_n = warp % Cfg::WARPS_N;

  // Grouped raster: 8 tile-rows at a time sweep N, so A and B panels stay in L2.
  constexpr int GROUP = 8;
  const int tile_id = blockIdx.x;
  const int group = tile_id / (GROUP * tiles_n);
  const int first_m = group * GROUP;
  const int group_rows = min(tiles_m - first_m, GROUP);
  const int in_group = tile_id % (GROUP * tiles_n);
  const int tile_m = first_m + in_group % group_rows;
  const int tile_n = in_group / group_rows;
  const int m0 = tile_m * BM;
  const int n_out_base = tile_n * BN_OUT;
  const int k_tiles = (p.K + BK - 1) / BK;

  for (int z = blockIdx.y; z < p.batch; z += gridDim.y) {
    const uint16_t* a_z = static_cast<const uint16_t*>(p.a) + int64_t(z) * p.stride_a;
    const uint16_t* b_z = static_cast<const uint16_t*>(p.b) + int64_t(z) * p.stride_b;

    auto load_stage = [&](int stage, int kt) {
      const int k0 = kt * BK;
      const uint32_t a_dst = smem_u32(a_smem + stage * Cfg::A_STAGE);
      const uint32_t b_dst = smem_u32(b_smem + stage * Cfg::B_STAGE);
#pragma unroll
      for (int i = 0; i < BM * BK / 8 / THREADS; ++i) {
        const int id = i * THREADS + tid;
        if constexpr (!TRANS_A) {  // a_tile[m][k], 4 chunks per row
          const int row = id / 4, c = id % 4;
          const int m = m0 + row, k = k0 + c * 8;
          const int n_el = m < p.M ? clamp_elems(p.K - k) : 0;
          const uint16_t* src = n_el ? a_z + int64_t(m) * p.lda + k : a_z;
          cp_async_16(a_dst + swizzle_chunk<4>(row, c) * 16, src, n_el * 2);
        } else {  // a_tile[k][m], BM/8 chunks per row
          const int row = id / (BM / 8), c = id % (BM / 8);
          const int k = k0 + row, m = m0 + c * 8;
          const int n_el = k < p.K ? clamp_elems(p.M - m) : 0;
          const uint16_t* src = n_el ? a_z + int64_t(k) * p.lda + m : a_z;
          cp_async_16(a_dst + swizzle_chunk<BM / 8>(row, c) * 16, src, n_el * 2);
        }
      }
#pragma unroll
      for (int i = 0; i < BN * BK / 8 / THREADS; ++i) {
        const int id = i * THREADS + tid;
        if constexpr (TRANS_B) {  // b_tile[n][k], 4 chunks per row
          const int row = id / 4, c = id % 4;
          const int k = k0 + c * 8;
          bool valid;
          const int64_t n = b_global_col<Cfg, SWIGLU>(row, n_out_base, p.N, valid);
          const int n_el = valid ? clamp_elems(p.K - k) : 0;
          const uint16_t* src = n_el ? b_z + n * p.ldb + k : b_z;
          cp_async_16(b_dst + swizzle_chunk<4>(row, c) * 16, src, n_el * 2);
        } else {  // b_tile[k][n], BN/8 chunks per row; a chunk never straddles gate/up halves
          const int row = id / (BN / 8), c = id % (BN / 8);
          const int k = k0 + row;
          bool valid;
          const int64_t n = b_global_col<Cfg, SWIGLU>(c * 8, n_out_base, p.N, valid);
          // Elements left in this output row: the chunk's first output column is n_out = n (- N for up).
          const int n_out = int(SWIGLU && n >= p.N ? n - p.N : n);
          const int n_el = (k < p.K && valid) ? clamp_elems(p.N - n_out) : 0;
          const uint16_t* src = n_el ? b_z + int64_t(k) * p.ldb + n : b_z;
          cp_async_16(b_dst + swizzle_chunk<BN / 8>(row, c) * 16, src, n_el * 2);
        }
      }
    };

    float acc[MI][NJ][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < k_tiles) load_stage(s, s);
      cp_async_commit();  // always commit so the group count stays in step
    }

    for (int kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<STAGES - 2>();  // tile kt has landed (for this thread)
      __syncthreads();              // ... for all threads; and everyone is done with tile kt-1
      {
        const int next = kt + STAGES - 1;
        if (next < k_tiles) load_stage(next % STAGES, next);
        cp_async_commit();
      }
      const int stage = kt % STAGES;
      const uint16_t* a_s = a_smem + stage * Cfg::A_STAGE;
      const uint16_t* b_s = b_smem + stage * Cfg::B_STAGE;
#pragma unroll
      for (int kk = 0; kk < BK; kk += 16) {
        uint32_t a_frag[MI][4];
        uint32_t b_frag[NJ][2];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int mb = warp_m * Cfg::WM + mi * 16;
          if constexpr (!TRANS_A) {
            // lanes 0-15 -> rows mb+0..15 at k chunk kk/8; lanes 16-31 -> same rows, next chunk
            const int row = mb + (lane & 15), c = kk / 8 + (lane >> 4);
            ldmatrix_x4(a_frag[mi], smem_u32(a_s + swizzle_chunk<4>(row, c) * 8));
          } else {
            // matrix j = lane/8: k rows kk + (j/2)*8 + lane%8, m columns mb + (j%2)*8
            const int j = lane >> 3;
            const int row = kk + (lane & 7) + (j >> 1) * 8, c = (mb + (j & 1) * 8) / 8;
            ldmatrix_x4_trans(a_frag[mi], smem_u32(a_s + swizzle_chunk<BM / 8>(row, c) * 8));
          }
        }
#pragma unroll
        for (int jp = 0; jp < NJ / 2; ++jp) {
          const int nb = warp_n * Cfg::WN + jp * 16;
          const int j = lane >> 3;
          uint32_t r[4];
          if constexpr (TRANS_B) {
            // matrix j: n rows nb + (j/2)*8 + lane%8, k chunk kk/8 + j%2
            const int row = nb + (lane & 7) + (j >> 1) * 8, c = kk / 8 + (j & 1);
            ldmatrix_x4(r, smem_u32(b_s + swizzle_chunk<4>(row, c) * 8));
          } else {
            // matrix j: k rows kk + (j%2)*8 + lane%8, n chunk (nb + (j/2)*8)/8
            const int row = kk + (lane & 7) + (j & 1) * 8, c = (nb + (j >> 1) * 8) / 8;
            ldmatrix_x4_trans(r, smem_u32(b_s + swizzle_chunk<BN / 8>(row, c) * 8));
          }
          b_frag[2 * jp][0] = r[0];
          b_frag[2 * jp][1] = r[1];
          b_frag[2 * jp + 1][0] = r[2];
          b_frag[2 * jp + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int nj = 0; nj < NJ; ++nj) mma_16816<F16>(acc[mi][nj], a_frag[mi], b_frag[nj]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next batch iteration reuses the ring

    // Epilogue straight from the accumulator fragment: c0,c1 at (row g, cols 2t,2t+1),
    // c2,c3 at (row g+8, same cols).
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int m = m0 + warp_m * Cfg::WM + mi * 16 + g + half * 8;
        if (m >= p.M) continue;
        if constexpr (SWIGLU) {
#pragma unroll
          for (int nj = 0; nj < NJ / 2; ++nj) {
            const int n = n_out_base + warp_n * (Cfg::WN / 2) + nj * 8 + 2 * t;
            if (n < p.N)
              epilogue_store_pair(p, z, m, n, acc[mi][nj][2 * half], acc[mi][nj][2 * half + 1],
                                  acc[mi][nj + NJ / 2][2 * half], acc[mi][nj + NJ / 2][2 * half + 1]);
          }
        } else {
#pragma unroll
          for (int nj = 0; nj < NJ; ++nj) {
            const int n = n_out_base + warp_n * Cfg::WN + nj * 8 + 2 * t;
            if (n < p.N)
              epilogue_store_pair(p, z, m, n, acc[mi][nj][2 * half], acc[mi][nj][2 * half + 1], 0.f, 0.f);
          }
        }
      }
    }
  }
}

template <class Cfg, bool TRANS_A, bool TRANS_B, bool F16, bool SWIGLU>
void launch_sm80_kernel(const MatmulParams& p, cudaStream_t stream) {
  auto kernel = matmul_sm80_kernel<Cfg, TRANS_A, TRANS_B, F16, SWIGLU>;
  // The attribute is per function and per device; setting it each call is cheap and keeps
  // multi-GPU processes correct.
  KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::SMEM_BYTES));
  const int bn_out = SWIGLU ? Cfg::BN / 2 : Cfg::BN;
  const int tiles_m = ceil_div(p.M, Cfg::BM), tiles_n = ceil_div(p.N, bn_out);
  const long long tiles = (long long)tiles_m * tiles_n;
  check(tiles < (1LL << 31), "ERR_ARG", "matmul: too many output tiles");
  dim3 grid(unsigned(tiles), unsigned(p.batch < 65535 ? p.batch : 65535));
  kernel<<<grid, Cfg::THREADS, Cfg::SMEM_BYTES, stream>>>(make_args(p), tiles_m, tiles_n);
  cuda_check_launch("matmul_sm80_kernel");
}

template <class Cfg>
void launch_sm80_config(const MatmulParams& p, cudaStream_t stream) {
  const bool f16 = p.ab_dtype == DType::f16;
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu;
  KILN_BOOL_SWITCH(p.trans_a, TA, [&] {
    KILN_BOOL_SWITCH(p.trans_b, TB, [&] {
      KILN_BOOL_SWITCH(f16, F16, [&] {
        KILN_BOOL_SWITCH(swiglu, SW, [&] { launch_sm80_kernel<Cfg, TA, TB, F16, SW>(p, stream); });
      });
    });
  });
}

}  // namespace

// The launchers of the five configurations, by index (matmul_sm80.cu and the four
// matmul_sm80_<BM>x<BN>x<BK>_w<warps>_s<stages>.cu files).
void matmul_sm80_launch_cfg0(const MatmulParams& p, cudaStream_t stream);
void matmul_sm80_launch_cfg1(const MatmulParams& p, cudaStream_t stream);
void matmul_sm80_launch_cfg2(const MatmulParams& p, cudaStream_t stream);
void matmul_sm80_launch_cfg3(const MatmulParams& p, cudaStream_t stream);
void matmul_sm80_launch_cfg4(const MatmulParams& p, cudaStream_t stream);

}  // namespace matmul_detail
}  // namespace kiln

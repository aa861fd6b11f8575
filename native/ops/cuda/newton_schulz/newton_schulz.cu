// CUDA Newton–Schulz for Muon (contract and math: ops/newton_schulz.h), batched over the
// matrices of one shape: every kernel below is ONE launch for the whole batch (grid.y = matrix).
//
// Per call:
//   norm_partials   ‖G_z‖² in kNormChunks deterministic partial sums per matrix (f32)
//   normalize       X_z (Mp x Np, bf16, zero padded) = G_z or G_zᵀ (tall) / (‖G_z‖·norm_scale + eps)
//   per step s:
//     A = X·Xᵀ             symmetric GEMM: upper-triangle 128x128 tiles, each written with its mirror
//     B = b·A + c·A·A      symmetric GEMM on A (A·A symmetric), epilogue b·A + c·acc, mirrored
//     X' = a·X + B·X       plain GEMM, epilogue a·X + acc
//   store           out_z (rows x cols, f32|bf16) = X_z or X_zᵀ (tall), padding dropped
//
// Tails: every buffer is padded to multiples of 128 (the tile) with zeros, and zeros stay zeros
// through the iteration (zero rows/cols of X give zero rows/cols of A, B and X'), so the GEMMs
// run unpredicated full tiles and any rows/cols are handled. A 100x37 matrix computes on a
// 128x128 X — wasteful only for matrices that are tiny anyway.
//
// GEMM kernel (Ampere path; Hopper runs it too): 128x128x32 block tile, 8 warps as
// 2 (M) x 4 (N) of 64x32 warp tiles, bf16 mma.sync.m16n8k16 with f32 accumulation, ldmatrix
// (.trans for the K x N operand of B·X) and a 3-stage cp.async pipeline; shared rows padded by
// 16 bytes so ldmatrix is conflict-free. 60 KB of dynamic shared memory per block (opt-in).
// bf16 rounding points (X, A, B stored as bf16) match the CPU compute = bf16 path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "../../newton_schulz.h"
#include "../common.cuh"

namespace kiln {
namespace {

constexpr int kTile = 128;        // block tile (M = N)
constexpr int kTileK = 32;        // K per pipeline stage
constexpr int kStages = 3;
constexpr int kThreads = 256;     // 8 warps: 2 (M) x 4 (N), warp tile 64 x 32
constexpr int kRowK = kTileK + 8;           // padded shared row of a (rows x K) tile, elements
constexpr int kRowN = kTile + 8;            // padded shared row of a (K x N) tile, elements
constexpr int kOperandElems = kTile * kRowK;  // 5120 >= kTileK * kRowN = 4352
constexpr int kStageElems = 2 * kOperandElems;
constexpr int kSmemBytes = kStages * kStageElems * 2;  // 61440
constexpr int kNormChunks = 64;   // partial sums per matrix
constexpr int kCopyTile = 32;     // transpose/copy tile

static_assert(kTileK * kRowN <= kOperandElems, "K x N tile must fit the operand slot");

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* global) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(smem)), "l"(global));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// d += a (16x16, row) · b (16x8, col), bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// C = alpha·(P·Q) + beta·D for one matrix per grid.y, all bf16, all padded to multiples of 128.
//   P: (Mp x K) row-major, leading dim ld_p.
//   Q: kQRowsAreN ? stored (N x K) row-major, used transposed (P·Qᵀ: X·Xᵀ, and A·A via A = Aᵀ)
//                 : stored (K x N) row-major (B·X).
//   kSymmetric: C is Mp x Mp and symmetric; grid.x enumerates the upper-triangle tiles
//     (ti <= tj) and each value is written at (i, j) and (j, i); a diagonal tile writes only its
//     i <= j half (and its mirror), so C is exactly symmetric.
//   kHasD: add beta·D (D has C's shape and leading dim ld_c; may be P for B = b·A + c·A·A).
struct GemmArgs {
  const __nv_bfloat16* p;
  const __nv_bfloat16* q;
  const __nv_bfloat16* d;
  __nv_bfloat16* c;
  int64_t ld_p, ld_q, ld_c;                    // elements
  int64_t stride_p, stride_q, stride_c;        // elements between matrices (D uses stride_c)
  int k;                                       // multiple of kTileK
  int tiles_m, tiles_n;                        // tiles per dimension
  float alpha, beta;
};

template <bool kQRowsAreN, bool kSymmetric, bool kHasD>
__global__ void __launch_bounds__(kThreads) ns_gemm_kernel(GemmArgs args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(16) __nv_bfloat16 smem[];
  const int z = blockIdx.y;
  int ti, tj;
  if (kSymmetric) {
    int rem = blockIdx.x;
    ti = 0;
    while (rem >= args.tiles_m - ti) {  // row ti holds tiles_m - ti upper tiles
      rem -= args.tiles_m - ti;
      ++ti;
    }
    tj = ti + rem;
  } else {
    ti = blockIdx.x / args.tiles_n;
    tj = blockIdx.x % args.tiles_n;
  }
  const __nv_bfloat16* p = args.p + z * args.stride_p + int64_t(ti) * kTile * args.ld_p;
  const __nv_bfloat16* q = args.q + z * args.stride_q +
                           (kQRowsAreN ? int64_t(tj) * kTile * args.ld_q : int64_t(tj) * kTile);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp >> 2, warp_n = warp & 3;  // 2 x 4 warps

  // Stage loaders: each thread moves 2 x 16 bytes of P and 2 x 16 bytes of Q per stage.
  auto load_stage = [&](int stage, int k0) {
    __nv_bfloat16* sp = smem + stage * kStageElems;
    __nv_bfloat16* sq = sp + kOperandElems;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int chunk = tid + r * kThreads;  // 512 chunks of 8 elements
      const int row = chunk >> 2, col = (chunk & 3) * 8;
      cp_async_16(sp + row * kRowK + col, p + int64_t(row) * args.ld_p + k0 + col);
      if (kQRowsAreN) {
        cp_async_16(sq + row * kRowK + col, q + int64_t(row) * args.ld_q + k0 + col);
      } else {
        const int krow = chunk >> 4, ncol = (chunk & 15) * 8;  // 32 rows x 128 cols
        cp_async_16(sq + krow * kRowN + ncol, q + int64_t(k0 + krow) * args.ld_q + ncol);
      }
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  const int k_tiles = args.k / kTileK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s * kTileK);
    cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer read
    const int next = kt + kStages - 1;
    if (next < k_tiles) load_stage(next % kStages, next * kTileK);
    cp_async_commit();

    const __nv_bfloat16* sp = smem + (kt % kStages) * kStageElems;
    const __nv_bfloat16* sq = sp + kOperandElems;
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      uint32_t a_frag[4][4], b_frag[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int row = warp_m * 64 + mi * 16 + (lane & 15);
        ldmatrix_x4(a_frag[mi], sp + row * kRowK + kk + (lane >> 4) * 8);
      }
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {  // two n8 tiles per ldmatrix.x4
        uint32_t r[4];
        const int n_base = warp_n * 32 + nj * 16;
        if (kQRowsAreN) {
          // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
          const int n = n_base + (lane & 7) + (lane >> 4) * 8;
          const int k = kk + ((lane >> 3) & 1) * 8;
          ldmatrix_x4(r, sq + n * kRowK + k);
        } else {
          // stored (k, n); transposed load, same register order as above
          const int k = kk + (lane & 7) + ((lane >> 3) & 1) * 8;
          const int n = n_base + (lane >> 4) * 8;
          ldmatrix_x4_trans(r, sq + k * kRowN + n);
        }
        b_frag[2 * nj][0] = r[0];
        b_frag[2 * nj][1] = r[1];
        b_frag[2 * nj + 1][0] = r[2];
        b_frag[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], a_frag[mi], b_frag[ni][0], b_frag[ni][1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue: fragment element e of tile (mi, ni) sits at row g (+8 for e >= 2), column 2t (+1).
  __nv_bfloat16* c = args.c + z * args.stride_c;
  const __nv_bfloat16* d = kHasD ? args.d + z * args.stride_c : nullptr;
  const bool diagonal = kSymmetric && ti == tj;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = ti * kTile + warp_m * 64 + mi * 16 + g + half * 8;
        const int j = tj * kTile + warp_n * 32 + ni * 8 + 2 * t;
        float v0 = args.alpha * acc[mi][ni][2 * half], v1 = args.alpha * acc[mi][ni][2 * half + 1];
        if (kHasD) {
          const float2 dv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(d + int64_t(i) * args.ld_c + j));
          v0 += args.beta * dv.x;
          v1 += args.beta * dv.y;
        }
        const __nv_bfloat16 b0 = __float2bfloat16_rn(v0), b1 = __float2bfloat16_rn(v1);
        if (!kSymmetric) {
          *reinterpret_cast<__nv_bfloat162*>(c + int64_t(i) * args.ld_c + j) = __halves2bfloat162(b0, b1);
        } else if (!diagonal) {
          *reinterpret_cast<__nv_bfloat162*>(c + int64_t(i) * args.ld_c + j) = __halves2bfloat162(b0, b1);
          c[int64_t(j) * args.ld_c + i] = b0;
          c[int64_t(j + 1) * args.ld_c + i] = b1;
        } else {
          if (i <= j) {
            c[int64_t(i) * args.ld_c + j] = b0;
            c[int64_t(j) * args.ld_c + i] = b0;
          }
          if (i <= j + 1) {
            c[int64_t(i) * args.ld_c + j + 1] = b1;
            c[int64_t(j + 1) * args.ld_c + i] = b1;
          }
        }
      }
#else
  __trap();  // launched only on sm_80+ (checked by the launcher)
#endif
}

__device__ __forceinline__ float load_as_float(const void* base, DType t, int64_t i) {
  if (t == DType::f32) return static_cast<const float*>(base)[i];
  if (t == DType::bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return __half2float(static_cast<const __half*>(base)[i]);
}

// partials[z * kNormChunks + chunk] = Σ G_z[i]² over the elements i ≡ chunk·256 + tid (fixed order).
__global__ void __launch_bounds__(256) ns_norm_partials_kernel(float* partials, const void* g, DType dtype, int64_t count) {
  const int z = blockIdx.y, chunk = blockIdx.x;
  const int64_t base = int64_t(z) * count;
  float sum = 0.f;
  for (int64_t i = int64_t(chunk) * 256 + threadIdx.x; i < count; i += int64_t(kNormChunks) * 256) {
    const float x = load_as_float(g, dtype, base + i);
    sum = fmaf(x, x, sum);
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __shared__ float warp_sums[8];
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < 8; ++w) total += warp_sums[w];
    partials[z * kNormChunks + chunk] = total;
  }
}

// X_z (Mp x Np, bf16) = (tall ? G_zᵀ : G_z) · inv_norm_z, zero outside the m x n matrix.
// Block: 32 x 8 threads, one 32 x 32 tile of X; a tall source is read coalesced and transposed
// through shared memory.
__global__ void __launch_bounds__(256) ns_normalize_kernel(__nv_bfloat16* x, int64_t ld_x, int64_t stride_x,
                                                           const void* g, DType dtype, int64_t rows, int64_t cols,
                                                           bool tall, const float* partials, float norm_scale, float eps) {
  __shared__ float tile[kCopyTile][kCopyTile + 1];
  __shared__ float inv_norm;
  const int z = blockIdx.z;
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    double sum = 0;
    for (int c = 0; c < kNormChunks; ++c) sum += partials[z * kNormChunks + c];
    inv_norm = float(1.0 / (sqrt(sum) * double(norm_scale) + double(eps)));
  }
  const int64_t i0 = int64_t(blockIdx.y) * kCopyTile, j0 = int64_t(blockIdx.x) * kCopyTile;  // X tile origin
  const int64_t m = tall ? cols : rows, n = tall ? rows : cols;
  const int64_t base = int64_t(z) * rows * cols;
  // Source tile: rows [s0, s0+32) x cols [t0, t0+32) of G.
  const int64_t s0 = tall ? j0 : i0, t0 = tall ? i0 : j0;
  for (int r = threadIdx.y; r < kCopyTile; r += 8) {
    const int64_t sr = s0 + r, sc = t0 + threadIdx.x;
    tile[r][threadIdx.x] = (sr < rows && sc < cols) ? load_as_float(g, dtype, base + sr * cols + sc) : 0.f;
  }
  __syncthreads();
  const float s = inv_norm;
  for (int r = threadIdx.y; r < kCopyTile; r += 8) {
    const int64_t i = i0 + r, j = j0 + threadIdx.x;
    const float v = tall ? tile[threadIdx.x][r] : tile[r][threadIdx.x];
    x[int64_t(z) * stride_x + i * ld_x + j] = __float2bfloat16_rn((i < m && j < n) ? v * s : 0.f);
  }
}

// out_z (rows x cols, f32|bf16) = tall ? X_zᵀ : X_z (the valid m x n part).
__global__ void __launch_bounds__(256) ns_store_kernel(void* out, DType out_dtype, int64_t rows, int64_t cols, bool tall,
                                                       const __nv_bfloat16* x, int64_t ld_x, int64_t stride_x) {
  __shared__ float tile[kCopyTile][kCopyTile + 1];
  const int z = blockIdx.z;
  const int64_t r0 = int64_t(blockIdx.y) * kCopyTile, c0 = int64_t(blockIdx.x) * kCopyTile;  // out tile origin
  // X tile read: rows [x0, x0+32) x cols [y0, y0+32) of X (coalesced along X's rows).
  const int64_t x0 = tall ? c0 : r0, y0 = tall ? r0 : c0;
  const int64_t m = tall ? cols : rows, n = tall ? rows : cols;
  for (int r = threadIdx.y; r < kCopyTile; r += 8) {
    const int64_t xi = x0 + r, xj = y0 + threadIdx.x;
    tile[r][threadIdx.x] = (xi < m && xj < n) ? __bfloat162float(x[int64_t(z) * stride_x + xi * ld_x + xj]) : 0.f;
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kCopyTile; r += 8) {
    const int64_t orow = r0 + r, ocol = c0 + threadIdx.x;
    if (orow >= rows || ocol >= cols) continue;
    const float v = tall ? tile[threadIdx.x][r] : tile[r][threadIdx.x];
    const int64_t o = int64_t(z) * rows * cols + orow * cols + ocol;
    if (out_dtype == DType::f32) static_cast<float*>(out)[o] = v;
    else static_cast<__nv_bfloat16*>(out)[o] = __float2bfloat16_rn(v);
  }
}

struct Layout {
  int64_t m, n, mp, np;
  size_t x_bytes, a_bytes, partial_bytes;  // per buffer, whole batch, 256-aligned
  size_t total;
};

Layout layout_of(const NewtonSchulzBatchParams& p) {
  Layout l;
  l.m = std::min(p.rows, p.cols);
  l.n = std::max(p.rows, p.cols);
  l.mp = round_up(l.m, kTile);
  l.np = round_up(l.n, kTile);
  l.x_bytes = size_t(round_up(p.batch * l.mp * l.np * 2, 256));
  l.a_bytes = size_t(round_up(p.batch * l.mp * l.mp * 2, 256));
  l.partial_bytes = size_t(round_up(p.batch * kNormChunks * 4, 256));
  l.total = 2 * l.x_bytes + 2 * l.a_bytes + l.partial_bytes;
  return l;
}

template <bool kQRowsAreN, bool kSymmetric, bool kHasD>
void launch_gemm(const GemmArgs& args, int batch, cudaStream_t stream, const char* name) {
  auto kernel = ns_gemm_kernel<kQRowsAreN, kSymmetric, kHasD>;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const int tiles = kSymmetric ? args.tiles_m * (args.tiles_m + 1) / 2 : args.tiles_m * args.tiles_n;
  kernel<<<dim3(tiles, batch), kThreads, kSmemBytes, stream>>>(args);
  cuda_check_launch(name);
}

}  // namespace

size_t newton_schulz_cuda_workspace_bytes(const NewtonSchulzBatchParams& p) {
  newton_schulz_validate(p, true);
  if (p.batch == 0 || p.rows == 0 || p.cols == 0) return 0;
  return layout_of(p).total;
}

void newton_schulz_cuda(const NewtonSchulzBatchParams& p, void* workspace, size_t workspace_bytes, CUstream_st* stream) {
  newton_schulz_validate(p, true);
  if (p.batch == 0 || p.rows == 0 || p.cols == 0) return;
  const Layout l = layout_of(p);
  check(workspace != nullptr && workspace_bytes >= l.total, "ERR_ARG",
        "newton_schulz_cuda: workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(l.total));
  check(reinterpret_cast<uintptr_t>(workspace) % 256 == 0, "ERR_ARG", "newton_schulz_cuda: workspace must be 256-byte aligned");
  int device = 0, major = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  check(major >= 8, "ERR_CUDA", "newton_schulz_cuda: needs compute capability 8.0 or newer (bf16 tensor cores)");
  // Only the sm80 (mma.sync) path exists, so KILN_NS_FORCE_SM80 changes nothing (read for symmetry).
  (void)std::getenv("KILN_NS_FORCE_SM80");

  char* ws = static_cast<char*>(workspace);
  __nv_bfloat16* x = reinterpret_cast<__nv_bfloat16*>(ws);
  __nv_bfloat16* x_next = reinterpret_cast<__nv_bfloat16*>(ws + l.x_bytes);
  __nv_bfloat16* a = reinterpret_cast<__nv_bfloat16*>(ws + 2 * l.x_bytes);
  __nv_bfloat16* b = reinterpret_cast<__nv_bfloat16*>(ws + 2 * l.x_bytes + l.a_bytes);
  float* partials = reinterpret_cast<float*>(ws + 2 * l.x_bytes + 2 * l.a_bytes);
  const bool tall = p.rows > p.cols;
  const int batch = int(p.batch);
  const int64_t x_stride = l.mp * l.np, a_stride = l.mp * l.mp;

  ns_norm_partials_kernel<<<dim3(kNormChunks, batch), 256, 0, stream>>>(partials, p.input, p.input_dtype, p.rows * p.cols);
  cuda_check_launch("ns_norm_partials_kernel");
  ns_normalize_kernel<<<dim3(unsigned(l.np / kCopyTile), unsigned(l.mp / kCopyTile), batch), dim3(32, 8), 0, stream>>>(
      x, l.np, x_stride, p.input, p.input_dtype, p.rows, p.cols, tall, partials, float(p.norm_scale), float(p.eps));
  cuda_check_launch("ns_normalize_kernel");

  const int tiles_m = int(l.mp / kTile), tiles_n = int(l.np / kTile);
  for (int s = 0; s < p.steps; ++s) {
    const float ca = float(p.coefficients[3 * s]), cb = float(p.coefficients[3 * s + 1]),
                cc = float(p.coefficients[3 * s + 2]);
    GemmArgs g{};
    // A = X·Xᵀ
    g.p = x, g.q = x, g.d = nullptr, g.c = a;
    g.ld_p = l.np, g.ld_q = l.np, g.ld_c = l.mp;
    g.stride_p = x_stride, g.stride_q = x_stride, g.stride_c = a_stride;
    g.k = int(l.np), g.tiles_m = tiles_m, g.tiles_n = tiles_m, g.alpha = 1.f, g.beta = 0.f;
    launch_gemm<true, true, false>(g, batch, stream, "ns_gemm_kernel (A = X·Xᵀ)");
    // B = b·A + c·A·A (A symmetric: A·A = A·Aᵀ)
    g.p = a, g.q = a, g.d = a, g.c = b;
    g.ld_p = l.mp, g.ld_q = l.mp, g.ld_c = l.mp;
    g.stride_p = a_stride, g.stride_q = a_stride, g.stride_c = a_stride;
    g.k = int(l.mp), g.alpha = cc, g.beta = cb;
    launch_gemm<true, true, true>(g, batch, stream, "ns_gemm_kernel (B = b·A + c·A·A)");
    // X' = a·X + B·X
    g.p = b, g.q = x, g.d = x, g.c = x_next;
    g.ld_p = l.mp, g.ld_q = l.np, g.ld_c = l.np;
    g.stride_p = a_stride, g.stride_q = x_stride, g.stride_c = x_stride;
    g.k = int(l.mp), g.tiles_m = tiles_m, g.tiles_n = tiles_n, g.alpha = 1.f, g.beta = ca;
    launch_gemm<false, false, true>(g, batch, stream, "ns_gemm_kernel (X = a·X + B·X)");
    std::swap(x, x_next);
  }

  ns_store_kernel<<<dim3(unsigned((p.cols + kCopyTile - 1) / kCopyTile), unsigned((p.rows + kCopyTile - 1) / kCopyTile),
                         batch),
                    dim3(32, 8), 0, stream>>>(p.output, p.output_dtype, p.rows, p.cols, tall, x, l.np, x_stride);
  cuda_check_launch("ns_store_kernel");
}

}  // namespace kiln

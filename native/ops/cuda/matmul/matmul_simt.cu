// SIMT tiled GEMM (CUDA cores, f32 math): the f32 path, and the always-correct fallback for
// bf16/f16 operands the tensor-core paths cannot take (unaligned pointers or leading dims).
//
//   C_z (M x N) = epilogue(alpha * opA(A_z)·opB(B_z) + beta * C_z)      (contract: ops/matmul.h)
//
// Block tile 64x64x16, 256 threads, each thread a 4x4 micro-tile strided by 16 in both
// directions (conflict-free shared reads). Operands are converted to f32 while staging into
// shared memory, so every layout and alignment goes through the same scalar, bounds-checked
// loads. With swiglu the block stages both the gate and the up columns of its 64 outputs.
// Expected speed: ~60-70% of f32 CUDA-core peak at best (A40 ~20 TFLOP/s); it is not meant to
// be fast for half types.
#include "../common.cuh"
#include "matmul_internal.cuh"

namespace kiln {
namespace matmul_detail {
namespace {

constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }

template <typename T, bool SWIGLU>
__global__ void __launch_bounds__(kSimtThreads) matmul_simt_kernel(MatmulArgs p, bool trans_a, bool trans_b) {
  constexpr int NB = SWIGLU ? 2 : 1;  // B column sets staged: gate (and up)
  __shared__ float a_tile[kSimtBK][kSimtBM + 4];      // a_tile[k][m]
  __shared__ float b_tile[NB][kSimtBK][kSimtBN + 4];  // b_tile[h][k][n]
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * kSimtBM, n0 = blockIdx.x * kSimtBN;
  for (int z = blockIdx.z; z < p.batch; z += gridDim.z) {
    const T* a = static_cast<const T*>(p.a) + int64_t(z) * p.stride_a;
    const T* b = static_cast<const T*>(p.b) + int64_t(z) * p.stride_b;
    float acc[NB][4][4];
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[h][i][j] = 0.f;

    for (int k0 = 0; k0 < p.K; k0 += kSimtBK) {
      // Consecutive threads walk the contiguous global dimension of each operand.
      for (int i = tid; i < kSimtBM * kSimtBK; i += kSimtThreads) {
        int mm = trans_a ? i % kSimtBM : i / kSimtBK;
        int kk = trans_a ? i / kSimtBM : i % kSimtBK;
        int gm = m0 + mm, gk = k0 + kk;
        float v = 0.f;
        if (gm < p.M && gk < p.K) v = to_float(a[trans_a ? int64_t(gk) * p.lda + gm : int64_t(gm) * p.lda + gk]);
        a_tile[kk][mm] = v;
      }
#pragma unroll
      for (int h = 0; h < NB; ++h) {
        for (int i = tid; i < kSimtBN * kSimtBK; i += kSimtThreads) {
          int nn = trans_b ? i / kSimtBK : i % kSimtBN;
          int kk = trans_b ? i % kSimtBK : i / kSimtBN;
          int gn = n0 + nn, gk = k0 + kk;
          float v = 0.f;
          if (gn < p.N && gk < p.K) {
            int64_t col = gn + int64_t(h) * p.N;  // up columns start at N
            v = to_float(b[trans_b ? col * p.ldb + gk : int64_t(gk) * p.ldb + col]);
          }
          b_tile[h][kk][nn] = v;
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimtBK; ++kk) {
        float av[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = a_tile[kk][ty + 16 * i];
#pragma unroll
        for (int h = 0; h < NB; ++h) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            float bv = b_tile[h][kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[h][i][j] = fmaf(av[i], bv, acc[h][i][j]);
          }
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int m = m0 + ty + 16 * i;
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        int n = n0 + tx + 16 * j;
        if (n >= p.N) continue;
        // Single-element store: pass N-clipped "pair" with the second lane disabled.
        MatmulArgs q = p;
        q.N = n + 1;
        epilogue_store_pair(q, z, m, n, acc[0][i][j], 0.f, acc[NB - 1][i][j], 0.f);
      }
    }
  }
}

template <typename T>
void launch_simt(const MatmulParams& p, cudaStream_t stream) {
  MatmulArgs args = make_args(p);
  dim3 grid(ceil_div(p.N, kSimtBN), ceil_div(p.M, kSimtBM), unsigned(p.batch < 65535 ? p.batch : 65535));
  check(grid.y <= 65535u, "ERR_ARG", "matmul: M too large for the SIMT path");
  if (p.epilogue == MatmulEpilogue::swiglu) {
    matmul_simt_kernel<T, true><<<grid, kSimtThreads, 0, stream>>>(args, p.trans_a, p.trans_b);
  } else {
    matmul_simt_kernel<T, false><<<grid, kSimtThreads, 0, stream>>>(args, p.trans_a, p.trans_b);
  }
  cuda_check_launch("matmul_simt_kernel");
}

}  // namespace

void matmul_simt_run(const MatmulParams& p, cudaStream_t stream) {
  switch (p.ab_dtype) {
    case DType::f32: launch_simt<float>(p, stream); break;
    case DType::bf16: launch_simt<__nv_bfloat16>(p, stream); break;
    case DType::f16: launch_simt<__half>(p, stream); break;
    default: fail("ERR_DTYPE", "matmul (simt): unsupported operand dtype");
  }
}

}  // namespace matmul_detail
}  // namespace kiln

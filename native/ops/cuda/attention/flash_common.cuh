// Device building blocks shared by the sm80 flash attention kernels: mma.sync m16n8k16 with f32
// accumulation, ldmatrix, cp.async with zero-fill, the XOR-swizzled shared-memory tile layout,
// and host-side checks shared by the attention launchers.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16/.f16; g = lane / 4, c = lane % 4):
//   A (16x16, row):  a0 = A[g][2c..2c+1]    a1 = A[g+8][2c..]   a2 = A[g][8+2c..]   a3 = A[g+8][8+2c..]
//   B (16x8,  col):  b0 = B[2c..2c+1][g]    b1 = B[8+2c..][g]
//   C (16x8, f32):   c0,c1 = C[g][2c, 2c+1] c2,c3 = C[g+8][2c, 2c+1]
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of matrix i; register i of lane l holds
//   row l/4, columns 2(l%4), 2(l%4)+1 of matrix i (with .trans: rows 2(l%4), 2(l%4)+1 of column l/4).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "../../../runtime/dtype.h"
#include "../../../runtime/error.h"
#include "../common.cuh"

namespace kiln {
namespace attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- element packing ----
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t v);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t v) {
  return __half22float2(*reinterpret_cast<__half2*>(&v));
}

// ---- tensor-core MMA: d += a * b ----
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- shared memory access ----
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// 16-byte global->shared copy; when !valid the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Tiles of kD-element rows (kD in {64, 128}) stored with the 16-byte chunk index XORed by
// row % 8: the 8 rows an ldmatrix phase reads at one logical chunk land in 8 distinct bank
// groups, and cp.async still writes whole 16-byte chunks. Returns an element offset.
template <int kD>
__device__ __forceinline__ int swz(int row, int col) {
  static_assert(kD % 64 == 0, "swizzle needs at least 8 chunks per row");
  return row * kD + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// Padded alternative: rows of kD + 8 elements (row stride 16 bytes past a multiple of 128, so
// 8 consecutive rows hit 8 distinct bank groups). Costs 1/8-1/16 more smem but every fragment
// address is base + compile-time offset, which keeps register pressure down in big kernels.
template <int kD>
__device__ __forceinline__ int pad(int row, int col) {
  return row * (kD + 8) + col;
}

// Copies kRows x kD elements (rows row0.. of a global matrix with `row_stride` elements between
// rows, `rows_total` valid rows) into a shared tile (swizzled, or padded when kPadded); rows past
// the end are zero-filled.
template <int kRows, int kD, int kThreads, bool kPadded = false, typename T>
__device__ __forceinline__ void load_tile_async(T* tile, const T* gbase, int64_t row_stride, int row0, int rows_total,
                                                int tid) {
  constexpr int kChunks = kD / 8;
#pragma unroll
  for (int i = tid; i < kRows * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    const int gr = row0 + r;
    const bool ok = gr < rows_total;
    const T* src = gbase + (ok ? int64_t(gr) * row_stride + c * 8 : 0);
    cp_async_16(tile + (kPadded ? pad<kD>(r, c * 8) : swz<kD>(r, c * 8)), src, ok);
  }
}

}  // namespace attn

// ---- host-side helpers shared by the launchers ----
namespace attn_host {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline void check_aligned16(const void* p, const char* op, const char* name) {
  check(p != nullptr, "ERR_ARG", std::string(op) + ": " + name + " is null");
  check(aligned16(p), "ERR_ARG", std::string(op) + ": " + name + " must be 16-byte aligned");
}

// Compute capability (major*10+minor) of the current device.
inline int device_cc(int* sm_count = nullptr) {
  int dev = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  int major = 0, minor = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (sm_count) KILN_CUDA_CHECK(cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, dev));
  return major * 10 + minor;
}

// KILN_ATTENTION_PATH: unset / "auto" / "sm80". Only the sm80 kernels exist, so both mean sm80.
inline void check_attention_path(const char* op) {
  if (const char* env = std::getenv("KILN_ATTENTION_PATH")) {
    const std::string v(env);
    check(v.empty() || v == "auto" || v == "sm80", "ERR_ARG",
          std::string(op) + ": KILN_ATTENTION_PATH must be sm80 or auto, got '" + v + "'");
  }
  const int cc = device_cc();
  check(cc >= 80, "ERR_ARG", std::string(op) + ": needs a compute capability 8.0+ GPU, device has " +
                                 std::to_string(cc / 10) + "." + std::to_string(cc % 10));
}

inline size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

}  // namespace attn_host
}  // namespace kiln

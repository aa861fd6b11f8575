// Hopper GEMM (sm_90a): TMA -> mbarrier ring -> wgmma m64nNk16 (bf16/f16 in, f32 accumulate).
//
//   C_z (M x N) = epilogue(alpha * A_z·B_zᵀ + beta * C_z)      (contract: ops/matmul.h)
//
// Scope (matmul_sm90_supported): the "TN" layout only — A row-major M x K (!trans_a) and B
// stored N x K (trans_b), i.e. both operands K-major: the forward x·Wᵀ and the swiglu gate/up
// projection. The other layouts (dy·W, dyᵀ·x) go to the sm80 path on Hopper; this kernel would
// need MN-major smem descriptors for them (imm-trans-a/b = 1) with their LBO/SBO rules.
// Also required: 16-byte aligned A and B, lda, ldb % 8 == 0, K > 0, and for batch > 1
// stride_a, stride_b > 0 and % 8 == 0 (TMA global strides are multiples of 16 bytes).
//
// CTA = 3 warpgroups (384 threads), persistent over output tiles (grid = min(tiles, SMs),
// grouped raster, batch folded into the tile index):
//   warpgroup 0  producer: setmaxnreg.dec 40; one thread issues, per k-tile, one TMA box of A
//                (128 x 64) and two of B (BN/2 x 64 each: for swiglu the gate rows n.. and the
//                up rows N+n.., so gate and up columns of one output land in one tile).
//   warpgroups 1, 2  consumers: setmaxnreg.inc 232; each owns 64 rows of the 128-row tile,
//                issues 4 wgmma (k16 steps) per 64-wide k-tile on 128B-swizzled smem, waits,
//                releases the stage (empty barrier) and at the end of the tile runs the fused
//                epilogue straight from the wgmma accumulator layout while the producer
//                already fetches the next tile.
// Barriers: full[s] (1 arrival + transaction bytes), empty[s] (256 consumer arrivals).
// TMA zero-fills out-of-bounds boxes, so M, N, K tails need no predication in the main loop.
//
// Known simplifications (perf, not correctness): the consumer waits wgmma.wait_group 0 each
// k-tile (no wgmma overlap across k-tiles), epilogue is not staged through smem / TMA store,
// no cluster multicast. Expected after these: ~550-650 TFLOP/s on H100 SXM for 4096^3.
// STATUS: compiles; never run (no GPU when written). matmul_dispatch.cu keeps it out of
// automatic dispatch (kSm90InAutoDispatch) until a GPU session validates it, and takes it only
// where matmul_sm90_available(device) (a probe kernel) says the loaded code is sm_90a.
#include <cuda.h>  // CUtensorMap and the cuTensorMapEncodeTiled prototype only: libcuda is not linked

#include <mutex>
#include <string>
#include <vector>

#include "../common.cuh"
#include "matmul_cuda.h"
#include "matmul_internal.cuh"

namespace kiln {
namespace matmul_detail {
namespace {

constexpr int kSm90BM = 128, kSm90BK = 64, kSm90Threads = 384;

template <int BN_, int STAGES_>
struct Sm90Tile {
  static constexpr int BM = kSm90BM, BN = BN_, BK = kSm90BK, STAGES = STAGES_;
  static constexpr int A_STAGE_BYTES = BM * BK * 2, B_STAGE_BYTES = BN * BK * 2;
  static constexpr int SMEM_BYTES = 1024 /*alignment slack*/ + STAGES * (A_STAGE_BYTES + B_STAGE_BYTES) +
                                    2 * STAGES * 8 /*barriers*/;
};
using Sm90Cfg0 = Sm90Tile<128, 6>;  // 6 x 32 KB = 192 KB
using Sm90Cfg1 = Sm90Tile<256, 4>;  // 4 x 48 KB = 192 KB
constexpr int kSm90ConfigCount = 2;
const char* const kSm90ConfigNames[kSm90ConfigCount] = {"sm90_128x128x64_ws_s6", "sm90_128x256x64_ws_s4"};

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KILN_SM90_ENABLED 1
#endif

// Writes 1 when the code the driver loaded for this device was compiled with the same guard as
// matmul_sm90_kernel's body (sm_90a), 0 otherwise (other SASS, or compute_90 PTX JIT-compiled).
__global__ void matmul_sm90_probe_kernel(int* has_sm90a) {
#if defined(KILN_SM90_ENABLED)
  *has_sm90a = 1;
#else
  *has_sm90a = 0;
#endif
}

#if defined(KILN_SM90_ENABLED)
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "%64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

__device__ __forceinline__ void wgmma_m64n128k16_f16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "%64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

__device__ __forceinline__ void wgmma_m64n256k16_bf16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, "
      "%128, %129, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

__device__ __forceinline__ void wgmma_m64n256k16_f16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}, "
      "%128, %129, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// 3-D tile load {k, row, batch} into smem, completing `bytes` on the barrier.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int k, int row, int z, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(k), "r"(row), "r"(z), "r"(bar)
      : "memory");
}

// Shared-memory matrix descriptor for a K-major tile with 128-byte swizzle: rows of 64
// 16-bit elements (128 B), 8-row core groups 1024 B apart (SBO), LBO unused (1), swizzle
// mode 1 (128B) in bits 62-63. The tile base must be 1024-byte aligned; advancing K by 16
// elements inside the swizzle atom is +32 bytes on the start address.
__device__ __forceinline__ uint64_t kmajor_sw128_desc(uint32_t addr) {
  uint64_t desc = 0;
  desc |= uint64_t((addr & 0x3FFFF) >> 4);
  desc |= uint64_t(1) << 16;
  desc |= uint64_t(1024 >> 4) << 32;
  desc |= uint64_t(1) << 62;
  return desc;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

template <int BN, bool F16>
__device__ __forceinline__ void wgmma_tile(float (&d)[BN / 2], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (BN == 128) {
    if constexpr (F16) wgmma_m64n128k16_f16(d, desc_a, desc_b);
    else wgmma_m64n128k16_bf16(d, desc_a, desc_b);
  } else {
    static_assert(BN == 256, "BN 128 or 256");
    if constexpr (F16) wgmma_m64n256k16_f16(d, desc_a, desc_b);
    else wgmma_m64n256k16_bf16(d, desc_a, desc_b);
  }
}
struct TileCoord {
  int z, tile_m, tile_n;
};

__device__ __forceinline__ TileCoord decode_tile(int tile, int tiles_m, int tiles_n) {
  const int per_batch = tiles_m * tiles_n;
  TileCoord c;
  c.z = tile / per_batch;
  const int t = tile % per_batch;
  constexpr int GROUP = 8;
  const int group = t / (GROUP * tiles_n);
  const int first_m = group * GROUP;
  const int rows = min(tiles_m - first_m, GROUP);
  const int in_group = t % (GROUP * tiles_n);
  c.tile_m = first_m + in_group % rows;
  c.tile_n = in_group / rows;
  return c;
}

#endif  // KILN_SM90_ENABLED

template <class Cfg, bool F16, bool SWIGLU>
__global__ void __launch_bounds__(kSm90Threads, 1)
    matmul_sm90_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                       MatmulArgs p, int tiles_m, int tiles_n) {
#if defined(KILN_SM90_ENABLED)
  constexpr int BN = Cfg::BN, STAGES = Cfg::STAGES, BK = Cfg::BK;
  constexpr int BN_OUT = SWIGLU ? BN / 2 : BN;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint8_t* a_smem = smem;                                 // STAGES x (128 x 64) bf16, SW128
  uint8_t* b_smem = smem + STAGES * Cfg::A_STAGE_BYTES;   // STAGES x (BN x 64) bf16, SW128
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(b_smem + STAGES * Cfg::B_STAGE_BYTES);
  uint64_t* empty_bar = full_bar + STAGES;

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(smem_addr(&full_bar[s]), 1);
      mbar_init(smem_addr(&empty_bar[s]), 256);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  const int total_tiles = tiles_m * tiles_n * p.batch;
  const int k_tiles = (p.K + BK - 1) / BK;

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (threadIdx.x == 0) {
      int stage = 0;
      uint32_t phase = 0;
      for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
        const TileCoord tc = decode_tile(tile, tiles_m, tiles_n);
        const int m0 = tc.tile_m * Cfg::BM;
        const int n_out0 = tc.tile_n * BN_OUT;
        const int b_row0 = n_out0;
        const int b_row1 = SWIGLU ? p.N + n_out0 : n_out0 + BN / 2;
        for (int kt = 0; kt < k_tiles; ++kt) {
          mbar_wait(smem_addr(&empty_bar[stage]), phase ^ 1);
          const uint32_t bar = smem_addr(&full_bar[stage]);
          mbar_expect_tx(bar, Cfg::A_STAGE_BYTES + Cfg::B_STAGE_BYTES);
          const uint32_t a_dst = smem_addr(a_smem + stage * Cfg::A_STAGE_BYTES);
          const uint32_t b_dst = smem_addr(b_smem + stage * Cfg::B_STAGE_BYTES);
          tma_load_3d(a_dst, &map_a, kt * BK, m0, tc.z, bar);
          tma_load_3d(b_dst, &map_b, kt * BK, b_row0, tc.z, bar);
          tma_load_3d(b_dst + Cfg::B_STAGE_BYTES / 2, &map_b, kt * BK, b_row1, tc.z, bar);
          if (++stage == STAGES) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int consumer = warpgroup - 1;  // rows [64*consumer, 64*consumer + 64) of the tile
    const int lane = threadIdx.x & 31, warp_in_group = (threadIdx.x / 32) & 3;
    const int g = lane >> 2, t = lane & 3;
    int stage = 0;
    uint32_t phase = 0;
    float acc[BN / 2];
    for (int tile = blockIdx.x; tile < total_tiles; tile += gridDim.x) {
      const TileCoord tc = decode_tile(tile, tiles_m, tiles_n);
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
      for (int kt = 0; kt < k_tiles; ++kt) {
        mbar_wait(smem_addr(&full_bar[stage]), phase);
        // Lanes leave the try_wait spin loop independently; wgmma.fence / mma_async /
        // commit_group / wait_group are .sync.aligned (every lane of the warp executes the same
        // instruction together), so reconverge the warp first, as CUTLASS's pipeline does.
        __syncwarp();
        const uint32_t a_base = smem_addr(a_smem + stage * Cfg::A_STAGE_BYTES + consumer * 64 * 128);
        const uint32_t b_base = smem_addr(b_smem + stage * Cfg::B_STAGE_BYTES);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
          wgmma_tile<BN, F16>(acc, kmajor_sw128_desc(a_base + kk * 32), kmajor_sw128_desc(b_base + kk * 32));
        }
        wgmma_commit();
        wgmma_wait_all();
        mbar_arrive(smem_addr(&empty_bar[stage]));
        if (++stage == STAGES) stage = 0, phase ^= 1;
      }
      // Accumulator layout (per warp, like mma m16n8): acc[4i + e] is row 16*warp + g + 8*(e >= 2),
      // column 8i + 2t + (e & 1) of this warpgroup's 64 x BN block.
      const int m_base = tc.tile_m * Cfg::BM + consumer * 64 + warp_in_group * 16 + g;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int m = m_base + half * 8;
        if (m >= p.M) continue;
        if constexpr (SWIGLU) {
#pragma unroll
          for (int i = 0; i < BN / 16; ++i) {
            const int n = tc.tile_n * BN_OUT + 8 * i + 2 * t;
            if (n < p.N)
              epilogue_store_pair(p, tc.z, m, n, acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1],
                                  acc[4 * (i + BN / 16) + 2 * half], acc[4 * (i + BN / 16) + 2 * half + 1]);
          }
        } else {
#pragma unroll
          for (int i = 0; i < BN / 8; ++i) {
            const int n = tc.tile_n * BN + 8 * i + 2 * t;
            if (n < p.N)
              epilogue_store_pair(p, tc.z, m, n, acc[4 * i + 2 * half], acc[4 * i + 2 * half + 1], 0.f, 0.f);
          }
        }
      }
    }
  }
#else
  __trap();  // built for a target without wgmma/TMA; the launcher never selects it there
#endif
}

// ---- host side ----

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiledFn encode_tiled_fn() {
  static EncodeTiledFn fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
    cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status);
    if (err != cudaSuccess || status != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return EncodeTiledFn(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(ptr);
  }();
  return fn;
}

// K-major operand (rows x K, leading dim ld, batch stride) as a 3-D map {K, rows, batch} with
// boxes of 64 x box_rows x 1 and 128-byte swizzle; out-of-bounds reads are zero.
CUtensorMap make_kmajor_map(const void* base, DType dtype, int64_t rows, int64_t K, int64_t ld, int64_t batch,
                            int64_t stride, int box_rows) {
  EncodeTiledFn encode = encode_tiled_fn();
  check(encode != nullptr, "ERR_CUDA", "matmul sm90: cuTensorMapEncodeTiled not available from the driver");
  CUtensorMap map;
  const cuuint64_t dims[3] = {cuuint64_t(K), cuuint64_t(rows), cuuint64_t(batch)};
  const int64_t batch_stride = batch > 1 ? stride : rows * ld;
  const cuuint64_t strides[2] = {cuuint64_t(ld * 2), cuuint64_t(batch_stride * 2)};
  const cuuint32_t box[3] = {cuuint32_t(kSm90BK), cuuint32_t(box_rows), 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  CUresult r = encode(&map, dtype == DType::f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
                      const_cast<void*>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS, "ERR_CUDA", "matmul sm90: cuTensorMapEncodeTiled failed (" + std::to_string(int(r)) + ")");
  return map;
}

template <class Cfg, bool F16, bool SWIGLU>
void launch_sm90_kernel(const MatmulParams& p, cudaStream_t stream) {
  auto kernel = matmul_sm90_kernel<Cfg, F16, SWIGLU>;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::SMEM_BYTES));
  const int64_t n_gemm = SWIGLU ? 2 * p.N : p.N;
  const CUtensorMap map_a = make_kmajor_map(p.a, p.ab_dtype, p.M, p.K, p.lda, p.batch, p.stride_a, Cfg::BM);
  const CUtensorMap map_b = make_kmajor_map(p.b, p.ab_dtype, n_gemm, p.K, p.ldb, p.batch, p.stride_b, Cfg::BN / 2);
  const int bn_out = SWIGLU ? Cfg::BN / 2 : Cfg::BN;
  const int tiles_m = ceil_div(p.M, Cfg::BM), tiles_n = ceil_div(p.N, bn_out);
  const long long total = (long long)tiles_m * tiles_n * p.batch;
  check(total < (1LL << 31), "ERR_ARG", "matmul sm90: too many tiles");
  int dev = 0, sms = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int grid = int(total < sms ? total : sms);
  kernel<<<grid, kSm90Threads, Cfg::SMEM_BYTES, stream>>>(map_a, map_b, make_args(p), tiles_m, tiles_n);
  cuda_check_launch("matmul_sm90_kernel");
}

template <class Cfg>
void launch_sm90_config(const MatmulParams& p, cudaStream_t stream) {
  KILN_BOOL_SWITCH(p.ab_dtype == DType::f16, F16, [&] {
    KILN_BOOL_SWITCH(p.epilogue == MatmulEpilogue::swiglu, SW, [&] { launch_sm90_kernel<Cfg, F16, SW>(p, stream); });
  });
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

int matmul_sm90_config_count() { return kSm90ConfigCount; }

const char* matmul_sm90_config_name(int config) {
  return config >= 0 && config < kSm90ConfigCount ? kSm90ConfigNames[config] : "?";
}

bool matmul_sm90_supported(const MatmulParams& p) {
  if (p.ab_dtype != DType::bf16 && p.ab_dtype != DType::f16) return false;
  if (p.trans_a || !p.trans_b) return false;  // K-major A and B only (see the header comment)
  if (p.K <= 0) return false;
  if (!aligned16(p.a) || !aligned16(p.b) || p.lda % 8 || p.ldb % 8) return false;
  if (p.batch > 1 && (p.stride_a <= 0 || p.stride_b <= 0 || p.stride_a % 8 || p.stride_b % 8)) return false;
  return encode_tiled_fn() != nullptr;
}

int matmul_sm90_pick_config(const MatmulParams& p, int sm_count) {
  const long long n_gemm = p.epilogue == MatmulEpilogue::swiglu ? 2 * p.N : p.N;
  const long long tiles256 = (long long)ceil_div(p.M, kSm90BM) * ceil_div(n_gemm, 256) * p.batch;
  return tiles256 >= sm_count ? 1 : 0;
}

void matmul_sm90_run(const MatmulParams& p, int config, cudaStream_t stream) {
  check(config >= 0 && config < kSm90ConfigCount, "ERR_ARG", "matmul: bad sm90 config index");
  check(matmul_sm90_supported(p), "ERR_ARG", "matmul: operands not supported by the sm90 path");
  if (config == 0) {
    launch_sm90_config<Sm90Cfg0>(p, stream);
  } else {
    launch_sm90_config<Sm90Cfg1>(p, stream);
  }
}

}  // namespace matmul_detail

namespace {

// Runs the probe once on `device` (its own stream, synchronized: first use only).
bool probe_sm90a(int device) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  bool has = false;
  int major = 0;
  cudaStream_t stream = nullptr;
  int* flag = nullptr;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major == 9 &&
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess) {
    if (cudaMalloc(&flag, sizeof(int)) == cudaSuccess &&
        cudaMemsetAsync(flag, 0, sizeof(int), stream) == cudaSuccess) {
      matmul_detail::matmul_sm90_probe_kernel<<<1, 1, 0, stream>>>(flag);
      int host = 0;
      if (cudaGetLastError() == cudaSuccess &&
          cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
          cudaStreamSynchronize(stream) == cudaSuccess)
        has = host == 1;
    }
    if (flag) (void)cudaFree(flag);
    (void)cudaStreamSynchronize(stream);
    (void)cudaStreamDestroy(stream);
  }
  (void)cudaGetLastError();  // a failed probe (no image for this device) only means "no"
  (void)cudaSetDevice(previous);
  return has;
}

}  // namespace

bool matmul_sm90_available(int device) {
  static std::mutex mutex;
  static std::vector<int> known;  // per device: -1 not asked yet, 0 no, 1 yes
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) return false;
  if (size_t(device) >= known.size()) known.resize(size_t(device) + 1, -1);
  if (known[size_t(device)] < 0) known[size_t(device)] = probe_sm90a(device) ? 1 : 0;
  return known[size_t(device)] == 1;
}

}  // namespace kiln

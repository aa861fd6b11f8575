// Ampere tensor-core GEMM, host side: configurations, support checks, the shape heuristic and
// the dispatch to the per-configuration launchers; also configuration 0's 16 kernel variants
// (sm80_128x128x32_w8_s3; 1 to 4 are in the files named after their configuration,
// matmul_sm80_<BM>x<BN>x<BK>_w<warps>_s<stages>.cu). The kernel: matmul_sm80_kernel.cuh.
#include "matmul_sm80_kernel.cuh"

namespace kiln {
namespace matmul_detail {
namespace {

constexpr int kSm80ConfigCount = 5;
const char* const kSm80ConfigNames[kSm80ConfigCount] = {
    "sm80_128x128x32_w8_s3", "sm80_128x128x32_w8_s4", "sm80_128x64x32_w4_s4",
    "sm80_64x128x32_w4_s4",  "sm80_64x64x32_w4_s4"};

int device_smem_optin() {
  int dev = 0, smem = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&dev));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return smem;
}

constexpr int kSm80SmemBytes[kSm80ConfigCount] = {Cfg0::SMEM_BYTES, Cfg1::SMEM_BYTES, Cfg2::SMEM_BYTES,
                                                  Cfg3::SMEM_BYTES, Cfg4::SMEM_BYTES};

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

void matmul_sm80_launch_cfg0(const MatmulParams& p, cudaStream_t stream) { launch_sm80_config<Cfg0>(p, stream); }

int matmul_sm80_config_count() { return kSm80ConfigCount; }

const char* matmul_sm80_config_name(int config) {
  return config >= 0 && config < kSm80ConfigCount ? kSm80ConfigNames[config] : "?";
}

bool matmul_sm80_supported(const MatmulParams& p) {
  if (p.ab_dtype != DType::bf16 && p.ab_dtype != DType::f16) return false;
  if (!aligned16(p.a) || !aligned16(p.b)) return false;
  if (p.lda % 8 || p.ldb % 8) return false;
  if (p.batch > 1 && (p.stride_a % 8 || p.stride_b % 8)) return false;
  if (p.epilogue == MatmulEpilogue::swiglu && !p.trans_b && p.N % 8) return false;
  return true;
}

// Shape heuristic (tuned winners override it, see matmul_cuda.h): prefer the largest tile
// that still gives at least ~one full wave of CTAs.
int matmul_sm80_pick_config(const MatmulParams& p, int sm_count) {
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu;
  const long long n_gemm = swiglu ? 2 * p.N : p.N;
  auto ctas = [&](int bm, int bn) { return (long long)ceil_div(p.M, bm) * ceil_div(n_gemm, bn) * p.batch; };
  if (ctas(128, 128) >= sm_count) return 0;
  if (p.M >= p.N && ctas(128, 64) >= sm_count) return 2;
  if (ctas(64, 128) >= sm_count) return 3;
  return 4;
}

void matmul_sm80_run(const MatmulParams& p, int config, cudaStream_t stream) {
  check(config >= 0 && config < kSm80ConfigCount, "ERR_ARG", "matmul: bad sm80 config index");
  check(matmul_sm80_supported(p), "ERR_ARG", "matmul: sm80 path needs bf16/f16 with 16-byte aligned operands");
  check(kSm80SmemBytes[config] <= device_smem_optin(), "ERR_ARG",
        std::string("matmul: config ") + kSm80ConfigNames[config] + " needs more shared memory than the device has");
  switch (config) {
    case 0: matmul_sm80_launch_cfg0(p, stream); break;
    case 1: matmul_sm80_launch_cfg1(p, stream); break;
    case 2: matmul_sm80_launch_cfg2(p, stream); break;
    case 3: matmul_sm80_launch_cfg3(p, stream); break;
    case 4: matmul_sm80_launch_cfg4(p, stream); break;
  }
}

}  // namespace matmul_detail
}  // namespace kiln

// Configuration 4 of the Ampere GEMM (matmul_sm80_kernel.cuh), sm80_64x64x32_w4_s4: a 64x64 tile,
// BK 32, 4 warps, 4 stages. Its 16 kernel variants, in a translation unit of their own so that
// the five configurations compile in parallel; the file is named after the configuration
// (matmul_sm80_config_name).
#include "matmul_sm80_kernel.cuh"

namespace kiln {
namespace matmul_detail {

void matmul_sm80_launch_cfg4(const MatmulParams& p, cudaStream_t stream) { launch_sm80_config<Cfg4>(p, stream); }

}  // namespace matmul_detail
}  // namespace kiln

// Configuration 1 of the Ampere GEMM (matmul_sm80_kernel.cuh), sm80_128x128x32_w8_s4: a 128x128 tile,
// BK 32, 8 warps, 4 stages. Its 16 kernel variants, in a translation unit of their own so that
// the five configurations compile in parallel; the file is named after the configuration
// (matmul_sm80_config_name).
#include "matmul_sm80_kernel.cuh"

namespace kiln {
namespace matmul_detail {

void matmul_sm80_launch_cfg1(const MatmulParams& p, cudaStream_t stream) { launch_sm80_config<Cfg1>(p, stream); }

}  // namespace matmul_detail
}  // namespace kiln

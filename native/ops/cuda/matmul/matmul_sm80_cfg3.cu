// Configuration 3 of the Ampere GEMM (matmul_sm80_kernel.cuh): its 16 kernel variants, in a
// translation unit of their own so that the five configurations compile in parallel.
#include "matmul_sm80_kernel.cuh"

namespace kiln {
namespace matmul_detail {

void matmul_sm80_launch_cfg3(const MatmulParams& p, cudaStream_t stream) { launch_sm80_config<Cfg3>(p, stream); }

}  // namespace matmul_detail
}  // namespace kiln

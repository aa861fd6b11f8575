// CUDA add, mul, scale, cast, fill, random and row reductions (contract: ops/elementwise.h).
// Memory-bound grid-stride kernels; bf16/f16 compute in f32 and round once on store, which
// matches the CPU ops bit for bit for add/mul/scale/cast.
#include <cuda_runtime.h>

#include "../../element_access.h"
#include "../../elementwise.h"
#include "../common.cuh"

namespace kiln {
namespace {

#define GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void binary_f32_kernel(BinaryOp op, float* out, const float* a, const float* b, int64_t n) {
  GRID_STRIDE_LOOP(i, n) out[i] = op == BinaryOp::add ? a[i] + b[i] : a[i] * b[i];
}

__global__ void binary_generic_kernel(BinaryOp op, void* out, const void* a, const void* b, DType t, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    if (t == DType::i32) {
      uint32_t x = uint32_t(static_cast<const int32_t*>(a)[i]), y = uint32_t(static_cast<const int32_t*>(b)[i]);
      static_cast<int32_t*>(out)[i] = int32_t(op == BinaryOp::add ? x + y : x * y);
    } else if (t == DType::f64) {
      double x = static_cast<const double*>(a)[i], y = static_cast<const double*>(b)[i];
      static_cast<double*>(out)[i] = op == BinaryOp::add ? x + y : x * y;
    } else {
      float x = float(load_as_double(a, t, i)), y = float(load_as_double(b, t, i));
      store_from_double(out, t, i, op == BinaryOp::add ? x + y : x * y);
    }
  }
}

__global__ void scale_kernel(void* out, const void* a, double alpha, DType t, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    if (t == DType::f64 || t == DType::i32) {
      store_from_double(out, t, i, alpha * load_as_double(a, t, i));
    } else {
      store_from_double(out, t, i, float(alpha) * float(load_as_double(a, t, i)));
    }
  }
}

__global__ void cast_kernel(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n) {
  bool via_f32 = in_dtype != DType::f64 && out_dtype != DType::f64 && in_dtype != DType::i32 && out_dtype != DType::i32;
  GRID_STRIDE_LOOP(i, n) {
    double v = load_as_double(in, in_dtype, i);
    store_from_double(out, out_dtype, i, via_f32 ? double(float(v)) : v);
  }
}

__global__ void fill_kernel(void* out, DType t, double value, int64_t n) {
  GRID_STRIDE_LOOP(i, n) store_from_double(out, t, i, value);
}

__global__ void random_kernel(void* out, DType t, RandomParams p, int64_t n) {
  GRID_STRIDE_LOOP(i, n) store_from_double(out, t, i, random_value(p, t, i));
}

// One block per row; f32 (f64 for f64) accumulation, warp shuffles then shared memory.
template <class Acc>
__global__ void reduce_rows_kernel(void* out, const void* in, DType t, int64_t cols, bool mean) {
  int64_t row = blockIdx.x;
  Acc acc = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) acc += Acc(load_as_double(in, t, row * cols + c));
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  __shared__ Acc partial[32];
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = acc;
  __syncthreads();
  if (warp == 0) {
    acc = lane < int(blockDim.x / 32) ? partial[lane] : Acc(0);
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) {
      double result = double(acc);
      if (mean) result = cols > 0 ? result / double(cols) : nan("");
      store_from_double(out, t, row, result);
    }
  }
}

int grid_for(int64_t n) {
  int64_t blocks = (n + 255) / 256;
  return int(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace

void binary_cuda(BinaryOp op, void* out, const void* a, const void* b, DType dtype, int64_t n, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::f32) {
    binary_f32_kernel<<<grid_for(n), 256, 0, s>>>(op, static_cast<float*>(out), static_cast<const float*>(a), static_cast<const float*>(b), n);
  } else {
    binary_generic_kernel<<<grid_for(n), 256, 0, s>>>(op, out, a, b, dtype, n);
  }
  cuda_check_launch("binary_kernel");
}

void scale_cuda(void* out, const void* a, double alpha, DType dtype, int64_t n, void* stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, a, alpha, dtype, n);
  cuda_check_launch("scale_kernel");
}

void cast_cuda(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n, void* stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (out_dtype == in_dtype) {
    if (out != in) KILN_CUDA_CHECK(cudaMemcpyAsync(out, in, size_t(n) * dtype_size(in_dtype), cudaMemcpyDeviceToDevice, s));
    return;
  }
  cast_kernel<<<grid_for(n), 256, 0, s>>>(out, out_dtype, in, in_dtype, n);
  cuda_check_launch("cast_kernel");
}

void fill_cuda(void* out, DType dtype, double value, int64_t n, void* stream) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, dtype, value, n);
  cuda_check_launch("fill_kernel");
}

void random_cuda(void* out, DType dtype, const RandomParams& p, int64_t n, void* stream) {
  if (n == 0) return;
  check(dtype != DType::i32, "ERR_DTYPE", "random fills need a float dtype");
  random_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, dtype, p, n);
  cuda_check_launch("random_kernel");
}

void reduce_rows_cuda(void* out, const void* in, DType dtype, int64_t rows, int64_t cols, bool mean, void* stream) {
  if (rows == 0) return;
  check(dtype != DType::i32, "ERR_DTYPE", "sum and mean need a float dtype");
  check(rows <= 2147483647, "ERR_ARG", "too many rows for one reduction launch");
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::f64) {
    reduce_rows_kernel<double><<<unsigned(rows), 256, 0, s>>>(out, in, dtype, cols, mean);
  } else {
    reduce_rows_kernel<float><<<unsigned(rows), 256, 0, s>>>(out, in, dtype, cols, mean);
  }
  cuda_check_launch("reduce_rows_kernel");
}

}  // namespace kiln

// Elementwise, fill, random, cast and reduction ops: the small ops that prove the path end to
// end and that the model composes. CPU versions in ops/cpu/, CUDA in ops/cuda/elementwise/.
// All tensors are contiguous with n elements; out may alias an input (in-place).
//
//   add:    out = a + b                 mul:  out = a * b          (a, b, out one dtype)
//   scale:  out = alpha * a
//   cast:   out = convert(in)           (any dtype to any dtype; float -> i32 rounds to nearest even,
//                                        NaN -> 0, saturating)
//   fill:   out = value
//   random: out[i] = uniform in [low, high) or normal(mean, std) from Philox(seed, offset, i):
//           identical on CPU and CUDA (philox.h), independent of thread layout.
//   reduce_rows: in (rows, cols) -> out (rows); out[r] = sum_c in[r, c] (mean: / cols).
//           CPU accumulates in f64; CUDA in f32 with a tree reduction. out has in's dtype.
#pragma once
#include <cstdint>

#include "../runtime/dtype.h"

namespace kiln {

enum class BinaryOp : int32_t { add = 0, mul = 1 };
enum class RandomKind : int32_t { uniform = 0, normal = 1 };

struct RandomParams {
  RandomKind kind = RandomKind::normal;
  uint64_t seed = 0;
  uint64_t offset = 0;
  double a = 0.0;  // uniform: low;  normal: mean
  double b = 1.0;  // uniform: high; normal: std
};

void binary_cpu(BinaryOp op, void* out, const void* a, const void* b, DType dtype, int64_t n);
void scale_cpu(void* out, const void* a, double alpha, DType dtype, int64_t n);
void cast_cpu(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n);
void fill_cpu(void* out, DType dtype, double value, int64_t n);
void random_cpu(void* out, DType dtype, const RandomParams& p, int64_t n);
void reduce_rows_cpu(void* out, const void* in, DType dtype, int64_t rows, int64_t cols, bool mean);

#if KILN_WITH_CUDA
// stream: cudaStream_t of the output's device.
void binary_cuda(BinaryOp op, void* out, const void* a, const void* b, DType dtype, int64_t n, void* stream);
void scale_cuda(void* out, const void* a, double alpha, DType dtype, int64_t n, void* stream);
void cast_cuda(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n, void* stream);
void fill_cuda(void* out, DType dtype, double value, int64_t n, void* stream);
void random_cuda(void* out, DType dtype, const RandomParams& p, int64_t n, void* stream);
void reduce_rows_cuda(void* out, const void* in, DType dtype, int64_t rows, int64_t cols, bool mean, void* stream);
#endif

}  // namespace kiln

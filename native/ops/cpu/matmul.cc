// Matmul on the CPU (contract: ops/matmul.h; entry points: ops/cpu/matmul.h).
//
//   for z in [0, batch):  acc = alpha · opA(A_z)·opB(B_z)       opA(A): (M, K)  opB(B): (K, Ninner)
//                         C_z = epilogue(acc + beta · C_z)      C: (M, N)  (beta == 0: C not read)
//   Ninner = N, or 2N for swiglu (C = silu(acc[:, :N]) · acc[:, N:]).
//
// This file: matmul_validate and matmul_cpu, which picks one of two fast paths:
//   matmul_skinny.cc   M <= 8 (decode), or any M with batch_invariant, and K > 0: no packing;
//                      dot products along B rows for trans_b, row updates otherwise.
//   matmul_blocked.cc  everything else: a GotoBLAS/BLIS-style blocked GEMM.
// The choice depends on the shape only, never on the thread count, and within each path every
// element's K sum runs in the same order whatever the tiling. matmul_reference.cc holds the
// oracle (matmul_reference_cpu, a triple loop in double); matmul_internal.h what the files share
// (per-thread packing buffers, typed C loads and stores).
//   Measured (Zen 4, 2 threads, f32, 2048^3 and the 1.4B shapes): 190-205 GFLOP/s, 0.95-1.0x
//   numpy/OpenBLAS; bf16 in/out 193, swiglu 186; f64 94. One thread: 104 (OpenBLAS 101).
#include "matmul.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "../../runtime/cpu_isa.h"
#include "../../runtime/error.h"
#include "matmul_internal.h"

namespace kiln {

using matmul_cpu_detail::inner_n;
using matmul_cpu_detail::kSkinnyM;

namespace {

// ---------- validation ----------

bool is_float_dtype(DType t) {
  int32_t code = static_cast<int32_t>(t);
  return dtype_valid(code) && dtype_is_float(t);
}

std::string dname(DType t) { return dtype_valid(static_cast<int32_t>(t)) ? dtype_name(t) : "an invalid dtype code"; }

}  // namespace

void matmul_validate(const MatmulParams& p) {
  const std::string op = "matmul: ";
  check(is_float_dtype(p.ab_dtype), "ERR_DTYPE", op + "A/B dtype must be f32, f64, bf16 or f16, got " + dname(p.ab_dtype));
  check(is_float_dtype(p.c_dtype), "ERR_DTYPE", op + "C dtype must be f32, f64, bf16 or f16, got " + dname(p.c_dtype));
  if (p.ab_dtype == DType::f64 || p.c_dtype == DType::f64)
    check(p.ab_dtype == p.c_dtype, "ERR_DTYPE",
          op + "f64 cannot be mixed with other dtypes (A/B " + dname(p.ab_dtype) + ", C " + dname(p.c_dtype) + ")");
  if (p.ab_dtype == DType::f32)
    check(p.c_dtype == DType::f32, "ERR_DTYPE", op + "f32 inputs need an f32 C, got " + dname(p.c_dtype));
  check(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 0, "ERR_SHAPE",
        op + "M, N, K and batch must be >= 0, got M=" + std::to_string(p.M) + " N=" + std::to_string(p.N) +
            " K=" + std::to_string(p.K) + " batch=" + std::to_string(p.batch));
  const int32_t epi = static_cast<int32_t>(p.epilogue);
  check(epi >= 0 && epi <= 2, "ERR_ARG", op + "unknown epilogue " + std::to_string(epi));
  if (p.epilogue == MatmulEpilogue::swiglu)
    check(p.beta == 0.0f, "ERR_ARG", op + "the swiglu epilogue needs beta == 0, got " + std::to_string(p.beta));
  // Sizes large enough to overflow int64 index math are rejected outright.
  const int64_t limit = int64_t(1) << 40;
  check(p.M < limit && p.N < limit && p.K < limit && p.batch < limit, "ERR_SHAPE", op + "dimension too large");

  const int64_t n_in = inner_n(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;  // nothing is read or written
  const bool reads_ab = p.K > 0;

  check(p.c != nullptr, "ERR_ARG", op + "C is null");
  check(p.ldc >= std::max<int64_t>(1, p.N), "ERR_ARG",
        op + "ldc (" + std::to_string(p.ldc) + ") must be >= N (" + std::to_string(p.N) + ")");
  if (reads_ab) {
    check(p.a != nullptr && p.b != nullptr, "ERR_ARG", op + "A or B is null");
    const int64_t a_row = p.trans_a ? p.M : p.K;  // stored A is (K, M) with trans_a, else (M, K)
    const int64_t b_row = p.trans_b ? p.K : n_in;  // stored B is (Ninner, K) with trans_b, else (K, Ninner)
    check(p.lda >= std::max<int64_t>(1, a_row), "ERR_ARG",
          op + "lda (" + std::to_string(p.lda) + ") must be >= the stored row width " + std::to_string(a_row) +
              (p.trans_a ? " (M, A is stored K x M)" : " (K)"));
    check(p.ldb >= std::max<int64_t>(1, b_row), "ERR_ARG",
          op + "ldb (" + std::to_string(p.ldb) + ") must be >= the stored row width " + std::to_string(b_row) +
              (p.trans_b ? " (K, B is stored Ninner x K)" : " (Ninner = N, or 2N for swiglu)"));
  }
  if (p.epilogue == MatmulEpilogue::residual_add) {
    check(p.residual != nullptr, "ERR_ARG", op + "residual_add needs a residual");
    check(p.ld_residual >= std::max<int64_t>(1, p.N), "ERR_ARG",
          op + "ld_residual (" + std::to_string(p.ld_residual) + ") must be >= N (" + std::to_string(p.N) + ")");
  }
  if (p.batch > 1) {
    check(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0 && p.stride_residual >= 0, "ERR_ARG",
          op + "batch strides must be >= 0");
    // C batches must not overlap: either whole (M, ldc) blocks apart, or rows interleaved
    // (e.g. C laid out (M, batch, N): stride_c >= N and every batch's row fits inside ldc).
    const int64_t block = (p.M - 1) * p.ldc + p.N;
    const bool disjoint_blocks = p.stride_c >= block;
    const bool interleaved_rows = p.stride_c >= p.N && (p.batch - 1) * p.stride_c + p.N <= p.ldc;
    check(disjoint_blocks || interleaved_rows, "ERR_ARG",
          op + "stride_c (" + std::to_string(p.stride_c) + ") makes the C batches overlap");
  }
}

void* matmul_cpu_detail::AlignedBuffer::get(size_t need) {
  if (need > bytes) {
    std::free(ptr);
    ptr = nullptr;
    bytes = 0;
    const size_t rounded = (need + 4095) / 4096 * 4096;
    ptr = std::aligned_alloc(64, rounded);
    if (!ptr) fail("ERR_OOM", "matmul: cannot allocate " + std::to_string(rounded) + " bytes of packing buffer");
    bytes = rounded;
  }
  return ptr;
}

matmul_cpu_detail::ThreadBuffers& matmul_cpu_detail::thread_buffers() {
  thread_local ThreadBuffers buffers;
  return buffers;
}

const char* matmul_cpu_isa() { return cpu_isa_name(); }

void matmul_cpu(const MatmulParams& p) {
  matmul_validate(p);
  if (p.batch == 0 || p.M == 0 || p.N == 0) return;
  if ((p.M <= kSkinnyM || p.batch_invariant) && p.K > 0) return matmul_cpu_detail::matmul_skinny_cpu(p);
  matmul_cpu_detail::matmul_blocked_cpu(p);
}

}  // namespace kiln

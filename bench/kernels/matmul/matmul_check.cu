// Standalone correctness check (and rough timing) of every CUDA matmul config against an f64
// CPU reference on random data. Not part of the addon build (CMake globs native/ only).
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_86,code=sm_86 \
//        bench/kernels/matmul/matmul_check.cu native/ops/cuda/matmul/*.cu -o /tmp/matmul_check && /tmp/matmul_check
//
// Run it twice: as is, and with KILN_MATMUL_PATH=sm90 on Hopper (the sm90 configs are only
// candidates when forced, see matmul_dispatch.cu).
// Prints one line per (case, config): max error / tolerance and PASS/FAIL; exits 1 on any
// failure. Then times the default config on a few large shapes (TFLOP/s).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ops/cuda/matmul/matmul_cuda.h"
#include "runtime/error.h"
#include "runtime/half.h"

using namespace kiln;

struct Case {
  const char* name;
  DType ab, c;
  bool ta, tb;
  int M, N, K, batch;
  MatmulEpilogue ep;
  float alpha, beta;
  int pad;  // extra leading-dim elements beyond the next multiple of 8 (odd -> misaligned -> simt)
};

static void store_host(std::vector<uint8_t>& buf, DType t, size_t i, float v) {
  if (t == DType::f32) reinterpret_cast<float*>(buf.data())[i] = v;
  else if (t == DType::bf16) reinterpret_cast<uint16_t*>(buf.data())[i] = float_to_bf16(v);
  else reinterpret_cast<uint16_t*>(buf.data())[i] = float_to_f16(v);
}
static float load_host(const std::vector<uint8_t>& buf, DType t, size_t i) {
  if (t == DType::f32) return reinterpret_cast<const float*>(buf.data())[i];
  if (t == DType::bf16) return bf16_to_float(reinterpret_cast<const uint16_t*>(buf.data())[i]);
  return f16_to_float(reinterpret_cast<const uint16_t*>(buf.data())[i]);
}

static bool run_case(const Case& cs, std::mt19937& rng) {
  const bool swiglu = cs.ep == MatmulEpilogue::swiglu;
  const int ng = swiglu ? 2 * cs.N : cs.N;
  const int a_rows = cs.ta ? cs.K : cs.M, a_cols = cs.ta ? cs.M : cs.K;
  const int b_rows = cs.tb ? ng : cs.K, b_cols = cs.tb ? cs.K : ng;
  // Leading dims rounded up to 8 (so the tensor-core paths see M/N/K tails), plus pad.
  auto up8 = [](int64_t x) { return (x + 7) / 8 * 8; };
  const int64_t lda = up8(a_cols) + cs.pad, ldb = up8(b_cols) + cs.pad, ldc = up8(cs.N) + cs.pad;
  const int64_t sa = a_rows * lda + cs.pad, sb = b_rows * ldb + cs.pad, sc = cs.M * ldc + cs.pad;
  const size_t ea = dtype_size(cs.ab), ec = dtype_size(cs.c);
  std::vector<uint8_t> ha(sa * cs.batch * ea), hb(sb * cs.batch * ea), hc(sc * cs.batch * ec), hr(sc * cs.batch * ec);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (size_t i = 0; i < size_t(sa) * cs.batch; ++i) store_host(ha, cs.ab, i, nd(rng));
  for (size_t i = 0; i < size_t(sb) * cs.batch; ++i) store_host(hb, cs.ab, i, nd(rng));
  for (size_t i = 0; i < size_t(sc) * cs.batch; ++i) store_host(hc, cs.c, i, nd(rng)), store_host(hr, cs.c, i, nd(rng));
  // Reference in f64 from the stored (rounded) inputs.
  std::vector<double> ref(size_t(cs.batch) * cs.M * cs.N);
  double max_ref = 0;
  for (int z = 0; z < cs.batch; ++z)
    for (int m = 0; m < cs.M; ++m)
      for (int n = 0; n < cs.N; ++n) {
        double acc[2] = {0, 0};
        for (int h = 0; h < (swiglu ? 2 : 1); ++h) {
          int col = n + h * cs.N;
          for (int k = 0; k < cs.K; ++k) {
            double a = load_host(ha, cs.ab, z * sa + (cs.ta ? int64_t(k) * lda + m : int64_t(m) * lda + k));
            double b = load_host(hb, cs.ab, z * sb + (cs.tb ? int64_t(col) * ldb + k : int64_t(k) * ldb + col));
            acc[h] += a * b;
          }
        }
        double v;
        if (swiglu) {
          double gt = cs.alpha * acc[0], up = cs.alpha * acc[1];
          v = gt / (1 + std::exp(-gt)) * up;
        } else {
          v = cs.alpha * acc[0];
          if (cs.beta != 0) v += cs.beta * load_host(hc, cs.c, z * sc + int64_t(m) * ldc + n);
          if (cs.ep == MatmulEpilogue::residual_add) v += load_host(hr, cs.c, z * sc + int64_t(m) * ldc + n);
        }
        ref[(size_t(z) * cs.M + m) * cs.N + n] = v;
        max_ref = std::fmax(max_ref, std::fabs(v));
      }
  void *da, *db, *dc, *dr;
  cudaMalloc(&da, ha.size() + 16);
  cudaMalloc(&db, hb.size() + 16);
  cudaMalloc(&dc, hc.size() + 16);
  cudaMalloc(&dr, hr.size() + 16);
  cudaMemcpy(da, ha.data(), ha.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(db, hb.data(), hb.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dr, hr.data(), hr.size(), cudaMemcpyHostToDevice);
  MatmulParams p;
  p.a = da, p.b = db, p.c = dc, p.residual = cs.ep == MatmulEpilogue::residual_add ? dr : nullptr;
  p.ab_dtype = cs.ab, p.c_dtype = cs.c, p.trans_a = cs.ta, p.trans_b = cs.tb;
  p.M = cs.M, p.N = cs.N, p.K = cs.K, p.batch = cs.batch;
  p.lda = lda, p.ldb = ldb, p.ldc = ldc, p.ld_residual = ldc;
  p.stride_a = sa, p.stride_b = sb, p.stride_c = sc, p.stride_residual = sc;
  p.alpha = cs.alpha, p.beta = cs.beta, p.epilogue = cs.ep;
  const double rtol = cs.c == DType::bf16 ? 1.0 / 128 : cs.c == DType::f16 ? 1.0 / 512 : 1e-5;
  const double atol = (cs.ab == DType::f32 ? 1e-5 : 2e-3) * std::sqrt(double(cs.K) + 1) * (swiglu ? 4 : 1);
  bool all_ok = true;
  std::vector<uint8_t> out(hc.size());
  for (int cfg = 0; cfg < matmul_cuda_config_count(); ++cfg) {
    if (!matmul_cuda_config_supported(p, cfg)) continue;
    cudaMemcpy(dc, hc.data(), hc.size(), cudaMemcpyHostToDevice);  // poison = random C (also beta input)
    try {
      matmul_cuda_with_config(p, cfg, 0);
    } catch (const KilnException& e) {
      std::printf("%-28s %-26s THROW %s: %s\n", cs.name, matmul_cuda_config_name(cfg), e.code(), e.what());
      all_ok = false;
      continue;
    }
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
      std::printf("%-28s %-26s CUDA ERROR %s\n", cs.name, matmul_cuda_config_name(cfg), cudaGetErrorString(err));
      std::exit(2);
    }
    cudaMemcpy(out.data(), dc, out.size(), cudaMemcpyDeviceToHost);
    double worst = 0;
    int bad = 0, first_bad = -1;
    for (int z = 0; z < cs.batch; ++z)
      for (int m = 0; m < cs.M; ++m)
        for (int n = 0; n < cs.N; ++n) {
          double r = ref[(size_t(z) * cs.M + m) * cs.N + n];
          double o = load_host(out, cs.c, z * sc + int64_t(m) * ldc + n);
          double ratio = std::fabs(o - r) / (atol + rtol * std::fabs(r));
          if (!(ratio <= 1)) {
            if (!bad) first_bad = (z * cs.M + m) * cs.N + n;
            ++bad;
          }
          if (!(ratio <= worst)) worst = ratio;
        }
    // Padding between rows must be untouched.
    bool pad_ok = true;
    for (int z = 0; z < cs.batch; ++z)
      for (int m = 0; m < cs.M; ++m)
        for (int n = cs.N; n < ldc; ++n) {
          size_t i = z * sc + int64_t(m) * ldc + n;
          if (load_host(out, cs.c, i) != load_host(hc, cs.c, i)) pad_ok = false;
        }
    bool ok = bad == 0 && pad_ok;
    all_ok &= ok;
    std::printf("%-28s %-26s err/tol %.3f  bad %d (first %d)%s  %s\n", cs.name, matmul_cuda_config_name(cfg), worst, bad,
                first_bad, pad_ok ? "" : " PADDING WRITTEN", ok ? "PASS" : "FAIL");
  }
  cudaFree(da), cudaFree(db), cudaFree(dc), cudaFree(dr);
  return all_ok;
}

static void time_shape(int M, int N, int K, bool ta, bool tb) {
  MatmulParams p;
  void *da, *db, *dc;
  cudaMalloc(&da, size_t(M) * K * 2), cudaMalloc(&db, size_t(K) * N * 2), cudaMalloc(&dc, size_t(M) * N * 2);
  cudaMemset(da, 0x3c, size_t(M) * K * 2), cudaMemset(db, 0x3c, size_t(K) * N * 2);
  p.a = da, p.b = db, p.c = dc, p.ab_dtype = DType::bf16, p.c_dtype = DType::bf16, p.trans_a = ta, p.trans_b = tb;
  p.M = M, p.N = N, p.K = K, p.lda = ta ? M : K, p.ldb = tb ? K : N, p.ldc = N;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  for (int cfg = 0; cfg < matmul_cuda_config_count(); ++cfg) {
    if (!matmul_cuda_config_supported(p, cfg) || cfg == 0) continue;
    for (int i = 0; i < 3; ++i) matmul_cuda_with_config(p, cfg, 0);
    cudaEventRecord(e0);
    const int reps = 20;
    for (int i = 0; i < reps; ++i) matmul_cuda_with_config(p, cfg, 0);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    std::printf("time %dx%dx%d %c%c %-26s %.3f ms  %.1f TFLOP/s\n", M, N, K, ta ? 't' : 'n', tb ? 't' : 'n',
                matmul_cuda_config_name(cfg), ms / reps, 2.0 * M * N * K * reps / (ms * 1e-3) / 1e12);
  }
  cudaFree(da), cudaFree(db), cudaFree(dc);
}

int main() {
  std::mt19937 rng(1234);
  const MatmulEpilogue none = MatmulEpilogue::none, res = MatmulEpilogue::residual_add, sw = MatmulEpilogue::swiglu;
  const DType bf = DType::bf16, hf = DType::f16, f32 = DType::f32;
  const Case cases[] = {
      {"nt bf16 128^3", bf, bf, false, true, 128, 128, 128, 1, none, 1, 0, 0},
      {"nn bf16 tails", bf, bf, false, false, 77, 93, 61, 1, none, 1, 0, 0},
      {"tn bf16 tails", bf, f32, true, false, 130, 67, 99, 1, none, 1, 0, 0},
      {"tt f16 tails", hf, hf, true, true, 65, 129, 47, 1, none, 1, 0, 0},
      {"nt bf16 big K", bf, bf, false, true, 256, 192, 1000, 1, none, 0.5f, 0, 0},
      {"tn dW beta=1 f32", bf, f32, true, false, 200, 136, 300, 1, none, 1, 1, 0},
      {"nt residual", bf, bf, false, true, 150, 200, 96, 1, res, 1, 0, 0},
      {"nt swiglu", bf, bf, false, true, 140, 104, 128, 1, sw, 1, 0, 0},
      {"nn swiglu", hf, f32, false, false, 70, 72, 80, 1, sw, 0.7f, 0, 0},
      {"nt swiglu N tail", bf, bf, false, true, 64, 50, 64, 1, sw, 1, 0, 0},
      {"batched nt pad8", bf, bf, false, true, 96, 80, 72, 3, none, 1, 0.5f, 8},
      {"batched tn pad8", hf, f32, true, false, 33, 40, 130, 2, res, 2, 1, 8},
      {"misaligned pad3", bf, bf, false, true, 50, 60, 70, 2, none, 1, 0, 3},
      {"K=0 beta", bf, f32, false, true, 20, 30, 0, 1, none, 1, 2, 0},
      {"f32 nn", f32, f32, false, false, 100, 90, 80, 1, none, 1, 0, 0},
      {"f32 tt swiglu", f32, f32, true, true, 40, 48, 33, 2, sw, 1, 0, 0},
      {"decode M=1", bf, bf, false, true, 1, 300, 256, 1, none, 1, 0, 0},
  };
  bool ok = true;
  for (const Case& c : cases) ok &= run_case(c, rng);
  std::printf("%s\n", ok ? "ALL PASS" : "FAILURES");
  time_shape(4096, 4096, 4096, false, true);
  time_shape(4096, 4096, 4096, false, false);
  time_shape(4096, 4096, 4096, true, false);
  time_shape(8192, 5632, 2048, false, true);
  return ok ? 0 : 1;
}

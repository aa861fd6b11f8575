// CPU Newton–Schulz (contract and math: ops/newton_schulz.h): the double-precision oracle and the
// fast f32 / emulated-bf16 path built on the blocked matmul_cpu, with the symmetric products
// A = X·Xᵀ and A·A computed as upper-triangle tiles and mirrored.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../matmul.h"
#include "../newton_schulz.h"
#include "matmul.h"

namespace kiln {

void newton_schulz_validate(const NewtonSchulzBatchParams& p, bool cuda) {
  const std::string where = cuda ? "newton_schulz_cuda: " : "newton_schulz_cpu: ";
  check(p.batch >= 0 && p.rows >= 0 && p.cols >= 0, "ERR_SHAPE", where + "negative size");
  check(p.steps >= 0 && p.steps <= 100, "ERR_ARG", where + "steps must be in [0, 100]");
  check(p.steps == 0 || p.coefficients, "ERR_ARG", where + "missing coefficients");
  for (int i = 0; i < 3 * p.steps; ++i)
    check(std::isfinite(p.coefficients[i]), "ERR_ARG", where + "coefficients must be finite");
  check(std::isfinite(p.norm_scale) && p.norm_scale > 0 && std::isfinite(p.eps) && p.eps >= 0, "ERR_ARG",
        where + "norm_scale must be finite and > 0, eps finite and >= 0");
  const DType in = p.input_dtype, out = p.output_dtype, comp = p.compute_dtype;
  if (cuda) {
    check(in == DType::f32 || in == DType::bf16 || in == DType::f16, "ERR_DTYPE", where + "input must be f32, bf16 or f16");
    check(out == DType::f32 || out == DType::bf16, "ERR_DTYPE", where + "output must be f32 or bf16");
    check(comp == DType::bf16, "ERR_DTYPE", where + "compute dtype must be bf16 on CUDA");
    check(std::min(p.rows, p.cols) <= 16384 && std::max(p.rows, p.cols) <= (int64_t(1) << 20), "ERR_SHAPE",
          where + "matrix too large (min(rows, cols) <= 16384, max(rows, cols) <= 2^20)");
    check(p.batch <= 65535, "ERR_SHAPE", where + "batch must be <= 65535");
  } else {
    check(in == DType::f32 || in == DType::bf16 || in == DType::f16 || in == DType::f64, "ERR_DTYPE",
          where + "input must be f32, bf16, f16 or f64");
    check(out == DType::f32 || out == DType::bf16 || out == DType::f64, "ERR_DTYPE", where + "output must be f32, bf16 or f64");
    check(comp == DType::f32 || comp == DType::bf16 || comp == DType::f64, "ERR_DTYPE",
          where + "compute dtype must be f64, f32 or bf16");
  }
  if (p.batch == 0 || p.rows == 0 || p.cols == 0) return;
  check(p.rows <= std::numeric_limits<int64_t>::max() / p.cols &&
            p.rows * p.cols <= std::numeric_limits<int64_t>::max() / 8 / p.batch,
        "ERR_SHAPE", where + "batch·rows·cols overflows");
  check(p.input && p.output, "ERR_ARG", where + "null input or output");
}

double newton_schulz_flops(int64_t rows, int64_t cols, int steps, bool symmetric) {
  if (rows <= 0 || cols <= 0 || steps <= 0) return 0;
  const double m = double(std::min(rows, cols)), n = double(std::max(rows, cols));
  const double gram = 2 * m * m * n, square = 2 * m * m * m, apply = 2 * m * m * n;
  const double share = symmetric ? (m + 1) / (2 * m) : 1.0;  // upper triangle incl. diagonal
  return double(steps) * ((gram + square) * share + apply);
}

double newton_schulz_flops(int64_t batch, int64_t rows, int64_t cols, int steps, bool symmetric) {
  return double(std::max<int64_t>(batch, 0)) * newton_schulz_flops(rows, cols, steps, symmetric);
}

namespace {

double load_element(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::f64: return static_cast<const double*>(base)[i];
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::f16: return f16_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return 0;
  }
}

void store_element(void* base, DType t, int64_t i, double x) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = float(x); break;
    case DType::f64: static_cast<double*>(base)[i] = x; break;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = float_to_bf16(float(x)); break;
    case DType::f16: static_cast<uint16_t*>(base)[i] = float_to_f16(float(x)); break;
    default: break;
  }
}

template <class T>
inline T round_bf16(T x) {
  return T(bf16_to_float(float_to_bf16(float(x))));
}

template <class T>
void round_all_bf16(T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}

// x (m x n, m <= n) = G_z (or G_zᵀ when tall) / (‖G_z‖_F · norm_scale + eps); rounded to bf16
// when compute is bf16. Blocked so that the transpose stays in cache.
template <class T>
void load_normalized(const NewtonSchulzBatchParams& p, int64_t z, T* x) {
  const int64_t count = p.rows * p.cols, base = z * count;
  double sq = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double v = load_element(p.input, p.input_dtype, base + i);
    sq += v * v;
  }
  const double inv = 1.0 / (std::sqrt(sq) * p.norm_scale + p.eps);
  const bool tall = p.rows > p.cols, bf16 = p.compute_dtype == DType::bf16;
  const int64_t n = tall ? p.rows : p.cols;
  constexpr int64_t kBlock = 64;
  for (int64_t r0 = 0; r0 < p.rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < p.cols; c0 += kBlock)
      for (int64_t r = r0; r < std::min(p.rows, r0 + kBlock); ++r)
        for (int64_t c = c0; c < std::min(p.cols, c0 + kBlock); ++c) {
          T v = T(load_element(p.input, p.input_dtype, base + r * p.cols + c) * inv);
          if (bf16) v = round_bf16(v);
          x[tall ? c * n + r : r * n + c] = v;
        }
}

template <class T>
void store_result(const NewtonSchulzBatchParams& p, int64_t z, const T* x) {
  const int64_t base = z * p.rows * p.cols;
  const bool tall = p.rows > p.cols;
  const int64_t n = tall ? p.rows : p.cols;
  constexpr int64_t kBlock = 64;
  for (int64_t r0 = 0; r0 < p.rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < p.cols; c0 += kBlock)
      for (int64_t r = r0; r < std::min(p.rows, r0 + kBlock); ++r)
        for (int64_t c = c0; c < std::min(p.cols, c0 + kBlock); ++c)
          store_element(p.output, p.output_dtype, base + r * p.cols + c, double(tall ? x[c * n + r] : x[r * n + c]));
}

// ---------- fast path ----------

MatmulParams f32_gemm(const float* a, int64_t lda, const float* b, int64_t ldb, bool trans_b, float* c, int64_t ldc,
                      int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  MatmulParams g;
  g.a = a, g.b = b, g.c = c;
  g.ab_dtype = DType::f32, g.c_dtype = DType::f32;
  g.trans_b = trans_b;
  g.M = M, g.N = N, g.K = K, g.batch = 1;
  g.lda = lda, g.ldb = ldb, g.ldc = ldc;
  g.alpha = alpha, g.beta = beta;
  return g;
}

constexpr int64_t kSymTile = 256;  // tile edge of the upper-triangle decomposition

// Upper-triangle tiles (I <= J) of an m x m symmetric product, one job per tile.
struct TileJob {
  int64_t i0, j0;
};

std::vector<TileJob> upper_tiles(int64_t m) {
  std::vector<TileJob> jobs;
  for (int64_t i0 = 0; i0 < m; i0 += kSymTile)
    for (int64_t j0 = i0; j0 < m; j0 += kSymTile) jobs.push_back({i0, j0});
  return jobs;
}

// c (m x m): lower triangle = transpose of the upper triangle (exactly symmetric afterwards).
void mirror_upper(float* c, int64_t m) {
  parallel_for(0, m, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j)
      for (int64_t i = 0; i < j; ++i) c[j * m + i] = c[i * m + j];
  });
}

// One matrix: x (m x n) in place, scratch `next` (m x n), a, b (m x m).
void iterate_fast(const NewtonSchulzBatchParams& p, int64_t m, int64_t n, float* x, float* next, float* a, float* b,
                  const std::vector<TileJob>& jobs) {
  const bool bf16 = p.compute_dtype == DType::bf16;
  for (int s = 0; s < p.steps; ++s) {
    const float ca = float(p.coefficients[3 * s]), cb = float(p.coefficients[3 * s + 1]),
                cc = float(p.coefficients[3 * s + 2]);
    // A = X·Xᵀ: tile (I, J) = X[I, :] · X[J, :]ᵀ
    parallel_for(0, int64_t(jobs.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t i0 = jobs[t].i0, j0 = jobs[t].j0;
        const int64_t mi = std::min(kSymTile, m - i0), mj = std::min(kSymTile, m - j0);
        matmul_cpu(f32_gemm(x + i0 * n, n, x + j0 * n, n, true, a + i0 * m + j0, m, mi, mj, n, 1.0f, 0.0f));
      }
    });
    mirror_upper(a, m);
    if (bf16) round_all_bf16(a, m * m);
    // B = b·A + c·A·A: tile (I, J) = c·A[I, :]·A[:, J] + b·A[I, J]
    parallel_for(0, int64_t(jobs.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t i0 = jobs[t].i0, j0 = jobs[t].j0;
        const int64_t mi = std::min(kSymTile, m - i0), mj = std::min(kSymTile, m - j0);
        for (int64_t i = i0; i < i0 + mi; ++i) std::copy(a + i * m + j0, a + i * m + j0 + mj, b + i * m + j0);
        matmul_cpu(f32_gemm(a + i0 * m, m, a + j0, m, false, b + i0 * m + j0, m, mi, mj, m, cc, cb));
      }
    });
    mirror_upper(b, m);
    if (bf16) round_all_bf16(b, m * m);
    // X = a·X + B·X
    std::copy(x, x + m * n, next);
    matmul_cpu(f32_gemm(b, m, x, n, false, next, n, m, n, m, 1.0f, ca));
    std::copy(next, next + m * n, x);
    if (bf16) round_all_bf16(x, m * n);
  }
}

struct FastPlan {
  int64_t m, n, workers;
  size_t floats_per_worker;
};

FastPlan plan_fast(const NewtonSchulzBatchParams& p) {
  FastPlan f;
  f.m = std::min(p.rows, p.cols), f.n = std::max(p.rows, p.cols);
  // A batch of small matrices runs one matrix per thread (the GEMMs inside then run serially);
  // bigger ones run one at a time with every thread inside each GEMM.
  const double flops = newton_schulz_flops(p.rows, p.cols, 1, true);
  f.workers = (p.batch > 1 && flops < 2e8) ? std::min<int64_t>(p.batch, num_threads()) : 1;
  f.floats_per_worker = size_t(2 * f.m * f.n + 2 * f.m * f.m);
  return f;
}

}  // namespace

size_t newton_schulz_cpu_workspace_bytes(const NewtonSchulzBatchParams& p) {
  newton_schulz_validate(p, false);
  if (p.batch == 0 || p.rows == 0 || p.cols == 0 || p.compute_dtype == DType::f64) return 0;
  const FastPlan f = plan_fast(p);
  return size_t(f.workers) * f.floats_per_worker * sizeof(float);
}

void newton_schulz_cpu(const NewtonSchulzBatchParams& p, void* workspace, size_t workspace_bytes) {
  newton_schulz_validate(p, false);
  if (p.batch == 0 || p.rows == 0 || p.cols == 0) return;
  if (p.compute_dtype == DType::f64) return newton_schulz_reference_cpu(p);
  const FastPlan f = plan_fast(p);
  const size_t need = size_t(f.workers) * f.floats_per_worker * sizeof(float);
  std::vector<float> owned;
  float* scratch = static_cast<float*>(workspace);
  if (!scratch) {
    owned.resize(need / sizeof(float));
    scratch = owned.data();
  } else {
    check(workspace_bytes >= need, "ERR_ARG",
          "newton_schulz_cpu: workspace of " + std::to_string(workspace_bytes) + " bytes, need " + std::to_string(need));
  }
  const std::vector<TileJob> jobs = upper_tiles(f.m);
  const int64_t m = f.m, n = f.n;
  auto run_matrix = [&](int64_t z, float* w) {
    float* x = w;
    float* next = x + m * n;
    float* a = next + m * n;
    float* b = a + m * m;
    load_normalized(p, z, x);
    iterate_fast(p, m, n, x, next, a, b, jobs);
    store_result(p, z, x);
  };
  if (f.workers == 1) {
    for (int64_t z = 0; z < p.batch; ++z) run_matrix(z, scratch);
  } else {
    // Each chunk of parallel_for is one worker (at most f.workers chunks); its matrices run
    // serially there, with the nested GEMMs single-threaded.
    const int64_t per = (p.batch + f.workers - 1) / f.workers;
    parallel_for(0, f.workers, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t w = lo; w < hi; ++w)
        for (int64_t z = w * per; z < std::min(p.batch, (w + 1) * per); ++z)
          run_matrix(z, scratch + size_t(w) * f.floats_per_worker);
    });
  }
}

void newton_schulz_reference_cpu(const NewtonSchulzBatchParams& p) {
  newton_schulz_validate(p, false);
  if (p.batch == 0 || p.rows == 0 || p.cols == 0) return;
  const bool bf16 = p.compute_dtype == DType::bf16;
  const int64_t m = std::min(p.rows, p.cols), n = std::max(p.rows, p.cols);
  std::vector<double> x(size_t(m * n)), a(size_t(m * m)), b(size_t(m * m)), next(size_t(m * n));
  for (int64_t z = 0; z < p.batch; ++z) {
    load_normalized(p, z, x.data());
    for (int s = 0; s < p.steps; ++s) {
      const double ca = p.coefficients[3 * s], cb = p.coefficients[3 * s + 1], cc = p.coefficients[3 * s + 2];
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < n; ++k) acc += x[i * n + k] * x[j * n + k];
          a[i * m + j] = bf16 ? round_bf16(acc) : acc;
        }
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < m; ++k) acc += a[i * m + k] * a[k * m + j];
          const double v = cb * a[i * m + j] + cc * acc;
          b[i * m + j] = bf16 ? round_bf16(v) : v;
        }
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < m; ++k) acc += b[i * m + k] * x[k * n + j];
          const double v = ca * x[i * n + j] + acc;
          next[i * n + j] = bf16 ? round_bf16(v) : v;
        }
      x.swap(next);
    }
    store_result(p, z, x.data());
  }
}

}  // namespace kiln

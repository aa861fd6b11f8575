// CPU Newton–Schulz and the Muon/AdamW elementwise updates (contract: ops/optimizer_cpu.h).
#include <cmath>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../matmul.h"
#include "../optimizer_cpu.h"
#include "matmul.h"

namespace kiln {
namespace {

void validate(const NewtonSchulzParams& p) {
  check(p.g && p.out, "ERR_ARG", "newton_schulz: null tensor");
  check(p.batch >= 0 && p.rows >= 0 && p.cols >= 0, "ERR_SHAPE", "newton_schulz: negative size");
  check(p.steps >= 0 && p.steps <= 100, "ERR_ARG", "newton_schulz: steps must be in [0, 100]");
  check(p.steps == 0 || p.coefficients, "ERR_ARG", "newton_schulz: missing coefficients");
  check(p.compute == DType::f32 || p.compute == DType::bf16 || p.compute == DType::f64, "ERR_DTYPE",
        "newton_schulz: compute dtype must be f32, bf16 or f64");
  check(std::isfinite(p.norm_scale) && p.norm_scale > 0 && std::isfinite(p.eps) && p.eps >= 0, "ERR_ARG",
        "newton_schulz: norm_scale must be > 0 and eps >= 0");
}

template <class T>
void round_to(T* x, int64_t n, DType compute) {
  if (compute != DType::bf16) return;
  for (int64_t i = 0; i < n; ++i) x[i] = T(bf16_to_float(float_to_bf16(float(x[i]))));
}

// X (m x n, m <= n) = normalized G or Gᵀ of matrix z.
template <class T>
void load_normalized(const NewtonSchulzParams& p, int64_t z, T* x, bool tall) {
  const float* g = p.g + z * p.rows * p.cols;
  double sq = 0;
  for (int64_t i = 0; i < p.rows * p.cols; ++i) sq += double(g[i]) * g[i];
  double inv = 1.0 / (std::sqrt(sq) * p.norm_scale + p.eps);
  int64_t m = tall ? p.cols : p.rows, n = tall ? p.rows : p.cols;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) x[i * n + j] = T((tall ? g[j * p.cols + i] : g[i * p.cols + j]) * inv);
  round_to(x, m * n, p.compute);
}

template <class T>
void store(const NewtonSchulzParams& p, int64_t z, const T* x, bool tall) {
  float* out = p.out + z * p.rows * p.cols;
  int64_t n = tall ? p.rows : p.cols;
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c) out[r * p.cols + c] = float(tall ? x[c * n + r] : x[r * n + c]);
}

MatmulParams gemm(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool trans_b, float alpha,
                  float beta) {
  MatmulParams m;
  m.a = a, m.b = b, m.c = c;
  m.ab_dtype = DType::f32, m.c_dtype = DType::f32;
  m.M = M, m.N = N, m.K = K, m.batch = 1;
  m.trans_b = trans_b;
  m.lda = K, m.ldb = trans_b ? K : N, m.ldc = N;
  m.alpha = alpha, m.beta = beta;
  return m;
}

}  // namespace

void newton_schulz_cpu(const NewtonSchulzParams& p) {
  validate(p);
  if (p.compute == DType::f64) return newton_schulz_reference_cpu(p);
  bool tall = p.rows > p.cols;
  int64_t m = tall ? p.cols : p.rows, n = tall ? p.rows : p.cols;
  std::vector<float> x(size_t(m * n)), a(size_t(m * m)), b(size_t(m * m)), next(size_t(m * n));
  for (int64_t z = 0; z < p.batch; ++z) {
    load_normalized(p, z, x.data(), tall);
    for (int s = 0; s < p.steps; ++s) {
      float ca = float(p.coefficients[3 * s]), cb = float(p.coefficients[3 * s + 1]), cc = float(p.coefficients[3 * s + 2]);
      matmul_cpu(gemm(x.data(), x.data(), a.data(), m, m, n, true, 1.0f, 0.0f));   // A = X·Xᵀ
      b = a;                                                                      // B = b·A + c·A·A
      matmul_cpu(gemm(a.data(), a.data(), b.data(), m, m, m, false, cc, cb));
      next = x;                                                                   // X = a·X + B·X
      matmul_cpu(gemm(b.data(), x.data(), next.data(), m, n, m, false, 1.0f, ca));
      x.swap(next);
      round_to(x.data(), m * n, p.compute);
    }
    store(p, z, x.data(), tall);
  }
}

void newton_schulz_reference_cpu(const NewtonSchulzParams& p) {
  validate(p);
  bool tall = p.rows > p.cols;
  int64_t m = tall ? p.cols : p.rows, n = tall ? p.rows : p.cols;
  std::vector<double> x(size_t(m * n)), a(size_t(m * m)), b(size_t(m * m)), next(size_t(m * n));
  for (int64_t z = 0; z < p.batch; ++z) {
    load_normalized(p, z, x.data(), tall);
    for (int s = 0; s < p.steps; ++s) {
      double ca = p.coefficients[3 * s], cb = p.coefficients[3 * s + 1], cc = p.coefficients[3 * s + 2];
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < n; ++k) acc += x[i * n + k] * x[j * n + k];
          a[i * m + j] = acc;
        }
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < m; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < m; ++k) acc += a[i * m + k] * a[k * m + j];
          b[i * m + j] = cb * a[i * m + j] + cc * acc;
        }
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < m; ++k) acc += b[i * m + k] * x[k * n + j];
          next[i * n + j] = ca * x[i * n + j] + acc;
        }
      x.swap(next);
      round_to(x.data(), m * n, p.compute);
    }
    store(p, z, x.data(), tall);
  }
}

double newton_schulz_flops(int64_t batch, int64_t rows, int64_t cols, int steps, bool symmetric) {
  double m = double(std::min(rows, cols)), n = double(std::max(rows, cols));
  double gram = 2 * m * m * n, square = 2 * m * m * m, apply = 2 * m * m * n;
  // upper triangle including the diagonal: m(m+1)/2 of m² outputs
  double share = symmetric ? (m + 1) / (2 * m) : 1.0;
  return double(batch) * steps * ((gram + square) * share + apply);
}

void muon_momentum_cpu(float* momentum, float* update, const float* grad, int64_t n, float beta, bool nesterov) {
  parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float m = beta * momentum[i] + (1 - beta) * grad[i];
      momentum[i] = m;
      update[i] = nesterov ? (1 - beta) * grad[i] + beta * m : m;
    }
  });
}

void normuon_normalize_cpu(float* ortho, float* row_second_moment, int64_t rows, int64_t cols, float beta2, float eps) {
  double before = 0, after = 0;
  for (int64_t i = 0; i < rows * cols; ++i) before += double(ortho[i]) * ortho[i];
  for (int64_t r = 0; r < rows; ++r) {
    float* row = ortho + r * cols;
    double sq = 0;
    for (int64_t c = 0; c < cols; ++c) sq += double(row[c]) * row[c];
    float v = beta2 * row_second_moment[r] + (1 - beta2) * float(sq / double(cols));
    row_second_moment[r] = v;
    float inv = 1.0f / (std::sqrt(v) + eps);
    for (int64_t c = 0; c < cols; ++c) {
      row[c] *= inv;
      after += double(row[c]) * row[c];
    }
  }
  float rescale = float(std::sqrt(before) / (std::sqrt(after) + double(eps)));
  for (int64_t i = 0; i < rows * cols; ++i) ortho[i] *= rescale;
}

void muon_apply_cpu(float* weight, const float* ortho, int64_t n, float lr, float weight_decay, float scale) {
  float decay = 1 - lr * weight_decay, step = lr * scale;
  parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) weight[i] = weight[i] * decay - step * ortho[i];
  });
}

void adamw_cpu(float* weight, float* m, float* v, const float* grad, int64_t n, float lr, float beta1, float beta2,
               float eps, float weight_decay, int64_t step) {
  check(step >= 1, "ERR_ARG", "adamw: step must be >= 1");
  double c1 = 1 - std::pow(double(beta1), double(step)), c2 = 1 - std::pow(double(beta2), double(step));
  float inv_c1 = float(1 / c1), inv_sqrt_c2 = float(1 / std::sqrt(c2)), decay = 1 - lr * weight_decay;
  parallel_for(0, n, 1 << 15, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float g = grad[i];
      float mi = beta1 * m[i] + (1 - beta1) * g;
      float vi = beta2 * v[i] + (1 - beta2) * g * g;
      m[i] = mi;
      v[i] = vi;
      weight[i] = weight[i] * decay - lr * (mi * inv_c1) / (std::sqrt(vi) * inv_sqrt_c2 + eps);
    }
  });
}

}  // namespace kiln

// CPU optimizer kernels (contract: ops/optimizer.h): the fused multi-tensor AdamW / Muon
// momentum / Muon apply / sum of squares / scale, and NorMuon's row normalization.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../../runtime/error.h"
#include "../../runtime/half.h"
#include "../../runtime/parallel.h"
#include "../optimizer.h"

namespace kiln {

// ---------- validation (shared with the CUDA launchers) ----------

namespace {

void check_numel(int64_t numel, const std::string& what) { check(numel >= 0, "ERR_ARG", what + ": negative numel"); }

void check_list(const void* tensors, int64_t count, const std::string& op) {
  check(count >= 0, "ERR_ARG", op + ": negative tensor count");
  check(count == 0 || tensors, "ERR_ARG", op + ": null tensor list");
}

}  // namespace

void adamw_multi_tensor_validate(const AdamWParams& p) {
  const std::string op = "adamw";
  check_list(p.tensors, p.count, op);
  check(p.step >= 1, "ERR_ARG", op + ": step must be >= 1");
  check(std::isfinite(p.lr) && std::isfinite(p.weight_decay) && std::isfinite(p.eps) && p.eps >= 0, "ERR_ARG",
        op + ": lr, weight_decay and eps must be finite (eps >= 0)");
  check(p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1, "ERR_ARG", op + ": betas must be in [0, 1)");
  for (int64_t j = 0; j < p.count; ++j) {
    const AdamWTensor& t = p.tensors[j];
    check_numel(t.numel, op);
    check(t.numel == 0 || (t.weight && t.exp_avg && t.exp_avg_sq && t.grad), "ERR_ARG",
          op + ": null pointer in tensor " + std::to_string(j));
  }
}

void muon_momentum_multi_tensor_validate(const MuonMomentumParams& p) {
  const std::string op = "muon_momentum";
  check_list(p.tensors, p.count, op);
  check(p.beta >= 0 && p.beta < 1, "ERR_ARG", op + ": beta must be in [0, 1)");
  check(p.update_dtype == DType::f32 || p.update_dtype == DType::bf16, "ERR_DTYPE", op + ": update must be f32 or bf16");
  for (int64_t j = 0; j < p.count; ++j) {
    const MuonMomentumTensor& t = p.tensors[j];
    check_numel(t.numel, op);
    check(t.numel == 0 || (t.momentum && t.grad && t.update), "ERR_ARG", op + ": null pointer in tensor " + std::to_string(j));
  }
}

void muon_apply_multi_tensor_validate(const MuonApplyParams& p) {
  const std::string op = "muon_apply";
  check_list(p.tensors, p.count, op);
  check(std::isfinite(p.lr) && std::isfinite(p.weight_decay), "ERR_ARG", op + ": lr and weight_decay must be finite");
  check(p.ortho_dtype == DType::f32 || p.ortho_dtype == DType::bf16, "ERR_DTYPE", op + ": ortho must be f32 or bf16");
  for (int64_t j = 0; j < p.count; ++j) {
    const MuonApplyTensor& t = p.tensors[j];
    check_numel(t.numel, op);
    check(std::isfinite(t.scale), "ERR_ARG", op + ": non-finite scale in tensor " + std::to_string(j));
    check(t.numel == 0 || (t.weight && t.ortho), "ERR_ARG", op + ": null pointer in tensor " + std::to_string(j));
  }
}

void tensor_list_validate(const TensorListParams& p, const char* op_name) {
  const std::string op = op_name;
  check_list(p.tensors, p.count, op);
  check(p.dtype == DType::f32 || p.dtype == DType::bf16, "ERR_DTYPE", op + ": tensors must be f32 or bf16");
  for (int64_t j = 0; j < p.count; ++j) {
    check_numel(p.tensors[j].numel, op);
    check(p.tensors[j].numel == 0 || p.tensors[j].data, "ERR_ARG", op + ": null pointer in tensor " + std::to_string(j));
  }
}

// ---------- multi-tensor CPU ----------

namespace {

// The (tensor, chunk) pairs of a list, flattened so that parallel_for balances many small tensors
// and a few big ones alike.
struct ChunkMap {
  std::vector<int64_t> first_chunk;  // count + 1 prefix sums
  template <class Numel>
  ChunkMap(int64_t count, Numel numel) : first_chunk(size_t(count + 1), 0) {
    for (int64_t j = 0; j < count; ++j)
      first_chunk[j + 1] = first_chunk[j] + (numel(j) + kMultiTensorChunk - 1) / kMultiTensorChunk;
  }
  int64_t total() const { return first_chunk.back(); }
  // Calls body(tensor, begin, end) for each chunk, in parallel.
  template <class Body>
  void run(Body body, const std::vector<int64_t>& numels) const {
    parallel_for(0, total(), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        const int64_t j = int64_t(std::upper_bound(first_chunk.begin(), first_chunk.end(), c) - first_chunk.begin()) - 1;
        const int64_t begin = (c - first_chunk[j]) * kMultiTensorChunk;
        body(j, begin, std::min(numels[j], begin + kMultiTensorChunk));
      }
    });
  }
};

template <class T, class Numel>
std::vector<int64_t> numels_of(const T* tensors, int64_t count, Numel numel) {
  std::vector<int64_t> r(static_cast<size_t>(count));
  for (int64_t j = 0; j < count; ++j) r[j] = numel(tensors[j]);
  return r;
}

inline float load_f(const void* base, DType t, int64_t i) {
  return t == DType::bf16 ? bf16_to_float(static_cast<const uint16_t*>(base)[i]) : static_cast<const float*>(base)[i];
}

inline void store_f(void* base, DType t, int64_t i, float x) {
  if (t == DType::bf16) static_cast<uint16_t*>(base)[i] = float_to_bf16(x);
  else static_cast<float*>(base)[i] = x;
}

}  // namespace

void adamw_multi_tensor_cpu(const AdamWParams& p) {
  adamw_multi_tensor_validate(p);
  const double c1 = 1 - std::pow(double(p.beta1), double(p.step)), c2 = 1 - std::pow(double(p.beta2), double(p.step));
  const float inv_c1 = float(1 / c1), inv_sqrt_c2 = float(1 / std::sqrt(c2)), decay = 1 - p.lr * p.weight_decay;
  const float b1 = p.beta1, b2 = p.beta2, lr = p.lr, eps = p.eps;
  auto numels = numels_of(p.tensors, p.count, [](const AdamWTensor& t) { return t.numel; });
  ChunkMap map(p.count, [&](int64_t j) { return numels[j]; });
  map.run(
      [&](int64_t j, int64_t lo, int64_t hi) {
        const AdamWTensor& t = p.tensors[j];
        for (int64_t i = lo; i < hi; ++i) {
          const float g = t.grad[i];
          const float m = b1 * t.exp_avg[i] + (1 - b1) * g;
          const float v = b2 * t.exp_avg_sq[i] + (1 - b2) * g * g;
          t.exp_avg[i] = m;
          t.exp_avg_sq[i] = v;
          t.weight[i] = t.weight[i] * decay - lr * (m * inv_c1) / (std::sqrt(v) * inv_sqrt_c2 + eps);
        }
      },
      numels);
}

void muon_momentum_multi_tensor_cpu(const MuonMomentumParams& p) {
  muon_momentum_multi_tensor_validate(p);
  const float beta = p.beta;
  const bool nesterov = p.nesterov;
  auto numels = numels_of(p.tensors, p.count, [](const MuonMomentumTensor& t) { return t.numel; });
  ChunkMap map(p.count, [&](int64_t j) { return numels[j]; });
  map.run(
      [&](int64_t j, int64_t lo, int64_t hi) {
        const MuonMomentumTensor& t = p.tensors[j];
        for (int64_t i = lo; i < hi; ++i) {
          const float g = t.grad[i];
          const float m = beta * t.momentum[i] + (1 - beta) * g;
          t.momentum[i] = m;
          store_f(t.update, p.update_dtype, i, nesterov ? (1 - beta) * g + beta * m : m);
        }
      },
      numels);
}

void muon_apply_multi_tensor_cpu(const MuonApplyParams& p) {
  muon_apply_multi_tensor_validate(p);
  const float decay = 1 - p.lr * p.weight_decay;
  auto numels = numels_of(p.tensors, p.count, [](const MuonApplyTensor& t) { return t.numel; });
  ChunkMap map(p.count, [&](int64_t j) { return numels[j]; });
  map.run(
      [&](int64_t j, int64_t lo, int64_t hi) {
        const MuonApplyTensor& t = p.tensors[j];
        const float step = p.lr * t.scale;
        for (int64_t i = lo; i < hi; ++i) t.weight[i] = t.weight[i] * decay - step * load_f(t.ortho, p.ortho_dtype, i);
      },
      numels);
}

double sum_of_squares_multi_tensor_cpu(const TensorListParams& p, double* per_tensor) {
  tensor_list_validate(p, "sum_of_squares");
  auto numels = numels_of(p.tensors, p.count, [](const ListTensor& t) { return t.numel; });
  ChunkMap map(p.count, [&](int64_t j) { return numels[j]; });
  // One partial per chunk, added in chunk order afterwards: deterministic for any thread count.
  std::vector<double> partial(size_t(map.total()), 0.0);
  map.run(
      [&](int64_t j, int64_t lo, int64_t hi) {
        double acc = 0;
        for (int64_t i = lo; i < hi; ++i) {
          const double x = load_f(p.tensors[j].data, p.dtype, i);
          acc += x * x;
        }
        partial[size_t(map.first_chunk[j] + lo / kMultiTensorChunk)] = acc;
      },
      numels);
  double total = 0;
  for (int64_t j = 0; j < p.count; ++j) {
    double s = 0;
    for (int64_t c = map.first_chunk[j]; c < map.first_chunk[j + 1]; ++c) s += partial[size_t(c)];
    if (per_tensor) per_tensor[j] = s;
    total += s;
  }
  return total;
}

void scale_multi_tensor_cpu(const TensorListParams& p, float factor) {
  tensor_list_validate(p, "scale");
  check(std::isfinite(factor), "ERR_ARG", "scale: factor must be finite");
  auto numels = numels_of(p.tensors, p.count, [](const ListTensor& t) { return t.numel; });
  ChunkMap map(p.count, [&](int64_t j) { return numels[j]; });
  map.run(
      [&](int64_t j, int64_t lo, int64_t hi) {
        void* x = p.tensors[j].data;
        for (int64_t i = lo; i < hi; ++i) store_f(x, p.dtype, i, load_f(x, p.dtype, i) * factor);
      },
      numels);
}

void normuon_normalize_validate(const void* ortho, DType ortho_dtype, const float* row_second_moment, int64_t rows,
                                int64_t cols, float beta2, float eps) {
  check(rows >= 0 && cols >= 0, "ERR_SHAPE", "normuon_normalize: rows and cols must be >= 0");
  check(ortho_dtype == DType::f32 || ortho_dtype == DType::bf16, "ERR_DTYPE", "normuon_normalize: the update must be f32 or bf16");
  check((rows == 0 || cols == 0 || ortho != nullptr) && (rows == 0 || row_second_moment != nullptr), "ERR_ARG",
        "normuon_normalize: null pointer");
  check(std::isfinite(beta2) && beta2 >= 0 && beta2 < 1 && std::isfinite(eps) && eps >= 0, "ERR_ARG",
        "normuon_normalize: beta2 must be in [0, 1) and eps finite and >= 0");
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

}  // namespace kiln

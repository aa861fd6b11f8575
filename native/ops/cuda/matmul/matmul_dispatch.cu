// matmul_cuda: validation, path choice (sm90 / sm80 / simt by compute capability, env
// KILN_MATMUL_PATH to force), config choice (tuned winner, else shape heuristic) and the
// tuned-winner table used by `kiln tune`. API and semantics: matmul_cuda.h.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "../common.cuh"
#include "matmul_cuda.h"
#include "matmul_internal.cuh"
#include "matmul_path.h"

namespace kiln {
namespace {

using namespace matmul_detail;

// The sm90 kernel was written without a GPU to run it on. Until a GPU session has checked it
// against the CPU reference (KILN_MATMUL_PATH=sm90 or matmul_cuda_with_config), automatic
// dispatch keeps Hopper on the sm80 path. Flip to true once test/cuda matmul passes on sm90.
constexpr bool kSm90InAutoDispatch = false;

// Global config index layout: [simt][sm80 configs][sm90 configs].
int sm80_first() { return 1; }
int sm90_first() { return 1 + matmul_sm80_config_count(); }

Path path_of(int config) {
  if (config < sm80_first()) return Path::simt;
  if (config < sm90_first()) return Path::sm80;
  return Path::sm90;
}

struct DeviceInfo {
  int device = 0, cc_major = 0, cc_minor = 0, sm_count = 0;
};

DeviceInfo current_device() {
  DeviceInfo d;
  KILN_CUDA_CHECK(cudaGetDevice(&d.device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, d.device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&d.cc_minor, cudaDevAttrComputeCapabilityMinor, d.device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, d.device));
  return d;
}

// KILN_MATMUL_PATH, read on every call; a value other than sm90/sm80/simt/auto is ERR_ARG.
ForcedPath forced_path() {
  const char* env = std::getenv("KILN_MATMUL_PATH");
  const ForcedPath forced = parse_forced_path(env);
  if (forced == ForcedPath::invalid)
    fail("ERR_ARG", std::string("KILN_MATMUL_PATH must be sm90, sm80, simt or auto, got '") + env + "'");
  return forced;
}

bool path_runs(Path path, const MatmulParams& p, const DeviceInfo& d) {
  switch (path) {
    case Path::simt: return true;
    case Path::sm80: return d.cc_major >= 8 && matmul_sm80_supported(p);
    case Path::sm90: return d.cc_major == 9 && matmul_sm90_available(d.device) && matmul_sm90_supported(p);
  }
  return false;
}

PathAbility ability(const MatmulParams& p, const DeviceInfo& d) {
  PathAbility a;
  a.f32_operands = p.ab_dtype == DType::f32;
  a.sm80_runs = path_runs(Path::sm80, p, d);
  a.sm90_runs = path_runs(Path::sm90, p, d);
  a.sm90_in_auto = kSm90InAutoDispatch;
  return a;
}

std::mutex tuned_mutex;
std::unordered_map<std::string, int>& tuned_table() {
  static std::unordered_map<std::string, int> table;
  return table;
}
std::string tuned_slot(int device, const std::string& key) { return std::to_string(device) + "|" + key; }

int lookup_tuned(int device, const std::string& key) {
  std::lock_guard<std::mutex> lock(tuned_mutex);
  auto it = tuned_table().find(tuned_slot(device, key));
  return it == tuned_table().end() ? -1 : it->second;
}

void run_config(const MatmulParams& p, int config, cudaStream_t stream) {
  switch (path_of(config)) {
    case Path::simt: matmul_simt_run(p, stream); break;
    case Path::sm80: matmul_sm80_run(p, config - sm80_first(), stream); break;
    case Path::sm90: matmul_sm90_run(p, config - sm90_first(), stream); break;
  }
}

bool is_noop(const MatmulParams& p) { return p.M == 0 || p.N == 0 || p.batch == 0; }

std::string tune_key_for(const MatmulParams& p, const DeviceInfo& d) {
  std::string key;
  key += dtype_name(p.ab_dtype);
  key += ".";
  key += dtype_name(p.c_dtype);
  key += ".";
  key += p.trans_a ? "t" : "n";
  key += p.trans_b ? "t" : "n";
  key += p.epilogue == MatmulEpilogue::none ? ".none" : p.epilogue == MatmulEpilogue::residual_add ? ".res" : ".swiglu";
  key += p.beta != 0.f ? ".b1" : ".b0";
  key += ".M" + std::to_string(p.M) + ".N" + std::to_string(p.N) + ".K" + std::to_string(p.K) + ".z" +
         std::to_string(p.batch) + ".sm" + std::to_string(d.cc_major * 10 + d.cc_minor);
  return key;
}

bool config_supported(const MatmulParams& p, int config, const DeviceInfo& d) {
  if (config < 0 || config >= matmul_cuda_config_count()) return false;
  Path path = path_of(config);
  return path_allowed(forced_path(), path, kSm90InAutoDispatch) && path_runs(path, p, d);
}

int heuristic_config(Path path, const MatmulParams& p, const DeviceInfo& d) {
  switch (path) {
    case Path::sm90: return sm90_first() + matmul_sm90_pick_config(p, d.sm_count);
    case Path::sm80: return sm80_first() + matmul_sm80_pick_config(p, d.sm_count);
    default: return 0;
  }
}

// The path first (a forced path wins, see matmul_path.h), then a tuned winner on it, else the
// path's shape heuristic. Forcing never throws for operands a path can't take: an unaligned
// view falls back to the next slower path and still computes.
int default_config(const MatmulParams& p, const DeviceInfo& d) {
  const ForcedPath forced = forced_path();
  const Path chosen = choose_path(forced, ability(p, d));
  const int tuned = lookup_tuned(d.device, tune_key_for(p, d));
  if (tuned >= 0 && tuned < matmul_cuda_config_count() &&
      tuned_winner_applies(forced, path_of(tuned), config_supported(p, tuned, d), chosen))
    return tuned;
  return heuristic_config(chosen, p, d);
}

}  // namespace

void matmul_cuda_validate(const MatmulParams& p) {
  const bool half_ab = p.ab_dtype == DType::bf16 || p.ab_dtype == DType::f16;
  check(p.ab_dtype == DType::f32 || half_ab, "ERR_DTYPE",
        std::string("matmul (cuda): operand dtype ") + dtype_name(p.ab_dtype) + " unsupported (f32, bf16, f16)");
  if (p.ab_dtype == DType::f32) {
    check(p.c_dtype == DType::f32, "ERR_DTYPE", "matmul (cuda): f32 operands need an f32 output");
  } else {
    check(p.c_dtype == DType::f32 || p.c_dtype == DType::bf16 || p.c_dtype == DType::f16, "ERR_DTYPE",
          std::string("matmul (cuda): output dtype ") + dtype_name(p.c_dtype) + " unsupported");
  }
  const int ep = int(p.epilogue);
  check(ep >= 0 && ep <= 2, "ERR_ARG", "matmul: unknown epilogue");
  const int64_t kMax = int64_t(1) << 31;
  check(p.M >= 0 && p.N >= 0 && p.K >= 0 && p.batch >= 0, "ERR_SHAPE", "matmul: negative size");
  check(p.M < kMax && p.N < kMax / 2 && p.K < kMax && p.batch < kMax, "ERR_SHAPE", "matmul: size too large");
  check(p.stride_a >= 0 && p.stride_b >= 0 && p.stride_c >= 0 && p.stride_residual >= 0, "ERR_SHAPE",
        "matmul: negative batch stride");
  if (is_noop(p)) return;
  const bool swiglu = p.epilogue == MatmulEpilogue::swiglu;
  const int64_t n_gemm = swiglu ? 2 * p.N : p.N;
  check(p.c != nullptr, "ERR_ARG", "matmul: null C");
  check(p.ldc >= p.N, "ERR_SHAPE", "matmul: ldc < N");
  check(p.batch == 1 || p.stride_c >= (p.M - 1) * p.ldc + p.N, "ERR_SHAPE",
        "matmul: batches of C overlap (stride_c too small)");
  if (p.K > 0) {
    check(p.a != nullptr && p.b != nullptr, "ERR_ARG", "matmul: null A or B");
    check(p.lda >= (p.trans_a ? p.M : p.K), "ERR_SHAPE", "matmul: lda too small");
    check(p.ldb >= (p.trans_b ? p.K : n_gemm), "ERR_SHAPE", "matmul: ldb too small");
  }
  if (swiglu) check(p.beta == 0.f, "ERR_ARG", "matmul: the swiglu epilogue needs beta == 0");
  if (p.epilogue == MatmulEpilogue::residual_add) {
    check(p.residual != nullptr, "ERR_ARG", "matmul: residual_add needs a residual");
    check(p.ld_residual >= p.N, "ERR_SHAPE", "matmul: ld_residual < N");
  }
}

int matmul_cuda_config_count() { return 1 + matmul_sm80_config_count() + matmul_sm90_config_count(); }

const char* matmul_cuda_config_name(int config) {
  if (config < 0 || config >= matmul_cuda_config_count()) return "?";
  switch (path_of(config)) {
    case Path::simt: return "simt";
    case Path::sm80: return matmul_sm80_config_name(config - sm80_first());
    case Path::sm90: return matmul_sm90_config_name(config - sm90_first());
  }
  return "?";
}

bool matmul_cuda_config_supported(const MatmulParams& p, int config) {
  matmul_cuda_validate(p);
  return config_supported(p, config, current_device());
}

void matmul_cuda_with_config(const MatmulParams& p, int config, cudaStream_t stream) {
  matmul_cuda_validate(p);
  if (is_noop(p)) return;
  DeviceInfo d = current_device();
  check(config_supported(p, config, d), "ERR_ARG",
        std::string("matmul: config ") + std::to_string(config) + " (" + matmul_cuda_config_name(config) +
            ") cannot run this call on this device");
  run_config(p, config, stream);
}

int matmul_cuda_default_config(const MatmulParams& p) {
  matmul_cuda_validate(p);
  return default_config(p, current_device());
}

void matmul_cuda(const MatmulParams& p, cudaStream_t stream) {
  matmul_cuda_validate(p);
  if (is_noop(p)) return;
  DeviceInfo d = current_device();
  run_config(p, default_config(p, d), stream);
}

std::string matmul_cuda_tune_key(const MatmulParams& p) { return tune_key_for(p, current_device()); }

void matmul_cuda_set_tuned(int device, const std::string& key, int config) {
  check(config >= -1 && config < matmul_cuda_config_count(), "ERR_ARG", "matmul_cuda_set_tuned: bad config");
  std::lock_guard<std::mutex> lock(tuned_mutex);
  if (config < 0) {
    tuned_table().erase(tuned_slot(device, key));
  } else {
    tuned_table()[tuned_slot(device, key)] = config;
  }
}

void matmul_cuda_clear_tuned() {
  std::lock_guard<std::mutex> lock(tuned_mutex);
  tuned_table().clear();
}

}  // namespace kiln

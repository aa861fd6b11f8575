// The CUDA GEMM dispatcher's path decision, as plain C++ (no CUDA): which path (simt, sm80,
// sm90) runs a call, and whether a tuned winner may replace the shape heuristic's config.
// Kept free of CUDA so test/native/host_logic_test.cc checks it on any machine.
//
// Rules (matmul_cuda.h, "Paths"):
//   f32 operands               simt, whatever KILN_MATMUL_PATH says
//   KILN_MATMUL_PATH=sm90      sm90 when it can take the call, else sm80, else simt
//   KILN_MATMUL_PATH=sm80      sm80 when it can take the call, else simt
//   KILN_MATMUL_PATH=simt      simt
//   unset / auto               sm90 (only when admitted to automatic dispatch), else sm80, else simt
// A tuned winner replaces the heuristic's config when it can run the call; while a path is
// forced, only a winner on the path these rules chose: a forced path always wins over the tune
// cache (a cached sm80 winner must not run while sm90 is forced, or a benchmark of the forced
// path measures the other one).
#pragma once
#include <cstring>

namespace kiln::matmul_detail {

enum class Path { simt = 0, sm80 = 1, sm90 = 2 };

enum class ForcedPath { none, simt, sm80, sm90, invalid };

// KILN_MATMUL_PATH's value (nullptr when unset) -> the forced path.
inline ForcedPath parse_forced_path(const char* env) {
  if (!env || !*env || std::strcmp(env, "auto") == 0) return ForcedPath::none;
  if (std::strcmp(env, "simt") == 0) return ForcedPath::simt;
  if (std::strcmp(env, "sm80") == 0) return ForcedPath::sm80;
  if (std::strcmp(env, "sm90") == 0) return ForcedPath::sm90;
  return ForcedPath::invalid;
}

// What the current device and build can do for this call.
struct PathAbility {
  bool f32_operands = false;  // f32 A and B: the SIMT kernel only
  bool sm80_runs = false;     // sm_80+ device and the call fits the sm80 kernel
  bool sm90_runs = false;     // Hopper, sm_90a code in the loaded binary, and the call fits
  bool sm90_in_auto = false;  // sm90 admitted to automatic dispatch (validated on a GPU)
};

// The path that runs the call. `forced` must not be ForcedPath::invalid (the caller throws).
inline Path choose_path(ForcedPath forced, const PathAbility& a) {
  if (a.f32_operands) return Path::simt;
  switch (forced) {
    case ForcedPath::simt: return Path::simt;
    case ForcedPath::sm80: return a.sm80_runs ? Path::sm80 : Path::simt;
    case ForcedPath::sm90:
      if (a.sm90_runs) return Path::sm90;
      return a.sm80_runs ? Path::sm80 : Path::simt;
    default:
      if (a.sm90_in_auto && a.sm90_runs) return Path::sm90;
      return a.sm80_runs ? Path::sm80 : Path::simt;
  }
}

// Whether a tuned winner on path `tuned` (which can run the call: `tuned_runs`) may replace the
// heuristic for a call that choose_path routed to `chosen`.
inline bool tuned_winner_applies(ForcedPath forced, Path tuned, bool tuned_runs, Path chosen) {
  if (!tuned_runs) return false;
  if (forced != ForcedPath::none) return tuned == chosen;
  return true;
}

// Paths a config may come from for matmul_cuda_config_supported / with_config (tuning):
// forced simt -> {simt}; forced sm80 -> {sm80, simt}; forced sm90 -> all; unset -> all but
// sm90 while it is out of automatic dispatch.
inline bool path_allowed(ForcedPath forced, Path path, bool sm90_in_auto) {
  switch (forced) {
    case ForcedPath::simt: return path == Path::simt;
    case ForcedPath::sm80: return path != Path::sm90;
    case ForcedPath::sm90: return true;
    default: return path != Path::sm90 || sm90_in_auto;
  }
}

}  // namespace kiln::matmul_detail

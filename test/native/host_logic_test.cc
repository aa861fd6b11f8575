// Host-side logic of the CUDA paths that needs no GPU, checked on any machine by
// test/cpu/native_logic.test.ts (compiled with the host compiler, FMA contraction allowed):
//   1. the GEMM dispatcher's path decision (ops/cuda/matmul/matmul_path.h): a forced
//      KILN_MATMUL_PATH wins over a tuned winner on another path;
//   2. the paged-KV-cache predicates and messages the CPU ops and the CUDA kernels share
//      (ops/paged_cache_checks.h, runtime/device_error.h);
//   3. random fills' mean + std·z / low + (high - low)·u rounded twice, never fused
//      (ops/element_access.h), the contract CUDA's __fmul_rn/__fadd_rn follow.
// Prints "ok N" and exits 0, or prints each failure and exits 1.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "ops/cuda/matmul/matmul_path.h"
#include "ops/element_access.h"
#include "ops/elementwise.h"
#include "ops/paged_cache_checks.h"
#include "runtime/device_error.h"

using namespace kiln;
using namespace kiln::matmul_detail;

static int failures = 0, checks = 0;
#define EXPECT(cond)                                                \
  do {                                                              \
    ++checks;                                                       \
    if (!(cond)) {                                                  \
      ++failures;                                                   \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                               \
  } while (0)

static PathAbility ability(bool f32, bool sm80, bool sm90, bool sm90_auto = false) {
  PathAbility a;
  a.f32_operands = f32, a.sm80_runs = sm80, a.sm90_runs = sm90, a.sm90_in_auto = sm90_auto;
  return a;
}

static void test_matmul_path() {
  EXPECT(parse_forced_path(nullptr) == ForcedPath::none);
  EXPECT(parse_forced_path("") == ForcedPath::none);
  EXPECT(parse_forced_path("auto") == ForcedPath::none);
  EXPECT(parse_forced_path("sm90") == ForcedPath::sm90);
  EXPECT(parse_forced_path("sm80") == ForcedPath::sm80);
  EXPECT(parse_forced_path("simt") == ForcedPath::simt);
  EXPECT(parse_forced_path("SM90") == ForcedPath::invalid);
  EXPECT(parse_forced_path("sm100") == ForcedPath::invalid);

  // Hopper with sm_90a code, bf16 TN call: forced sm90 runs sm90 ...
  const PathAbility hopper = ability(false, true, true);
  const Path chosen = choose_path(ForcedPath::sm90, hopper);
  EXPECT(chosen == Path::sm90);
  // ... and a cached sm80 (or simt) winner for the same key must not replace it (defect 2)
  EXPECT(!tuned_winner_applies(ForcedPath::sm90, Path::sm80, true, chosen));
  EXPECT(!tuned_winner_applies(ForcedPath::sm90, Path::simt, true, chosen));
  EXPECT(tuned_winner_applies(ForcedPath::sm90, Path::sm90, true, chosen));  // a tuned sm90 tile config may
  // forced sm80 / simt: winners on other paths never run
  EXPECT(choose_path(ForcedPath::sm80, hopper) == Path::sm80);
  EXPECT(!tuned_winner_applies(ForcedPath::sm80, Path::simt, true, Path::sm80));
  EXPECT(choose_path(ForcedPath::simt, hopper) == Path::simt);
  EXPECT(!tuned_winner_applies(ForcedPath::simt, Path::sm80, true, Path::simt));
  // unset: sm90 stays out of automatic dispatch until validated; any runnable winner may win
  EXPECT(choose_path(ForcedPath::none, hopper) == Path::sm80);
  EXPECT(choose_path(ForcedPath::none, ability(false, true, true, true)) == Path::sm90);
  EXPECT(tuned_winner_applies(ForcedPath::none, Path::simt, true, Path::sm80));
  EXPECT(!tuned_winner_applies(ForcedPath::none, Path::sm90, false, Path::sm80));
  // sm90 forced where the binary has no sm_90a code (or not Hopper, or an unaligned view):
  // falls back, never the trapping kernel (defect 1's dispatcher side)
  EXPECT(choose_path(ForcedPath::sm90, ability(false, true, false)) == Path::sm80);
  EXPECT(choose_path(ForcedPath::sm90, ability(false, false, false)) == Path::simt);
  // f32 operands: simt whatever is forced
  EXPECT(choose_path(ForcedPath::sm90, ability(true, false, false)) == Path::simt);
  // configs candidates may come from (tuning)
  EXPECT(path_allowed(ForcedPath::simt, Path::simt, false) && !path_allowed(ForcedPath::simt, Path::sm80, false));
  EXPECT(path_allowed(ForcedPath::sm80, Path::sm80, false) && !path_allowed(ForcedPath::sm80, Path::sm90, true));
  EXPECT(path_allowed(ForcedPath::sm90, Path::sm90, false));
  EXPECT(!path_allowed(ForcedPath::none, Path::sm90, false) && path_allowed(ForcedPath::none, Path::sm90, true));
}

static void test_paged_checks() {
  EXPECT(!decode_seq_len_valid(0, 64));  // seq_len 0 is an error on both devices
  EXPECT(decode_seq_len_valid(1, 64) && decode_seq_len_valid(64, 64));
  EXPECT(!decode_seq_len_valid(65, 64) && !decode_seq_len_valid(-1, 64));
  EXPECT(block_id_valid(0, 4) && block_id_valid(3, 4) && !block_id_valid(4, 4) && !block_id_valid(-1, 4));
  EXPECT(append_position_valid(0, 16) && append_position_valid(15, 16) && !append_position_valid(16, 16) &&
         !append_position_valid(-1, 16));
  EXPECT(describe_device_error({kDecodeSeqLen, 2, 2, 0, 64}) == "attention_decode: seq_lens[2] = 0 is outside [1, 64]");
  EXPECT(describe_device_error({kDecodeBlockId, 1, 3, 9, 4}) ==
         "attention_decode: block_table[1, 3] = 9 is outside [0, 4)");
  EXPECT(describe_device_error({kAppendBlockId, 0, 1, -1, 4}) == "kv_append: block_table[0, 1] = -1 is outside [0, 4)");
}

static uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

static void test_random_rounding() {
  // The separately rounded result for many elements; with FMA contraction allowed (this file is
  // compiled with -mfma -ffp-contract=fast) a fused evaluation differs in some of them.
  int fused_would_differ = 0;
  for (int kind = 0; kind < 2; ++kind) {
    RandomParams p;
    p.kind = kind ? RandomKind::normal : RandomKind::uniform;
    p.seed = 1234;
    p.offset = 7;
    p.a = kind ? 0.3 : -0.7;  // mean or low, non-zero
    p.b = kind ? 1.7 : 2.9;   // std or high
    for (int64_t i = 0; i < 4096; ++i) {
      const float x = kind ? philox_normal(p.seed, p.offset, uint64_t(i)) : philox_uniform(p.seed, p.offset, uint64_t(i));
      const float scale = kind ? float(p.b) : float(p.b - p.a);
      volatile float product = scale * x;  // volatile: rounded on its own
      volatile float separate = float(p.a) + product;
      const float fused = std::fma(scale, x, float(p.a));
      const float got = float(random_value(p, DType::f32, i));
      if (bits(got) != bits(separate)) {
        if (failures < 20) std::printf("FAIL random kind %d element %lld: %a, separately rounded %a\n", kind, (long long)i, got, (float)separate);
        ++failures;
      }
      ++checks;
      if (bits(fused) != bits(separate)) ++fused_would_differ;
    }
  }
  // the test can fail: a fused evaluation gives other bits for some elements
  EXPECT(fused_would_differ > 0);
}

int main() {
  test_matmul_path();
  test_paged_checks();
  test_random_rounding();
  if (failures) {
    std::printf("%d of %d checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok %d\n", checks);
  return 0;
}

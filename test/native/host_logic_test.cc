// Host-side logic of the CUDA paths that needs no GPU, checked on any machine by
// test/cpu/native_logic.test.ts (compiled with the host compiler, FMA contraction allowed):
//   1. the GEMM dispatcher's path decision (ops/cuda/matmul/matmul_path.h): a forced
//      KILN_MATMUL_PATH wins over a tuned winner on another path;
//   2. the paged-KV-cache predicates and messages the CPU ops and the CUDA kernels share
//      (ops/paged_cache_checks.h, runtime/device_error.h);
//   3. random fills' mean + std·z / low + (high - low)·u rounded twice, never fused
//      (ops/element_access.h), the contract CUDA's __fmul_rn/__fadd_rn follow;
//   4. NCCL at run time (runtime/nccl.h): version codes, the loader against a missing library
//      and stand-in libraries (fake_nccl.c, paths in argv: 2.19.3, 2.8.4, 2.3.7, one without
//      ncclAllGather), and the unique id's exchange through a store (an in-process fake).
// Usage: host_logic_test GOOD_2_19_3 OLD_2_8_4 TOO_OLD_2_3_7 MISSING_ALLGATHER
// Prints "ok N" and exits 0, or prints each failure and exits 1.
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "ops/cuda/matmul/matmul_path.h"
#include "ops/element_access.h"
#include "ops/elementwise.h"
#include "ops/paged_cache_checks.h"
#include "runtime/device_error.h"
#include "runtime/error.h"
#include "runtime/nccl.h"

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

static bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

static void test_nccl_versions() {
  using namespace kiln::dist;
  EXPECT(nccl_version_code(2, 8, 4) == 2804);   // the old encoding, up to 2.8
  EXPECT(nccl_version_code(2, 9, 6) == 20906);  // the new one, from 2.9
  EXPECT(nccl_version_code(2, 19, 3) == 21903);
  EXPECT(kNcclMinimumVersion == 2400 && kNcclAvgVersion == 21000);
  EXPECT(nccl_version_string(2708) == "2.7.8");
  EXPECT(nccl_version_string(21903) == "2.19.3");
  EXPECT(nccl_version_string(23100) == "2.31.0");
  EXPECT(nccl_version_string(20906) == "2.9.6");
  NcclVersion v = parse_nccl_version(2804);
  EXPECT(v.major == 2 && v.minor == 8 && v.patch == 4);
  EXPECT(parse_nccl_version(999).major == 0 && parse_nccl_version(-5).major == 0);
  EXPECT(contains(nccl_version_string(42), "unknown"));
}

static void test_nccl_loader(const char* good, const char* old, const char* too_old, const char* missing) {
  using namespace kiln::dist;
  NcclApi api;
  NcclStatus st = load_nccl("/nonexistent/kiln-test/libnccl.so.2", &api);
  EXPECT(!st.available && st.version == 0 && api.handle == nullptr);
  EXPECT(contains(st.reason, "cannot load /nonexistent/kiln-test/libnccl.so.2: "));
  EXPECT(contains(st.reason, "No such file"));  // dlerror's own words

  st = load_nccl(good, &api);
  EXPECT(st.available && st.reason.empty() && st.version == 21903 && api.version == 21903);
  EXPECT(api.get_unique_id && api.comm_init_rank && api.comm_destroy && api.comm_abort && api.comm_get_async_error &&
         api.all_reduce && api.all_gather && api.broadcast && api.group_start && api.group_end);
  EXPECT(api.has_avg() && api.has_bf16());
  EXPECT(api.describe(3) == "NCCL error 3 (fake internal error)");

  NcclApi older;
  st = load_nccl(old, &older);
  EXPECT(st.available && st.version == 2804 && !older.has_avg() && !older.has_bf16());

  NcclApi refused;
  st = load_nccl(too_old, &refused);
  EXPECT(!st.available && refused.handle == nullptr);
  EXPECT(contains(st.reason, "is NCCL 2.3.7") && contains(st.reason, "2.4 or later"));

  st = load_nccl(missing, &refused);
  EXPECT(!st.available && refused.handle == nullptr);
  EXPECT(contains(st.reason, "has no ncclAllGather") && contains(st.reason, "NCCL 2.19.3"));
}

// The run's store, in process: get() waits for the key up to its timeout, as lib/parallel/store.ts does.
class FakeStore : public kiln::dist::KeyValueStore {
 public:
  void set(const std::string& key, const std::vector<char>& value) override {
    std::lock_guard<std::mutex> lock(mutex_);
    values_[key] = value;
    cv_.notify_all();
  }
  std::vector<char> get(const std::string& key, int64_t timeout_ms) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return values_.count(key) > 0; })) {
      kiln::fail("ERR_DIST", "rendezvous store: timed out after " + std::to_string(timeout_ms) + " ms waiting for " + key);
    }
    return values_[key];
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<char>> values_;
};

static void test_nccl_id_exchange() {
  using namespace kiln::dist;
  FakeStore store;
  std::vector<char> id(128);
  for (size_t i = 0; i < id.size(); ++i) id[i] = char(i * 7 + 1);
  int created = 0;
  auto create = [&] {
    ++created;
    return id;
  };
  // rank 1 waits before rank 0 published; both end with rank 0's id, created once
  std::vector<char> got1;
  std::string error1;
  std::thread r1([&] {
    try {
      got1 = exchange_nccl_unique_id(store, 1, "0/id", 5000, create);
    } catch (const std::exception& e) {
      error1 = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::vector<char> got0 = exchange_nccl_unique_id(store, 0, "0/id", 5000, create);
  r1.join();
  EXPECT(error1.empty());
  EXPECT(got0 == id && got1 == id && created == 1);

  // nobody publishes: the timeout becomes ERR_DIST naming the rank and the key
  try {
    exchange_nccl_unique_id(store, 3, "1/id", 30, create);
    EXPECT(false);
  } catch (const kiln::KilnException& e) {
    EXPECT(std::string(e.code()) == "ERR_DIST");
    EXPECT(contains(e.what(), "rank 3: waiting for rank 0's NCCL unique id (1/id) failed") && contains(e.what(), "timed out"));
  }
  // a value of the wrong size (not an id) is refused
  store.set("2/id", std::vector<char>(5, 'x'));
  try {
    exchange_nccl_unique_id(store, 1, "2/id", 30, create);
    EXPECT(false);
  } catch (const kiln::KilnException& e) {
    EXPECT(contains(e.what(), "has 5 bytes, not 128"));
  }
  // rank 0 whose NCCL cannot make an id
  try {
    exchange_nccl_unique_id(store, 0, "3/id", 30, []() -> std::vector<char> { kiln::fail("ERR_DIST", "ncclGetUniqueId: NCCL error 2"); });
    EXPECT(false);
  } catch (const kiln::KilnException& e) {
    EXPECT(contains(e.what(), "rank 0: publishing NCCL unique id (3/id) failed: ncclGetUniqueId: NCCL error 2"));
  }
}

int main(int argc, char** argv) {
  if (argc != 5) {
    std::printf("usage: host_logic_test GOOD_2_19_3 OLD_2_8_4 TOO_OLD_2_3_7 MISSING_ALLGATHER (stand-in NCCL libraries built from fake_nccl.c)\n");
    return 2;
  }
  test_matmul_path();
  test_paged_checks();
  test_random_rounding();
  test_nccl_versions();
  test_nccl_loader(argv[1], argv[2], argv[3], argv[4]);
  test_nccl_id_exchange();
  if (failures) {
    std::printf("%d of %d checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok %d\n", checks);
  return 0;
}

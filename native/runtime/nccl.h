// NCCL, loaded at run time: collectives on CUDA tensors when `libnccl.so.2` is present.
//
// kiln never links NCCL and never includes its headers: the library is opened with dlopen on
// first use and the few types and entry points kiln calls are declared here. Their ABI values
// (result codes, data types, reduction ops, the 128-byte unique id) are those of NCCL's public
// header src/nccl.h.in, checked against NCCL 2.31 (ncclConfig_v23100) and stable since 2.10;
// older releases are handled by version: kiln refuses NCCL below 2.4 (no ncclCommAbort /
// ncclCommGetAsyncError, which the timeouts need), and uses ncclAvg and ncclBfloat16 only from
// 2.10, where they appeared.
//
// This file is host code only (no CUDA): the loader, the version check and the exchange of
// the unique id through the run's store are tested on machines without a GPU
// (test/native/host_logic_test.cc). The communicator that runs the collectives is nccl_comm.h.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "store_client.h"

namespace kiln::dist {

// ---- the subset of NCCL's ABI kiln uses (values from nccl.h.in, NCCL 2.31) ----------------
namespace nccl_abi {
using Result = int;  // ncclResult_t
constexpr Result kSuccess = 0;
constexpr Result kInProgress = 7;  // 2.14+
using Comm = struct ncclComm*;  // ncclComm_t, opaque
constexpr int kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};
using DataType = int;  // ncclDataType_t
constexpr DataType kInt8 = 0, kInt32 = 2, kFloat16 = 6, kFloat32 = 7, kFloat64 = 8, kBfloat16 = 9;
using RedOp = int;  // ncclRedOp_t
constexpr RedOp kSum = 0, kAvg = 4;

using GetVersionFn = Result (*)(int*);
using GetUniqueIdFn = Result (*)(UniqueId*);
using CommInitRankFn = Result (*)(Comm*, int, UniqueId, int);
using CommDestroyFn = Result (*)(Comm);
using CommAbortFn = Result (*)(Comm);
using CommGetAsyncErrorFn = Result (*)(Comm, Result*);
using GetErrorStringFn = const char* (*)(Result);
using AllReduceFn = Result (*)(const void*, void*, size_t, DataType, RedOp, Comm, void* /*cudaStream_t*/);
using AllGatherFn = Result (*)(const void*, void*, size_t, DataType, Comm, void*);
using BroadcastFn = Result (*)(const void*, void*, size_t, DataType, int, Comm, void*);
using GroupFn = Result (*)();
}  // namespace nccl_abi

// NCCL_VERSION(X,Y,Z) of nccl.h: X*1000 + Y*100 + Z up to 2.8, X*10000 + Y*100 + Z from 2.9.
constexpr int nccl_version_code(int major, int minor, int patch) {
  return (major <= 2 && minor <= 8) ? major * 1000 + minor * 100 + patch : major * 10000 + minor * 100 + patch;
}
struct NcclVersion {
  int major = 0, minor = 0, patch = 0;
};
// Decodes ncclGetVersion's integer (either encoding); {0,0,0} for a value no NCCL returns.
NcclVersion parse_nccl_version(int code);
std::string nccl_version_string(int code);  // "2.19.3"
constexpr int kNcclMinimumVersion = nccl_version_code(2, 4, 0);
constexpr int kNcclAvgVersion = nccl_version_code(2, 10, 0);  // ncclAvg and ncclBfloat16

struct NcclApi {
  void* handle = nullptr;
  int version = 0;
  nccl_abi::GetVersionFn get_version = nullptr;
  nccl_abi::GetUniqueIdFn get_unique_id = nullptr;
  nccl_abi::CommInitRankFn comm_init_rank = nullptr;
  nccl_abi::CommDestroyFn comm_destroy = nullptr;
  nccl_abi::CommAbortFn comm_abort = nullptr;
  nccl_abi::CommGetAsyncErrorFn comm_get_async_error = nullptr;
  nccl_abi::GetErrorStringFn get_error_string = nullptr;
  nccl_abi::AllReduceFn all_reduce = nullptr;
  nccl_abi::AllGatherFn all_gather = nullptr;
  nccl_abi::BroadcastFn broadcast = nullptr;
  nccl_abi::GroupFn group_start = nullptr;
  nccl_abi::GroupFn group_end = nullptr;
  bool has_avg() const { return version >= kNcclAvgVersion; }
  bool has_bf16() const { return version >= kNcclAvgVersion; }
  // "ncclInvalidUsage (invalid usage)"-like text for a result code
  std::string describe(nccl_abi::Result r) const;
};

struct NcclStatus {
  bool available = false;
  std::string library;  // the name or path given to dlopen
  int version = 0;      // ncclGetVersion's code, 0 when not loaded
  std::string reason;   // why not available: dlerror's text, a missing symbol, a version too old
};

// Opens `library` and resolves every entry point; never throws. On success fills `api` (the
// handle stays open for the process); on failure closes what it opened and says why.
NcclStatus load_nccl(const std::string& library, NcclApi* api);

// The process's NCCL: `KILN_NCCL_LIBRARY` (a path) or "libnccl.so.2", loaded once, cached.
const NcclStatus& nccl_status();
// The loaded API; throws ERR_DIST with nccl_status().reason when NCCL is not available.
const NcclApi& nccl_api();

// The unique id of one NCCL communicator, shared through the run's store: rank 0 creates it
// (`create`) and sets `key`; every other rank waits for the key up to `timeout_ms`. Errors are
// ERR_DIST naming the rank.
std::vector<char> exchange_nccl_unique_id(KeyValueStore& store, int rank, const std::string& key, int64_t timeout_ms,
                                          const std::function<std::vector<char>()>& create);

}  // namespace kiln::dist

// NCCL loader, version check and unique-id exchange (nccl.h). Host code only.
#include "nccl.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "error.h"

namespace kiln::dist {

NcclVersion parse_nccl_version(int code) {
  NcclVersion v;
  if (code >= 10000) {  // 2.9 and later: X*10000 + Y*100 + Z
    v.major = code / 10000;
    v.minor = code % 10000 / 100;
    v.patch = code % 100;
  } else if (code >= 1000) {  // up to 2.8: X*1000 + Y*100 + Z
    v.major = code / 1000;
    v.minor = code % 1000 / 100;
    v.patch = code % 100;
  }
  return v;
}

std::string nccl_version_string(int code) {
  NcclVersion v = parse_nccl_version(code);
  if (v.major == 0) return "unknown (" + std::to_string(code) + ")";
  return std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.patch);
}

std::string NcclApi::describe(nccl_abi::Result r) const {
  const char* text = get_error_string ? get_error_string(r) : nullptr;
  return "NCCL error " + std::to_string(r) + (text ? std::string(" (") + text + ")" : std::string());
}

namespace {
template <typename Fn>
bool resolve(void* handle, const char* name, Fn* out, std::string* missing) {
  dlerror();
  void* p = dlsym(handle, name);
  if (!p) {
    if (missing->empty()) *missing = name;
    return false;
  }
  *out = reinterpret_cast<Fn>(p);
  return true;
}
}  // namespace

NcclStatus load_nccl(const std::string& library, NcclApi* api) {
  NcclStatus status;
  status.library = library;
  dlerror();
  // RTLD_LOCAL: NCCL's symbols stay out of the process's global namespace
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    status.reason = "cannot load " + library + ": " + (why ? why : "unknown dlopen error");
    return status;
  }
  NcclApi loaded;
  loaded.handle = handle;
  std::string missing;
  resolve(handle, "ncclGetVersion", &loaded.get_version, &missing);
  resolve(handle, "ncclGetUniqueId", &loaded.get_unique_id, &missing);
  resolve(handle, "ncclCommInitRank", &loaded.comm_init_rank, &missing);
  resolve(handle, "ncclCommDestroy", &loaded.comm_destroy, &missing);
  resolve(handle, "ncclCommAbort", &loaded.comm_abort, &missing);
  resolve(handle, "ncclCommGetAsyncError", &loaded.comm_get_async_error, &missing);
  resolve(handle, "ncclGetErrorString", &loaded.get_error_string, &missing);
  resolve(handle, "ncclAllReduce", &loaded.all_reduce, &missing);
  resolve(handle, "ncclAllGather", &loaded.all_gather, &missing);
  resolve(handle, "ncclBroadcast", &loaded.broadcast, &missing);
  resolve(handle, "ncclGroupStart", &loaded.group_start, &missing);
  resolve(handle, "ncclGroupEnd", &loaded.group_end, &missing);
  if (loaded.get_version) {
    int code = 0;
    if (loaded.get_version(&code) == nccl_abi::kSuccess) status.version = code;
  }
  if (!missing.empty()) {
    status.reason = library + " has no " + missing + " (NCCL " +
                    (status.version ? nccl_version_string(status.version) : std::string("of unknown version")) +
                    "; kiln needs NCCL 2.4 or later)";
  } else if (status.version == 0) {
    status.reason = library + ": ncclGetVersion failed";
  } else if (status.version < kNcclMinimumVersion || parse_nccl_version(status.version).major == 0) {
    status.reason = library + " is NCCL " + nccl_version_string(status.version) + "; kiln needs NCCL 2.4 or later";
  }
  if (!status.reason.empty()) {
    dlclose(handle);
    status.version = 0;
    return status;
  }
  loaded.version = status.version;
  status.available = true;
  *api = loaded;
  return status;
}

namespace {
struct Loaded {
  NcclStatus status;
  NcclApi api;
};
Loaded& loaded() {
  static Loaded* l = [] {
    auto* out = new Loaded();  // leaked on purpose: NCCL stays loaded until the process ends
    const char* env = std::getenv("KILN_NCCL_LIBRARY");
    std::string library = env && *env ? env : "libnccl.so.2";
    out->status = load_nccl(library, &out->api);
    return out;
  }();
  return *l;
}
}  // namespace

const NcclStatus& nccl_status() { return loaded().status; }

const NcclApi& nccl_api() {
  const Loaded& l = loaded();
  if (!l.status.available) fail("ERR_DIST", "NCCL is not available: " + l.status.reason);
  return l.api;
}

std::vector<char> exchange_nccl_unique_id(KeyValueStore& store, int rank, const std::string& key, int64_t timeout_ms,
                                          const std::function<std::vector<char>()>& create) {
  std::vector<char> id;
  try {
    if (rank == 0) {
      id = create();
      if (id.size() != size_t(nccl_abi::kUniqueIdBytes)) fail("ERR_DIST", "NCCL's unique id has " + std::to_string(id.size()) + " bytes, not 128");
      store.set(key, id);
    } else {
      id = store.get(key, timeout_ms);
    }
  } catch (const KilnException& e) {
    fail("ERR_DIST", "rank " + std::to_string(rank) + ": " + (rank == 0 ? "publishing" : "waiting for rank 0's") +
                         " NCCL unique id (" + key + ") failed: " + e.what());
  } catch (const std::exception& e) {
    fail("ERR_DIST", "rank " + std::to_string(rank) + ": exchanging the NCCL unique id failed: " + e.what());
  }
  if (id.size() != size_t(nccl_abi::kUniqueIdBytes)) {
    fail("ERR_DIST", "rank " + std::to_string(rank) + ": the NCCL unique id under " + key + " has " + std::to_string(id.size()) +
                         " bytes, not 128 (a rank running another kiln?)");
  }
  return id;
}

}  // namespace kiln::dist

/* A stand-in for libnccl.so.2 with NCCL's entry-point names, for the loader's tests
 * (test/native/host_logic_test.cc): built as a shared library with
 *   -DFAKE_NCCL_VERSION=<ncclGetVersion's code>   and optionally
 *   -DFAKE_NCCL_WITHOUT_ALLGATHER                  (an entry point missing).
 * The loader only resolves and calls ncclGetVersion / ncclGetErrorString; the others exist so
 * that dlsym finds them and must never be called by these tests (they return ncclInternalError). */
#define INTERNAL_ERROR 3

int ncclGetVersion(int* version) {
  *version = FAKE_NCCL_VERSION;
  return 0;
}
const char* ncclGetErrorString(int result) { return result == INTERNAL_ERROR ? "fake internal error" : "fake error"; }
int ncclGetUniqueId(void* id) { (void)id; return INTERNAL_ERROR; }
int ncclCommInitRank(void) { return INTERNAL_ERROR; }
int ncclCommDestroy(void) { return INTERNAL_ERROR; }
int ncclCommAbort(void) { return INTERNAL_ERROR; }
int ncclCommGetAsyncError(void) { return INTERNAL_ERROR; }
int ncclAllReduce(void) { return INTERNAL_ERROR; }
#ifndef FAKE_NCCL_WITHOUT_ALLGATHER
int ncclAllGather(void) { return INTERNAL_ERROR; }
#endif
int ncclBroadcast(void) { return INTERNAL_ERROR; }
int ncclGroupStart(void) { return INTERNAL_ERROR; }
int ncclGroupEnd(void) { return INTERNAL_ERROR; }

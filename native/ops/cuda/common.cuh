// Shared helpers for CUDA launchers: error checks that become KilnError(ERR_CUDA) and a small
// compile-time switch (after FlashAttention's static_switch.h) turning runtime flags into
// template parameters.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../../runtime/error.h"

namespace kiln {

inline void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();  // clear a non-sticky error so the next op starts clean
    fail(status == cudaErrorMemoryAllocation ? "ERR_OOM" : "ERR_CUDA",
         std::string(what) + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

// Call right after a <<<>>> launch.
inline void cuda_check_launch(const char* kernel_name) { cuda_check(cudaGetLastError(), kernel_name); }

inline int ceil_div(long long a, long long b) { return int((a + b - 1) / b); }

}  // namespace kiln

#define KILN_CUDA_CHECK(expr) ::kiln::cuda_check((expr), #expr)

#define KILN_BOOL_SWITCH(cond, NAME, ...) \
  [&] {                                   \
    if (cond) {                           \
      constexpr bool NAME = true;         \
      return __VA_ARGS__();               \
    } else {                              \
      constexpr bool NAME = false;        \
      return __VA_ARGS__();               \
    }                                     \
  }()

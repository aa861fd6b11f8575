// Element types kiln tensors can hold, shared by the runtime, the CPU ops and the CUDA launchers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kiln {

// The numeric codes are part of the binding contract (binding.ts DTypeCode): never renumber.
enum class DType : int32_t { f32 = 0, f64 = 1, bf16 = 2, f16 = 3, i32 = 4 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
  }
  return "?";
}

inline bool dtype_valid(int32_t code) { return code >= 0 && code <= 4; }
inline bool dtype_is_float(DType t) { return t != DType::i32; }
inline bool dtype_is_half(DType t) { return t == DType::bf16 || t == DType::f16; }

}  // namespace kiln

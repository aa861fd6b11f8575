// Argument checks the bindings run at the op's call, before enqueueing, for both devices: the
// CPU op's *_validate or the CUDA launcher's *_cuda_validate (the same checks each runs first in
// the queued task). A CUDA-only limit (head dim 96, f32 decode, rmsnorm backward D > 16384)
// is then a KilnError thrown by the call itself, as queue.h promises, not a sticky error at the
// next synchronize. Values inside device tensors (decode lengths, block tables) cannot be read
// here; see runtime/device_error.h for how those are reported.
#pragma once
#include "../ops/attention.h"
#include "../ops/cpu/attention.h"
#include "../ops/layers.h"
#include "../runtime/device.h"
#if KILN_WITH_CUDA
#include "../ops/cuda/attention/attention_cuda.h"
#endif

namespace kiln::binding {

// Runs cpu_check(p) on the CPU, or cuda_check(p) with the tensor's device current.
template <class Params, class CpuCheck, class CudaCheck>
void validate_call(const Params& p, Device device, CpuCheck cpu_check, CudaCheck cuda_check) {
  if (!device.is_cuda()) return cpu_check(p);
#if KILN_WITH_CUDA
  cuda_set_device(device.index);
  cuda_check(p);
#else
  (void)cuda_check;
  cuda_set_device(device.index);  // throws ERR_NO_CUDA
#endif
}

#if KILN_WITH_CUDA
#define KILN_CUDA_VALIDATOR(fn) [](const auto& p) { fn(p); }
#else
#define KILN_CUDA_VALIDATOR(fn) [](const auto&) {}
#endif

inline void validate_attention_forward(const AttentionParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { attention_forward_validate(q); }, KILN_CUDA_VALIDATOR(attention_forward_cuda_validate));
}
inline void validate_attention_backward(const AttentionBackwardParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { attention_backward_validate(q); }, KILN_CUDA_VALIDATOR(attention_backward_cuda_validate));
}
inline void validate_rope(const RopeParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { rope_validate(q); }, KILN_CUDA_VALIDATOR(rope_cuda_validate));
}
inline void validate_kv_append(const KvAppendParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { kv_append_validate(q); }, KILN_CUDA_VALIDATOR(kv_append_cuda_validate));
}
inline void validate_attention_decode(const AttentionDecodeParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { attention_decode_validate(q); }, KILN_CUDA_VALIDATOR(attention_decode_cuda_validate));
}
inline void validate_rmsnorm_forward(const RmsnormForwardParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { rmsnorm_forward_validate(q); }, KILN_CUDA_VALIDATOR(rmsnorm_forward_cuda_validate));
}
inline void validate_rmsnorm_backward(const RmsnormBackwardParams& p, Device device) {
  validate_call(p, device, [](const auto& q) { rmsnorm_backward_validate(q); }, KILN_CUDA_VALIDATOR(rmsnorm_backward_cuda_validate));
}

#undef KILN_CUDA_VALIDATOR

}  // namespace kiln::binding

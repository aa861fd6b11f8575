// CUDA attention ops (contracts: ops/attention.h). Plain launchers: params first, stream last.
// They validate (ERR_SHAPE / ERR_DTYPE / ERR_ARG) and throw KilnException; launch errors become
// ERR_CUDA. All work is enqueued on `stream`; nothing synchronizes.
//
// attention_forward_cuda / attention_backward_cuda (FlashAttention-2, mma.sync m16n8k16):
//   dtype bf16 or f16 (q, k, v, out, dout, dq, dk, dv all the same dtype), lse f32.
//   D in {64, 128}; Hkv divides Hq; any Tq, Tk >= 0 (B, Tq, Tk, Hq < 2^31, B*Tq*Hq*D < 2^62).
//   q, k, v, out, dout, dq, dk, dv: 16-byte aligned base pointers (rows are D*2 bytes, so every
//   row is then 16-byte aligned). lse: 4-byte aligned.
//   Backward needs `workspace` of attention_backward_workspace_bytes(B, Tq, Hq, D) bytes
//   (f32 dq accumulator + Delta), 256-byte aligned (cudaMalloc memory is); its content on entry
//   is ignored (the launcher zeroes what it needs on the stream).
//   Path: the sm80 kernels run on every sm_80+ device (sm_80/86/89/90); there is no Hopper
//   (wgmma) attention kernel yet. KILN_ATTENTION_PATH=sm80 (or auto / unset) is accepted;
//   any other value is ERR_ARG. Devices below sm_80 are ERR_ARG.
//
// rope_cuda: dtype f32, bf16 or f16; any even D; in place allowed (y == x). Angles are computed
//   in double (theta = pos * base^(-2j/D), reduced mod 2*pi) then sincosf, so the result matches
//   the double CPU reference within one rounding of the dtype.
//
// kv_append_cuda: dtype f32, bf16 or f16; D*dtype_size a multiple of 16 and all four tensor
//   pointers 16-byte aligned. start and the table are device values the host cannot read
//   without a sync: a position outside the table or a block id outside [0, num_blocks) is
//   skipped on the device and reported as ERR_ARG at the next wait (runtime/device_error.h).
//
// attention_decode_cuda (flash-decoding, split-K over tokens): dtype bf16 or f16, D in {64, 128},
//   Hkv divides Hq, q/k_cache/v_cache/out 16-byte aligned, lse optional (f32). `max_seq_len`
//   must be >= every seq_lens[b] (used to size the splits; a longer sequence is still computed
//   correctly, its tail going to the last split). seq_lens[b] outside [1, capacity] or a block
//   id outside [0, num_blocks) is clamped / skipped on the device (out = 0, lse = -inf for a
//   length of 0) and reported as ERR_ARG at the next wait, as the CPU op reports it (the CPU
//   checks in its task; runtime/device_error.h). Hq, B < 65536. Needs `workspace` of
//   attention_decode_workspace_bytes(B, Hq, D, max_seq_len) bytes (256-byte aligned).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../../attention.h"

namespace kiln {

// Each launcher first runs its *_validate (the checks listed above: dtype, head dim, shapes,
// alignment, workspace, device capability), which the binding also calls at the op's call so
// an argument error is thrown there, not at the next synchronize.
void attention_forward_cuda_validate(const AttentionParams& p);
void attention_backward_cuda_validate(const AttentionBackwardParams& p);
void rope_cuda_validate(const RopeParams& p);
void kv_append_cuda_validate(const KvAppendParams& p);
void attention_decode_cuda_validate(const AttentionDecodeParams& p);

void attention_forward_cuda(const AttentionParams& p, cudaStream_t stream);
void attention_backward_cuda(const AttentionBackwardParams& p, cudaStream_t stream);
size_t attention_backward_workspace_bytes(int64_t B, int64_t Tq, int64_t Hq, int64_t D);

void rope_cuda(const RopeParams& p, cudaStream_t stream);

void kv_append_cuda(const KvAppendParams& p, cudaStream_t stream);

void attention_decode_cuda(const AttentionDecodeParams& p, cudaStream_t stream);
size_t attention_decode_workspace_bytes(int64_t B, int64_t Hq, int64_t D, int64_t max_seq_len);

}  // namespace kiln

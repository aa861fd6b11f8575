// CPU attention, RoPE and paged-KV-cache ops. The math, shapes and dtype rules are the contract
// in ops/attention.h; this header only lists the entry points. All of them run synchronously on
// the calling thread (using kiln::parallel_for inside), take no workspace (scratch is allocated
// internally) and ignore the CUDA-only fields (workspace, max_seq_len).
//
// dtypes: f32 and f64 compute in their own precision; bf16 and f16 inputs are widened to f32,
// computed in f32 and rounded once when stored. lse (forward output, backward input, decode
// output) is f64 for f64 inputs and f32 for every other dtype. positions, block_table, start and
// seq_lens are i32.
//
// Every entry point validates first and throws kiln::KilnException (ERR_SHAPE, ERR_DTYPE, ERR_ARG)
// before writing anything; the *_validate functions run the same checks on their own, so the
// binding can reject a bad call before enqueueing it. Checks that depend on tensor contents
// (block ids, start positions, seq_lens) need the i32 data and run inside kv_append_cpu /
// attention_decode_cpu, still before any write.
#pragma once
#include "../attention.h"

namespace kiln {

// --- validation (shape, dtype, argument checks; no data is read) ---
void attention_forward_validate(const AttentionParams& p);
void attention_backward_validate(const AttentionBackwardParams& p);
void rope_validate(const RopeParams& p);
void kv_append_validate(const KvAppendParams& p);
void attention_decode_validate(const AttentionDecodeParams& p);

// --- training / prefill attention ---
// Fast path: FlashAttention-2 on the CPU (64x64 query x key tiles, online softmax, fully masked
// tiles skipped, AVX-512 / AVX2 / portable kernels picked at run time; KILN_CPU_ISA=avx512|avx2|
// generic forces one). Writes p.out (B, Tq, Hq, D) and p.lse (B, Hq, Tq).
void attention_forward_cpu(const AttentionParams& p);
// Oracle: plain loops over each row of the score matrix, accumulating in double.
void attention_forward_reference_cpu(const AttentionParams& p);

// Fast path: recomputes P from lse tile by tile. dk and dv are produced per (batch, kv head, key
// tile) summing over the query heads of the group; dq per (batch, query head, query tile): no
// atomics, deterministic. Writes (=) p.dq (B, Tq, Hq, D), p.dk and p.dv (B, Tk, Hkv, D).
void attention_backward_cpu(const AttentionBackwardParams& p);
// Oracle: plain loops, double accumulation, using the given out and lse.
void attention_backward_reference_cpu(const AttentionBackwardParams& p);

// --- rotary position embedding: y = rotate(x, theta) (or -theta when p.backward); y may be x.
// The angle pos * base^(-2j/D) and its cos/sin are computed in double. D must be even.
void rope_cpu(const RopeParams& p);

// --- paged KV cache ---
// Copies k_new/v_new (B, Tnew, Hkv, D) into the cache at positions start[b] .. start[b]+Tnew-1.
// Throws ERR_ARG (before writing) for start < 0, start + Tnew > max_blocks * block_size, or a
// block id outside [0, num_blocks) among the blocks written.
void kv_append_cpu(const KvAppendParams& p);
// out (B, Hq, D) = softmax(scale q·Kᵀ)·V over the first seq_lens[b] tokens of each sequence;
// lse (B, Hq) optional. Throws ERR_ARG for seq_len < 1, seq_len > max_blocks * block_size, or a
// block id outside [0, num_blocks) among the blocks read.
void attention_decode_cpu(const AttentionDecodeParams& p);
// Oracle: the same in plain double loops.
void attention_decode_reference_cpu(const AttentionDecodeParams& p);

}  // namespace kiln

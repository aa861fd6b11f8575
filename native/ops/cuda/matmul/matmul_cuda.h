// CUDA GEMMs for the matmul contract in ops/matmul.h (MatmulParams):
//
//   C_z (M x N) = epilogue(alpha * opA(A_z)·opB(B_z) + beta * C_z),  z in [0, batch)
//   f32 accumulation always. Activations use beta = 0 (`=`); weight gradients dW += dyᵀ·x use
//   trans_a, beta = 1 into an f32 C (`+=`).
//
// Supported (anything else throws KilnException, never computes a wrong answer):
//   ab_dtype bf16|f16 -> c_dtype bf16|f16|f32     tensor cores (sm80/sm90 paths) or SIMT fallback
//   ab_dtype f32      -> c_dtype f32               SIMT path (f32 CUDA-core FMA, no TF32)
//   f64 / i32                                      ERR_DTYPE (f64 is CPU only)
//   all four trans_a/trans_b layouts, batch with strides (stride 0 broadcasts an operand),
//   alpha, beta (beta read only when != 0), epilogues none / residual_add (residual has C's
//   dtype) / swiglu (beta must be 0; B holds 2N columns: gate [0, N), up [N, 2N)).
//   M, N, K, batch < 2^31; M, N or batch == 0 is a no-op; K == 0 gives epilogue(beta*C).
//   C must not alias A, B (the residual may alias C: each element is read then written by
//   the same thread).
//
// Paths (picked per call, see matmul_cuda):
//   sm90  wgmma m64nNk16 + TMA + mbarrier pipeline, warp-specialized, persistent (sm_90a).
//         See matmul_sm90.cu for its state: it is only taken when matmul_sm90_available(device).
//   sm80  mma.sync m16n8k16 + ldmatrix + cp.async multistage (sm_80, 86, 89; also runs on 90).
//         Needs 16-byte aligned A and B, lda, ldb (and stride_a, stride_b when batch > 1)
//         multiples of 8 elements, and N % 8 == 0 for swiglu without trans_b. C, the residual
//         and ldc have no alignment requirement (the epilogue vectorizes only when aligned).
//   simt  CUDA-core tiled kernel: f32, and bf16/f16 operands the tensor-core paths can't take.
//   Env KILN_MATMUL_PATH (read on every call): unset/auto = best available; sm90 = sm90 where
//   it can take the call, else sm80, else simt; sm80 = never sm90; simt = simt only. Forcing
//   never throws for operands a path can't take: it falls back to a slower correct path.
//   f32 operands always use simt. NOTE: the sm90 path is compiled but unvalidated, so
//   automatic dispatch (and config_supported/with_config without KILN_MATMUL_PATH=sm90)
//   leaves it out until kSm90InAutoDispatch in matmul_dispatch.cu is set to true.
//
// Tuning: every candidate has a global config index (stable within one build):
//   [0, matmul_cuda_config_count()) = { simt, sm80 tile configs..., sm90 tile configs... }.
//   `kiln tune` times the candidates for which matmul_cuda_config_supported(p, i) is true with
//   matmul_cuda_with_config, then records the winner with matmul_cuda_set_tuned(device, key,
//   i) where key = matmul_cuda_tune_key(p). matmul_cuda() looks the key up first (tuned
//   winners beat the shape heuristic; a winner that no longer applies, e.g. after the env var
//   changed the path, is ignored). Cache persistence (file format) is the caller's business:
//   keys are printable ASCII without spaces, configs are named by matmul_cuda_config_name.
//
// Expected performance (reasoning, not measured — no GPU was available when this was written):
//   A40 (sm_86, 149.7 dense bf16 TFLOP/s peak, 696 GB/s): the sm80 kernel with 128x128x32
//   tiles, 8 warps of 64x32, does 5 ldmatrix.x4 per 16 mma per warp-k16; ptxas gives it 160-168
//   registers, so 1 CTA (8 warps)/SM — latency hiding rests on the 3-4 stage cp.async ring
//   (a __launch_bounds__(256, 2) cap at 128 registers is the first thing to try on a GPU); CUTLASS-class mma.sync kernels reach ~75-85% of peak on GA10x.
//   Expect ~100-120 TFLOP/s for 4096^3 and the 1.4B's FFN shapes (M = tokens 8k-16k), less
//   (60-90) for N, K <= 2048 where tail waves on 84 SMs cost up to 1/3; the epilogue is
//   stored straight from registers (4-8 byte stores), costing a few % against smem-staged
//   128-bit stores. The SIMT f32 path: ~15-20 TFLOP/s of 37.4.
//   H100 SXM (989 peak): the sm80 path when forced is bounded by mma.sync (~2/3 of wgmma
//   peak) and by cp.async latency: expect ~350-450 TFLOP/s. The sm90 path (128x128/128x256
//   tiles, 2 consumer warpgroups) should reach 600-700 TFLOP/s on large shapes once tuned
//   (cuBLAS ~750-800 measured here).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../../matmul.h"

namespace kiln {

// Runs p on `stream`. Validates p (ERR_ARG / ERR_DTYPE / ERR_SHAPE), picks a path by the
// current device's compute capability (or KILN_MATMUL_PATH), a configuration by tuned winner
// or shape heuristic, and launches. Asynchronous; no workspace.
void matmul_cuda(const MatmulParams& p, cudaStream_t stream);

// Throws KilnException if p is not a valid, supported call (what matmul_cuda checks first).
void matmul_cuda_validate(const MatmulParams& p);

// Candidate configurations (global indices; see "Tuning" above).
int matmul_cuda_config_count();
const char* matmul_cuda_config_name(int config);  // e.g. "simt", "sm80_128x128x32_w8_s3"
// True if config can run p on the current device (arch, shared memory, alignment, env path).
bool matmul_cuda_config_supported(const MatmulParams& p, int config);
// Runs p with one specific config; ERR_ARG if it is not supported for p.
void matmul_cuda_with_config(const MatmulParams& p, int config, cudaStream_t stream);
// The config matmul_cuda would run for p right now (tuned winner, else heuristic).
int matmul_cuda_default_config(const MatmulParams& p);

// Tune cache key: dtypes, layouts, epilogue, beta != 0, M, N, K, batch and the device's
// compute capability, e.g. "bf16.bf16.tn.none.b0.M4096.N4096.K4096.z1.sm86".
std::string matmul_cuda_tune_key(const MatmulParams& p);
// Records a tuned winner for (device ordinal, key); thread-safe. config -1 erases it.
void matmul_cuda_set_tuned(int device, const std::string& key, int config);
void matmul_cuda_clear_tuned();

// True when the loaded binary holds sm_90a code for `device` (so the wgmma kernel body exists
// there): asked once per device at run time by a probe kernel compiled under the same guard as
// the GEMM. False on a non-Hopper device and in builds without 90a (PTX JIT for compute_90
// lacks wgmma/setmaxnreg), so forcing sm90 there falls back instead of reaching __trap().
bool matmul_sm90_available(int device);

}  // namespace kiln

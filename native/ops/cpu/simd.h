// SIMD support shared by the CPU kernels that compile one source for several x86 vector ISAs and
// pick one at run time: matmul's microkernels and skinny path (matmul*.cc) and attention's tile
// GEMMs (attention.cc). The addon is built without -march flags so that one binary runs on any
// x86-64 CPU: each ISA's variant is a function carrying one of the target attributes below, and
// runtime/cpu_isa.h decides once per process which variant runs (KILN_CPU_ISA=avx2|generic
// lowers the choice, to test the other paths). The generic variant has no attribute (the
// baseline ISA). Bodies shared by the variants are KILN_INLINE, so each is compiled inside every
// target function that calls it.
#pragma once
#include <cstring>

#include "../../runtime/cpu_isa.h"

// Vector types only cross always_inline boundaries, so the ABI note GCC prints for them is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

#if KILN_X86
#include <immintrin.h>

// The AVX-512 subset the kernels use: F, BW, VL and DQ, with FMA.
#define KILN_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,fma"
#define KILN_TARGET_AVX512 __attribute__((target(KILN_ISA_AVX512)))
// The same ISA, with 512-bit vectors also preferred for the loops the compiler vectorizes by
// itself (prefer-vector-width=512: some compilers and -mtune settings otherwise stop at 256 bits
// there). attention.cc's AVX-512 variant uses this one. matmul's AVX-512 code is intrinsics and
// 64-byte vector types and keeps the compiler's default width for its other loops; the two stay
// distinct so that neither file's generated code changes.
#define KILN_TARGET_AVX512_PREFER512 __attribute__((target(KILN_ISA_AVX512 ",prefer-vector-width=512")))
#define KILN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

#define KILN_INLINE inline __attribute__((always_inline))

namespace kiln::simd {
// Internal linkage, as when each file defined these itself: GCC's inlining and register
// allocation then come out exactly as they did (with external linkage attention.cc's kernels
// compiled to different, though equivalent, instructions).
namespace {

// A GCC vector of Bytes / sizeof(T) lanes. Code written with it compiles for every ISA: the
// compiler splits a vector wider than the target's registers.
template <class T, int Bytes>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / int(sizeof(T));
};

// Unaligned load and store of a whole vector V (memcpy: no alignment or aliasing assumptions).
template <class V, class T>
KILN_INLINE V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <class V, class T>
KILN_INLINE void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

}  // namespace
}  // namespace kiln::simd

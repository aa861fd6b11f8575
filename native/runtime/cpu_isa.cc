#include "cpu_isa.h"

#include <cstdlib>
#include <string>

namespace kiln {
namespace {

Isa detect_isa() {
  Isa best = Isa::generic;
#if KILN_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    best = Isa::avx512;
#endif
  if (const char* env = std::getenv("KILN_CPU_ISA")) {
    std::string s(env);
    if (s == "generic") best = Isa::generic;
    else if (s == "avx2" && best == Isa::avx512) best = Isa::avx2;
  }
  return best;
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::generic: break;
  }
  return "generic";
}

}  // namespace kiln

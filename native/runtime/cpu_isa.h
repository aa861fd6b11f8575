// The x86 vector instruction set CPU kernels may use, detected once at run time (the addon is
// built without -march flags so one binary runs everywhere). KILN_CPU_ISA=avx2|generic lowers the
// choice (testing the other paths); a request above what the CPU has is ignored.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define KILN_X86 1
#else
#define KILN_X86 0
#endif

namespace kiln {

enum class Isa { generic, avx2, avx512 };

Isa cpu_isa();
const char* cpu_isa_name();  // "avx512", "avx2" or "generic"

}  // namespace kiln

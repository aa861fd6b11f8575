// Whether a build's CUDA architectures can run on a device: host logic only (no CUDA calls), so
// it is compiled and unit-tested in every build, and checked before any kernel is launched.
#pragma once
#include <string>

namespace kiln {

struct ArchCoverage {
  bool covered = false;
  std::string via;  // "sm_86 SASS", "compute_90 PTX (JIT)", or why nothing fits
};

// archs: the CMake list the addon was built with, ',' or ';' separated, e.g.
// "80-real,86-real,89-real,90a-real,90-virtual". Rules (CUDA's compatibility model):
//   NN-real     SASS runs on the same major version, minor >= N's (sm_80 runs on 8.6, 8.9)
//   NNa-real    arch-specific SASS runs only on exactly that version (sm_90a: 9.0 only)
//   NNf-real    family SASS runs on the same major version, minor >= N's
//   NN-virtual  PTX is JIT-compiled by the driver for any device of that version or newer
//               ('a' PTX: that exact version; 'f' PTX: same major, minor >= N's)
//   NN          both SASS and PTX; "all" / "all-major" / "native" are taken as covering.
// kiln's kernels need compute capability 8.0 or newer whatever the list says.
ArchCoverage cuda_arch_coverage(int major, int minor, const std::string& archs);

}  // namespace kiln
